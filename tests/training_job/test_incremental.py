"""Full, then incremental retraining from object storage (a moto S3 endpoint), and replay."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from fundus_seg import data_cli, model_repository, storage
from fundus_seg.errors import ModelRepositoryError
from preprocessing.datasets import Samples
from training_job.__main__ import main
from training_job.config import RunConfig
from training_job.job import resolve_base
from training_job.train import training_arrays

TINY = ["--depth", "1", "--width", "4", "--no-jit-compile", "--steps-per-epoch", "2", "--batch-size", "4", "--accelerator", "cpu"]


def samples(name: str, n: int, value: float) -> Samples:
    images = np.full((n, 8, 8, 3), value, np.float32)
    return Samples(name, images, images[..., :1], [None] * n)


def test_replay_makes_up_the_requested_share_of_the_mix():
    new = [samples("new", 30, 1.0)]
    old = [samples("old-a", 5, 2.0), samples("old-b", 50, 3.0)]
    images, masks, n_replay = training_arrays(new, seed=0, replay=old, replay_fraction=0.25)
    values = images[:, 0, 0, 0]
    assert len(images) == len(masks) == 40 and n_replay == 10  # 10 of 40 = 25 %
    assert (values == 1.0).sum() == 30
    assert (values == 2.0).sum() == 5 and (values == 3.0).sum() == 5  # the earlier datasets share the replay
    assert np.array_equal(images[..., :1], masks)  # pairs stay together through the shuffle
    assert not np.array_equal(values[:30], np.ones(30))  # and replay is mixed in, not appended
    plain, _, none = training_arrays(new, seed=0, replay=old, replay_fraction=0.0)
    assert len(plain) == 30 and none == 0


def test_base_version_must_exist(tmp_path):
    run = RunConfig(model_repo=str(tmp_path), model_name="optic-disc")
    with pytest.raises(ModelRepositoryError, match="no published version to start from"):
        resolve_base(run, "latest")
    (tmp_path / "optic-disc" / "1").mkdir(parents=True)
    (tmp_path / "optic-disc" / "1" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ModelRepositoryError, match="no model card"):
        resolve_base(run, "latest")  # nothing says which architecture and preprocessing it has
    (tmp_path / "optic-disc" / "1" / "metrics.json").write_text("{}")
    assert resolve_base(run, "latest").version == 1
    with pytest.raises(ModelRepositoryError, match=r"no version 7 \(published: 1\)"):
        resolve_base(run, 7)


def published_scores(version_uri: str, datasets: dict, scratch) -> dict:
    """Each dataset's test split scored again through the published SavedModel (what is served), fed the
    input dtype its card names."""
    from training_job.evaluate import evaluate

    storage.download_dir(version_uri, scratch)
    predict = model_repository.load_version(scratch).predict
    return {name: evaluate(predict, folder, "test") for name, folder in datasets.items()}


def run_job(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else {}, err


@pytest.mark.slow
def test_full_then_incremental_from_s3_publishes_versions_1_and_2(s3_bucket, tiny_datasets, tmp_path, capsys):
    drishti, rim_one = (f"{s3_bucket}/datasets/{name}" for name in ("drishti-gs1", "rim-one-dl"))
    data_cli.push(tiny_datasets["drishti-gs1"], drishti, progress=False)
    data_cli.push(tiny_datasets["rim-one-dl"], rim_one, progress=False)
    repo = f"{s3_bucket}/models"
    common = [*TINY, "--model-repo", repo, "--cache-dir", str(tmp_path / "cache")]

    code, result, err = run_job(capsys, "--data", drishti, "--epochs", "2", "--run-id", "full-1", *common)
    assert code == 0, err
    assert result["version"] == 1 and result["published"] and result["mode"] == "full"
    assert re.search(r"^epoch 2/2 loss \d+\.\d{4} dice \d\.\d{4} [\d.]+ img/s elapsed \d+:\d\d:\d\d$", err, re.M), err

    # New instrument: incremental from the latest version (3 epochs by default), replaying DRISHTI;
    # the architecture flags ask for another network, which the base's weights cannot fill: ignored.
    code, result, err = run_job(capsys, "--mode", "incremental", "--base-version", "latest", "--data", rim_one,
                                "--replay-fraction", "0.5", "--run-id", "incremental-1", *common,
                                "--depth", "2", "--width", "8", "--ir", "1.5")
    assert code == 0, err
    assert result["version"] == 2 and result["base_version"] == 1
    assert model_repository.list_versions(repo, "optic-disc") == [1, 2]

    metrics = storage.read_json(f"{repo}/optic-disc/2/metrics.json")
    assert metrics["mode"] == "incremental" and metrics["base_version"] == 1 and metrics["run_id"] == "incremental-1"
    assert metrics["data"] == [rim_one] and metrics["seen_data"] == [drishti, rim_one]
    assert metrics["replay"] == {"fraction": 0.5, "data": [drishti], "images": 4}  # 4 new + 4 replayed
    assert metrics["epochs"] == 3 and metrics["resumed_from_epoch"] == 0
    base = storage.read_json(f"{repo}/optic-disc/1/metrics.json")
    assert metrics["architecture"] == base["architecture"] == "1/4/1.1"  # the base's, not 2/8/1.5
    assert metrics["config"]["model"] == base["config"]["model"]
    assert metrics["trainable_params"] == base["trainable_params"] and metrics["training_seconds"] > 0
    assert set(metrics["test_metrics"]) == {"drishti-gs1", "rim-one-dl"}  # the old instrument is scored too
    published = published_scores(f"{repo}/optic-disc/2", tiny_datasets, tmp_path / "v2")
    for name, recorded in metrics["test_metrics"].items():  # the figures are the published model's own
        assert recorded["n"] == published[name]["n"] == 2
        assert recorded["dice_mean"] == pytest.approx(published[name]["dice_mean"], abs=0.002), name
        assert recorded["rrp"] == pytest.approx(published[name]["rrp"], abs=0.1), name
    assert metrics["accelerator"]["kind"] == "cpu" and metrics["global_batch"] == 4
    assert not storage.list_dir(f"{repo}/.checkpoints/optic-disc")  # removed once published

    # A rerun of a published run id publishes nothing and trains nothing.
    code, result, err = run_job(capsys, "--mode", "incremental", "--data", rim_one, "--run-id", "incremental-1", *common)
    assert code == 0 and result["version"] == 2 and result["published"] is False
    assert model_repository.list_versions(repo, "optic-disc") == [1, 2]
    assert "epoch 1/" not in err
