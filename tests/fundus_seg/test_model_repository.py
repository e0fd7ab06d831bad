"""The model repository's own rules: what a version number is, and one version per run id under a race."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from fundus_seg import model_repository, storage

MODEL = "optic-disc"


def saved_model(parent: Path, tag: str) -> Path:
    folder = parent / tag
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(f"graph {tag}".encode())
    (folder / "variables" / "variables.index").write_bytes(tag.encode())
    (folder / "metrics.json").write_text(json.dumps({"tag": tag}))
    return folder


@pytest.mark.parametrize("name, number", [("1", 1), ("0042", 42), (str(2**63 - 1), 2**63 - 1), (str(2**63), None),
                                          ("9" * 25, None), ("-1", None), ("+3", None), ("٣", None), (".tmp-3", None),
                                          ("latest", None), ("", None)])
def test_what_a_version_number_is(name, number):
    assert model_repository.version_number(name) == number


def test_listing_ignores_what_is_not_a_complete_version(tmp_path):
    base = tmp_path / MODEL
    for name in ("1", "3", "12", "99999999999999999999", ".tmp-7", "latest"):
        (base / name).mkdir(parents=True)
        (base / name / "saved_model.pb").write_bytes(b"x")
    (base / "5").mkdir()  # incomplete: no saved_model.pb yet
    assert model_repository.list_versions(tmp_path, MODEL) == [1, 3, 12]  # numerically, 12 after 3
    assert model_repository.next_version(tmp_path, MODEL) == 13
    assert model_repository.local_version(base) == base / "12"


@pytest.mark.parametrize("publishers", [2, 4])
def test_one_run_id_publishes_one_version_when_publishers_race(root: str, tmp_path: Path, publishers: int):
    """Two copies of the same Job (a retry racing the original) publish one version, and both
    report it; the check and the claim are one create-only write."""
    repo = storage.join(root, "models")
    folders = [saved_model(tmp_path, f"copy{i}") for i in range(publishers)]
    start, results, errors = threading.Barrier(publishers), [], []

    def publish(folder: Path) -> None:
        start.wait()
        try:
            results.append(model_repository.publish_version(folder, repo, MODEL, run_id="nightly-42"))
        except Exception as exc:  # recorded: the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and results == [1] * publishers
    assert model_repository.list_versions(repo, MODEL) == [1]
    assert model_repository.publish_version(saved_model(tmp_path, "later"), repo, MODEL, run_id="nightly-42") == 1
    assert model_repository.publish_version(saved_model(tmp_path, "other"), repo, MODEL, run_id="nightly-43") == 2


def test_a_claim_left_by_a_dead_publisher_is_taken_over(tmp_path, monkeypatch):
    repo = tmp_path / "models"
    claim = model_repository._run_claim_uri(repo, MODEL, "r1")
    Path(claim).parent.mkdir(parents=True)
    Path(claim).write_text(json.dumps({"publisher": "gone", "at": 0}))
    assert model_repository.publish_version(saved_model(tmp_path, "a"), repo, MODEL, run_id="r1") == 1


def test_a_live_claim_without_a_version_is_a_clear_error_after_waiting(tmp_path, monkeypatch):
    import time

    repo = tmp_path / "models"
    claim = model_repository._run_claim_uri(repo, MODEL, "r1")
    Path(claim).parent.mkdir(parents=True)
    Path(claim).write_text(json.dumps({"publisher": "busy", "at": time.time()}))
    monkeypatch.setattr(model_repository, "RUN_CLAIM_WAIT_S", 1.0)
    with pytest.raises(model_repository.ModelRepositoryError, match="being published by another process"):
        model_repository.publish_version(saved_model(tmp_path, "a"), repo, MODEL, run_id="r1")
    assert model_repository.list_versions(repo, MODEL) == []
