"""Fuzzing the image decoder: whatever the bytes, the answer is an RGB image or an ImageDecodeError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from preprocessing.decode import DecodeLimits, decode_image, image_size
from preprocessing.errors import ImageDecodeError

LIMITS = DecodeLimits(max_pixels=4_000_000, max_side=4000)


def _seed(format_: str, **options) -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, format_, **options)
    return buffer.getvalue()


SEEDS = [_seed("JPEG"), _seed("JPEG", progressive=True), _seed("PNG")]


def _decodes_or_refuses(data: bytes) -> None:
    try:
        rgb = decode_image(data, LIMITS)
    except ImageDecodeError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert (rgb.shape[1], rgb.shape[0]) == image_size(data, LIMITS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _decodes_or_refuses(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                  min_size=1, max_size=12),
       cut=st.integers(0, 10_000))
def test_mutated_real_images(seed, edits, cut):
    """Bit flips and truncation of real JPEG/PNG files: headers, markers, chunk lengths, CRCs."""
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    _decodes_or_refuses(bytes(data[: max(1, len(data) - cut % len(data))]))


@pytest.mark.parametrize("seed", SEEDS, ids=["jpeg", "progressive", "png"])
def test_seeds_decode(seed):
    assert decode_image(seed, LIMITS).shape == (48, 64, 3)
