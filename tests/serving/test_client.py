"""The Python client's offline parts: overlays, masks, raw OIP buffers, configuration errors."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from preprocessing.decode import decode_image
from serving.client import RestClient, Segmentation, SegmentationError, _split_raw, connect, overlay


def test_overlay_draws_the_contour_on_the_image(image_bytes):
    rgb = decode_image(image_bytes)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[300:400, 400:500] = True
    drawn = cv2.imdecode(np.frombuffer(overlay(image_bytes, mask), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == rgb.shape
    green = (drawn[..., 1] > 200) & (drawn[..., 0] < 80) & (drawn[..., 2] < 80)
    assert green[295:305, 400:500].any() and green[350, 395:405].any()  # on the border
    assert not green[340:360, 440:460].any()  # not inside


def test_overlay_refuses_a_mask_of_another_size(image_bytes):
    with pytest.raises(SegmentationError, match="mask is"):
        overlay(image_bytes, np.zeros((10, 10), bool))


def test_segmentation_mask_roundtrip():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:15] = True
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
    result = Segmentation(png.tobytes(), {"area_px": 50}, "optic-disc", 3)
    assert np.array_equal(result.mask(), mask)
    assert result.to_dict()["model_version"] == 3 and "mask_png" not in result.to_dict()
    with pytest.raises(SegmentationError):
        Segmentation(b"nope", {}, "optic-disc", 3).mask()


def test_raw_bytes_tensors_are_split():
    items = [b"\x89PNG", b"", b"{}"]
    buffer = b"".join(struct.pack("<I", len(i)) + i for i in items)
    assert _split_raw(buffer) == items


def test_client_configuration():
    assert isinstance(connect(), RestClient)
    with pytest.raises(SegmentationError, match="not an http"):
        RestClient("ftp://example")
    client = RestClient("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(SegmentationError, match="cannot reach"):
        client.segment([b"x"])
    assert client.ready() is False
