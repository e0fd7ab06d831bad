"""Fixtures of the training_job tests: a small two-stage version and small real dataset folders to evaluate it on."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.helpers import DRISHTI

BRIGHT_DISC, BRIGHT_CUP = 0.47, 0.65  # mean channel value of the prepared image where disc / cup begin
"""The optic disc is the brightest structure of a fundus photo and the cup the brightest part of the disc: on
DRISHTI's 51 test images these thresholds give disc Dice 0.77, cup Dice 0.46, vCDR MAE 0.22 and a glaucoma AUC of
0.69 through the real two-stage pipeline (a random U-Net finds no disc at all, so nothing below it is exercised)."""


def brightness_model(thresholds: tuple[float, ...], name: str):
    """A Keras model with one sigmoid map per threshold: sigmoid(20 (mean(R, G, B) - threshold))."""
    import keras
    import numpy as np

    inputs = keras.Input((128, 128, 3), name="images")
    conv = keras.layers.Conv2D(len(thresholds), 1, activation="sigmoid", name=name)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.full((1, 1, 3, len(thresholds)), 20.0 / 3, np.float32),
                      np.asarray([-20.0 * t for t in thresholds], np.float32)])
    return model


@pytest.fixture(scope="session")
def two_stage_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-layout two-stage version (`REPO/optic-disc/1`) whose stages threshold brightness: a
    deterministic model that segments real discs and cups well enough for every figure to be non-trivial."""
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(False)
    from training_job.export import save_serving_model

    architecture = {"depth": 0, "width": 1, "increment_ratio": 1.0, "input_size": 128}
    card = {"model_name": "optic-disc", "mode": "full", "data": [str(DRISHTI)], "test_metrics": {},
            "config": {"model": architecture,
                       "segment": {"model": architecture, "crop": {"multiple": 2.5, "size": 128},
                                   "cup_threshold": 0.5, "convex": True}}}
    directory = tmp_path_factory.mktemp("two-stage") / "optic-disc" / "1"
    save_serving_model(brightness_model((BRIGHT_DISC,), "disc_probability"), directory, card,
                       segment_model=brightness_model((BRIGHT_DISC + 0.03, BRIGHT_CUP), "disc_cup_probability"))
    return directory


def copy_test_images(target: Path, n: int, columns: tuple[str, ...]) -> Path:
    """The first `n` DRISHTI test images with their masks, under a manifest with only `columns`."""
    if not (DRISHTI / "manifest.csv").is_file():
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    with (DRISHTI / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"][:n]
    for row in rows:
        for column in ("image", "disc_mask", "cup_mask"):
            if column in columns:
                (target / row[column]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DRISHTI / row[column], target / row[column])
    with (target / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture(scope="session")
def drishti_six(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six DRISHTI test images (four glaucoma, two normal) with disc and cup masks, labels and the experts' vCDR."""
    return copy_test_images(tmp_path_factory.mktemp("drishti-six"), 6,
                            ("id", "split", "image", "disc_mask", "cup_mask", "label", "vcdr_expert_mean"))


@pytest.fixture(scope="session")
def disc_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images as a dataset that has only disc masks: no cup masks, labels or vCDR."""
    return copy_test_images(tmp_path_factory.mktemp("disc-only"), 6, ("id", "split", "image", "disc_mask"))
