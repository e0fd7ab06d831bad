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


def png_of(mask: np.ndarray) -> bytes:
    return cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes()


def two_stage_answer(shape, low: bool) -> Segmentation:
    """An answer as the service sends it, parsed by the client: the wire dicts come from the real writers."""
    from preprocessing.confidence import Confidence
    from preprocessing.measurements import measure

    disc, cup = np.zeros(shape, bool), np.zeros(shape, bool)
    cv2.circle(disc.view(np.uint8), (450, 350), 80, 1, -1)
    cv2.circle(cup.view(np.uint8), (450, 350), 40, 1, -1)
    confidence = Confidence(0.2 if low else 0.9, low, ("not_fundus_colour",) if low else ())
    return Segmentation.from_parts(png_of(disc), {"area_px": int(disc.sum())}, "optic-disc", "7", {"total": 1.0},
                                   png_of(cup), {"area_px": int(cup.sum())}, measure(disc, cup, "R").to_dict(),
                                   confidence.to_dict(), "two-stage")


def test_answers_are_typed_and_round_trip(image_bytes):
    shape = decode_image(image_bytes).shape[:2]
    result = two_stage_answer(shape, low=False)
    assert result.model_version == 7 and result.pipeline == "two-stage" and result.confidence.low is False
    assert 0.45 < result.measurements.vcdr < 0.55 and result.measurements.laterality == "R"
    assert result.measurements.rim_width_px.nasal is not None and result.measurements.rim_width_px.left is None
    assert isinstance(result.measurements.isnt_holds, bool)
    assert result.cup_mask().sum() == result.cup["area_px"] and not (result.cup_mask() & ~result.mask()).any()
    record = result.to_dict()
    assert record["measurements"]["rim_width_px"].keys() == {"superior", "inferior", "nasal", "temporal"}
    assert record["measurements"]["disc_area_px"] == result.mask().sum()  # the rest kept as sent
    assert record["confidence"] == {"score": 0.9, "low": False, "reasons": [], "codes": []}
    single = Segmentation.from_parts(png_of(np.zeros((4, 4), bool)), {}, "optic-disc", 1, None, b"", None, None,
                                     {"score": 0.1, "low": True, "reasons": [], "codes": []}, "single-stage")
    assert single.cup_png is None and single.cup_mask() is None and single.measurements is None


def test_overlay_draws_disc_and_cup_and_prints_the_vcdr_and_low_confidence(image_bytes):
    shape = decode_image(image_bytes).shape[:2]

    def drawn(low: bool) -> np.ndarray:
        rgb = cv2.imdecode(np.frombuffer(overlay(image_bytes, two_stage_answer(shape, low)), np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB).astype(int)

    confident, low = drawn(False), drawn(True)
    green = (confident[..., 1] > 200) & (confident[..., 0] < 80) & (confident[..., 2] < 80)
    blue = (confident[..., 2] > 200) & (confident[..., 0] < 60) & (confident[..., 1] > 100) & (confident[..., 1] < 180)
    assert green[270, 440:460].any() and not green[350, 440:460].any()  # the disc's border, radius 80
    assert blue[310, 440:460].any() and not blue[270, 440:460].any()  # the cup's border, radius 40
    corner = np.s_[: shape[0] // 6, : shape[1] // 3]
    white = (confident[corner] > 240).all(axis=-1)
    assert white.sum() > 200  # the vCDR's text
    red = (low[corner][..., 0] > 200) & (low[corner][..., 1] < 80) & (low[corner][..., 2] < 80)
    assert red.sum() > 200 and not ((confident[corner][..., 0] > 200) & (confident[corner][..., 1] < 80)
                                    & (confident[corner][..., 2] < 80)).sum() > 50  # LOW CONFIDENCE only when low


def test_lateralities_are_one_for_all_or_one_each():
    from serving.client import _sides

    assert _sides("L", 2) == ["L", "L"] and _sides(None, 1) == [None] and _sides(["L", None], 2) == ["L", None]
    with pytest.raises(SegmentationError, match="2 lateralities for 3 images"):
        _sides(["L", "R"], 3)
