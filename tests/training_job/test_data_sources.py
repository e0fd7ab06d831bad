"""The dataset cache (training_job/data_sources.py): an S3 dataset is downloaded once per content of
its manifest.csv, reused while that is unchanged, fetched afresh when it changes, and two processes
downloading the same dataset at once end up with one complete copy."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fundus_seg import data_cli, storage
from fundus_seg.paths import REPO_ROOT
from training_job.data_sources import DataCache

pytestmark = pytest.mark.slow  # real images through a moto S3 endpoint


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_unchanged_dataset_is_reused_without_downloading_it_again(s3_bucket, tiny_datasets, tmp_path):
    source = tiny_datasets["drishti-gs1"]
    uri = f"{s3_bucket}/datasets/drishti-gs1"
    data_cli.push(source, uri, progress=False)
    cache = DataCache(tmp_path / "cache")

    first = cache.fetch(uri)
    assert first.folder.parent == tmp_path / "cache" and first.name == "drishti-gs1"
    assert files_of(first.folder) == files_of(source)

    image = manifest_rows(source)[0]["image"]
    storage.write_bytes(f"{uri}/{image}", b"changed in the bucket, manifest untouched")
    again = DataCache(tmp_path / "cache").fetch(uri)  # a restarted Job on the same node
    assert again.folder == first.folder
    assert (again.folder / image).read_bytes() == (source / image).read_bytes()  # the cached copy, not the bucket's
    assert os.listdir(tmp_path / "cache") == [first.folder.name]


def test_a_dataset_pushed_again_with_a_new_manifest_is_downloaded_afresh(s3_bucket, tiny_datasets, tmp_path):
    source = tiny_datasets["rim-one-dl"]
    uri = f"{s3_bucket}/datasets/rim-one-dl"
    data_cli.push(source, uri, progress=False)
    cache = DataCache(tmp_path / "cache")
    before = cache.fetch(uri)
    assert before.split_size("test") == 2

    grown = tmp_path / "grown"
    rows = manifest_rows(source)
    for row in rows:
        for column in ("image", "disc_mask", "cup_mask"):
            if not row.get(column):
                continue
            (grown / row[column]).parent.mkdir(parents=True, exist_ok=True)
            (grown / row[column]).write_bytes((source / row[column]).read_bytes())
    extra = {**rows[0], "id": "extra", "split": "test"}  # one more test row, reusing an image
    with (grown / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, extra])
    data_cli.push(grown, uri, progress=False)

    after = cache.fetch(uri)
    assert after.folder != before.folder and after.split_size("test") == 3
    assert manifest_rows(after.folder)[-1]["id"] == "extra"
    assert before.split_size("test") == 2  # the old copy is left as it was (a run using it is unaffected)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fundus_seg import storage
    from training_job.data_sources import DataCache

    uri, root, mine, theirs = sys.argv[1:5]
    real = storage.download_dir

    def download_dir(source, local_dir):  # both processes are downloading before either finishes
        Path(mine).touch()
        deadline = time.monotonic() + 120
        while not Path(theirs).exists():
            assert time.monotonic() < deadline, "the other process never started downloading"
            time.sleep(0.01)
        return real(source, local_dir)

    storage.download_dir = download_dir
    print(DataCache(Path(root)).fetch(uri).folder)
""")


def test_two_processes_downloading_the_same_dataset_at_once_share_one_complete_copy(s3_bucket, tiny_datasets,
                                                                                   tmp_path):
    source = tiny_datasets["drishti-gs1"]
    uri = f"{s3_bucket}/datasets/drishti-gs1"
    data_cli.push(source, uri, progress=False)
    root, flags = tmp_path / "cache", [tmp_path / "a.started", tmp_path / "b.started"]
    children = [subprocess.Popen([sys.executable, "-c", CHILD, uri, str(root), str(mine), str(theirs)],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                for mine, theirs in (flags, flags[::-1])]
    results = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in results]
    folders = {Path(out.strip()) for out, _ in results}
    assert len(folders) == 1
    [folder] = folders
    assert files_of(folder) == files_of(source)
    assert os.listdir(root) == [folder.name]  # the loser's temporary copy is gone
