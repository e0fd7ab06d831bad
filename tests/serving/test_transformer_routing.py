"""The canary split from rollout.json: labels by percent, re-read only when the file changes."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from serving.rollout.record import CANARY_LABEL, STABLE_LABEL, RolloutRecord
from serving.transformer.routing import VersionRouter


def write(path, record) -> None:
    path.write_text(json.dumps(record))


def test_without_rollout_file_no_label_is_sent(tmp_path):
    assert VersionRouter(None).choose() is None
    assert VersionRouter(tmp_path / "rollout.json").choose() is None


def test_stable_only(tmp_path):
    write(tmp_path / "rollout.json", {"model_name": "optic-disc", "stable": 3, "canary": None, "canary_percent": 0})
    router = VersionRouter(tmp_path / "rollout.json")
    assert {router.choose() for _ in range(50)} == {STABLE_LABEL}
    assert router.split.version_for(STABLE_LABEL) == 3 and router.split.version_for(CANARY_LABEL) is None


def test_canary_gets_its_percent(tmp_path):
    write(tmp_path / "rollout.json", {"stable": 3, "canary": 4, "canary_percent": 10})
    router = VersionRouter(tmp_path / "rollout.json", rng=random.Random(0))
    picks = [router.choose() for _ in range(5000)]
    assert 0.08 < picks.count(CANARY_LABEL) / len(picks) < 0.12
    assert set(picks) == {STABLE_LABEL, CANARY_LABEL}


def test_reread_only_when_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "rollout.json"
    write(path, {"stable": 3, "canary": 4, "canary_percent": 100})
    router = VersionRouter(path, check_every_s=0.0)
    assert router.choose() == CANARY_LABEL
    reads = []
    original = type(path).read_text
    monkeypatch.setattr(type(path), "read_text", lambda self, *a, **k: reads.append(self) or original(self, *a, **k))
    for _ in range(20):
        router.choose()
    assert reads == []  # unchanged mtime and size: never re-read
    write(path, {"stable": 4, "canary": None, "canary_percent": 0})
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert router.choose() == STABLE_LABEL and router.split == RolloutRecord(4, None, 0.0) and len(reads) == 1


def test_checks_the_file_at_most_every_interval(tmp_path):
    path = tmp_path / "rollout.json"
    router = VersionRouter(path, check_every_s=3600)
    assert router.choose() is None
    write(path, {"stable": 3})
    assert router.choose() is None  # not looked at again within the interval


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_file_deleted_mid_canary_sends_everything_to_stable(tmp_path, caplog):
    """Without a label the predictor answers with its latest version -- the canary -- so no label is never the fallback."""
    path = tmp_path / "rollout.json"
    write(path, {"stable": 3, "canary": 4, "canary_percent": 10})
    router = VersionRouter(path, check_every_s=0.0, rng=random.Random(0))
    assert router.split == RolloutRecord(3, 4, 10.0)
    path.unlink()
    with caplog.at_level("INFO", logger="serving.transformer.routing"):
        assert {router.choose() for _ in range(500)} == {STABLE_LABEL}
    assert router.split == RolloutRecord(3) and router.split.version_for(STABLE_LABEL) == 3  # REST pins version 3
    (warning,) = warnings_of(caplog)  # once, not per check
    assert "is gone" in warning and "stable version 3" in warning
    write(path, {"stable": 4, "canary": None, "canary_percent": 0})  # a rollout writes it again
    assert router.split == RolloutRecord(4)
    path.unlink()
    assert router.choose() == STABLE_LABEL and router.split == RolloutRecord(4)


def test_a_broken_file_keeps_only_the_stable_version(tmp_path, caplog):
    path = tmp_path / "rollout.json"
    write(path, {"stable": 3, "canary": 4, "canary_percent": 50})
    router = VersionRouter(path, check_every_s=0.0)
    assert router.split == RolloutRecord(3, 4, 50.0)
    path.write_text("{ half written")
    with caplog.at_level("INFO", logger="serving.transformer.routing"):
        assert {router.choose() for _ in range(100)} == {STABLE_LABEL}
    assert router.split == RolloutRecord(3)
    (warning,) = warnings_of(caplog)
    assert "is unusable" in warning and "stable version 3" in warning
    write(path, {"stable": 3, "canary": 4, "canary_percent": 50})
    assert router.split == RolloutRecord(3, 4, 50.0)  # fixed: the split is back


def test_a_broken_file_before_any_rollout_sends_no_label(tmp_path):
    path = tmp_path / "rollout.json"
    path.write_text("[]")
    router = VersionRouter(path, check_every_s=0.0)
    assert router.choose() is None and router.split is None


def test_importing_the_router_loads_no_heavy_dependency():
    """The record it reads lives in serving.rollout, whose gate needs preprocessing: none of that comes along."""
    code = ("import sys, serving.transformer.routing; "
            "print(sorted(m for m in ('numpy', 'cv2', 'tensorflow', 'kubernetes', 'preprocessing', "
            "'serving.rollout.gate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
