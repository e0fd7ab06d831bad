"""The only place that knows how a fundus image becomes a model input and back.

Training, evaluation and serving all import from here, so there is a single code path
(no training/serving skew): decode with limits -> crop/resize/CLAHE -> model ->
restore to the original grid -> post-process -> geometry and metrics.
"""
from preprocessing.decode import DecodeLimits, decode_image, decode_mask
from preprocessing.errors import DatasetError, ImageDecodeError
from preprocessing.geometry import DiscGeometry, disc_geometry
from preprocessing.measurements import Measurements, NoDiscError, measure
from preprocessing.metrics import dice, radius_within, summarize
from preprocessing.postprocess import postprocess_mask
from preprocessing.transform import (
    CropBox,
    PreprocessConfig,
    preprocess_image,
    preprocess_mask,
    restore_probability,
)

__all__ = [
    "CropBox",
    "DatasetError",
    "DecodeLimits",
    "DiscGeometry",
    "Measurements",
    "NoDiscError",
    "ImageDecodeError",
    "PreprocessConfig",
    "decode_image",
    "decode_mask",
    "dice",
    "disc_geometry",
    "measure",
    "postprocess_mask",
    "preprocess_image",
    "preprocess_mask",
    "radius_within",
    "restore_probability",
    "summarize",
]
