"""Stage 2's view of an image: a square centred on the located disc, its side a fixed multiple of
the disc's diameter, so every instrument's disc reaches the model at the same scale.

The disc fills ~5% of a cropped DRISHTI photo and ~60% of a RIM-ONE DL crop; a whole-image model
has to learn both scales and mixes them on a camera it never saw. Cropped this way the disc is
always `size / multiple` pixels across, whatever the camera, the field of view or the resolution.

A square may reach past the image's edges (a RIM-ONE crop is barely larger than its disc): the
outside is black, as the outside of a fundus camera's field of view is. Nothing larger than the
model's input is ever allocated, however large the square: only the part inside the image is
resized. The inverse maps a crop-sized probability map back onto the original pixel grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from preprocessing.geometry import plane
from preprocessing.transform import PreprocessConfig, equalise


@dataclass(frozen=True)
class DiscCropConfig:
    """Saved with every two-stage version (the card), like PreprocessConfig."""

    multiple: float = 2.5
    """Crop side / disc diameter: the disc is size/multiple pixels across (51 at 128), with ~0.75 diameters of
    context on each side, enough for a stage-1 centre that is a third of a diameter off."""
    size: int = 128

    def __post_init__(self) -> None:
        if not (1.2 <= self.multiple <= 8.0) or self.size < 32:
            raise ValueError(f"invalid disc crop: {self}")


@dataclass(frozen=True)
class SquareBox:
    """Columns x0:x0+side, rows y0:y0+side of an image of height x width (may extend past it)."""

    height: int
    width: int
    x0: int
    y0: int
    side: int

    @classmethod
    def around(cls, height: int, width: int, center_x: float, center_y: float, side: float) -> SquareBox:
        side = max(8, int(round(side)))
        return cls(height, width, int(round(center_x - side / 2)), int(round(center_y - side / 2)), side)

    @classmethod
    def for_disc(cls, height: int, width: int, center_x: float, center_y: float, diameter: float,
                 config: DiscCropConfig) -> SquareBox:
        return cls.around(height, width, center_x, center_y, diameter * config.multiple)

    @property
    def inside(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the part inside the image; None when the square misses it."""
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x0 + self.side, self.width), min(self.y0 + self.side, self.height)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    @property
    def center(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2


def crop_resized(array: np.ndarray, box: SquareBox, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The square resized to size x size (black outside the image); `array` is H x W or H x W x C."""
    out = np.zeros((size, size, *array.shape[2:]), array.dtype)
    inside = box.inside
    if inside is None:
        return out
    x0, y0, x1, y1 = inside
    scale = size / box.side
    # where the inside part lands in the output, rounded outward-consistently so that it tiles exactly
    ox0, oy0 = int(round((x0 - box.x0) * scale)), int(round((y0 - box.y0) * scale))
    ox1, oy1 = int(round((x1 - box.x0) * scale)), int(round((y1 - box.y0) * scale))
    if ox1 <= ox0 or oy1 <= oy0:
        return out
    part = cv2.resize(np.ascontiguousarray(array[y0:y1, x0:x1]), (ox1 - ox0, oy1 - oy0), interpolation=interpolation)
    out[oy0:oy1, ox0:ox1] = part.reshape(out[oy0:oy1, ox0:ox1].shape)
    return out


def prepare_crop(rgb: np.ndarray, box: SquareBox, config: DiscCropConfig,
                 preprocess: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """H x W x 3 uint8 -> size x size x 3 float32 in [0, 1]: the same contrast step as stage 1."""
    return equalise(crop_resized(rgb, box, config.size), preprocess)


def restore_inside(probability: np.ndarray, box: SquareBox) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """size x size (x C) probabilities -> the part of the original grid the square covers: (region, (x0, y0, x1,
    y1)); None when the square misses the image. Bilinear, in the same pixel-centre convention as cv2.resize. The
    disc's square is a few diameters wide, so on a 40-megapixel photo this is a small fraction of the photo."""
    probability = np.asarray(probability, np.float32)
    channels = probability.shape[2:] if probability.ndim == 3 and probability.shape[2] > 1 else ()
    probability = probability.reshape(probability.shape[0], probability.shape[1], *channels)
    inside = box.inside
    if inside is None:
        return None
    x0, y0, x1, y1 = inside
    scale = probability.shape[0] / box.side
    # output pixel (X, Y) of the inside region <- probability pixel ((X + x0 - box.x0 + 0.5) * scale - 0.5, ...)
    matrix = np.array([[scale, 0.0, (x0 - box.x0 + 0.5) * scale - 0.5],
                       [0.0, scale, (y0 - box.y0 + 0.5) * scale - 0.5]], np.float64)
    region = cv2.warpAffine(probability, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    return region.reshape(y1 - y0, x1 - x0, *channels), inside


def restore_crop(probability: np.ndarray, box: SquareBox) -> np.ndarray:
    """size x size (x C) probabilities -> H x W (x C) float32 on the original grid, 0 outside the square."""
    probability = np.asarray(probability, np.float32)
    channels = probability.shape[2:] if probability.ndim == 3 and probability.shape[2] > 1 else ()
    full = np.zeros((box.height, box.width, *channels), np.float32)
    restored = restore_inside(probability, box)
    if restored is not None:
        region, (x0, y0, x1, y1) = restored
        full[y0:y1, x0:x1] = region
    return full


def disc_center_and_diameter(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(center_x, center_y, diameter) of a disc mask: centroid and 2 * sqrt(area / pi) (the paper's radius,
    doubled); None for an empty mask. Training crops around the expert disc with the same rule."""
    mask = np.ascontiguousarray(plane(mask))
    # a bool mask is read as 0/1 bytes in place (no full-size float copy of a 40 MP mask); soft masks by their fraction
    moments = cv2.moments(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.float32, copy=False))
    area = moments["m00"]
    if area <= 0:
        return None
    return moments["m10"] / area, moments["m01"] / area, 2.0 * math.sqrt(area / math.pi)
