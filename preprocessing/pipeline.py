"""The two halves around a model call, shared verbatim by evaluation and the serving transformer.

    prepare(bytes) -> 128x128 input + crop box      (before the model)
    finish(probability, crop box) -> full-size mask  (after the model)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocessing.decode import DecodeLimits, decode_image
from preprocessing.geometry import plane
from preprocessing.postprocess import postprocess_mask
from preprocessing.transform import (
    CropBox,
    PreprocessConfig,
    preprocess_image,
    restore_probability,
)


@dataclass(frozen=True)
class Prepared:
    input: np.ndarray  # size x size x 3 float32, what the model sees
    box: CropBox  # how to map the answer back


def prepare(data: bytes, config: PreprocessConfig = PreprocessConfig(), limits: DecodeLimits = DecodeLimits()) -> Prepared:
    model_input, box = preprocess_image(decode_image(data, limits), config)
    return Prepared(model_input, box)


def finish(probability: np.ndarray, box: CropBox, threshold: float = 0.5) -> np.ndarray:
    """Model probability map -> bool disc mask at the original image's resolution.

    The probability map is interpolated to full size before thresholding, which gives a
    smooth sub-pixel boundary instead of an up-scaled 128-pixel staircase.
    """
    return postprocess_mask(restore_probability(probability, box), threshold)


def finish_small(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The same post-processing at the model's own resolution (the paper reports Dice there)."""
    return postprocess_mask(plane(probability), threshold)
