"""Fixtures of the DICOM node tests: a deterministic two-stage version in a model repository of its own."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import brightness_two_stage_version


@pytest.fixture(scope="session")
def two_stage_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<tmp>/two-stage/optic-disc/1`, a complete two-stage version (copy it into a repository to publish it)."""
    return brightness_two_stage_version(tmp_path_factory.mktemp("two-stage") / "optic-disc" / "1")
