"""Measurements of a disc mask that clinicians use (the vertical diameter feeds the cup/disc ratio)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np


def plane(mask: np.ndarray) -> np.ndarray:
    """H x W, H x W x 1 or 1 x H x W x 1 -> H x W. Unlike `squeeze`, a mask one pixel high or wide (the bounding
    box of a one-pixel disc) keeps both of its axes."""
    array = np.asarray(mask)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


@dataclass(frozen=True)
class Ellipse:
    center_x: float
    center_y: float
    major_axis: float
    minor_axis: float
    angle_deg: float


@dataclass(frozen=True)
class DiscGeometry:
    """Pixel units of the image the mask is on; `None` fields mean no disc was found."""

    area_px: int
    equivalent_radius_px: float
    centroid: tuple[float, float] | None  # (x, y)
    bbox: tuple[int, int, int, int] | None  # (x, y, width, height)
    ellipse: Ellipse | None
    vertical_diameter_px: int
    horizontal_diameter_px: int

    def to_dict(self) -> dict:
        return asdict(self)


def disc_geometry(mask: np.ndarray) -> DiscGeometry:
    """Measured on the mask's bounding box plus a pixel of background (what the contour needs), in
    image coordinates: the same numbers as on the whole image, without scanning all of its pixels
    (a disc is a few percent of a fundus photo) several times over."""
    mask = plane(mask)
    pixels = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)
    left, top, width, height = cv2.boundingRect(pixels)
    if width == 0:
        return DiscGeometry(0, 0.0, None, None, None, 0, 0)
    left, top = max(left - 1, 0), max(top - 1, 0)
    box = pixels[top:top + height + 2, left:left + width + 2]
    area = int(np.count_nonzero(box))
    ys, xs = np.nonzero(box)
    ys, xs = ys + top, xs + left
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    ellipse = None
    contours, _ = cv2.findContours(box, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(left, top))
    contour = max(contours, key=cv2.contourArea)
    if len(contour) >= 5:
        (cx, cy), (a, b), angle = cv2.fitEllipse(contour)
        major, minor = max(a, b), min(a, b)
        ellipse = Ellipse(float(cx), float(cy), float(major), float(minor), float(angle))
    return DiscGeometry(
        area_px=area,
        equivalent_radius_px=math.sqrt(area / math.pi),
        centroid=(float(xs.mean()), float(ys.mean())),
        bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
        ellipse=ellipse,
        vertical_diameter_px=y1 - y0 + 1,
        horizontal_diameter_px=x1 - x0 + 1,
    )
