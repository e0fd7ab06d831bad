"""Fixtures for the offline Kubernetes checks (helpers live in tests/k8s/manifests.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s.manifests import TOOLS_BIN, install_tools


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    """tools/bin with working helm and kubectl, or skip (printing why)."""
    reason = install_tools()
    if reason:
        print(f"SKIP k8s tool tests: {reason}")
        pytest.skip(reason)
    return TOOLS_BIN
