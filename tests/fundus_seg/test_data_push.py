"""`fundus-seg data push`: validate first, then upload only what the dataset is made of."""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fundus_seg import data_cli, storage
from fundus_seg.errors import StorageError
from fundus_seg.paths import SHARED_DATA
from preprocessing.errors import DatasetError

COLUMNS = ["id", "split", "image", "disc_mask", "cup_mask", "label"]


def write_dataset(folder: Path, n: int = 3) -> list[dict[str, str]]:
    """A tiny valid dataset (plus clutter that must not be pushed); returns its manifest rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        ident = f"img{i}"
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        disc = np.zeros((48, 64), np.uint8)
        cv2.circle(disc, (32, 24), 10, 255, -1)
        cup = np.zeros_like(disc)
        cv2.circle(cup, (32, 24), 4, 255, -1)
        row = {"id": ident, "split": "train" if i else "test", "image": f"images/{ident}.jpg",
               "disc_mask": f"masks/{ident}_disc.png", "cup_mask": f"masks/{ident}_cup.png", "label": "normal"}
        for column, array in (("image", image), ("disc_mask", disc), ("cup_mask", cup)):
            (folder / row[column]).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / row[column]), array)
        rows.append(row)
    write_manifest(folder, rows)
    (folder / "SOURCE.md").write_text("# generated for tests\n")
    (folder / "images" / ".DS_Store").write_bytes(b"clutter")
    (folder / "cache").mkdir()
    (folder / "cache" / "arrays.npy").write_bytes(b"clutter")
    return rows


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> None:
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_cli(*argv: str) -> int:
    """Through data_cli.register, as the fundus-seg dispatcher wires it."""
    parser = argparse.ArgumentParser(prog="fundus-seg")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def all_keys(uri: str) -> list[str]:
    """Every object under `uri`, relative to it."""
    prefix = uri.split("/", 3)[3] + "/"
    return sorted(k.removeprefix(prefix) for k in storage.S3Storage()._keys(uri))


def test_push_uploads_manifest_referenced_files_and_notes(s3_bucket: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rows = write_dataset(tmp_path / "tiny")
    target = storage.join(s3_bucket, "datasets", "tiny")
    assert run_cli("data", "push", str(tmp_path / "tiny"), target, "--no-progress") == 0
    expected = sorted(["manifest.csv", "SOURCE.md"] + [r[c] for r in rows for c in ("image", "disc_mask", "cup_mask")])
    assert all_keys(target) == expected
    assert storage.read_bytes(storage.join(target, "images", "img1.jpg")) == (tmp_path / "tiny/images/img1.jpg").read_bytes()
    assert f"pushed {len(expected)} files" in capsys.readouterr().out


def test_push_to_a_missing_bucket_is_a_clear_error(s3_bucket: str, tmp_path: Path) -> None:
    write_dataset(tmp_path / "tiny")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        run_cli("data", "push", str(tmp_path / "tiny"), s3_bucket + "-missing/tiny", "--no-progress")


def test_push_refuses_a_broken_dataset_and_uploads_nothing(s3_bucket: str, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    rows = write_dataset(folder, n=4)
    (folder / rows[1]["image"]).unlink()  # missing file
    cv2.imwrite(str(folder / rows[2]["disc_mask"]), np.full((10, 10), 255, np.uint8))  # wrong size
    (folder / rows[3]["image"]).write_bytes(b"not a jpeg")  # unreadable
    write_manifest(folder, rows + [rows[0]])  # duplicate id
    target = storage.join(s3_bucket, "datasets", "broken")
    with pytest.raises(DatasetError) as caught:
        data_cli.push(folder, target, progress=False)
    message = str(caught.value)
    assert "duplicate" in message  # the manifest is checked before any file is opened
    (folder / "manifest.csv").unlink()
    write_manifest(folder, rows)
    with pytest.raises(DatasetError) as caught:
        data_cli.push(folder, target, progress=False)
    message = str(caught.value)
    assert all(ident in message for ident in ("img1", "img2", "img3")) and "img0" not in message
    assert storage.list_dir(s3_bucket) == []


def test_push_refuses_a_missing_optional_mask(tmp_path: Path) -> None:
    rows = write_dataset(tmp_path / "ds")
    (tmp_path / "ds" / rows[0]["cup_mask"]).unlink()
    with pytest.raises(DatasetError, match="img0_cup.png"):
        data_cli.push(tmp_path / "ds", str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (SHARED_DATA / "drishti-gs1" / "manifest.csv").is_file(), reason="shared data not present")
def test_push_real_dataset_to_a_local_folder(tmp_path: Path) -> None:
    source = SHARED_DATA / "drishti-gs1"
    before = sorted(source.rglob("*"))
    started = time.monotonic()
    pushed = data_cli.push(source, f"file://{tmp_path}/datasets/drishti-gs1", progress=False)
    assert time.monotonic() - started < 30
    assert len(pushed) == 2 + 3 * 101  # manifest, SOURCE.md, image + disc + cup per row
    target = tmp_path / "datasets" / "drishti-gs1"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == pushed
    assert sorted(source.rglob("*")) == before  # nothing written next to the source
