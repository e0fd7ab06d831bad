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


PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-SECRET-4711", "PatientBirthDate": "19600101",
           "PatientSex": "F"}
"""Patient attributes of every DICOM photo the tests make: logs and error messages must never contain them."""


def fundus_dicom(rgb: np.ndarray, transfer_syntax: str = "1.2.840.10008.1.2.1", *, laterality: str | None = "R",
                 sop_class: str = "1.2.840.10008.5.1.4.1.1.77.1.5.1", frames: int = 1, **attributes) -> bytes:
    """A DICOM Part 10 Ophthalmic Photography 8 Bit image of `rgb` (H x W x 3 uint8, or H x W x 1/2-D grey), in
    `transfer_syntax`: native ones as is, JPEG baseline as a Pillow JPEG in YBR_FULL_422 (what cameras write),
    RLE, JPEG-LS and JPEG 2000 through pydicom's encoders. `frames` > 1 repeats the image (frame i brightened by
    i). `attributes` override or add data elements by keyword (None deletes one)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid

    grey = rgb.ndim == 2 or rgb.shape[-1] == 1
    pixels = rgb.reshape(rgb.shape[0], rgb.shape[1]) if grey else rgb
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.update({"Modality": "OP", "StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
               "StudyID": "1", "SeriesNumber": 1, "InstanceNumber": 1, "AccessionNumber": "ACC-SECRET-99",
               "StudyDate": "20260101", "StudyTime": "101500", "ReferringPhysicianName": "",
               "Manufacturer": "test camera", "ImageType": ["ORIGINAL", "PRIMARY"], "ContentDate": "20260101",
               "ContentTime": "101501", "AcquisitionDateTime": "20260101101501", "BurnedInAnnotation": "NO",
               "PatientOrientation": "", "LossyImageCompression": "00", **PATIENT})
    if laterality is not None:
        ds.ImageLaterality = laterality
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if grey else "RGB"
    if not grey:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    stack = [np.clip(pixels.astype(np.int32) + i, 0, np.iinfo(pixels.dtype).max).astype(pixels.dtype)
             for i in range(frames)]
    if frames > 1 or sop_class != "1.2.840.10008.5.1.4.1.1.77.1.4":  # OP images have a multi-frame module
        ds.NumberOfFrames = frames
    if transfer_syntax == JPEGBaseline8Bit:
        ds.PixelData = encapsulate([encode(frame, "JPEG", quality=95) for frame in stack])
        ds.PhotometricInterpretation = "YBR_FULL_422" if not grey else "MONOCHROME2"
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.stack(stack).tobytes() if frames > 1 else stack[0].tobytes()
        if transfer_syntax in ("1.2.840.10008.1.2",):
            ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        elif transfer_syntax != "1.2.840.10008.1.2.1":
            lossy = {"1.2.840.10008.1.2.4.81": {"jls_error": 2}, "1.2.840.10008.1.2.4.91": {"j2k_cr": [20]}}
            ds.compress(transfer_syntax, **lossy.get(transfer_syntax, {}))
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


BRIGHT_DISC, BRIGHT_CUP = 0.47, 0.65  # mean channel value of the prepared image where disc / cup begin
"""The optic disc is the brightest structure of a fundus photo and the cup the brightest part of the disc: on
DRISHTI's 51 test images these thresholds give disc Dice 0.77, cup Dice 0.46, vCDR MAE 0.22 and a glaucoma AUC of
0.69 through the real two-stage pipeline (a random U-Net finds no disc at all, so nothing below it is exercised)."""


def brightness_model(thresholds: tuple[float, ...], name: str):
    """A Keras model with one sigmoid map per threshold: sigmoid(20 (mean(R, G, B) - threshold))."""
    import keras

    inputs = keras.Input((128, 128, 3), name="images")
    conv = keras.layers.Conv2D(len(thresholds), 1, activation="sigmoid", name=name)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.full((1, 1, 3, len(thresholds)), 20.0 / 3, np.float32),
                      np.asarray([-20.0 * t for t in thresholds], np.float32)])
    return model


def brightness_two_stage_version(directory: Path, data: str = "drishti-gs1") -> Path:
    """A complete two-stage version at `directory` whose stages threshold brightness: deterministic, seconds to
    build, and it segments real discs and cups well enough for every figure downstream to be non-trivial."""
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(False)
    from training_job.export import save_serving_model

    architecture = {"depth": 0, "width": 1, "increment_ratio": 1.0, "input_size": 128}
    card = {"model_name": "optic-disc", "mode": "full", "data": [data], "test_metrics": {},
            "config": {"model": architecture,
                       "segment": {"model": architecture, "crop": {"multiple": 2.5, "size": 128},
                                   "cup_threshold": 0.5, "convex": True}}}
    save_serving_model(brightness_model((BRIGHT_DISC,), "disc_probability"), directory, card,
                       segment_model=brightness_model((BRIGHT_DISC + 0.03, BRIGHT_CUP), "disc_cup_probability"))
    return directory
