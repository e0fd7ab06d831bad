"""The paper's figures of merit: Dice per image, and RRP (share of images whose equivalent disc
radius sqrt(area/pi) is within 10% of the expert's)."""
from __future__ import annotations

import math

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """2TP / (2TP + FP + FN); two empty masks agree perfectly."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {prediction.shape} vs {truth.shape}")
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def radius_within(prediction: np.ndarray, truth: np.ndarray, tolerance: float = 0.10) -> bool:
    """True when the predicted equivalent radius is within `tolerance` of the true one."""
    true_radius = math.sqrt(np.count_nonzero(truth) / math.pi)
    predicted_radius = math.sqrt(np.count_nonzero(prediction) / math.pi)
    if true_radius == 0:
        return predicted_radius == 0
    return abs(predicted_radius - true_radius) / true_radius < tolerance


def summarize(dices: list[float], radius_ok: list[bool]) -> dict:
    """The paper's table columns: n, mean/std/min(worst)/max(best) Dice, RRP in percent."""
    if not dices:
        return {"n": 0, "dice_mean": None, "dice_std": None, "dice_min": None, "dice_max": None, "rrp": None}
    values = np.asarray(dices, dtype=np.float64)
    return {
        "n": int(values.size),
        "dice_mean": round(float(values.mean()), 4),
        "dice_std": round(float(values.std()), 4),
        "dice_min": round(float(values.min()), 4),
        "dice_max": round(float(values.max()), 4),
        "rrp": round(100.0 * float(np.mean(radius_ok)), 1),
    }
