"""Fixtures shared across components: a real S3 HTTP endpoint (moto) on 127.0.0.1, reached through
the standard AWS_* variables, and tiny real datasets (a few images of each instrument)."""
from __future__ import annotations

import csv
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fundus_seg import storage
from tests.helpers import DRISHTI, RIM_ONE, S3_ENVIRONMENT_CLEARED, s3_environment


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto server for the whole session; each test gets its own bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``s3://<fresh bucket>``, with the environment pointing boto3 at the moto endpoint."""
    for name, value in s3_environment(s3_endpoint, tmp_path_factory.mktemp("aws") / "none").items():
        monkeypatch.setenv(name, value)
    for name in S3_ENVIRONMENT_CLEARED:
        monkeypatch.delenv(name, raising=False)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    storage.S3Storage().client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def copy_subset(source: Path, target: Path, n_train: int, n_test: int) -> Path:
    """The first rows of each split of a real dataset, with their image, disc and cup mask files."""
    with (source / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), list(reader.fieldnames or [])
    picked = [r for r in rows if r["split"] == "train"][:n_train] + [r for r in rows if r["split"] == "test"][:n_test]
    for row in picked:
        for column in ("image", "disc_mask", "cup_mask"):
            if not row.get(column):
                continue
            (target / row[column]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / row[column], target / row[column])
    with (target / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picked)
    return target


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`drishti-gs1` and `rim-one-dl` with 4 train and 2 test images each (real images, seconds to train on)."""
    if not (DRISHTI / "manifest.csv").is_file() or not (RIM_ONE / "manifest.csv").is_file():
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    root = tmp_path_factory.mktemp("datasets")
    return {source.name: copy_subset(source, root / source.name, 4, 2) for source in (DRISHTI, RIM_ONE)}
