"""`training_job.evaluate.score_images`: the evaluation's JSON from hand-made per-image scores with known answers."""
from __future__ import annotations

import pytest

from training_job.evaluate import ImageScore


def image(id: str, disc: float, cup: float | None, pred: float | None, true: float | None, manifest: float | None,
          rrp: bool, flagged: bool, label: str) -> ImageScore:
    return ImageScore(id=id, disc_dice=disc, cup_dice=cup, vcdr_pred=pred, vcdr_true=true, vcdr_manifest=manifest,
                      rrp_ok=rrp, confidence=0.2 if flagged else 0.9, flagged=flagged,
                      reasons="weak_locator" if flagged else "", label=label, second_look=False,
                      disc_dice_128=disc, rrp_ok_128=True)


IMAGES = [  #    disc  cup   vCDR pred/true/manifest  rrp    flagged label
    image("a", 0.9, 0.8, 0.7, 0.6, 0.65, True, False, "glaucoma"),
    image("b", 0.8, 0.6, 0.4, 0.3, None, False, True, "normal"),
    image("c", 0.5, None, None, None, 0.7, True, True, "glaucoma"),  # no disc segmented: no vCDR, ranked lowest
    image("d", 1.0, 0.7, 0.6, 0.5, 0.5, True, False, ""),  # unlabelled: not in the AUC
    image("e", 0.7, 0.5, 0.3, 0.2, None, True, False, "normal"),
    image("f", 0.6, None, 0.5, None, None, False, False, "glaucoma"),  # no cup mask: no cup Dice, no expert vCDR
]


def test_every_figure_from_hand_made_scores():
    from training_job.evaluate import score_images

    result = score_images(IMAGES)
    assert result["n"] == 6 and result["dice_mean"] == pytest.approx(0.75)
    assert (result["dice_min"], result["dice_max"], result["rrp"]) == (0.5, 1.0, 66.7)
    assert result["at_128"]["dice_mean"] == pytest.approx(0.75) and result["at_128"]["rrp"] == 100.0
    assert result["cup"] == {"n": 4, "dice_mean": 0.65, "dice_std": pytest.approx(0.1118, abs=1e-4),
                             "dice_min": 0.5, "dice_max": 0.8}
    # predicted = expert + 0.1 on a, b, d, e: MAE 0.1, perfectly correlated
    assert result["vcdr"] == {"n": 4, "mae": pytest.approx(0.1), "pearson_r": pytest.approx(1.0)}
    assert result["vcdr_manifest"] == {"n": 2, "mae": pytest.approx(0.075)}  # a and d (c has no prediction)
    # glaucoma a 0.7, c 0 (nothing segmented), f 0.5 against normal b 0.4, e 0.3: 4 of 6 pairs ranked right
    assert result["glaucoma_auc"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["flagged"] == {"n": 2, "share": pytest.approx(1 / 3, abs=1e-4),
                                 "disc_dice_flagged": pytest.approx(0.65), "disc_dice_unflagged": pytest.approx(0.8)}


@pytest.mark.parametrize("case, images", [
    ("a single-stage version: labels but no predicted vCDR",
     [image(str(i), 0.9, None, None, 0.6, 0.6, True, False, label) for i, label in enumerate(["glaucoma", "normal"] * 3)]),
    ("labels of one class only", [image(str(i), 0.9, 0.8, 0.5 + i / 10, 0.5, None, True, False, "glaucoma")
                                  for i in range(3)]),
    ("no labels", [image(str(i), 0.9, 0.8, 0.5 + i / 10, 0.5, None, True, False, "") for i in range(3)]),
])
def test_no_glaucoma_auc_without_both_classes_and_a_predicted_vcdr(case, images):
    from training_job.evaluate import score_images

    assert score_images(images)["glaucoma_auc"] is None, case


def test_a_dataset_without_cup_masks_has_empty_cup_and_vcdr_figures():
    from training_job.evaluate import score_images

    result = score_images([image(str(i), 0.9, None, 0.5, None, None, True, i == 0, "") for i in range(4)])
    assert result["cup"] == {"n": 0, "dice_mean": None, "dice_std": None, "dice_min": None, "dice_max": None}
    assert result["vcdr"] == {"n": 0, "mae": None, "pearson_r": None}
    assert result["vcdr_manifest"] == {"n": 0, "mae": None}
    assert result["flagged"]["n"] == 1 and result["n"] == 4
