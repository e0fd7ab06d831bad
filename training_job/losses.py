"""Dice-based losses: Dice optimises the paper's metric directly, BCE keeps early gradients healthy."""
import keras
from keras import ops


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0, weight=None):
    """1 - mean soft Dice per image and channel; `weight` (N x C, 0 or 1) leaves unannotated channels out."""
    axes = (1, 2)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    scores = (2.0 * intersection + smooth) / (total + smooth)
    if weight is None:
        return 1.0 - ops.mean(scores)
    return 1.0 - ops.sum(scores * weight) / ops.maximum(ops.sum(weight), 1.0)


def bce_dice_loss(y_true, y_pred):
    return ops.mean(keras.losses.binary_crossentropy(y_true, y_pred)) + soft_dice_loss(y_true, y_pred)


def dice_coefficient(y_true, y_pred):
    """Hard Dice at 0.5 on the batch, as a training metric."""
    return 1.0 - soft_dice_loss(ops.cast(y_true >= 0.5, "float32"), ops.cast(y_pred >= 0.5, "float32"), smooth=1e-6)


def disc_cup_loss(y_true, y_pred, cup_weight: float = 1.0):
    """Stage 2: BCE + soft Dice on the disc and on the cup; targets carry a third plane, 1 where the image has a
    cup annotation (`training_job.crop_data`), so a dataset without cup masks trains the disc only. `cup_weight`
    scales the cup's share against the disc's (`SegmentStageConfig.cup_weight`)."""
    truth, annotated = y_true[..., :2], y_true[..., 2:3]
    has_cup = ops.mean(annotated, axis=(1, 2))  # N x 1
    weight = ops.concatenate([ops.ones_like(has_cup), cup_weight * has_cup], axis=-1)  # N x 2
    bce = keras.losses.binary_crossentropy(truth[..., None], y_pred[..., None])  # N x S x S x 2
    bce = ops.sum(ops.mean(bce, axis=(1, 2)) * weight) / ops.maximum(ops.sum(weight), 1.0)
    return bce + soft_dice_loss(truth, y_pred, weight=weight)


@keras.saving.register_keras_serializable(package="fundus_seg")
class DiscCupLoss(keras.losses.Loss):
    """`disc_cup_loss` with the cup's weight as a setting, so a compiled model saves and reloads with it."""

    def __init__(self, cup_weight: float = 1.0, name: str = "disc_cup_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.cup_weight = cup_weight

    def call(self, y_true, y_pred):
        return disc_cup_loss(y_true, y_pred, self.cup_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "cup_weight": self.cup_weight}


def disc_dice(y_true, y_pred):
    """Hard Dice at 0.5 of the first channel (the disc), as a training metric."""
    return dice_coefficient(y_true[..., :1], y_pred[..., :1])


def cup_dice(y_true, y_pred):
    return dice_coefficient(y_true[..., 1:2], y_pred[..., 1:2])


LOSSES = {"bce_dice": bce_dice_loss, "dice": soft_dice_loss}
