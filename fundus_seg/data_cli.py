"""`fundus-seg data push DIR URI`: put a checked dataset folder into object storage.

Validation runs first and in full, so a broken dataset is refused with every bad row listed and
nothing is uploaded. Only what a dataset is made of travels: the manifest, the files its rows
name, and the `*.md` notes (provenance, licence) -- no stray caches or editor files.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fundus_seg import storage
from fundus_seg.errors import storage_errors
from preprocessing.errors import DatasetError

MANIFEST = "manifest.csv"


def dataset_files(folder: Path) -> list[str]:
    """Relative paths to upload: manifest.csv, every file a row names (image, *mask), top-level *.md."""
    with (folder / MANIFEST).open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in reader.fieldnames or [] if c == "image" or c.endswith("mask")]
        referenced = {value for row in reader for c in columns if (value := (row[c] or "").strip())}
    # validate_dataset checks image and disc_mask; optional columns (cup_mask) are checked here
    bad = sorted(v for v in referenced
                 if Path(v).is_absolute() or ".." in Path(v).parts or not (folder / v).is_file())
    if bad:
        raise DatasetError(f"{folder / MANIFEST}: {len(bad)} referenced file(s) missing or outside the dataset:\n  "
                           + "\n  ".join(bad))
    notes = {p.name for p in folder.glob("*.md") if p.is_file()}
    return sorted({MANIFEST} | {Path(v).as_posix() for v in referenced} | notes)


def push(folder: str | Path, uri: str, *, progress: bool = True) -> list[str]:
    """Validate the dataset folder, then upload it under `uri`; returns the relative paths uploaded."""
    from preprocessing.datasets import (
        validate_dataset,  # heavy (OpenCV); only for this command
    )

    folder = Path(folder)
    validate_dataset(folder)
    files = dataset_files(folder)
    return storage.upload_dir(folder, uri, files=files, progress=progress)


def _push_command(args: argparse.Namespace) -> int:
    with storage_errors(args.uri):  # one clear line instead of a traceback
        files = push(args.dir, args.uri, progress=not args.no_progress)
    size = sum((Path(args.dir) / f).stat().st_size for f in files)
    print(f"pushed {len(files)} files ({size / 1e6:.1f} MB) to {args.uri}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="manage datasets in object storage")
    commands = data.add_subparsers(dest="data_command", required=True)
    push_parser = commands.add_parser(
        "push", help="validate a dataset folder and upload it",
        description="Validate DIR (manifest.csv, images/, masks/) and upload it to URI "
                    "(s3://bucket/prefix or a local path). S3 settings come from the AWS_* environment.")
    push_parser.add_argument("dir", type=Path, help="dataset folder")
    push_parser.add_argument("uri", help="target, e.g. s3://fundus/datasets/drishti-gs1")
    push_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    push_parser.set_defaults(func=_push_command)
