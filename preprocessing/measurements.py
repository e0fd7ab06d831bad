"""Glaucoma measurements of an optic disc and its cup, from two masks on the original image's grid.

What an ophthalmologist reads off the optic nerve head: the vertical cup-to-disc ratio (the
screening number), the horizontal and area ratios, the neuroretinal rim's width around the disc
(the rim-to-disc ratio of the DDLS scale, and the ISNT rule). Pure numpy/OpenCV, so evaluation
and the service report the same numbers from whichever masks they have (the experts' or a model's).

Conventions, fixed here once:

- Masks are cleaned as the disc post-processing does: the largest component, holes filled. The cup
  is clipped to the disc first (cup tissue lies inside the disc by definition; a cup mask that
  leaks over the margin is an annotation or model error), then cleaned the same way.
- Ratios of extents use the bounding box of each mask (`DiscGeometry.vertical_diameter_px`):
  the vCDR is the cup's greatest vertical extent over the disc's, as clinicians measure it.
- The rim is measured along 360 rays (1 degree apart) from the disc's centroid. On each ray, rim
  width = distance to the disc's outermost pixel minus distance to the cup's outermost pixel (0
  where the ray misses the cup). A sector is the 90 degrees centred on its axis (superior = up in
  the image). A sector's width is the MEDIAN over its 90 rays: it is the sector's typical width, as
  the ISNT rule compares, and one ray through a jagged annotation edge or a vessel notch cannot
  swing it. Focal thinning is what `rim_to_disc` is for: it is the MINIMUM over all rays of rim
  width / disc diameter along that ray's line (the DDLS "rim-to-disc ratio"; 0.5 = no cup).
  The ISNT rule compares sector widths up to one pixel (closer widths are equal at this grid).
- Nasal and temporal need the eye. In a fundus photograph (seen face to face, not inverted) of a
  RIGHT eye the optic disc lies right of the macula, toward the nose, so the disc's nasal side
  faces the image's right edge and its temporal side the macula (image left); a LEFT eye is the
  mirror image. Sources: Dartmouth Human Anatomy, fig. 46-9 "Right fundus oculi"
  (www.dartmouth.edu/~humananatomy/figures/chapter_46/46-9.HTM: disc on the photograph's right,
  i.e. medial; macula lateral, on its left) and Wikipedia "Fundus (eye)" (disc towards the nose).
  Without laterality the horizontal sectors are reported as image `left`/`right`, and the ISNT
  rule (which needs nasal vs temporal) is not judged.
- An empty disc has nothing to measure: `measure` raises `NoDiscError` (a ValueError), so no
  ratio of zero by zero ever reaches an answer; the caller decides what to say instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from preprocessing.geometry import disc_geometry, plane
from preprocessing.postprocess import fill_holes, largest_component

Laterality = Literal["L", "R"]
LATERALITIES = ("L", "R")

RAYS = 360  # 1 degree apart; a multiple of 4 so every sector has the same number of rays
RAY_STEP_PX = 0.25  # sampling step along a ray: well below a pixel
ISNT_TOLERANCE_PX = 1.0  # widths closer than a pixel are equal at the mask's resolution


class NoDiscError(ValueError):
    """The disc mask is empty: there is no disc to measure."""


@dataclass(frozen=True)
class Sectors:
    """One value per 90-degree sector; image sides are stored, the eye's sides derived from them."""

    superior: float
    inferior: float
    left: float  # the image's left
    right: float  # the image's right
    laterality: Laterality | None

    @property
    def nasal(self) -> float | None:
        if self.laterality is None:
            return None
        return self.right if self.laterality == "R" else self.left

    @property
    def temporal(self) -> float | None:
        if self.laterality is None:
            return None
        return self.left if self.laterality == "R" else self.right

    def to_dict(self) -> dict:
        """Named by the eye's sides where the eye is known, by the image's otherwise."""
        if self.laterality is None:
            return {"superior": self.superior, "inferior": self.inferior, "left": self.left, "right": self.right}
        return {"superior": self.superior, "inferior": self.inferior, "nasal": self.nasal, "temporal": self.temporal}


@dataclass(frozen=True)
class Measurements:
    """Pixel units of the masks' grid; ratios are unitless. Rounded: ratios to 3 places, pixels to 1."""

    laterality: Laterality | None
    vcdr: float
    hcdr: float
    area_cdr: float
    rim_to_disc: float
    rim_width_px: Sectors
    rim_to_radius: Sectors  # rim width / disc radius in the same direction
    isnt_holds: bool | None  # inferior >= superior >= nasal >= temporal; None without laterality
    disc_center: tuple[float, float]  # (x, y): where the rays start
    disc_area_px: int
    cup_area_px: int
    disc_vertical_px: int
    disc_horizontal_px: int
    cup_vertical_px: int
    cup_horizontal_px: int

    def to_dict(self) -> dict:
        return {
            "laterality": self.laterality,
            "vcdr": self.vcdr,
            "hcdr": self.hcdr,
            "area_cdr": self.area_cdr,
            "rim_to_disc": self.rim_to_disc,
            "rim_width_px": self.rim_width_px.to_dict(),
            "rim_to_radius": self.rim_to_radius.to_dict(),
            "isnt_holds": self.isnt_holds,
            "disc_center": list(self.disc_center),
            "disc_area_px": self.disc_area_px,
            "cup_area_px": self.cup_area_px,
            "disc_vertical_px": self.disc_vertical_px,
            "disc_horizontal_px": self.disc_horizontal_px,
            "cup_vertical_px": self.cup_vertical_px,
            "cup_horizontal_px": self.cup_horizontal_px,
        }


def clean_masks(disc: np.ndarray, cup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(disc, cup) as single hole-free components, the cup clipped to the disc; same shapes in and out."""
    disc, cup = plane(disc), plane(cup)
    if disc.ndim != 2 or disc.shape != cup.shape:
        raise ValueError(f"disc and cup masks must be 2-D and of one shape, got {disc.shape} and {cup.shape}")
    disc, cup = disc.astype(bool), cup.astype(bool)
    clean_disc, clean_cup = np.zeros(disc.shape, bool), np.zeros(disc.shape, bool)
    x, y, w, h = cv2.boundingRect(disc.astype(np.uint8))
    if not (w and h):
        raise NoDiscError("the disc mask is empty: nothing to measure")
    window = np.s_[y : y + h, x : x + w]  # the cup is clipped to the disc, so the disc's box holds both
    clean_disc[window] = fill_holes(largest_component(disc[window]))
    clean_cup[window] = fill_holes(largest_component(cup[window] & clean_disc[window]))
    return clean_disc, clean_cup


def measure(disc: np.ndarray, cup: np.ndarray, laterality: Laterality | None = None, *,
            clean: bool = True) -> Measurements:
    """Measurements of one eye's disc and cup masks (any non-zero pixel is foreground).

    `clean=False` measures bool masks as given: for masks that already are one hole-free disc and a cup
    inside it (`preprocessing.two_stage`'s), which cleaning again would copy at full size for nothing.
    Raises ValueError for masks of different shapes or an unknown laterality, NoDiscError for an
    empty disc. An empty cup is a valid answer: ratios 0, the rim is the whole disc.
    """
    if laterality is not None and laterality not in LATERALITIES:
        raise ValueError(f"laterality must be one of {LATERALITIES} or None, got {laterality!r}")
    if clean:
        disc, cup = clean_masks(disc, cup)
    else:
        disc, cup = (np.ascontiguousarray(plane(m), dtype=bool) for m in (disc, cup))
        if disc.ndim != 2 or disc.shape != cup.shape:
            raise ValueError(f"disc and cup masks must be 2-D and of one shape, got {disc.shape} and {cup.shape}")
    x, y, w, h = cv2.boundingRect(disc.view(np.uint8))  # bool read as 0/1 bytes in place
    if not (w and h):
        raise NoDiscError("the disc mask is empty: nothing to measure")
    disc, cup = disc[y : y + h, x : x + w], cup[y : y + h, x : x + w]  # rays never leave the disc's box
    disc_geo, cup_geo = disc_geometry(disc), disc_geometry(cup)
    cx, cy = disc_geo.centroid
    disc_r, cup_r = _outermost((disc, cup), cx, cy)
    rim = np.maximum(disc_r - cup_r, 0.0)
    diameter = disc_r + np.roll(disc_r, RAYS // 2)  # the ray and its opposite: one line through the centre
    widths = _sectors(rim, laterality, digits=1)
    ratios = _sectors(rim / np.maximum(disc_r, RAY_STEP_PX), laterality, digits=3)  # rim is 0 where disc_r is
    return Measurements(
        laterality=laterality,
        vcdr=_ratio(cup_geo.vertical_diameter_px, disc_geo.vertical_diameter_px),
        hcdr=_ratio(cup_geo.horizontal_diameter_px, disc_geo.horizontal_diameter_px),
        area_cdr=_ratio(cup_geo.area_px, disc_geo.area_px),
        rim_to_disc=round(float(np.min(rim / np.maximum(diameter, RAY_STEP_PX))), 3),
        rim_width_px=widths,
        rim_to_radius=ratios,
        isnt_holds=_isnt(widths),
        disc_center=(round(cx + x, 1), round(cy + y, 1)),
        disc_area_px=disc_geo.area_px,
        cup_area_px=cup_geo.area_px,
        disc_vertical_px=disc_geo.vertical_diameter_px,
        disc_horizontal_px=disc_geo.horizontal_diameter_px,
        cup_vertical_px=cup_geo.vertical_diameter_px,
        cup_horizontal_px=cup_geo.horizontal_diameter_px,
    )


def _ray_angles() -> np.ndarray:
    """Degrees counter-clockwise as the viewer sees the image, 0 = toward the image's right edge."""
    return np.arange(RAYS) * (360.0 / RAYS)


_RAY_COS = np.cos(np.deg2rad(_ray_angles()))[:, None]
_RAY_SIN = np.sin(np.deg2rad(_ray_angles()))[:, None]


def _outermost(masks: tuple[np.ndarray, ...], cx: float, cy: float) -> list[np.ndarray]:
    """Per bool mask (all of one shape) and per ray, the distance from (cx, cy) to the mask's outermost pixel on
    it (0 where it misses).

    Half a step is added: the edge lies between the last foreground sample and the next. The rays are traced
    once for all the masks: a sample reads one byte holding a bit per mask, from the masks framed by a pixel of
    background where every sample that leaves them lands (one gather, no per-sample bounds test).
    """
    height, width = masks[0].shape
    reach = max(np.hypot(x, y) for x in (cx, width - cx) for y in (cy, height - cy))  # the farthest corner
    radii = np.arange(0.0, float(reach) + 1.0, RAY_STEP_PX)
    cols = np.clip(np.rint(cx + radii * _RAY_COS), -1, width).astype(np.intp) + 1
    rows = np.clip(np.rint(cy - radii * _RAY_SIN), -1, height).astype(np.intp) + 1  # image rows grow downward
    framed = np.zeros((height + 2, width + 2), np.uint8)
    for bit, mask in enumerate(masks):
        framed[1:-1, 1:-1] |= np.asarray(mask, bool).view(np.uint8) << bit
    samples = framed[rows, cols]
    distances = []
    for bit in range(len(masks)):
        hit = (samples & (1 << bit)).astype(bool)
        last = hit.shape[1] - 1 - np.argmax(hit[:, ::-1], axis=1)
        distances.append(np.where(hit.any(axis=1), radii[last] + RAY_STEP_PX / 2, 0.0))
    return distances


def _sectors(per_ray: np.ndarray, laterality: Laterality | None, digits: int) -> Sectors:
    """Median of the rays in each 90-degree sector centred on its axis (up, down, left, right)."""
    shifted = (_ray_angles() + 45.0) % 360.0  # sector boundaries fall on multiples of 90

    def median(index: int) -> float:
        return round(float(np.median(per_ray[(shifted // 90) == index])), digits)

    return Sectors(superior=median(1), inferior=median(3), left=median(2), right=median(0), laterality=laterality)


def _isnt(widths: Sectors) -> bool | None:
    """Inferior >= superior >= nasal >= temporal, each up to a pixel; None without laterality."""
    if widths.laterality is None:
        return None
    chain = (widths.inferior, widths.superior, widths.nasal, widths.temporal)
    return all(a >= b - ISNT_TOLERANCE_PX for a, b in zip(chain, chain[1:], strict=False))


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 3)
