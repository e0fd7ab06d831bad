"""Storage roots of both kinds (the S3 fixtures live in tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A storage root of each kind: a fresh local folder, or a fresh bucket."""
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket")
    return str(tmp_path_factory.mktemp("store"))
