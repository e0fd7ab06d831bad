"""rim-one-dl TRAIN split's expert masks by release (camera): are r2's cup labels any different from r1's and r3's?
Per release, medians of the cup/disc area ratio, the masks' vCDR, the contour roughness (perimeter^2 / 4 pi area,
1 for a circle), the image side and the disc's share of the image; images whose cup has more than one component;
the largest share of a cup outside its disc; the labels (docs/RESULTS.md "r2's images, and the cup's weight").

    .venv/bin/python experiments/release_masks.py [DATASET]

Only the train split is read: nothing here may be chosen from test images.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics

import cv2
import numpy as np

from preprocessing.datasets import Record, read_manifest


@dataclasses.dataclass(frozen=True)
class MaskStats:
    """One image's expert masks, measured."""

    cup_to_disc_area: float
    vcdr: float
    cup_components: int
    cup_outside_disc: float
    cup_roughness: float
    side_px: int
    disc_share: float


def read_mask(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127


def measure(record: Record) -> MaskStats:
    disc, cup = read_mask(record.disc_mask), read_mask(record.cup_mask)
    disc_rows = np.nonzero(disc)[0]
    cup_rows = np.nonzero(cup)[0]
    cup_height = np.ptp(cup_rows) + 1 if cup.any() else 0
    components = cv2.connectedComponents(cup.astype(np.uint8))[0] - 1
    contours = cv2.findContours(cup.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    perimeter = sum(cv2.arcLength(contour, True) for contour in contours)
    cup_area = max(int(cup.sum()), 1)
    return MaskStats(cup.sum() / disc.sum(), cup_height / (np.ptp(disc_rows) + 1), components,
                     (cup & ~disc).sum() / cup_area, perimeter ** 2 / (4 * np.pi * cup_area), disc.shape[0],
                     disc.sum() / disc.size)


def median(stats: list[MaskStats], name: str) -> float:
    return statistics.median(getattr(s, name) for s in stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="../shared/data/rim-one-dl")
    args = parser.parse_args()
    by_release: dict[str, list[tuple[MaskStats, str]]] = collections.defaultdict(list)
    for record in read_manifest(args.dataset):
        if record.split == "train" and record.cup_mask is not None:
            by_release[record.group].append((measure(record), record.label))
    print("| release | n | cup/disc area | vCDR | cups of >1 component | most cup outside its disc | roughness | side px "
          "| disc share | labels |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for release, measured in sorted(by_release.items()):
        stats = [m for m, _ in measured]
        labels = collections.Counter(label for _, label in measured)
        labels = ", ".join(f"{label} {n}" for label, n in sorted(labels.items()))
        print(f"| {release} | {len(stats)} | {median(stats, 'cup_to_disc_area'):.3f} | {median(stats, 'vcdr'):.3f} "
              f"| {sum(s.cup_components > 1 for s in stats)} | {max(s.cup_outside_disc for s in stats):.3f} "
              f"| {median(stats, 'cup_roughness'):.3f} | {median(stats, 'side_px'):.0f} | {median(stats, 'disc_share'):.3f} | {labels} |")


if __name__ == "__main__":
    main()
