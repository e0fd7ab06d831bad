"""Helpers every test package may use: small images the tests make themselves, where the real
datasets live, the AWS_* variables that point boto3 at the test S3 endpoint, and `eventually`.

Each test package has one helper module, imported by its full name (`tests.helpers`,
`tests.serving.helpers`, `tests.serving.predictor.helpers`, `tests.k8s.manifests`); test modules
never import from one another.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image

from fundus_seg.paths import SHARED_DATA

DRISHTI = SHARED_DATA / "drishti-gs1"
RIM_ONE = SHARED_DATA / "rim-one-dl"

T = TypeVar("T")


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


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.1) -> T:
    """Retry `check` until it returns something truthy (returned); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(interval)


S3_ENVIRONMENT_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION")


def s3_environment(endpoint: str, nowhere: Path) -> dict[str, str]:
    """The AWS_* variables that point boto3 (in this process or a child) at `endpoint`."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(nowhere),  # ignore any ~/.aws of the machine
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
    }
