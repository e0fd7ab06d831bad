"""Small images the tests make themselves, and where the real datasets live."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DRISHTI = SHARED_DATA / "drishti-gs1"
RIM_ONE = SHARED_DATA / "rim-one-dl"


def synthetic_fundus(height: int = 300, width: int = 400, center=(220, 140), radius: int = 30, seed: int = 0):
    """An orange fundus-like disc of light with a bright optic disc; returns (rgb uint8, disc mask bool)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), int(min(height, width) * 0.48), (160, 70, 30), -1)
    cv2.circle(image, center, radius, (250, 220, 160), -1)
    image = np.clip(image.astype(np.int16) + rng.integers(-8, 8, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, center, radius, 1, -1)
    return image, mask.astype(bool)


def encode(array: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()
