"""Fixtures of the DICOM node tests: a deterministic two-stage version in a model repository of its own."""
from __future__ import annotations

from pathlib import Path

import pytest

BRIGHT_DISC, BRIGHT_CUP = 0.47, 0.65  # as tests/training_job: where a prepared photo's disc and cup begin


def brightness_model(thresholds: tuple[float, ...], name: str):
    """One sigmoid map per threshold of the mean channel value: segments real discs and cups roughly."""
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
    """`<tmp>/two-stage/optic-disc/1`, a complete two-stage version (copy it into a repository to publish it)."""
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(False)
    from training_job.export import save_serving_model

    architecture = {"depth": 0, "width": 1, "increment_ratio": 1.0, "input_size": 128}
    card = {"model_name": "optic-disc", "mode": "full", "data": ["drishti-gs1"], "test_metrics": {},
            "config": {"model": architecture,
                       "segment": {"model": architecture, "crop": {"multiple": 2.5, "size": 128},
                                   "cup_threshold": 0.5, "convex": True}}}
    directory = tmp_path_factory.mktemp("two-stage") / "optic-disc" / "1"
    save_serving_model(brightness_model((BRIGHT_DISC,), "disc_probability"), directory, card,
                       segment_model=brightness_model((BRIGHT_DISC + 0.03, BRIGHT_CUP), "disc_cup_probability"))
    return directory
