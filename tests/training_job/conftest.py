"""Fixtures of the training_job tests: a small two-stage version and small real dataset folders to evaluate it on."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.helpers import DRISHTI, brightness_two_stage_version


@pytest.fixture(scope="session")
def two_stage_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-layout two-stage version (`REPO/optic-disc/1`) whose stages threshold brightness
    (`tests.helpers.brightness_two_stage_version`)."""
    return brightness_two_stage_version(tmp_path_factory.mktemp("two-stage") / "optic-disc" / "1", str(DRISHTI))


def copy_test_images(target: Path, n: int, columns: tuple[str, ...]) -> Path:
    """The first `n` DRISHTI test images with their masks, under a manifest with only `columns`."""
    if not (DRISHTI / "manifest.csv").is_file():
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    with (DRISHTI / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"][:n]
    for row in rows:
        for column in ("image", "disc_mask", "cup_mask"):
            if column in columns:
                (target / row[column]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DRISHTI / row[column], target / row[column])
    with (target / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture(scope="session")
def drishti_six(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six DRISHTI test images (four glaucoma, two normal) with disc and cup masks, labels and the experts' vCDR."""
    return copy_test_images(tmp_path_factory.mktemp("drishti-six"), 6,
                            ("id", "split", "image", "disc_mask", "cup_mask", "label", "vcdr_expert_mean"))


@pytest.fixture(scope="session")
def disc_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images as a dataset that has only disc masks: no cup masks, labels or vCDR."""
    return copy_test_images(tmp_path_factory.mktemp("disc-only"), 6, ("id", "split", "image", "disc_mask"))
