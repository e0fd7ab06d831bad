"""Stage 2's loss: the cup's annotation plane and its weight decide what a cup error costs."""
import keras
import numpy as np
import pytest

from training_job.config import SegmentStageConfig
from training_job.losses import DiscCupLoss, disc_cup_loss


def targets(cup_annotated: bool) -> np.ndarray:
    """One 16x16 target: a disc, a cup inside it and the annotation plane (N x S x S x 3)."""
    y = np.zeros((1, 16, 16, 3), "float32")
    y[0, 3:13, 3:13, 0] = 1
    y[0, 6:10, 6:10, 1] = 1
    y[0, ..., 2] = float(cup_annotated)
    return y


def prediction(disc_right: bool, cup_right: bool) -> np.ndarray:
    truth = targets(True)
    p = np.full((1, 16, 16, 2), 0.01, "float32")
    if disc_right:
        p[..., 0] = np.where(truth[..., 0] > 0, 0.99, 0.01)
    if cup_right:
        p[..., 1] = np.where(truth[..., 1] > 0, 0.99, 0.01)
    return p


def loss(y, p, **kwargs) -> float:
    return float(disc_cup_loss(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(p), **kwargs))


def test_a_missed_cup_costs_only_where_the_cup_is_annotated():
    right, cup_missed = prediction(True, True), prediction(True, False)
    assert loss(targets(True), right) < 0.1
    assert loss(targets(True), cup_missed) > loss(targets(True), right) + 0.3
    assert loss(targets(False), cup_missed) == pytest.approx(loss(targets(False), right), abs=1e-6)


def test_cup_weight_moves_the_loss_towards_the_cup():
    cup_missed, disc_missed = prediction(True, False), prediction(False, True)
    y = targets(True)
    assert loss(y, cup_missed, cup_weight=2.0) > loss(y, cup_missed)
    assert loss(y, disc_missed, cup_weight=2.0) < loss(y, disc_missed)
    assert loss(y, cup_missed, cup_weight=1.0) == pytest.approx(loss(y, cup_missed))


def test_a_compiled_stage2_model_saves_and_reloads_its_cup_weight(tmp_path):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="sigmoid")(inputs))
    model.compile(loss=DiscCupLoss(2.5))
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").loss.cup_weight == 2.5


def test_cup_weight_must_be_positive():
    with pytest.raises(ValueError, match="cup_weight"):
        SegmentStageConfig(cup_weight=0)
