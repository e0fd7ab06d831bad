"""`training_job.evaluation_report`: the per-image CSV, the plots and the overlays, on hand-made scores and masks."""
from __future__ import annotations

import csv
import dataclasses

import cv2
import numpy as np
import pytest
from PIL import Image

from training_job.evaluate import ImageScore

ISSUE_COLUMNS = ("id", "disc_dice", "cup_dice", "vcdr_pred", "vcdr_true", "rrp_ok", "confidence", "flagged")  # #10


def score(id: str = "img", disc: float = 0.9, cup: float | None = 0.7, pred: float | None = 0.5,
          true: float | None = 0.6, flagged: bool = False) -> ImageScore:
    return ImageScore(id=id, disc_dice=disc, cup_dice=cup, vcdr_pred=pred, vcdr_true=true, vcdr_manifest=None,
                      rrp_ok=not flagged, confidence=0.3 if flagged else 0.9, flagged=flagged,
                      reasons="weak_locator;implausible_size" if flagged else "", label="glaucoma" if flagged else "normal",
                      second_look=flagged, disc_dice_128=disc, rrp_ok_128=True)


def disc(shape, center, radius) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, center, radius, 1, -1)
    return mask.astype(bool)


def pixels_near(path, rgb, tolerance: int = 40) -> int:
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), np.int16)
    return int((np.abs(array - np.asarray(rgb, np.int16)).max(axis=-1) <= tolerance).sum())


def test_the_csv_has_the_issues_columns_first_and_every_field_once(tmp_path):
    from training_job.evaluation_report import PER_IMAGE_COLUMNS, write_per_image

    assert PER_IMAGE_COLUMNS[: len(ISSUE_COLUMNS)] == ISSUE_COLUMNS
    assert sorted(PER_IMAGE_COLUMNS) == sorted(f.name for f in dataclasses.fields(ImageScore))
    rows = [score("a"), score("b", cup=None, pred=None, true=None, flagged=True)]
    with write_per_image(tmp_path / "deep" / "scores.csv", rows).open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["disc_dice"] == "0.9" and read[0]["flagged"] == "false" and read[0]["reasons"] == ""
    assert read[1]["cup_dice"] == read[1]["vcdr_pred"] == read[1]["vcdr_true"] == ""  # None: an empty cell
    assert read[1]["flagged"] == read[1]["second_look"] == "true"
    assert read[1]["reasons"] == "weak_locator;implausible_size"


def test_worst_is_lowest_disc_dice_first_ties_by_id():
    from training_job.evaluation_report import worst

    rows = [score("c", 0.5), score("a", 0.9), score("b", 0.5), score("d", 0.1)]
    assert [s.id for s in worst(rows, 3)] == ["d", "b", "c"]
    assert [s.id for s in worst(rows, 10)] == ["d", "b", "c", "a"] and worst(rows, 0) == []


COLOURS = {"expert disc": (0, 255, 0), "expert cup": (0, 255, 255), "predicted disc": (255, 0, 0),
           "predicted cup": (255, 255, 0)}


@pytest.mark.parametrize("segmented", [True, False], ids=["segmented", "nothing-segmented"])
def test_an_overlay_draws_each_contour_in_its_own_colour(tmp_path, segmented):
    from matplotlib.colors import to_rgb

    from training_job.evaluation_report import COLOURS as NAMES
    from training_job.evaluation_report import plot_overlay

    assert {name: tuple(int(255 * c) for c in to_rgb(colour)) for name, colour in NAMES.items()} == COLOURS
    shape = (300, 400)
    rgb = np.full((*shape, 3), 90, np.uint8)  # grey: no pixel of it is near any contour colour
    truth = (disc(shape, (200, 150), 40), disc(shape, (200, 150), 20))
    empty = np.zeros(shape, bool)
    predicted = (disc(shape, (210, 145), 38), disc(shape, (205, 150), 15)) if segmented else (empty, empty)
    path = tmp_path / "overlay.png"
    plot_overlay(rgb, truth, predicted, score(flagged=not segmented), path)
    for name, colour in COLOURS.items():
        drawn = pixels_near(path, colour)
        if name.startswith("expert") or segmented:
            assert drawn > 50, name
        else:
            assert drawn == 0, name


def test_the_report_renders_with_and_without_vcdr_pairs(tmp_path):
    from training_job.evaluation_report import write_report

    rows = [score(str(i), disc=0.6 + i / 20, pred=0.3 + i / 15, true=0.35 + i / 16, flagged=i == 0) for i in range(6)]
    summary = {"n": 6, "cup": {"n": 6, "dice_mean": 0.7}, "vcdr": {"n": 6, "mae": 0.04, "pearson_r": 0.99},
               "glaucoma_auc": None}
    for name, scores in (("pairs", rows), ("no-pairs", [dataclasses.replace(r, cup_dice=None, vcdr_true=None)
                                                        for r in rows])):
        index = write_report(tmp_path / name, scores, summary, folder=tmp_path, answer=None, title="<t> & co")
        for plot in ("dice.png", "vcdr.png", "bland_altman.png"):
            path = tmp_path / name / plot
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
            assert f'src="{plot}"' in index.read_text()
        text = index.read_text()
        assert "&lt;t&gt; &amp; co" in text and "<t>" not in text  # escaped
        assert "<th>vcdr.pearson_r</th><td>0.99</td>" in text and "<th>glaucoma_auc</th><td>-</td>" in text
        assert not (tmp_path / name / "worst").exists()  # no answer function: no overlays
    dot = (76, 146, 195)  # tab:blue at alpha 0.8 on white: the Bland-Altman points, drawn only where there are pairs
    assert pixels_near(tmp_path / "pairs" / "bland_altman.png", dot, 12) > 100
    assert pixels_near(tmp_path / "no-pairs" / "bland_altman.png", dot, 12) == 0
