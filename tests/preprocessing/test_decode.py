import io

import numpy as np
import pytest
from PIL import Image

from preprocessing import DecodeLimits, ImageDecodeError, decode_image, decode_mask
from preprocessing import decode as decode_module
from tests.helpers import DRISHTI, RIM_ONE, encode, synthetic_fundus


def pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def opencv_decodes(monkeypatch):
    """Records which decodes took OpenCV's path."""
    taken = []

    def recording(data, image):
        rgb = fast_path(data, image)
        taken.append(rgb is not None)
        return rgb

    fast_path = decode_module._opencv_jpeg
    monkeypatch.setattr(decode_module, "_opencv_jpeg", recording)
    return taken


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


@pytest.mark.parametrize("photo", [DRISHTI / "images" / "drishtiGS_002.jpg", *sorted((RIM_ONE / "images").glob("r[123]_Im00*.jpg"))],
                         ids=lambda path: path.stem)
def test_fundus_jpegs_take_the_fast_path_and_decode_to_pillows_pixels(photo, opencv_decodes):
    data = photo.read_bytes()
    out = decode_image(data)
    assert opencv_decodes == [True]
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, pillow_rgb(data))


def test_a_grey_jpeg_takes_the_fast_path_and_becomes_pillows_rgb(opencv_decodes):
    data = encode(synthetic_fundus()[0][..., 1], "JPEG", quality=90)
    assert np.array_equal(decode_image(data), pillow_rgb(data))
    assert opencv_decodes == [True]


def test_rotated_cmyk_and_png_images_take_pillows_path(opencv_decodes):
    rgb, _ = synthetic_fundus(height=100, width=200)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 3  # upside down on display
    rotated = io.BytesIO()
    image.save(rotated, format="JPEG", exif=exif.tobytes())
    assert np.array_equal(decode_image(rotated.getvalue()), pillow_rgb(rotated.getvalue())[::-1, ::-1])
    cmyk = io.BytesIO()
    image.convert("CMYK").save(cmyk, format="JPEG", quality=95)
    assert np.array_equal(decode_image(cmyk.getvalue()), pillow_rgb(cmyk.getvalue()))
    decode_image(encode(rgb))
    assert opencv_decodes == [False, False, False]


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


def test_truncated_jpeg_is_rejected(opencv_decodes):
    data = (DRISHTI / "images" / "drishtiGS_002.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_image(data[: len(data) // 3])
    assert opencv_decodes == [False]  # libjpeg would have padded the missing rows with grey


def test_a_jpeg_whose_scan_is_cut_short_decodes_as_pillow_decodes_it():
    """A scan cut short but closed with an end marker: Pillow and libjpeg both fill the rest, so both paths agree."""
    data = (DRISHTI / "images" / "drishtiGS_002.jpg").read_bytes()
    damaged = data[: len(data) // 2] + b"\xff\xd9"
    assert np.array_equal(decode_image(damaged), pillow_rgb(damaged))


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
