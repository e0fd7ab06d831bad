"""Twelve seeded-random rim-one-dl TRAIN images of one release (camera), each raw beside the same photo with the
expert disc (green) and cup (blue) contours, as one PNG: what the cup's edge looks like in that camera's pixels
(docs/RESULTS.md "r2's images, and the cup's weight").

    .venv/bin/python experiments/release_montage.py RELEASE OUT.png [--dataset DIR]

Only the train split is drawn from: nothing here may be chosen from test images.
"""
from __future__ import annotations

import argparse
import random

import cv2
import numpy as np

from preprocessing.datasets import Record, read_manifest

TILE, TILES, PER_ROW = 256, 12, 3
DISC_BGR, CUP_BGR = (0, 255, 0), (255, 0, 0)


def tile(record: Record) -> np.ndarray:
    """The raw photo and the photo with the expert contours, side by side, labelled with the id and label."""
    image = cv2.imread(str(record.image))
    raw = cv2.resize(image, (TILE, TILE))
    for mask_path, colour in ((record.disc_mask, DISC_BGR), (record.cup_mask, CUP_BGR)):
        mask = (cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
        cv2.drawContours(image, contours, -1, colour, max(1, image.shape[0] // 200))
    pair = np.hstack([raw, cv2.resize(image, (TILE, TILE))])
    cv2.putText(pair, f"{record.id} {record.label[:1]}", (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", help="the manifest's source_release, e.g. r2")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--dataset", default="../shared/data/rim-one-dl")
    args = parser.parse_args()
    records = [r for r in read_manifest(args.dataset)
               if r.split == "train" and r.group == args.release and r.cup_mask is not None]
    if len(records) < TILES:
        parser.error(f"release {args.release!r} has {len(records)} train images with a cup mask; need {TILES}")
    random.Random(0).shuffle(records)
    tiles = [tile(record) for record in records[:TILES]]
    rows = [np.hstack(tiles[i:i + PER_ROW]) for i in range(0, TILES, PER_ROW)]
    cv2.imwrite(args.out, np.vstack(rows))
    print(f"{args.out}: {TILES} {args.release} train images")


if __name__ == "__main__":
    main()
