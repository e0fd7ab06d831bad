"""How much to trust one two-stage answer: a score in [0, 1], `low`, and the reasons.

A segmentation model always outputs *something*; on a photo from an unknown camera, or one that
is not a fundus photo at all, that something can be a confident-looking, absurd disc. Each check
below looks at one way the pipeline is known to fail and, when it fires, names it and lowers the
score. The thresholds come from the TRAINING splits (the spread of the experts' discs and of the
model's own outputs there; experiments/calibrate_confidence.py), never from a test split.

Checks (reason codes are stable; the wording is for people):

- ``no_disc_located``: stage 1 found nothing above its threshold (the crop is a guess) [hard]
- ``no_disc_segmented``: stage 2 found no disc in its crop [hard]
- ``weak_locator``: stage 1's peak or mean disc probability is low
- ``several_candidates``: stage 1 found more than one disc-like region
- ``stages_disagree``: stage 2's disc is far from, or much larger/smaller than, stage 1's
- ``implausible_size``: the disc's diameter is implausible for the photo's field of view
- ``unlikely_shape``: the disc is not a compact oval (solidity, elongation)
- ``uncertain_boundary``: many pixels around the disc are neither clearly in nor out
- ``cut_by_crop``: the disc reaches the edge of stage 2's crop
- ``not_fundus_colour``: the image does not have a fundus photo's colour (red > green > blue)

`low` is true when a hard check fires or the score is below LOW_SCORE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from preprocessing.two_stage import Location

LOW_SCORE = 0.5
DARK = 0.08  # stage-1 input value (after CLAHE) below which a pixel is outside the camera's field of view
RED_MARGIN = 0.03  # a fundus's mean red exceeds its green by this at least (training splits: >= 0.09); noise
# photos have r ~ g ~ b, and without a margin one in six of them passes r > g > b by chance

# name -> (penalty factor, hard, wording)
CHECKS: dict[str, tuple[float, bool, str]] = {
    "no_disc_located": (0.1, True, "stage 1 found no optic disc in the image"),
    "no_disc_segmented": (0.1, True, "stage 2 found no optic disc in the crop around the located one"),
    "weak_locator": (0.6, False, "stage 1's disc probability is weak"),
    "several_candidates": (0.7, False, "stage 1 found several disc-like regions"),
    "stages_disagree": (0.45, False, "stage 2's disc is far from, or of another size than, stage 1's"),
    "implausible_size": (0.4, False, "the disc's size is implausible for the photo's field of view"),
    "unlikely_shape": (0.45, False, "the disc is not a compact oval"),
    "uncertain_boundary": (0.7, False, "the disc's boundary is uncertain"),
    "cut_by_crop": (0.6, False, "the disc reaches the edge of the crop it was segmented on"),
    "not_fundus_colour": (0.4, False, "the image does not have the colours of a fundus photo"),
}


@dataclass(frozen=True)
class Limits:
    """The thresholds of the checks. Each sits well outside what the bundled two-stage model does on the 389
    TRAINING images (`experiments/calibrate_confidence.py --keras ...`; 1st / 99th percentiles there in brackets),
    so a check fires on behaviour the model does not show on the instruments it knows."""

    min_peak: float = 0.8  # [p1 0.975]
    min_mean_probability: float = 0.7  # [p1 0.757]
    max_shift: float = 0.25  # stage 2's centre from stage 1's, in disc diameters [p99 0.106]
    scale_range: tuple[float, float] = (0.7, 1.45)  # stage 2's diameter / stage 1's [p1 0.863, p99 1.248]
    # Disc diameter / width of the field of view, for a whole fundus photo (dark corners) and for a crop around
    # the disc. Training splits (experts' discs): DRISHTI's 30-degree photos 0.16-0.24, RIM-ONE's crops 0.58-0.90.
    # Anatomy sets the full-field range: a ~1.8 mm disc in a 20-degree (~6 mm) to 60-degree (~18 mm) field is
    # 0.1-0.3 of it; the bounds leave room on both sides. A "disc" half as wide as the photo's retina is absurd.
    full_field_size: tuple[float, float] = (0.05, 0.35)
    crop_size: tuple[float, float] = (0.1, 1.2)
    min_solidity: float = 0.93  # [p1 0.974]
    max_elongation: float = 1.6  # [p99 1.228]
    max_uncertain: float = 0.2  # pixels with 0.25 < p < 0.75, per disc pixel [p99 0.100]


@dataclass(frozen=True)
class FieldOfView:
    """What the camera's field of view looks like on stage 1's input (the paper's 10%-cropped, CLAHE'd image)."""

    width_px: float  # widest row of the field of view, in original pixels
    full_field: bool  # the corners are dark: a whole fundus photo, not a crop around the disc
    fundus_colour: bool


@dataclass(frozen=True)
class StageAgreement:
    shift: float  # distance between the stages' disc centres, in stage 2's disc diameters
    scale: float  # stage 2's diameter / stage 1's


@dataclass(frozen=True)
class Confidence:
    score: float
    low: bool
    reasons: tuple[str, ...] = ()
    details: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"score": self.score, "low": self.low, "reasons": [CHECKS[r][2] for r in self.reasons],
                "codes": list(self.reasons)}


FOV_GRID = 64  # the photo is looked at this small: the field of view is a large, smooth shape


def field_of_view(image: np.ndarray, box=None) -> FieldOfView:
    """The camera's field of view on the DECODED photo (uint8 H x W x 3: its dark corners show whether it is a
    whole fundus photo or a crop around the disc), or, less informative, on stage 1's 10%-cropped float input
    with its CropBox (the crop removes most of the corners)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        height, width = image.shape[:2]
        small = cv2.resize(image, (FOV_GRID, FOV_GRID), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        scale = width / FOV_GRID
    else:
        small = image.astype(np.float32)
        scale = (box.x1 - box.x0) / small.shape[1] if box is not None else 1.0
    inside = small.max(axis=-1) > DARK
    corner = max(2, small.shape[1] // 16)
    corners = [inside[:corner, :corner], inside[:corner, -corner:], inside[-corner:, :corner], inside[-corner:, -corner:]]
    full_field = sum(float(c.mean()) < 0.5 for c in corners) >= 3
    widest = float(inside.sum(axis=1).max()) if inside.any() else 0.0
    if inside.any():
        r, g, b = (float(small[..., c][inside].mean()) for c in range(3))
        colour = r > g + RED_MARGIN and g > b
    else:
        colour = False
    return FieldOfView(widest * scale, full_field, colour)


def _shape(disc_crop: np.ndarray) -> tuple[float, float]:
    """(solidity, elongation) of the thresholded crop disc, before any convex hull."""
    contours, _ = cv2.findContours(disc_crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0, float("inf")
    contour = max(contours, key=cv2.contourArea)
    area = float(cv2.contourArea(contour))
    hull = float(cv2.contourArea(cv2.convexHull(contour)))
    solidity = area / hull if hull > 0 else 0.0
    if len(contour) >= 5:
        (_, _), (a, b), _ = cv2.fitEllipse(contour)
        elongation = max(a, b) / max(min(a, b), 1e-6)
    else:
        elongation = float("inf")
    return solidity, elongation


def assess(located: Location, disc_diameter: float | None, crop_probability: np.ndarray,
           agreement: StageAgreement | None, fov: FieldOfView, limits: Limits = Limits(),
           check_crop_edge: bool = True) -> Confidence:
    """All checks on one answer. `disc_diameter`: the answer's disc, 2 sqrt(area / pi) in original pixels (None: no
    disc); `crop_probability` is stage 2's map on its crop (channel 0: the disc), or stage 1's map for a single-stage
    version (then `check_crop_edge=False`: its "crop" is the whole image)."""
    fired: list[str] = []
    details: dict[str, float] = {"locator_peak": round(located.peak, 3), "locator_mean": round(located.mean_probability, 3)}
    if not located.found:
        fired.append("no_disc_located")
    elif located.peak < limits.min_peak or located.mean_probability < limits.min_mean_probability:
        fired.append("weak_locator")
    if located.candidates > 1:
        fired.append("several_candidates")
    disc_p = np.asarray(crop_probability)[..., 0]
    disc_crop = disc_p >= 0.5
    if not disc_diameter or not disc_crop.any():
        fired.append("no_disc_segmented")
    else:
        if agreement is not None:
            details.update(stage_shift=round(agreement.shift, 3), stage_scale=round(agreement.scale, 3))
            if located.found and (agreement.shift > limits.max_shift
                                  or not limits.scale_range[0] <= agreement.scale <= limits.scale_range[1]):
                fired.append("stages_disagree")
        if fov.width_px > 0:
            relative = disc_diameter / fov.width_px
            details["size_in_field"] = round(float(relative), 3)
            low, high = limits.full_field_size if fov.full_field else limits.crop_size
            if not low <= relative <= high:
                fired.append("implausible_size")
        solidity, elongation = _shape(disc_crop)
        details.update(solidity=round(solidity, 3), elongation=round(min(elongation, 99.0), 3))
        if solidity < limits.min_solidity or elongation > limits.max_elongation:
            fired.append("unlikely_shape")
        uncertain = float(((disc_p > 0.25) & (disc_p < 0.75)).sum()) / max(float(disc_crop.sum()), 1.0)
        details["uncertain"] = round(uncertain, 3)
        if uncertain > limits.max_uncertain:
            fired.append("uncertain_boundary")
        if check_crop_edge and (disc_crop[0, :].any() or disc_crop[-1, :].any() or disc_crop[:, 0].any()
                                or disc_crop[:, -1].any()):
            fired.append("cut_by_crop")
    if not fov.fundus_colour:
        fired.append("not_fundus_colour")
    score = 1.0
    for reason in fired:
        score *= CHECKS[reason][0]
    hard = any(CHECKS[r][1] for r in fired)
    return Confidence(round(score, 3), hard or score < LOW_SCORE, tuple(fired), details)
