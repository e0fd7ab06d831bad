"""Per-epoch checkpoints: what they hold, and a Job that is killed, stopped and restarted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

from fundus_seg import data_cli, model_repository, storage
from training_job import job
from training_job.__main__ import main
from training_job.checkpoints import (
    CheckpointError,
    CheckpointState,
    CheckpointStore,
    EpochCheckpoint,
)
from training_job.config import TrainConfig
from training_job.train import compile_model
from training_job.unet import UNetConfig, build_unet

TINY = ["--depth", "1", "--width", "4", "--no-jit-compile", "--steps-per-epoch", "2", "--batch-size", "4",
        "--accelerator", "cpu"]


def tiny_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_unet(UNetConfig(depth=1, width=4, input_size=32))
    return compile_model(model, TrainConfig(jit_compile=False), total_steps=10)


def test_checkpoint_restores_weights_and_optimizer_state(tmp_path):
    model = tiny_model(0)
    x = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    model.fit(x, (x[..., :1] > 0.5).astype("float32"), batch_size=2, epochs=1, verbose=0)  # 2 steps
    store = CheckpointStore(str(tmp_path / "run-1"))
    assert store.state() is None
    store.save(model, CheckpointState(epoch=1, weights="epoch-0001.weights.h5", config={"a": 1}, training_seconds=2.5))

    state = store.state()
    assert state.epoch == 1 and state.training_seconds == 2.5
    restored = tiny_model(1)
    store.restore(restored, state)
    assert int(restored.optimizer.iterations.numpy()) == 2  # the schedule goes on where it stopped
    for mine, theirs in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    adam = [v for v in restored.optimizer.variables if "momentum" in v.path]
    assert adam and any(np.abs(np.asarray(v)).sum() > 0 for v in adam)  # Adam's slots came back too

    store.save(model, CheckpointState(epoch=2, weights="epoch-0002.weights.h5", config={"a": 1}))
    assert sorted(os.listdir(tmp_path / "run-1")) == ["epoch-0002.weights.h5", "state.json"]  # the old one is gone


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    store = CheckpointStore(str(tmp_path / "run-1"))
    state = CheckpointState(epoch=1, weights="w.weights.h5", config={"run": {"lr": 1}, "mode": "full"})
    store.check(state, {"run": {"lr": 1}, "mode": "full"})
    with pytest.raises(CheckpointError, match=r"different settings \(run.lr changed\).*new --run-id"):
        store.check(state, {"run": {"lr": 2}, "mode": "full"})
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        store.state()


def test_weights_are_durable_before_state_json_names_them(tmp_path, monkeypatch):
    """A crash right after state.json is written must not leave it naming weights still in the page cache."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    store = CheckpointStore(str(tmp_path / "run-1"))
    store.save(tiny_model(0), CheckpointState(epoch=1, weights="epoch-0001.weights.h5", config={}))

    folder, weights = str(tmp_path / "run-1"), str(tmp_path / "run-1" / "epoch-0001.weights.h5")
    commit = events.index(("replace", f"{folder}/state.json"))
    before = events[:commit]
    placed = before.index(("replace", weights))
    assert any(kind == "fsync" and path.endswith("-epoch-0001.weights.h5") for kind, path in before[:placed])  # the data
    assert ("fsync", folder) in before[placed:]  # the directory entry
    assert events[commit + 1:] == [("fsync", folder)]  # and state.json's own entry


def test_a_torn_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    model = tiny_model(0)
    x = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    store = CheckpointStore(str(tmp_path / "run-1"))
    snapshots = []
    model.fit(x, (x[..., :1] > 0.5).astype("float32"), batch_size=2, epochs=3, verbose=0, callbacks=[
        EpochCheckpoint(store, {"a": 1}, steps_per_epoch=2),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append([w.numpy() for w in model.weights])),
    ])
    state = store.state()
    assert (state.epoch, state.previous.epoch, state.previous.previous) == (3, 2, None)
    assert sorted(os.listdir(tmp_path / "run-1")) == ["epoch-0002.weights.h5", "epoch-0003.weights.h5", "state.json"]

    newest = tmp_path / "run-1" / "epoch-0003.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # what a crash can leave without fsync
    restored = tiny_model(1)
    with caplog.at_level("WARNING", logger="training_job.checkpoints"):
        resumed = store.restore(restored, state)
    assert resumed == state.previous and resumed.epoch == 2
    assert "epoch-0003.weights.h5, do not load" in caplog.text and "resuming from the previous checkpoint, epoch 2" in caplog.text
    for mine, theirs in zip(snapshots[1], restored.weights):
        np.testing.assert_array_equal(mine, np.asarray(theirs))

    (tmp_path / "run-1" / "epoch-0002.weights.h5").unlink()
    with pytest.raises(CheckpointError, match="epoch 2, epoch-0002.weights.h5, are missing, nor does the newer epoch 3"):
        store.restore(tiny_model(1), state)


@pytest.mark.parametrize("weights", ["../../etc/passwd", "/etc/passwd", "sub/epoch-0001.weights.h5", "..", ""])
def test_state_json_naming_weights_outside_the_folder_is_refused(tmp_path, weights):
    (tmp_path / "run-1").mkdir()
    for record in ({"epoch": 1, "weights": weights, "config": {}},
                   {"epoch": 2, "weights": "epoch-0002.weights.h5", "config": {},
                    "previous": {"epoch": 1, "weights": weights, "config": {}}}):
        (tmp_path / "run-1" / "state.json").write_text(json.dumps(record))
        with pytest.raises(CheckpointError, match="weights must be a file name in the checkpoint folder"):
            CheckpointStore(str(tmp_path / "run-1")).state()


def checkpoint_epoch(uri: str) -> int:
    try:
        return storage.read_json(f"{uri}/state.json")["epoch"]
    except FileNotFoundError:
        return 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_then_terminated_job_resumes_and_publishes_once(s3_bucket, tiny_datasets, tmp_path, capsys):
    data = f"{s3_bucket}/datasets/drishti-gs1"
    data_cli.push(tiny_datasets["drishti-gs1"], data, progress=False)
    repo = f"{s3_bucket}/models"
    checkpoints = f"{s3_bucket}/checkpoints"
    argv = ["--data", data, "--model-repo", repo, "--checkpoint-dir", checkpoints, "--run-id", "retrain-7",
            "--epochs", "16", "--cache-dir", str(tmp_path / "cache"), *TINY]
    store = f"{checkpoints}/retrain-7"

    # 1. The pod is killed outright (OOM, node lost) once its first epoch is in the store.
    job = subprocess.Popen([sys.executable, "-m", "training_job", *argv], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: checkpoint_epoch(store) >= 1 or job.poll() is not None, 240, "the first checkpoint")
    finally:
        job.kill()
        _, err = job.communicate()
    killed_at = checkpoint_epoch(store)
    assert 1 <= killed_at < 16, err
    assert model_repository.list_versions(repo, "optic-disc") == []

    # 2. The next pod resumes there and is told to stop (SIGTERM: preemption) a little later.
    def terminate_after_one_more_epoch():
        wait_for(lambda: checkpoint_epoch(store) > killed_at, 120, "a resumed epoch")
        os.kill(os.getpid(), signal.SIGTERM)

    ignore = signal.signal(signal.SIGTERM, lambda *_: None)  # never let a late signal end pytest
    try:
        sender = threading.Thread(target=terminate_after_one_more_epoch, daemon=True)
        sender.start()
        code = main(argv)
        sender.join(timeout=5)
    finally:
        signal.signal(signal.SIGTERM, ignore)
    out, err = capsys.readouterr()
    stopped_at = checkpoint_epoch(store)
    assert code == 143, err
    assert "stopped by SIGTERM after" in err and "rerun with --run-id retrain-7" in err
    assert f"resuming at epoch {killed_at + 1}/16" in err
    assert killed_at < stopped_at < 16 and model_repository.list_versions(repo, "optic-disc") == []

    # 3. The third pod finishes from the last checkpoint and publishes exactly one version.
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == 1 and result["published"] and result["resumed_from_epoch"] == stopped_at
    metrics = storage.read_json(f"{repo}/optic-disc/1/metrics.json")
    assert metrics["run_id"] == "retrain-7" and metrics["resumed_from_epoch"] == stopped_at
    assert metrics["training_images_seen"] == 16 * 2 * 4
    assert not storage.exists(store)  # checkpoints go once the version is out

    # 4. Kubernetes may still run it again: nothing new is published.
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["published"] is False
    assert model_repository.list_versions(repo, "optic-disc") == [1]


@pytest.mark.slow
def test_a_job_whose_newest_checkpoint_is_torn_resumes_from_the_previous_one(tiny_datasets, tmp_path, capsys,
                                                                             monkeypatch, caplog):
    """Before: every restart failed on the same torn file (a crash loop); now one epoch is redone."""
    repo, checkpoints = tmp_path / "models", tmp_path / "checkpoints"
    argv = ["--data", str(tiny_datasets["drishti-gs1"]), "--model-repo", str(repo), "--checkpoint-dir", str(checkpoints),
            "--run-id", "torn-1", "--epochs", "3", *TINY]

    def node_lost(*args, **kwargs):
        raise RuntimeError("node lost while publishing")

    monkeypatch.setattr(job, "publish", node_lost)
    with pytest.raises(RuntimeError, match="node lost"):
        main(argv)
    monkeypatch.undo()
    newest = checkpoints / "torn-1" / "epoch-0003.weights.h5"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()

    with caplog.at_level("WARNING", logger="training_job.checkpoints"):
        assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == 1 and result["resumed_from_epoch"] == 2
    assert "resuming from the previous checkpoint, epoch 2" in caplog.text
    assert model_repository.list_versions(str(repo), "optic-disc") == [1]


@pytest.mark.slow
def test_a_killed_incremental_job_resumes_from_its_base_version_and_reports_the_total_training_time(
        tiny_datasets, tmp_path, capsys, monkeypatch):
    """metrics.json's training_seconds sums every attempt, and the base version stays the one the run
    started from even when a newer version is published before the restart ("latest" moved)."""
    repo, checkpoints = tmp_path / "models", tmp_path / "checkpoints"
    data = str(tiny_datasets["drishti-gs1"])
    common = ["--data", data, "--model-repo", str(repo), *TINY]
    assert main([*common, "--epochs", "1", "--run-id", "base-1"]) == 0  # version 1: the base
    capsys.readouterr()
    argv = [*common, "--mode", "incremental", "--base-version", "latest", "--epochs", "12", "--run-id", "incr-1",
            "--checkpoint-dir", str(checkpoints), "--force"]
    store = str(checkpoints / "incr-1")

    # 1. The pod is killed once its first epoch is in the store.
    pod = subprocess.Popen([sys.executable, "-m", "training_job", *argv], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: checkpoint_epoch(store) >= 1 or pod.poll() is not None, 240, "the first checkpoint")
    finally:
        pod.kill()
        _, err = pod.communicate()
    state = storage.read_json(f"{store}/state.json")
    killed_at, seconds_before = state["epoch"], state["training_seconds"]
    assert 1 <= killed_at < 12 and state["base_version"] == 1, err
    assert seconds_before >= 0.2  # well above the rounding below, so a lost attempt shows

    # 2. Meanwhile another version is published: "latest" is now 2.
    assert main([*common, "--epochs", "1", "--run-id", "other-2", "--force"]) == 0
    capsys.readouterr()

    # 3. The next pod resumes; how long it trains is measured where the job gets it from.
    attempts = []
    real_train = job.train
    monkeypatch.setattr(job, "train", lambda *a, **k: attempts.append(real_train(*a, **k)) or attempts[-1])
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["version"], result["base_version"], result["resumed_from_epoch"]) == (3, 1, killed_at)
    metrics = storage.read_json(str(repo / "optic-disc" / "3" / "metrics.json"))
    assert metrics["base_version"] == 1 and metrics["mode"] == "incremental" and metrics["epochs"] == 12
    [resumed] = attempts
    assert metrics["training_seconds"] == pytest.approx(seconds_before + resumed.seconds, abs=0.051)
    assert metrics["training_images_seen"] == 12 * 2 * 4  # the whole run's, not the last attempt's
