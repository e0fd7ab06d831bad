"""The paper's data augmentation.

Static: brightness/contrast variants of every preprocessed image, made once (numpy).
Dynamic: a random rotation, shift, zoom and flip per sample, drawn fresh every step inside the
`tf.data` pipeline as ONE projective transform applied to image and mask stacked together, so
the two can never drift apart and the whole batch costs a single fused op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    static_variants: tuple[tuple[float, float], ...] = ((1.0, 0.0), (1.25, 0.0), (0.8, 0.0), (1.0, 0.1), (1.0, -0.1))
    """(contrast, brightness) pairs: x -> contrast * (x - 0.5) + 0.5 + brightness; (1, 0) keeps the original."""
    rotation_deg: float = 20.0
    shift_fraction: float = 0.1
    zoom_range: tuple[float, float] = (0.85, 1.25)
    """Scale factors drawn log-uniformly; > 1 zooms in (the disc looks bigger)."""
    zoom_on_disc: float = 0.0
    """Share of samples zoomed about the disc (the mask's centroid) instead of the image's centre: a zoom-in
    about the centre would cut an off-centre disc out of view, so a locator never learns the large discs of
    a camera that photographs the disc region only."""
    horizontal_flip: bool = True
    vertical_flip: bool = False
    extend_edges: float | None = 0.0
    """Share of samples whose view beyond the photo's edges (a zoom-out, a shift) shows the photo's edge colours
    extended instead of black (the mask stays black there): trained only on a camera whose photo is barely larger
    than its disc, a locator otherwise learns "the disc is most of what the photo shows" and marks a whole fundus
    photo as disc. None: the training job chooses from its data (`training_job.job.resolve_format_choices`)."""


def static_augment(images: np.ndarray, masks: np.ndarray, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every image once per (contrast, brightness) variant; masks are repeated unchanged."""
    variants = [np.clip(c * images + (0.5 - 0.5 * c + b), 0.0, 1.0).astype(np.float32) for c, b in config.static_variants]
    return np.concatenate(variants), np.concatenate([masks] * len(variants))


def random_transforms(batch_size, size: int, config: AugmentConfig, disc_centers=None):
    """[batch, 8] projective transforms mapping output pixel coordinates to input coordinates.

    `disc_centers` ([batch, 2] x, y input pixels, or None): where a `zoom_on_disc` sample is zoomed about; its
    shift is then in output pixels (divided by the scale), so a strong zoom-in keeps the disc in view."""
    import tensorflow as tf  # only where tensors are made: the CLI and the transformer start without TF

    uniform = lambda low, high: tf.random.uniform([batch_size], low, high)  # noqa: E731
    theta = uniform(-1.0, 1.0) * math.radians(config.rotation_deg)
    low, high = config.zoom_range
    scale = tf.exp(uniform(math.log(low), math.log(high)))
    shift_x = uniform(-config.shift_fraction, config.shift_fraction) * size
    shift_y = uniform(-config.shift_fraction, config.shift_fraction) * size

    def flips(enabled: bool):
        return tf.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if enabled else tf.ones([batch_size])

    flip_x, flip_y = flips(config.horizontal_flip), flips(config.vertical_flip)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    a0, a1 = cos * flip_x, -sin * flip_y
    b0, b1 = sin * flip_x, cos * flip_y
    center = (size - 1) / 2.0
    anchor_x = anchor_y = tf.fill([batch_size], center)
    if disc_centers is not None and config.zoom_on_disc > 0:
        on_disc = uniform(0.0, 1.0) < config.zoom_on_disc
        anchor_x = tf.where(on_disc, disc_centers[:, 0], anchor_x)
        anchor_y = tf.where(on_disc, disc_centers[:, 1], anchor_y)
        shift_x, shift_y = tf.where(on_disc, shift_x / scale, shift_x), tf.where(on_disc, shift_y / scale, shift_y)
    a2 = anchor_x - a0 * center - a1 * center + shift_x
    b2 = anchor_y - b0 * center - b1 * center + shift_y
    zeros = tf.zeros([batch_size])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def dynamic_augment(images, masks, config: AugmentConfig):
    """Apply one random geometric transform per sample, identically to image and mask (tf tensors)."""
    import tensorflow as tf

    size = images.shape[1]
    stacked = tf.concat([images, masks], axis=-1)
    disc_centers = None
    if config.zoom_on_disc > 0:
        weight = masks[..., 0]
        total = tf.reduce_sum(weight, axis=[1, 2])
        coords = tf.range(size, dtype=weight.dtype)
        cx = tf.reduce_sum(weight * coords[None, None, :], axis=[1, 2]) / tf.maximum(total, 1e-6)
        cy = tf.reduce_sum(weight * coords[None, :, None], axis=[1, 2]) / tf.maximum(total, 1e-6)
        middle = tf.fill(tf.shape(total), (size - 1) / 2.0)
        disc_centers = tf.stack([tf.where(total > 0, cx, middle), tf.where(total > 0, cy, middle)], axis=1)
    transforms = random_transforms(tf.shape(images)[0], size, config, disc_centers)

    def warp(tensor, fill_mode: str):
        return tf.raw_ops.ImageProjectiveTransformV3(images=tensor, transforms=transforms, output_shape=tf.shape(images)[1:3],
                                                     fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode)

    warped = warp(stacked, "CONSTANT")
    channels = images.shape[-1]
    warped_images, warped_masks = warped[..., :channels], warped[..., channels:]
    if config.extend_edges:
        extended = warp(images, "NEAREST")
        chosen = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < config.extend_edges
        warped_images = tf.where(chosen, extended, warped_images)
    return warped_images, warped_masks
