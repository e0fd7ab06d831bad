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


def roc_auc(scores: list[float], positive: list[bool]) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None without both classes."""
    scores_arr, labels = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores_arr, kind="mergesort")
    ranks = np.empty(len(scores_arr), np.float64)
    sorted_scores = scores_arr[order]
    i = 0
    while i < len(sorted_scores):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
