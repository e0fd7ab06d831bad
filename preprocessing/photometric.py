"""Augmentation aimed at cameras the model never saw: what differs between fundus instruments.

Applied to the raw uint8 crop BEFORE the shared contrast step (CLAHE), so the model sees what a
new camera's photo looks like after the very preprocessing serving runs. Each effect is drawn
independently with its own probability; strengths are those seen between fundus cameras (white
balance and exposure, gamma, optics blur or in-camera sharpening, JPEG re-compression, sensor
noise, the vignetting of the illumination ring).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PhotometricConfig:
    """Probabilities (p_*) and ranges; all p_* = 0 turns the augmentation off."""

    p_white_balance: float = 0.8
    channel_gain: tuple[float, float] = (0.75, 1.25)
    p_exposure: float = 0.8
    contrast: tuple[float, float] = (0.7, 1.3)
    brightness: tuple[float, float] = (-0.15, 0.15)
    p_saturation: float = 0.0
    saturation: tuple[float, float] = (0.4, 1.4)
    """Chroma scale about each pixel's grey: cameras differ in how orange or pale the same retina looks."""
    p_grayscale: float = 0.0
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.6, 1.6)
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    p_sharpen: float = 0.2
    sharpen_amount: tuple[float, float] = (0.3, 1.5)
    p_jpeg: float = 0.4
    jpeg_quality: tuple[int, int] = (25, 95)
    p_noise: float = 0.3
    noise_sigma: tuple[float, float] = (2.0, 10.0)
    p_vignette: float = 0.3
    vignette_strength: tuple[float, float] = (0.1, 0.6)

    @classmethod
    def off(cls) -> PhotometricConfig:
        return cls(**{name: 0.0 for name in cls.__dataclass_fields__ if name.startswith("p_")})


def photometric_augment(rgb: np.ndarray, rng: np.random.Generator, config: PhotometricConfig = PhotometricConfig()) -> np.ndarray:
    """H x W x 3 uint8 -> H x W x 3 uint8 with a random draw of every enabled effect."""
    image = rgb.astype(np.float32) / 255.0
    chance = lambda p: p > 0 and rng.random() < p  # noqa: E731
    uniform = lambda bounds: rng.uniform(*bounds)  # noqa: E731
    if chance(config.p_white_balance):
        image = image * rng.uniform(*config.channel_gain, size=3).astype(np.float32)
    if chance(config.p_exposure):
        image = uniform(config.contrast) * (image - 0.5) + 0.5 + uniform(config.brightness)
    chroma = None  # the chroma scale about each pixel's grey: 0 is grey
    if chance(config.p_grayscale):
        chroma = 0.0
    elif chance(config.p_saturation):
        chroma = uniform(config.saturation)
    if chroma is not None:
        grey = image.mean(axis=2, keepdims=True)
        image = grey + chroma * (image - grey)
    if chance(config.p_gamma):
        image = np.power(np.clip(image, 0.0, 1.0), uniform(config.gamma))
    if chance(config.p_blur):
        image = cv2.GaussianBlur(image, (0, 0), uniform(config.blur_sigma))
    elif chance(config.p_sharpen):
        blurred = cv2.GaussianBlur(image, (0, 0), 1.5)
        image = image + uniform(config.sharpen_amount) * (image - blurred)
    if chance(config.p_vignette):
        height, width = image.shape[:2]
        ys, xs = np.ogrid[:height, :width]
        cy, cx = height * rng.uniform(0.3, 0.7), width * rng.uniform(0.3, 0.7)
        radius = np.hypot((ys - cy) / height, (xs - cx) / width) / np.sqrt(0.5)
        image = image * (1.0 - uniform(config.vignette_strength) * radius**2)[..., None].astype(np.float32)
    if chance(config.p_noise):
        image = image + rng.normal(0.0, uniform(config.noise_sigma) / 255.0, image.shape).astype(np.float32)
    out = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if chance(config.p_jpeg):
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:  # channel order does not matter for a round trip
            out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return out
