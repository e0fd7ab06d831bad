"""DICOM fundus photos -> an RGB uint8 array, the eye, and what a result must reference, or a clear ImageDecodeError.

Fundus cameras in hospitals store Ophthalmic Photography (8 and 16 bit) and VL Photographic images, often
JPEG-compressed. This module reads them with pydicom and its pixel-data plugins (pylibjpeg-libjpeg: JPEG
baseline/extended/lossless and JPEG-LS; pylibjpeg-openjpeg: JPEG 2000; pyjpegls: JPEG-LS; pydicom: RLE and
uncompressed) under the same `DecodeLimits` as JPEG and PNG:

- the file size first, then the header: the IOD must be one of `FUNDUS_SOP_CLASSES` (an encapsulated PDF, a
  CT or a structured report is refused by name), it must carry pixel data, and Rows x Columns must fit the pixel
  and side limits before a single pixel is decoded (a compressed frame cannot decode larger than its header says:
  pydicom checks the decoded length against it);
- a multi-frame image is refused unless the caller picks a frame (`frame=`, 0-based), and only that frame is
  decoded; a JPEG frame's scans are counted from its markers, as for a plain JPEG;
- colour: YBR_FULL / YBR_FULL_422 become RGB (pydicom), YBR_ICT / YBR_RCT are undone by the JPEG 2000 decoder,
  PALETTE COLOR goes through its lookup table, MONOCHROME1 is inverted and grey is repeated to three channels;
  more than 8 bits stored are scaled down to 8 by their Bits Stored, not by Bits Allocated.

Image Laterality (0020,0062), else the series' Laterality (0020,0060), gives the eye ("R"/"L"; U and B mean
none) for the ISNT sectors. The header (without its pixel data) comes back with the image, so a DICOM result can
reference the source's study, series and instance and copy its patient module; nothing here logs or echoes a
patient attribute: error messages name only the DICOM attributes and the SOP class.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from preprocessing.decode import DecodeLimits, is_dicom, jpeg_scans
from preprocessing.errors import ImageDecodeError
from preprocessing.measurements import Laterality

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OPHTHALMIC_PHOTOGRAPHY_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
VL_PHOTOGRAPHIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
FUNDUS_SOP_CLASSES = {
    OPHTHALMIC_PHOTOGRAPHY_8BIT: "Ophthalmic Photography 8 Bit Image",
    OPHTHALMIC_PHOTOGRAPHY_16BIT: "Ophthalmic Photography 16 Bit Image",
    VL_PHOTOGRAPHIC_IMAGE: "VL Photographic Image",
}
JPEG_TRANSFER_SYNTAXES = {  # the ISO 10918 ones, whose scans decode_image's limit counts
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
}
PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}


class DicomDecodeError(ImageDecodeError):
    """A DICOM object that is not a fundus photo this service can read (the message says which attribute)."""


class NotAnImageError(DicomDecodeError):
    """A DICOM object of an IOD that holds no fundus photo (an encapsulated PDF, an SR, a CT...)."""


class MultiFrameError(DicomDecodeError):
    """A multi-frame image and no frame chosen (or a frame it does not have)."""


@dataclass(frozen=True)
class SourceInstance:
    """Which instance an answer is about: what a SEG object or a FHIR Observation references."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    frame: int | None  # 0-based; None for a single-frame image


@dataclass(frozen=True)
class DicomImage:
    rgb: np.ndarray  # H x W x 3 uint8
    laterality: Laterality | None
    source: SourceInstance
    dataset: object = field(repr=False, compare=False)  # pydicom Dataset, header only; repr=False: it holds PHI


def read_dataset(data: bytes, limits: DecodeLimits = DecodeLimits()):
    """Parse a Part 10 file (its pixel data stays as bytes until `decode_dataset`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DicomDecodeError(f"expected DICOM bytes, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise DicomDecodeError(f"DICOM file is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    if not is_dicom(data):
        raise DicomDecodeError("not a DICOM file (no 'DICM' after the 128-byte preamble)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns (with file offsets) before it gives up; the error says it
            ds = pydicom.dcmread(io.BytesIO(bytes(data)))
    except InvalidDicomError as exc:
        raise DicomDecodeError(f"not a readable DICOM file: {exc}") from None
    except Exception as exc:  # pydicom raises assorted errors on a broken header
        raise DicomDecodeError(f"not a readable DICOM file ({exc.__class__.__name__})") from None
    if len(ds) == 0:  # what pydicom returns for a data set cut short inside an undefined-length element
        raise DicomDecodeError("not a readable DICOM file: no data elements after the file meta (truncated?)")
    return ds


def without_pixels(photo: DicomImage) -> DicomImage:
    """A decoded photo reduced to what `describe_dicom` returns: its grid, source and eye, no pixels kept."""
    return DicomImage(np.empty((*photo.rgb.shape[:2], 0), np.uint8), photo.laterality, photo.source, photo.dataset)


def describe_dicom(data: bytes, limits: DecodeLimits = DecodeLimits()) -> DicomImage:
    """A single-frame fundus photo's header as a DicomImage WITHOUT decoding its pixels: `rgb` has the photo's
    height and width and no channels (what a SEG object needs to know of it: its grid, its source, its eye)."""
    ds = read_dataset(data, limits)
    _check_header(ds, limits, None)
    header = ds.copy()
    del header.PixelData
    source = SourceInstance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                            str(ds.SOPClassUID), None)
    return DicomImage(np.empty((int(ds.Rows), int(ds.Columns), 0), np.uint8), laterality_of(ds), source, header)


def header_size(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[int, int]:
    """(width, height) of a single-frame fundus photo, every header limit checked, no pixel decoded."""
    ds = read_dataset(data, limits)
    _check_header(ds, limits, None)
    return int(ds.Columns), int(ds.Rows)


def laterality_in(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Laterality | None:
    """The eye a DICOM photo says it shows (Image Laterality), or None."""
    return laterality_of(read_dataset(data, limits))


def decode_dicom(data: bytes, limits: DecodeLimits = DecodeLimits(), frame: int | None = None) -> DicomImage:
    """A DICOM Part 10 file's fundus photo, with its eye and its source reference."""
    return decode_dataset(read_dataset(data, limits), limits, frame)


def laterality_of(ds) -> Laterality | None:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("R", "L"):
            return value  # type: ignore[return-value]
    return None


def _int(ds, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DicomDecodeError(f"the image has no {keyword}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DicomDecodeError(f"{keyword} is not a number") from None


def _check_header(ds, limits: DecodeLimits, frame: int | None) -> tuple[int, int | None]:
    """Everything refusable from the header alone; returns (frames, the frame to decode)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in FUNDUS_SOP_CLASSES:
        from pydicom.uid import UID

        name = UID(sop_class).name if sop_class else "no SOP Class UID"
        raise NotAnImageError(f"not a fundus photo: the DICOM object is {name}; send Ophthalmic Photography "
                              "(8 or 16 bit) or VL Photographic Image")
    if "PixelData" not in ds:
        raise DicomDecodeError("the DICOM image has no Pixel Data (7FE0,0010)")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise DicomDecodeError(f"the DICOM image has no {keyword}")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows * columns > limits.max_pixels or max(rows, columns) > limits.max_side:
        raise DicomDecodeError(f"image is {columns}x{rows}, larger than the limit of {limits.max_pixels} pixels / "
                               f"{limits.max_side} px per side")
    if min(rows, columns) < limits.min_side:
        raise DicomDecodeError(f"image is {columns}x{rows}, smaller than {limits.min_side} px per side")
    samples = _int(ds, "SamplesPerPixel")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in PHOTOMETRIC or samples not in (1, 3) or (samples == 3) != photometric.startswith(("RGB", "YBR")):
        raise DicomDecodeError(f"unsupported colour: Photometric Interpretation {photometric or 'missing'} with "
                               f"{samples} samples per pixel")
    bits_allocated, bits_stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise DicomDecodeError(f"unsupported pixel depth: Bits Allocated {bits_allocated}, Bits Stored {bits_stored}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 1:
        raise DicomDecodeError(f"Number of Frames is {frames}")
    if frame is None and frames > 1:
        raise MultiFrameError(f"a multi-frame image ({frames} frames): choose one frame (0 to {frames - 1})")
    if frame is not None and not 0 <= frame < frames:
        raise MultiFrameError(f"frame {frame} does not exist: the image has {frames} frame(s), 0 to {frames - 1}")
    return frames, frame


def _frame_bytes(ds, index: int, frames: int) -> bytes:
    from pydicom.encaps import get_frame

    return get_frame(ds.PixelData, index, number_of_frames=frames)


def _to_rgb8(array: np.ndarray, ds) -> np.ndarray:
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)  # the LUT's own depth: 8 or 16 bits
        bits = 16 if array.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.BitsStored)
    if array.dtype.kind == "i":  # signed pixels (Pixel Representation 1): shift to unsigned
        array = array.astype(np.int32) + (1 << (bits - 1))
    array = np.clip(array, 0, (1 << bits) - 1).astype(np.uint32)
    if bits > 8:
        array = array >> (bits - 8)
    elif bits < 8:
        array = (array * 255) // ((1 << bits) - 1)
    array = array.astype(np.uint8)
    if photometric == "MONOCHROME1":
        array = 255 - array
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def decode_dataset(ds, limits: DecodeLimits = DecodeLimits(), frame: int | None = None) -> DicomImage:
    """A parsed dataset's fundus photo (`frame`, 0-based, for a multi-frame image); the dataset comes back
    without its pixel data."""
    from pydicom.pixels import pixel_array

    frames, index = _check_header(ds, limits, frame)
    transfer_syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    compressed = transfer_syntax not in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                                          "1.2.840.10008.1.2.1.99")
    if transfer_syntax in JPEG_TRANSFER_SYNTAXES:
        try:
            scans = jpeg_scans(_frame_bytes(ds, index or 0, frames))
        except Exception as exc:
            raise DicomDecodeError(f"corrupt encapsulated pixel data ({exc.__class__.__name__})") from None
        if scans > limits.max_jpeg_scans:
            raise DicomDecodeError(f"the JPEG frame has {scans} scans, more than the limit of {limits.max_jpeg_scans}")
    try:
        array = pixel_array(ds, index=index if frames > 1 else None)
    except NotImplementedError as exc:
        raise DicomDecodeError(f"cannot decode this transfer syntax here: {exc}") from None
    except Exception as exc:  # truncated, corrupt, or an undecodable compressed frame
        kind = "compressed" if compressed else "native"
        raise DicomDecodeError(f"corrupt {kind} pixel data ({exc.__class__.__name__})") from None
    if frames > 1 and array.ndim == (4 if int(ds.SamplesPerPixel) == 3 else 3):
        array = array[0]
    rgb = _to_rgb8(np.asarray(array), ds)
    header = ds.copy()
    del header.PixelData
    source = SourceInstance(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        frame=index,
    )
    return DicomImage(rgb, laterality_of(ds), source, header)
