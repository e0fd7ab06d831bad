"""Dataset folders that are subsets of another's manifest (a release held out, a validation fifth): symlinks to the
source's images and masks, and a manifest.csv of the chosen rows, so that every loader reads them as a dataset."""
from __future__ import annotations

import csv
import os
from pathlib import Path

MEDIA_COLUMNS = ("image", "disc_mask", "cup_mask")


def read_rows(source: Path) -> list[dict]:
    with open(source / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_subset(folder: Path, source: Path, rows: list[dict], columns: list[str]) -> None:
    """`folder` holds `rows` (their split column as given) with links into `source`; rerunning keeps existing links."""
    for row in rows:
        for column in MEDIA_COLUMNS:
            link = folder / row[column]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(source.resolve() / row[column], link)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
