"""The paper's geometry and contrast steps, and their inverse.

Forward: crop a 10% border on every edge (removes the camera's black rim), resize to 128x128,
CLAHE, scale to [0, 1]. Inverse: a 128x128 probability map is resized back onto the crop box
and placed on the original pixel grid, so masks and measurements come back at full resolution.

CLAHE runs on the L channel of CIE L*a*b*: it equalises local contrast (the disc rim, vessels)
without shifting hue, which equalising R, G and B separately would do.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the model sees; saved with every model version."""

    size: int = 128
    crop_fraction: float = 0.10
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8


@dataclass(frozen=True)
class CropBox:
    """Where the model's input came from in the original image: rows y0:y1, columns x0:x1."""

    height: int
    width: int
    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def for_shape(cls, height: int, width: int, crop_fraction: float) -> CropBox:
        dy, dx = int(round(height * crop_fraction)), int(round(width * crop_fraction))
        return cls(height, width, dy, height - dy, dx, width - dx)


def _crop(array: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, CropBox]:
    box = CropBox.for_shape(array.shape[0], array.shape[1], config.crop_fraction)
    return array[box.y0 : box.y1, box.x0 : box.x1], box


def preprocess_image(rgb: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> tuple[np.ndarray, CropBox]:
    """H x W x 3 uint8 RGB -> (size x size x 3 float32 in [0, 1], crop box for the inverse)."""
    cropped, box = _crop(rgb, config)
    small = cv2.resize(cropped, (config.size, config.size), interpolation=cv2.INTER_AREA)
    return equalise(small, config), box


def equalise(small: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """The contrast step on a model-sized uint8 RGB image (both stages): CLAHE on L*, then [0, 1] float32."""
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0


def preprocess_mask(mask: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """H x W bool -> size x size x 1 float32 disc fraction per pixel (soft at the boundary).

    Area interpolation keeps the sub-pixel boundary, which the model can learn and the inverse
    can turn back into a sharper full-resolution edge than a 128-pixel staircase.
    """
    cropped, _ = _crop(mask.astype(np.float32), config)
    small = cv2.resize(cropped, (config.size, config.size), interpolation=cv2.INTER_AREA)
    return small[..., None]


def restore_probability(probability: np.ndarray, box: CropBox) -> np.ndarray:
    """size x size (x 1) probability -> H x W float32 on the original grid (0 outside the crop)."""
    probability = np.asarray(probability, dtype=np.float32).reshape(probability.shape[0], probability.shape[1])
    full = np.zeros((box.height, box.width), dtype=np.float32)
    full[box.y0 : box.y1, box.x0 : box.x1] = cv2.resize(
        probability, (box.x1 - box.x0, box.y1 - box.y0), interpolation=cv2.INTER_LINEAR
    )
    return full
