"""Turn untrusted bytes into an RGB uint8 array, or fail with a clear ImageDecodeError.

The header is read first (Pillow opens lazily), so absurd dimensions are refused before any
pixel memory is allocated: a decompression bomb costs a few bytes of parsing, not gigabytes.
The work of a decode is bounded too: a progressive JPEG decodes every scan over the whole image,
so a 64 KB file of thousands of scans costs seconds of CPU; the scans are counted from the
markers before decoding. EXIF orientation is applied so a phone-rotated JPEG segments the way a
clinician sees it.

Ordinary 8-bit JPEGs (every fundus photo we have seen) are decoded by OpenCV's libjpeg-turbo once
Pillow has checked the header: the same pixels as Pillow's decode (checked on all 586 JPEGs of
both datasets), sooner (a DRISHTI photo: 2.6 against 2.9 ms, `experiments/hot_path_costs.py`, with
fewer full-size copies); anything else, or anything OpenCV cannot decode whole, takes Pillow's
path, which also gives the clear error. A JPEG whose scan is cut short but closed by
an end marker decodes on both paths alike (the rest filled in); libjpeg then also writes a
"Corrupt JPEG data" warning to stderr, which OpenCV gives no way to silence.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from preprocessing.errors import ImageDecodeError

SUPPORTED_FORMATS = ("JPEG", "PNG")
EXIF_ORIENTATION = 0x0112
JPEG_END = b"\xff\xd9"
_OPENCV_JPEG = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


@dataclass(frozen=True)
class DecodeLimits:
    """What an acceptable image looks like; the defaults cover every fundus camera we know of."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000  # e.g. 8000 x 5000
    max_side: int = 12_000
    min_side: int = 32
    max_jpeg_scans: int = 64  # baseline JPEGs have 1, progressive ones ~10; libjpeg-turbo's tools stop at 500


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan markers in a JPEG. Entropy-coded data stuffs every 0xFF with 0x00, so FF DA
    occurs only as a marker (an EXIF thumbnail's own scans are counted too: a safe overcount)."""
    return bytes(data).count(b"\xff\xda")


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty image: 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"image is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"not a readable image ({exc.__class__.__name__}); send a JPEG or PNG") from None
    except Exception as exc:  # Pillow raises assorted errors on garbage headers
        raise ImageDecodeError(f"not a readable image: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {image.format}; send a JPEG, PNG or DICOM fundus photo")
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageDecodeError(
            f"image is {width}x{height}, larger than the limit of {limits.max_pixels} pixels / {limits.max_side} px per side"
        )
    if min(width, height) < limits.min_side:
        raise ImageDecodeError(f"image is {width}x{height}, smaller than {limits.min_side} px per side")
    if image.format == "JPEG" and (scans := jpeg_scans(data)) > limits.max_jpeg_scans:
        raise ImageDecodeError(f"JPEG has {scans} scans, more than the limit of {limits.max_jpeg_scans}; "
                               "re-encode it as a baseline or ordinary progressive JPEG")
    return image


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then 'DICM' (`preprocessing.dicom` decodes it)."""
    return isinstance(data, (bytes, bytearray, memoryview)) and len(data) >= 132 and bytes(data[128:132]) == b"DICM"


def image_size(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[int, int]:
    """(width, height) from the header alone, with every limit checked; nothing is decoded. DICOM included."""
    if is_dicom(data):
        from preprocessing.dicom import header_size

        return header_size(data, limits)
    return _open(data, limits).size


def _load(image: Image.Image) -> Image.Image:
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
        return image
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageDecodeError(f"corrupt image data: {exc}") from None


def _opencv_jpeg(data: bytes, image: Image.Image) -> np.ndarray | None:
    """An RGB or grey JPEG with nothing to rotate and its end marker where it belongs, decoded by OpenCV; None for
    every other image and for anything OpenCV refuses or decodes to another size (Pillow's path then decides)."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L") or bytes(data[-2:]) != JPEG_END:
        return None  # no end marker: truncated, and libjpeg would pad it with grey where Pillow refuses it
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            return None
    except Exception:  # a malformed EXIF block: Pillow's path reports it
        return None
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), _OPENCV_JPEG)
    if rgb is None or rgb.shape != (image.height, image.width, 3):
        return None
    return rgb


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype in (np.uint16, np.int32, np.int64) or array.dtype.kind in "iu":
        # 16-bit PNG (mode I;16 / I): scale the full range down to 8 bits.
        return (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return np.clip(array, 0, 255).astype(np.uint8)


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode JPEG/PNG bytes (8/16-bit, grey, RGB, RGBA, palette, EXIF-rotated) or a single-frame DICOM fundus
    photo (`preprocessing.dicom`) to H x W x 3 uint8 RGB."""
    if is_dicom(data):
        from preprocessing.dicom import decode_dicom

        return decode_dicom(data, limits).rgb
    image = _open(data, limits)
    rgb = _opencv_jpeg(data, image)
    if rgb is not None:
        return rgb
    image = _load(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in image.info):
        # Fundus images have no meaningful transparency: composite on black like the camera border.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return np.ascontiguousarray(rgb)


def decode_mask(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode a binary mask image to H x W bool (any non-zero pixel is foreground)."""
    image = _load(_open(data, limits))
    array = np.asarray(image.convert("L") if image.mode not in ("L", "1", "I;16", "I") else image)
    return array > 0
