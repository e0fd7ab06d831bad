"""Fixtures for the serving tests: DRISHTI images, synthetic SavedModels, and the one-machine stack."""
from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fundus_seg.paths import DEFAULT_MODEL_NAME
from tests.serving.helpers import DRISHTI, FakeKubeAPI, build_saved_model, build_two_stage_version, bundled_two_stage


@pytest.fixture(scope="session")
def drishti() -> list[tuple[Path, Path]]:
    """(image, expert disc mask) pairs of DRISHTI-GS1's test split."""
    manifest = DRISHTI / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"no DRISHTI-GS1 data at {DRISHTI}")
    with manifest.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    return [(DRISHTI / r["image"], DRISHTI / r["disc_mask"]) for r in rows]


@pytest.fixture(scope="session")
def image_bytes(drishti) -> bytes:
    return drishti[0][0].read_bytes()


@pytest.fixture(scope="session")
def saved_model_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serving-models") / "bright"
    build_saved_model(path, 0.7)
    return path


@pytest.fixture(scope="session")
def two_stage_version(tmp_path_factory) -> Path:
    """A two-stage version: the bundled one when published (models/optic-disc/2), else a tiny untrained one."""
    return bundled_two_stage() or build_two_stage_version(tmp_path_factory.mktemp("two-stage") / "tiny")


@pytest.fixture(scope="session")
def publish_version(saved_model_template) -> Callable[[Path, int], Path]:
    """Publish like the training job: copy into a hidden folder, then rename it into place."""
    def publish(repo: Path, version: int, source: Path | None = None) -> Path:
        base = repo / DEFAULT_MODEL_NAME
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".tmp-{version}-{time.monotonic_ns()}"
        shutil.copytree(source or saved_model_template, staging)
        os.rename(staging, base / str(version))
        return base / str(version)
    return publish


@pytest.fixture
def start_stack(tmp_path) -> Callable[..., object]:
    """Start predictor + transformer processes on free ports; stopped after the test."""
    from serving.local_service import LocalService, LocalServiceConfig

    stacks = []

    def start(repo: Path, **options) -> LocalService:
        config = LocalServiceConfig(model_repo=repo, http_port=0, grpc_port=0, predictor_grpc_port=0,
                             predictor_rest_port=0, poll_seconds=0.2, log_dir=tmp_path / f"logs{len(stacks)}",
                             **options)
        stack = LocalService(config)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture
def kube_api():
    """An HTTP fake of the Kubernetes API server on 127.0.0.1 (tests/serving/helpers.py)."""
    fake = FakeKubeAPI().start()
    yield fake
    fake.stop()
