"""The two-stage pipeline around its model calls: locate the disc on the whole image, segment disc
and cup on a crop around it, map both back onto the original pixel grid. Shared verbatim by
evaluation, the in-process benchmark and the serving transformer (which puts a predictor call
where this module takes a function), so all of them answer the same masks.

    stage 1  locate_input(rgb) -> 128 x 128 input, crop box, field of view (the paper's preprocessing)
             read_location(probability, box) -> Location     (centre, diameter, how sure)
             relocate_input(rgb, location) -> input, box      (the locator's own second look: a square of
             read_relocation(probability, box, previous)      `locator_view` located diameters, as many times
                                                              as `locator_looks` says)
    stage 2  segment_input(rgb, location) -> crop input       (a square of `multiple` x diameter)
             refine(probability, square) -> Location | None  (the second look: recentre when the crop
                                                              shows the disc elsewhere or at another size)
             finish(probability, square, ...) -> TwoStageAnswer (disc, cup, measurements, confidence)

`segment_image` runs the whole pipeline with two numpy functions (one per signature).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from preprocessing.confidence import Confidence, FieldOfView, StageAgreement, assess, field_of_view
from preprocessing.disc_crop import (
    DiscCropConfig,
    SquareBox,
    crop_resized,
    disc_center_and_diameter,
    prepare_crop,
    restore_inside,
)
from preprocessing.measurements import Laterality, Measurements, measure
from preprocessing.postprocess import fill_holes, largest_component, postprocess_mask
from preprocessing.transform import CropBox, PreprocessConfig, equalise, preprocess_image, restore_probability

LocateFn = Callable[[np.ndarray], np.ndarray]  # N x 128 x 128 x 3 -> N x 128 x 128 x 1
SegmentFn = Callable[[np.ndarray], np.ndarray]  # N x S x S x 3 -> N x S x S x 2 (disc, cup)

SECOND_LOOK_SHIFT = 0.12  # diameters: a crop this far off-centre is cut again around what stage 2 saw
SECOND_LOOK_SCALE = (0.85, 1.18)  # stage 2's diameter over the crop's: outside this, cut again
NO_DISC_DIAMETER = 0.15  # of the field of view's width: where to look when stage 1 finds nothing
MAX_SECOND_LOOKS = 4
LOCATOR_VIEW_RANGE = (1.1, 8.0)  # disc diameters across the locator's second look


def check_second_looks(looks, name: str = "second_looks") -> int:
    """`second_looks` (or `locator_looks`) as the card, the training config and the pipeline accept it: an
    integer 0 to 4."""
    if type(looks) is not int or not 0 <= looks <= MAX_SECOND_LOOKS:
        raise ValueError(f"{name} must be an integer 0 to {MAX_SECOND_LOOKS}, got {looks!r}")
    return looks


def check_locator_view(view) -> float:
    if isinstance(view, bool) or not isinstance(view, int | float) or not (
            LOCATOR_VIEW_RANGE[0] <= view <= LOCATOR_VIEW_RANGE[1]):
        raise ValueError(f"locator_view must be a number of disc diameters in {LOCATOR_VIEW_RANGE}, got {view!r}")
    return float(view)


@dataclass(frozen=True)
class TwoStageConfig:
    """What a two-stage version's card says about its pipeline."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    crop: DiscCropConfig = field(default_factory=DiscCropConfig)
    threshold: float = 0.5
    cup_threshold: float = 0.5
    convex: bool = True
    """Disc and cup are each replaced by their convex hull: the shapes an ophthalmologist draws (an optic disc
    and its cup are convex; a vessel crossing the rim no longer notches the mask)."""
    second_looks: int = 1
    """How many times the crop may be cut again around what stage 2 saw. More than one lets a stage 2 trained on
    mis-sized crops walk a crop that stage 1 sized around the cup out to the whole disc."""
    locator_looks: int = 0
    """How many times stage 1 looks again, on a square of `locator_view` located diameters around where it last put
    the disc, before stage 2's crop is cut. A locator trained on one photo format sees a camera's other format
    at a scale it never learned (trained on disc-filled RIM-ONE views, it sized whole DRISHTI photos' discs 1.8x
    too large); the square shows it the disc at the scale its training views had."""
    locator_view: float = 1.5
    """The second look's side in located disc diameters: the training views' width in disc diameters."""

    def __post_init__(self) -> None:
        check_second_looks(self.second_looks)
        check_second_looks(self.locator_looks, "locator_looks")
        check_locator_view(self.locator_view)


@dataclass(frozen=True)
class Location:
    """Where stage 1 (or a second look) put the disc, in original pixels."""

    center_x: float
    center_y: float
    diameter: float
    peak: float  # the highest disc probability stage 1 gave anywhere
    found: bool  # False: nothing crossed the threshold; the centre is the peak, the diameter a guess
    candidates: int = 1  # components above threshold of at least a tenth of the largest's area
    mean_probability: float = 1.0  # mean probability inside the thresholded disc


@dataclass
class TwoStageAnswer:
    disc: np.ndarray  # H x W bool
    cup: np.ndarray  # H x W bool, inside the disc
    located: Location  # stage 1's
    square: SquareBox  # the crop stage 2 answered on (after any second look)
    second_look: bool
    measurements: Measurements | None  # None when there is no disc
    confidence: Confidence


@dataclass(frozen=True)
class Stage1Input:
    """What stage 1 needs and what only the decoded photo can tell: its field of view (the camera's dark corners
    are gone after the 10% border crop)."""

    input: np.ndarray  # 128 x 128 x 3 float32, the paper's preprocessing
    box: CropBox
    fov: FieldOfView


def locate_input(rgb: np.ndarray, config: TwoStageConfig) -> Stage1Input:
    model_input, box = preprocess_image(rgb, config.preprocess)
    return Stage1Input(model_input, box, field_of_view(rgb))


def read_location(probability: np.ndarray, box: CropBox, threshold: float = 0.5) -> Location:
    """Stage 1's map -> the disc's centre and diameter on the original grid."""
    small = np.asarray(probability, np.float32).reshape(probability.shape[0], probability.shape[1])
    size_y, size_x = small.shape
    scale_x, scale_y = (box.x1 - box.x0) / size_x, (box.y1 - box.y0) / size_y
    binary = (small >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    peak = float(small.max()) if small.size else 0.0
    if count <= 1:
        y, x = np.unravel_index(int(np.argmax(small)), small.shape)
        guess = NO_DISC_DIAMETER * (box.x1 - box.x0)
        return Location(box.x0 + (x + 0.5) * scale_x, box.y0 + (y + 0.5) * scale_y, guess, peak, False, 0, peak)
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = 1 + int(np.argmax(areas))
    component = labels == largest
    weights = np.where(component, small, 0.0)
    cx, cy, _ = disc_center_and_diameter(weights)
    area_px = float(component.sum()) * scale_x * scale_y
    return Location(
        center_x=box.x0 + (cx + 0.5) * scale_x,
        center_y=box.y0 + (cy + 0.5) * scale_y,
        diameter=2.0 * math.sqrt(area_px / math.pi),
        peak=peak,
        found=True,
        candidates=int((areas >= 0.1 * areas.max()).sum()),
        mean_probability=float(small[component].mean()),
    )


def relocate_input(rgb: np.ndarray, location: Location, config: TwoStageConfig) -> tuple[np.ndarray, CropBox]:
    """Stage 1's input for its second look: the square of `locator_view` located diameters around `location`,
    resized to stage 1's input and equalised as the whole image was (black beyond the photo's edges)."""
    height, width = rgb.shape[:2]
    square = SquareBox.around(height, width, location.center_x, location.center_y,
                              config.locator_view * location.diameter)
    box = CropBox(height, width, square.y0, square.y0 + square.side, square.x0, square.x0 + square.side)
    return equalise(crop_resized(rgb, square, config.preprocess.size), config.preprocess), box


def read_relocation(probability: np.ndarray, box: CropBox, previous: Location, config: TwoStageConfig) -> Location:
    """Stage 1's second look -> the new location; the previous one when this look found no disc."""
    location = read_location(probability, box, config.threshold)
    return location if location.found else previous


def locate_again(rgbs: list[np.ndarray], located: list[Location], locate: LocateFn, config: TwoStageConfig,
                 each=map) -> list[Location]:
    """The locator's own looks for a batch (`locator_looks` of them, one batched call each) at every image whose
    disc stage 1 found; `each` maps the cutting (a thread pool's map, in the benchmark's floor)."""
    located = list(located)
    looking = [i for i, location in enumerate(located) if location.found]
    for _ in range(config.locator_looks if looking else 0):
        views = list(each(lambda i: relocate_input(rgbs[i], located[i], config), looking))
        again = locate(np.stack([view for view, _ in views]))
        for i, (_, box), probability in zip(looking, views, again, strict=True):
            located[i] = read_relocation(probability, box, located[i], config)
    return located


def square_for(location: Location, height: int, width: int, config: TwoStageConfig) -> SquareBox:
    return SquareBox.for_disc(height, width, location.center_x, location.center_y, location.diameter, config.crop)


def segment_input(rgb: np.ndarray, location: Location, config: TwoStageConfig) -> tuple[np.ndarray, SquareBox]:
    square = square_for(location, rgb.shape[0], rgb.shape[1], config)
    return prepare_crop(rgb, square, config.crop, config.preprocess), square


def _crop_disc(probability: np.ndarray, threshold: float) -> np.ndarray:
    return postprocess_mask(np.asarray(probability)[..., 0], threshold)


def refine(probability: np.ndarray, square: SquareBox, previous: Location, config: TwoStageConfig) -> Location | None:
    """The second look: the disc stage 2 saw, when it is off the crop's centre or of another size than the crop
    assumed; None when the crop was right (or stage 2 saw no disc, which `finish` reports)."""
    disc = _crop_disc(probability, config.threshold)
    seen = disc_center_and_diameter(disc)
    if seen is None:
        return None
    cx, cy, diameter = seen
    scale = square.side / disc.shape[0]
    center_x, center_y = square.x0 + (cx + 0.5) * scale, square.y0 + (cy + 0.5) * scale
    diameter *= scale
    expected = square.side / config.crop.multiple
    shift = math.hypot(center_x - square.center[0], center_y - square.center[1]) / max(diameter, 1.0)
    ratio = diameter / expected
    if shift <= SECOND_LOOK_SHIFT and SECOND_LOOK_SCALE[0] <= ratio <= SECOND_LOOK_SCALE[1]:
        return None
    return Location(center_x, center_y, diameter, previous.peak, previous.found, previous.candidates,
                    previous.mean_probability)


def convex(mask: np.ndarray) -> np.ndarray:
    """The mask's convex hull (one component in, one out), computed inside its bounding box."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    if not (w and h):
        return mask.astype(bool)
    contours, _ = cv2.findContours(mask[y : y + h, x : x + w].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    out = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(out[y : y + h, x : x + w], [hull], 1)
    return out.astype(bool) | mask.astype(bool)


def masks_from(probability: np.ndarray, square: SquareBox, config: TwoStageConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2's crop map -> (disc, cup) on the original grid: one hole-free disc, one hole-free cup inside it."""
    full_disc, full_cup = np.zeros((square.height, square.width), bool), np.zeros((square.height, square.width), bool)
    restored = restore_inside(probability, square)  # only where the square covers the photo: nothing is outside it
    if restored is None:
        return full_disc, full_cup
    region, (x0, y0, x1, y1) = restored
    disc = postprocess_mask(region[..., 0], config.threshold)
    if config.convex:
        disc = convex(disc)
    x, y, w, h = cv2.boundingRect(disc.astype(np.uint8))
    cup = np.zeros(disc.shape, bool)
    if w and h:
        window = np.s_[y : y + h, x : x + w]
        inside = (region[..., 1][window] >= config.cup_threshold) & disc[window]
        if inside.any():
            cup_part = fill_holes(largest_component(inside))
            if config.convex:
                cup_part = convex(cup_part) & disc[window]
            cup[window] = cup_part
    full_disc[y0:y1, x0:x1], full_cup[y0:y1, x0:x1] = disc, cup
    return full_disc, full_cup


def finish(probability: np.ndarray, square: SquareBox, located: Location, final: Location, second_look: bool,
           fov: FieldOfView, config: TwoStageConfig, laterality: Laterality | None = None) -> TwoStageAnswer:
    disc, cup = masks_from(probability, square, config)
    geometry = disc_center_and_diameter(disc)
    measurements = measure(disc, cup, laterality, clean=False) if geometry is not None else None  # clean already
    agreement, diameter = None, None
    if geometry is not None:
        cx, cy, diameter = geometry
        agreement = StageAgreement(
            shift=math.hypot(cx - located.center_x, cy - located.center_y) / max(diameter, 1.0),
            scale=diameter / max(located.diameter, 1.0),
        )
    confidence = assess(located, diameter, np.asarray(probability), agreement, fov)
    return TwoStageAnswer(disc, cup, located, square, second_look, measurements, confidence)


def segment_image(rgb: np.ndarray, locate: LocateFn, segment: SegmentFn, config: TwoStageConfig = TwoStageConfig(),
                  laterality: Laterality | None = None, known_disc: Location | None = None) -> TwoStageAnswer:
    """The whole pipeline on one decoded image, with one function per model stage. `known_disc` replaces stage 1's
    location (the expert's disc: what stage 2 does when stage 1 is right, for measuring the stages apart)."""
    stage1 = locate_input(rgb, config)
    located = known_disc
    if located is None:
        [located] = locate_again([rgb], [read_location(locate(stage1.input[None])[0], stage1.box, config.threshold)],
                                 locate, config)
    fov = stage1.fov
    crop, square = segment_input(rgb, located, config)
    probability = segment(crop[None])[0]
    final, looked_again = located, False
    for _ in range(config.second_looks):
        if (better := refine(probability, square, final, config)) is None:
            break
        final, looked_again = better, True
        crop, square = segment_input(rgb, final, config)
        probability = segment(crop[None])[0]
    return finish(probability, square, located, final, looked_again, fov, config, laterality)


def finish_single_stage(probability: np.ndarray, box: CropBox, stage1_input: np.ndarray, threshold: float = 0.5,
                        laterality: Laterality | None = None) -> TwoStageAnswer:
    """A single-stage (the paper's) version's answer in the same form: its disc at full resolution, no cup (so no
    measurements), and a confidence from the checks that need no second stage."""
    located = read_location(probability, box, threshold)
    disc = postprocess_mask(restore_probability(probability, box), threshold)
    fov = field_of_view(stage1_input, box)
    square = SquareBox.for_disc(box.height, box.width, located.center_x, located.center_y, located.diameter, DiscCropConfig())
    crop_probability = np.asarray(probability, np.float32).reshape(probability.shape[0], probability.shape[1], 1)
    geometry = disc_center_and_diameter(disc)
    confidence = assess(located, geometry[2] if geometry else None, crop_probability, None, fov, check_crop_edge=False)
    return TwoStageAnswer(disc, np.zeros_like(disc), located, square, False, None, confidence)
