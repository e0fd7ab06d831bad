"""Helpers of the hospital-integration tests: the experts' disc and cup of a real photo as a DICOM photo, and the
real DICOM tools (skipped with the reason when they are not installed)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DRISHTI

PHOTO_ID = "drishtiGS_002"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: run tools/install-dicom-tools.sh (dcmtk, dicom3tools)")
    return path


def dciodvfy(path: Path) -> list[str]:
    """dicom3tools' IOD validator: its Error and Warning lines (none for a valid object)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def dcmdump(path: Path, *tags: str) -> str:
    """dcmtk's dump of `path` (only `tags`, `+P gggg,eeee` each, when given)."""
    arguments = [a for tag in tags for a in ("+P", tag)]
    return subprocess.run([tool("dcmdump"), *arguments, str(path)], capture_output=True, text=True, timeout=120,
                          check=True).stdout


def real_photo():
    """(rgb, disc, cup) of one DRISHTI photo and its experts' masks."""
    from preprocessing.decode import decode_image, decode_mask

    image = DRISHTI / "images" / f"{PHOTO_ID}.jpg"
    if not image.is_file():
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    masks = DRISHTI / "masks"
    return (decode_image(image.read_bytes()), decode_mask((masks / f"{PHOTO_ID}_disc.png").read_bytes()),
            decode_mask((masks / f"{PHOTO_ID}_cup.png").read_bytes()))
