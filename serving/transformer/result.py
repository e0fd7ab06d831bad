"""From the model's probability map to what a caller gets: mask PNG + disc geometry.

Kept free of KServe so the benchmark's in-process path measures exactly what the transformer does.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from preprocessing.geometry import disc_geometry
from preprocessing.pipeline import finish
from preprocessing.transform import CropBox

PNG_OPTIONS = [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1]
"""1-bit PNG, light compression: a fundus-sized mask is ~2 KB and takes ~1 ms to encode."""


def segment_probability(probability: np.ndarray, box: CropBox, threshold: float = 0.5) -> tuple[bytes, dict[str, Any]]:
    """The shared post-processing (full resolution, threshold, largest component, holes filled),
    then the mask as PNG bytes and its geometry (rounded to 0.01 px) as a JSON-ready dict."""
    mask = finish(probability, box, threshold)
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255, PNG_OPTIONS)
    if not ok:
        raise ValueError("could not encode the mask as PNG")
    return png.tobytes(), _rounded(disc_geometry(mask).to_dict())


def _rounded(value: Any, digits: int = 2) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value
