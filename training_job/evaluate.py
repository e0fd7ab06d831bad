"""Score a model on a dataset split the way a clinician would see it: at the original resolution.

Each test image goes through exactly the serving path (prepare -> model -> finish); Dice and
RRP are computed against the expert mask at full size, and also at 128x128 for comparison with
the paper's numbers.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from preprocessing.datasets import read_manifest
from preprocessing.decode import decode_mask
from preprocessing.errors import DatasetError
from preprocessing.metrics import dice, radius_within, summarize
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
