"""Measurements of a disc mask that clinicians use (the vertical diameter feeds the cup/disc ratio)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np


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
    mask = np.asarray(mask).squeeze().astype(bool)
    area = int(mask.sum())
    if area == 0:
        return DiscGeometry(0, 0.0, None, None, None, 0, 0)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    ellipse = None
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
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
