"""From a probability map to one plausible disc: threshold, largest component, filled holes.

An eye has one optic disc, and it has no holes; enforcing both removes the typical failure
modes of a small U-Net (bright exudates elsewhere, a dark vessel trunk crossing the disc).
Shared by evaluation and serving so both report the same mask.
"""
from __future__ import annotations

import cv2
import numpy as np

from preprocessing.geometry import plane


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background only, or a single component
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region not connected to the image border."""
    if not mask.any():
        return mask.astype(bool)
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask.astype(bool) | holes


def postprocess_mask(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probability map (any resolution) -> bool mask of the single, hole-free disc.

    Works inside the bounding box of the thresholded pixels only: on a full-size photo the disc
    is a few percent of the image, and the result is identical (nothing outside the box is
    foreground, so a background region touching the box edge is not a hole).
    """
    binary = (plane(probability) >= threshold).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(binary)
    mask = np.zeros(binary.shape, bool)
    if w and h:
        mask[y : y + h, x : x + w] = fill_holes(largest_component(binary[y : y + h, x : x + w]))
    return mask
