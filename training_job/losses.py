"""Dice-based losses: Dice optimises the paper's metric directly, BCE keeps early gradients healthy."""
import keras
from keras import ops


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    axes = (1, 2, 3)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - ops.mean((2.0 * intersection + smooth) / (total + smooth))


def bce_dice_loss(y_true, y_pred):
    return ops.mean(keras.losses.binary_crossentropy(y_true, y_pred)) + soft_dice_loss(y_true, y_pred)


def dice_coefficient(y_true, y_pred):
    """Hard Dice at 0.5 on the batch, as a training metric."""
    return 1.0 - soft_dice_loss(ops.cast(y_true >= 0.5, "float32"), ops.cast(y_pred >= 0.5, "float32"), smooth=1e-6)


LOSSES = {"bce_dice": bce_dice_loss, "dice": soft_dice_loss}
