import io

import numpy as np
import pytest
from PIL import Image

from preprocessing import DecodeLimits, ImageDecodeError, decode_image, decode_mask
from tests.helpers import DRISHTI, encode, synthetic_fundus


def test_decodes_jpeg_and_png_to_rgb():
    rgb, _ = synthetic_fundus()
    for fmt in ("PNG", "JPEG"):
        out = decode_image(encode(rgb, fmt, **({"quality": 95} if fmt == "JPEG" else {})))
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb).mean() < 4


def test_grey_rgba_and_16_bit_become_rgb():
    rgb, _ = synthetic_fundus()
    grey = rgb[..., 0]
    assert np.array_equal(decode_image(encode(grey))[..., 2], grey)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert np.array_equal(decode_image(encode(rgba)), rgb)
    sixteen = grey.astype(np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, format="PNG")
    out = decode_image(buffer.getvalue())
    assert out.shape == (*grey.shape, 3) and np.array_equal(out[..., 0], grey)


def test_exif_orientation_is_applied():
    rgb, _ = synthetic_fundus(height=100, width=200)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).shape == (200, 100, 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not a readable image"),
        ("text", "expected image bytes"),
    ],
)
def test_bad_bytes_raise_clear_errors(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_rejected():
    data = (DRISHTI / "images" / "drishtiGS_002.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_image(data[: len(data) // 3])


def test_unsupported_format_and_absurd_dimensions_are_rejected_before_decoding():
    rgb, _ = synthetic_fundus()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="GIF")
    with pytest.raises(ImageDecodeError, match="unsupported image format GIF"):
        decode_image(buffer.getvalue())
    # A 60000 x 60000 PNG header: a bomb of 3.6 G pixels in a few hundred bytes.
    bomb = encode(np.zeros((1, 1), np.uint8))
    bomb = bomb[:16] + (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big") + bomb[24:]
    with pytest.raises(ImageDecodeError, match="larger than the limit|not a readable image"):
        decode_image(bomb)
    with pytest.raises(ImageDecodeError, match="larger than the limit"):
        decode_image(encode(rgb), DecodeLimits(max_pixels=1000))
    with pytest.raises(ImageDecodeError, match="smaller than"):
        decode_image(encode(rgb[:10, :10]))
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        decode_image(encode(rgb), DecodeLimits(max_bytes=100))


def test_decode_mask_is_boolean():
    _, mask = synthetic_fundus()
    out = decode_mask(encode(mask.astype(np.uint8) * 255))
    assert out.dtype == bool and np.array_equal(out, mask)
