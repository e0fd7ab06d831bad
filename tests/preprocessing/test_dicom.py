"""preprocessing.dicom: real fundus photos from ../shared/data made into DICOM in every transfer syntax a camera
writes, decoded back; a table of ill objects that must be refused with a clear message and never echo a patient."""
from __future__ import annotations

import numpy as np
import pytest

from preprocessing.decode import DecodeLimits, decode_image
from preprocessing.dicom import DicomDecodeError, MultiFrameError, NotAnImageError, decode_dicom, is_dicom
from tests.helpers import DRISHTI, PATIENT, fundus_dicom

LOSSLESS = {
    "explicit VR little endian": "1.2.840.10008.1.2.1",
    "implicit VR little endian": "1.2.840.10008.1.2",
    "RLE": "1.2.840.10008.1.2.5",
    "JPEG-LS lossless": "1.2.840.10008.1.2.4.80",
    "JPEG 2000 lossless": "1.2.840.10008.1.2.4.90",
}
LOSSY = {  # transfer syntax, the mean absolute difference it may cost (0-255)
    "JPEG baseline (YBR_FULL_422)": ("1.2.840.10008.1.2.4.50", 2.0),
    "JPEG-LS near-lossless": ("1.2.840.10008.1.2.4.81", 2.0),
    "JPEG 2000": ("1.2.840.10008.1.2.4.91", 2.0),
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    path = DRISHTI / "images" / "drishtiGS_002.jpg"
    if not path.is_file():
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    return decode_image(path.read_bytes())


@pytest.mark.parametrize("syntax", LOSSLESS.values(), ids=LOSSLESS.keys())
def test_lossless_transfer_syntaxes_decode_to_the_same_pixels(photo, syntax):
    image = decode_dicom(fundus_dicom(photo, syntax))
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == photo.shape
    assert np.array_equal(image.rgb, photo)


@pytest.mark.parametrize("syntax, tolerance", LOSSY.values(), ids=LOSSY.keys())
def test_lossy_transfer_syntaxes_decode_to_rgb_close_to_the_photo(photo, syntax, tolerance):
    image = decode_dicom(fundus_dicom(photo, syntax))
    difference = np.abs(image.rgb.astype(int) - photo).mean(axis=(0, 1))
    assert (difference < tolerance).all(), difference  # per channel: YBR was turned back into RGB, not left as is


def test_jpeg_lossless_written_by_dcmtk_decodes_exactly(photo, tmp_path):
    import shutil
    import subprocess

    if shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk is not installed (tools/install-dicom-tools.sh)")
    (tmp_path / "in.dcm").write_bytes(fundus_dicom(photo))
    subprocess.run(["dcmcjpeg", "+e1", str(tmp_path / "in.dcm"), str(tmp_path / "out.dcm")], check=True)
    data = (tmp_path / "out.dcm").read_bytes()
    assert b"1.2.840.10008.1.2.4.70" in data[:1024]  # JPEG lossless, first-order prediction
    assert np.array_equal(decode_dicom(data).rgb, photo)


def test_16_bit_grey_is_scaled_by_bits_stored_and_monochrome1_inverted(photo):
    green = photo[..., 1].astype(np.uint16)
    ten_bit = fundus_dicom(green * 4, sop_class="1.2.840.10008.5.1.4.1.1.77.1.5.2", BitsStored=10, HighBit=9)
    assert np.array_equal(decode_dicom(ten_bit).rgb, np.repeat(green[..., None], 3, axis=2))
    inverted = fundus_dicom(255 - photo[..., 1], PhotometricInterpretation="MONOCHROME1")
    assert np.array_equal(decode_dicom(inverted).rgb[..., 0], photo[..., 1])


def test_multi_frame_is_refused_unless_one_frame_is_chosen(photo):
    data = fundus_dicom(photo[:200, :300], frames=3)
    with pytest.raises(MultiFrameError, match="3 frames"):
        decode_dicom(data)
    image = decode_dicom(data, frame=2)  # frame i is the photo brightened by i
    assert image.source.frame == 2
    assert np.abs(image.rgb.astype(int) - photo[:200, :300]).mean() == pytest.approx(2.0, abs=0.05)
    with pytest.raises(MultiFrameError, match="frame 3 does not exist"):
        decode_dicom(data, frame=3)


@pytest.mark.parametrize("tags, expected", [
    ({"ImageLaterality": "R"}, "R"), ({"ImageLaterality": "L"}, "L"), ({"ImageLaterality": "U"}, None),
    ({"ImageLaterality": "B"}, None), ({"Laterality": "L"}, "L"), ({}, None),
])
def test_image_laterality_gives_the_eye(photo, tags, expected):
    assert decode_dicom(fundus_dicom(photo[:64, :64], laterality=None, **tags)).laterality == expected


def test_the_source_reference_and_a_header_without_pixels_come_back(photo):
    image = decode_dicom(fundus_dicom(photo[:64, :64], "1.2.840.10008.1.2.4.50"))
    assert image.source.sop_class_uid == "1.2.840.10008.5.1.4.1.1.77.1.5.1" and image.source.frame is None
    assert image.source.study_instance_uid == image.dataset.StudyInstanceUID
    assert "PixelData" not in image.dataset
    assert PATIENT["PatientID"] not in repr(image)


def _pdf() -> bytes:
    """An Encapsulated PDF object: its document, no pixels."""
    data = _without_pixels(fundus_dicom(np.zeros((64, 64, 3), np.uint8), sop_class="1.2.840.10008.5.1.4.1.1.104.1"))
    return data


def _without_pixels(data: bytes) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) - 5000]


ILL = {  # name -> (bytes maker, limits, message)
    "a PNG": (lambda p: b"\x89PNG\r\n\x1a\n" + bytes(200), DecodeLimits(), "not a DICOM file"),
    "garbage after the preamble": (lambda p: bytes(128) + b"DICM" + bytes(range(256)) * 4, DecodeLimits(),
                                   "not a readable DICOM file|no SOP Class"),
    "an encapsulated PDF": (lambda p: _pdf(), DecodeLimits(), "Encapsulated PDF Storage"),
    "a CT image": (lambda p: fundus_dicom(p[:64, :64], sop_class="1.2.840.10008.5.1.4.1.1.2"), DecodeLimits(),
                   "CT Image Storage"),
    "no pixel data": (lambda p: _without_pixels(fundus_dicom(p[:64, :64])), DecodeLimits(), "no Pixel Data"),
    "a header bomb (Rows 60000)": (lambda p: fundus_dicom(p[:64, :64], Rows=60000, Columns=60000), DecodeLimits(),
                                   "larger than the limit"),
    "too small": (lambda p: fundus_dicom(p[:16, :16]), DecodeLimits(), "smaller than 32"),
    "too many bytes": (lambda p: fundus_dicom(p), DecodeLimits(max_bytes=100_000), "more than the limit of 100000"),
    "truncated native pixels": (lambda p: _truncated(fundus_dicom(p[:200, :200])), DecodeLimits(), "corrupt native"),
    "truncated JPEG": (lambda p: _truncated(fundus_dicom(p, "1.2.840.10008.1.2.4.50")), DecodeLimits(), "truncated"),
    "too many JPEG scans": (lambda p: fundus_dicom(p[:64, :64], "1.2.840.10008.1.2.4.50"),
                            DecodeLimits(max_jpeg_scans=0), "1 scans, more than the limit of 0"),
    "an unknown colour": (lambda p: fundus_dicom(p[:64, :64], PhotometricInterpretation="CMYK"), DecodeLimits(),
                          "unsupported colour"),
    "no study UID": (lambda p: fundus_dicom(p[:64, :64], StudyInstanceUID=None), DecodeLimits(), "StudyInstanceUID"),
}


@pytest.mark.parametrize("make, limits, message", ILL.values(), ids=ILL.keys())
def test_ill_objects_are_refused_clearly_without_patient_data(photo, make, limits, message):
    with pytest.raises(DicomDecodeError, match=message) as caught:
        decode_dicom(make(photo), limits)
    assert not any(value in str(caught.value) for value in PATIENT.values() if len(value) > 1)


def test_non_image_iods_are_their_own_error_and_every_error_is_an_image_decode_error(photo):
    from preprocessing.errors import ImageDecodeError

    with pytest.raises(NotAnImageError):
        decode_dicom(_pdf())
    assert issubclass(DicomDecodeError, ImageDecodeError)
    assert is_dicom(fundus_dicom(photo[:64, :64])) and not is_dicom(b"\xff\xd8\xff" + bytes(200))
