"""Score a model on a dataset split the way a clinician would see it: at the original resolution.

Each test image goes through exactly the serving path (prepare -> model -> finish); Dice and
RRP are computed against the expert mask at full size, and also at 128x128 for comparison with
the paper's numbers.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from preprocessing.datasets import read_manifest
from preprocessing.decode import decode_image, decode_mask
from preprocessing.errors import DatasetError
from preprocessing.metrics import dice, radius_within, roc_auc, summarize
from preprocessing.pipeline import finish, finish_small, prepare
from preprocessing.transform import PreprocessConfig, preprocess_mask

Predict = Callable[[np.ndarray], np.ndarray]  # N x 128 x 128 x 3 -> N x 128 x 128 x 1


def keras_predictor(model) -> Predict:
    return lambda batch: model(batch, training=False).numpy()


def evaluate(
    predict: Predict,
    folder: str | Path,
    split: str | None = "test",
    config: PreprocessConfig = PreprocessConfig(),
    batch_size: int = 16,
    threshold: float = 0.5,
) -> dict:
    """`summarize` at the original resolution, plus the same at 128x128 under `"at_128"`."""
    records = [r for r in read_manifest(folder) if split is None or r.split == split]
    if not records:
        raise DatasetError(f"{folder}: no rows with split {split!r}")
    full_dice, full_ok, small_dice, small_ok = [], [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prepared = [prepare(r.image.read_bytes(), config) for r in chunk]
        probabilities = predict(np.stack([p.input for p in prepared]))
        for record, item, probability in zip(chunk, prepared, probabilities, strict=True):
            truth = decode_mask(record.disc_mask.read_bytes())
            mask = finish(probability, item.box, threshold)
            full_dice.append(dice(mask, truth))
            full_ok.append(radius_within(mask, truth))
            truth_small = preprocess_mask(truth, config)[..., 0] >= 0.5
            mask_small = finish_small(probability, threshold)
            small_dice.append(dice(mask_small, truth_small))
            small_ok.append(radius_within(mask_small, truth_small))
    result = summarize(full_dice, full_ok)
    result["at_128"] = summarize(small_dice, small_ok)
    return result


@dataclass(frozen=True)
class ImageScore:
    """One test image of a two-stage evaluation (a row of `--per-image`)."""

    id: str
    disc_dice: float
    cup_dice: float | None  # None where the dataset has no cup mask
    vcdr_pred: float | None  # None where no disc was segmented
    vcdr_true: float | None  # from the expert masks
    vcdr_manifest: float | None  # the manifest's vcdr_expert_mean
    rrp_ok: bool
    confidence: float
    flagged: bool
    reasons: str
    label: str
    second_look: bool
    disc_dice_128: float  # both masks on the paper's 128 x 128 grid (its tables' resolution)
    rrp_ok_128: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "dice_mean": None, "dice_std": None, "dice_min": None, "dice_max": None}
    array = np.asarray(values, np.float64)
    return {"n": int(array.size), "dice_mean": round(float(array.mean()), 4), "dice_std": round(float(array.std()), 4),
            "dice_min": round(float(array.min()), 4), "dice_max": round(float(array.max()), 4)}


def _vcdr_agreement(pairs: list[tuple[float, float]]) -> dict:
    if not pairs:
        return {"n": 0, "mae": None, "pearson_r": None}
    predicted, true = (np.asarray(side, np.float64) for side in zip(*pairs, strict=True))
    r = float(np.corrcoef(predicted, true)[0, 1]) if len(pairs) > 2 and predicted.std() > 0 and true.std() > 0 else None
    return {"n": len(pairs), "mae": round(float(np.abs(predicted - true).mean()), 4),
            "pearson_r": None if r is None or math.isnan(r) else round(r, 4)}


def score_images(images: list[ImageScore]) -> dict:
    """The evaluation's JSON: today's disc keys at the top, then cup, vCDR, glaucoma AUC and the flags."""
    result = summarize([i.disc_dice for i in images], [i.rrp_ok for i in images])
    result["at_128"] = summarize([i.disc_dice_128 for i in images], [i.rrp_ok_128 for i in images])
    result["cup"] = _summary([i.cup_dice for i in images if i.cup_dice is not None])
    result["vcdr"] = _vcdr_agreement([(i.vcdr_pred, i.vcdr_true) for i in images
                                      if i.vcdr_pred is not None and i.vcdr_true is not None])
    manifest = _vcdr_agreement([(i.vcdr_pred, i.vcdr_manifest) for i in images
                                if i.vcdr_pred is not None and i.vcdr_manifest is not None])
    result["vcdr_manifest"] = {"n": manifest["n"], "mae": manifest["mae"]}
    labelled = [i for i in images if i.label in ("glaucoma", "normal")]
    if not any(i.vcdr_pred is not None for i in labelled):  # a single-stage version: no vCDR to rank by
        labelled = []
    auc = roc_auc([i.vcdr_pred if i.vcdr_pred is not None else 0.0 for i in labelled],
                  [i.label == "glaucoma" for i in labelled])
    result["glaucoma_auc"] = None if auc is None else round(auc, 4)
    flagged = [i for i in images if i.flagged]
    unflagged = [i for i in images if not i.flagged]
    result["flagged"] = {
        "n": len(flagged),
        "share": round(len(flagged) / len(images), 4) if images else None,
        "disc_dice_flagged": _summary([i.disc_dice for i in flagged])["dice_mean"],
        "disc_dice_unflagged": _summary([i.disc_dice for i in unflagged])["dice_mean"],
    }
    return result


def evaluate_two_stage_images(locate: Predict, segment: Predict, folder: str | Path, split: str | None = "test",
                              config=None, oracle: bool = False) -> list[ImageScore]:
    """Every image of the split through `preprocessing.two_stage.segment_image`, the pipeline serving runs;
    `oracle`: stage 2 starts from the expert disc instead of stage 1's (stage 2 measured alone)."""
    from preprocessing.disc_crop import disc_center_and_diameter
    from preprocessing.measurements import measure
    from preprocessing.two_stage import Location, TwoStageConfig, segment_image

    config = config or TwoStageConfig()
    records = [r for r in read_manifest(folder) if split is None or r.split == split]
    if not records:
        raise DatasetError(f"{folder}: no rows with split {split!r}")
    scores = []
    for record in records:
        disc_truth = decode_mask(record.disc_mask.read_bytes())
        known = None
        if oracle and (expert := disc_center_and_diameter(disc_truth)) is not None:
            known = Location(*expert, peak=1.0, found=True)
        answer = segment_image(decode_image(record.image.read_bytes()), locate, segment, config, known_disc=known)
        cup_truth = decode_mask(record.cup_mask.read_bytes()) if record.cup_mask is not None else None
        vcdr_true = measure(disc_truth, cup_truth).vcdr if cup_truth is not None else None
        truth_small = preprocess_mask(disc_truth, config.preprocess)[..., 0] >= 0.5
        disc_small = preprocess_mask(answer.disc, config.preprocess)[..., 0] >= 0.5
        scores.append(ImageScore(
            id=record.id,
            disc_dice=round(dice(answer.disc, disc_truth), 4),
            cup_dice=None if cup_truth is None else round(dice(answer.cup, cup_truth & disc_truth), 4),
            vcdr_pred=answer.measurements.vcdr if answer.measurements else None,
            vcdr_true=vcdr_true,
            vcdr_manifest=record.vcdr_expert,
            rrp_ok=radius_within(answer.disc, disc_truth),
            confidence=answer.confidence.score,
            flagged=answer.confidence.low,
            reasons=";".join(answer.confidence.reasons),
            label=record.label,
            second_look=answer.second_look,
            disc_dice_128=round(dice(disc_small, truth_small), 4),
            rrp_ok_128=radius_within(disc_small, truth_small),
        ))
    return scores


def evaluate_two_stage(locate: Predict, segment: Predict, folder: str | Path, split: str | None = "test",
                       config=None, oracle: bool = False) -> dict:
    return score_images(evaluate_two_stage_images(locate, segment, folder, split, config, oracle))


def evaluate_single_stage_images(predict: Predict, folder: str | Path, split: str | None = "test",
                                 config: PreprocessConfig = PreprocessConfig(), threshold: float = 0.5,
                                 batch_size: int = 16) -> list[ImageScore]:
    """`evaluate`'s disc scores per image for a single-stage version (no cup: cup_dice and vcdr_pred None), with
    the confidence `preprocessing.two_stage.finish_single_stage` gives it; `score_images` of them has `evaluate`'s
    disc keys."""
    from preprocessing.measurements import measure
    from preprocessing.two_stage import finish_single_stage

    records = [r for r in read_manifest(folder) if split is None or r.split == split]
    if not records:
        raise DatasetError(f"{folder}: no rows with split {split!r}")
    scores = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prepared = [prepare(r.image.read_bytes(), config) for r in chunk]
        probabilities = predict(np.stack([p.input for p in prepared]))
        for record, item, probability in zip(chunk, prepared, probabilities, strict=True):
            answer = finish_single_stage(probability, item.box, item.input, threshold)
            truth = decode_mask(record.disc_mask.read_bytes())
            cup_truth = decode_mask(record.cup_mask.read_bytes()) if record.cup_mask is not None else None
            truth_small = preprocess_mask(truth, config)[..., 0] >= 0.5
            mask_small = finish_small(probability, threshold)
            scores.append(ImageScore(
                id=record.id,
                disc_dice=round(dice(answer.disc, truth), 4),
                cup_dice=None,
                vcdr_pred=None,
                vcdr_true=measure(truth, cup_truth).vcdr if cup_truth is not None else None,
                vcdr_manifest=record.vcdr_expert,
                rrp_ok=radius_within(answer.disc, truth),
                confidence=answer.confidence.score,
                flagged=answer.confidence.low,
                reasons=";".join(answer.confidence.reasons),
                label=record.label,
                second_look=False,
                disc_dice_128=round(dice(mask_small, truth_small), 4),
                rrp_ok_128=radius_within(mask_small, truth_small),
            ))
    return scores
