"""Dataset folders (`manifest.csv`, `images/`, `masks/`) and the paper's multi-dataset mixing.

A manifest row names an image and its expert disc mask, relative to the folder. Everything a
training run needs is loaded once, preprocessed into 128x128 arrays, and kept in memory: the
whole of both datasets is ~600 images, i.e. ~120 MB of float32.
"""
from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocessing.decode import decode_image, decode_mask
from preprocessing.errors import DatasetError, ImageDecodeError
from preprocessing.transform import PreprocessConfig, preprocess_image, preprocess_mask

REQUIRED_COLUMNS = ("id", "split", "image", "disc_mask")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Record:
    id: str
    split: str
    image: Path
    disc_mask: Path
    label: str = ""
    cup_mask: Path | None = None
    """None where the dataset has no cup annotation (the manifest's cup_mask column is absent or empty)."""
    vcdr_expert: float | None = None
    """The manifest's `vcdr_expert_mean` (the experts' own mean vertical cup-to-disc ratio), where present."""
    group: str = ""
    """The manifest's `source_release` (RIM-ONE's r1/r2/r3: one camera and hospital each), where present."""


@dataclass
class Samples:
    """Preprocessed arrays of one dataset split, ready for training or evaluation."""

    name: str
    images: np.ndarray  # N x S x S x 3 float32
    masks: np.ndarray  # N x S x S x 1 float32 (soft at the boundary)
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)


def read_manifest(folder: str | Path) -> list[Record]:
    """Parse and check `manifest.csv`; every bad row is reported at once."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"{folder}: no manifest.csv (expected manifest.csv, images/, masks/)")
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{manifest}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}")
        rows = list(reader)
    problems, records, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        where = f"line {line} (id {row.get('id') or '?'})"
        if not (row.get("id") or "").strip():
            problems.append(f"{where}: empty id")
            continue
        if row["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(row["id"])
        if row.get("split") not in SPLITS:
            problems.append(f"{where}: split must be one of {SPLITS}, got {row.get('split')!r}")
        for column in ("image", "disc_mask", "cup_mask"):
            value = (row.get(column) or "").strip()
            if column == "cup_mask" and not value:
                continue  # optional
            if not value or Path(value).is_absolute() or ".." in Path(value).parts:
                problems.append(f"{where}: {column} must be a relative path inside the dataset, got {value!r}")
        vcdr = _optional_number(row.get("vcdr_expert_mean"))
        if vcdr is False:
            problems.append(f"{where}: vcdr_expert_mean must be a number, got {row.get('vcdr_expert_mean')!r}")
        cup = (row.get("cup_mask") or "").strip()
        records.append(Record(row["id"], row.get("split", ""), folder / row["image"], folder / row["disc_mask"],
                              (row.get("label") or "").strip(), folder / cup if cup else None,
                              vcdr if vcdr is not False else None, (row.get("source_release") or "").strip()))
    if not records and not problems:
        problems.append("manifest has no rows")
    if problems:
        raise DatasetError(_report(manifest, problems))
    return records


def _optional_number(text: str | None) -> float | None | bool:
    """The number in a manifest cell, None when empty, False when not a number."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return False
    return value if value == value else False


def _report(where: Path, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:50])
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    return f"{where}: {len(problems)} problem(s):\n  {shown}{more}"


def _check_record(record: Record) -> str | None:
    try:
        image = decode_image(record.image.read_bytes())
        mask = decode_mask(record.disc_mask.read_bytes())
    except FileNotFoundError as exc:
        return f"id {record.id}: missing file {exc.filename}"
    except ImageDecodeError as exc:
        return f"id {record.id}: {exc}"
    if image.shape[:2] != mask.shape:
        return f"id {record.id}: mask is {mask.shape[1]}x{mask.shape[0]} but image is {image.shape[1]}x{image.shape[0]}"
    if not mask.any():
        return f"id {record.id}: disc mask is empty"
    if record.cup_mask is not None:
        try:
            cup = decode_mask(record.cup_mask.read_bytes())
        except FileNotFoundError as exc:
            return f"id {record.id}: missing file {exc.filename}"
        except ImageDecodeError as exc:
            return f"id {record.id}: cup mask: {exc}"
        if cup.shape != mask.shape:
            return f"id {record.id}: cup mask is {cup.shape[1]}x{cup.shape[0]} but image is {image.shape[1]}x{image.shape[0]}"
    return None


def validate_dataset(folder: str | Path) -> list[Record]:
    """Check manifest, files, decodability and mask sizes; raise DatasetError listing every bad row."""
    records = read_manifest(folder)
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(_check_record, records) if p]
    if problems:
        raise DatasetError(_report(Path(folder) / "manifest.csv", problems))
    return records


def _load_record(record: Record, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    problem = _check_record(record)
    if problem:
        raise DatasetError(problem)
    image, _ = preprocess_image(decode_image(record.image.read_bytes()), config)
    return image, preprocess_mask(decode_mask(record.disc_mask.read_bytes()), config)


def load_split(folder: str | Path, split: str | None, config: PreprocessConfig = PreprocessConfig()) -> Samples:
    """Preprocess every image of one split (`None`: all rows) into memory."""
    folder = Path(folder)
    records = [r for r in read_manifest(folder) if split is None or r.split == split]
    if not records:
        raise DatasetError(f"{folder}: no rows with split {split!r}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        pairs = list(pool.map(lambda r: _load_record(r, config), records))
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    return Samples(folder.name, images, masks, records)


def mix(datasets: list[Samples], seed: int = 0, replicate_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's "data replication and random combination".

    Each dataset is replicated up to the size of the largest one (or `replicate_to`), so a small
    instrument's images weigh as much as a large one's, then everything is shuffled together.
    """
    if not datasets:
        raise DatasetError("no training data")
    target = replicate_to or max(len(d) for d in datasets)
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for data in datasets:
        index = np.resize(rng.permutation(len(data)), target)  # cycle through, so every image appears
        images.append(data.images[index])
        masks.append(data.masks[index])
    order = rng.permutation(target * len(datasets))
    return np.concatenate(images)[order], np.concatenate(masks)[order]
