"""`python -m training_job`: flags, config file, clear failures, atomic publishing, progress lines."""
from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

import pytest
import yaml

from fundus_seg import model_repository, storage
from fundus_seg.cli import build_parser as fundus_seg_parser
from fundus_seg.cli import main as fundus_seg_main
from training_job.__main__ import build_parser, main
from training_job.cli import configs_from_args
from training_job.export import publish
from training_job.progress import EpochLines, RichProgress, progress_callback
from training_job.unet import UNetConfig, build_unet

ARGV = ["--data", "s3://b/datasets/a,s3://b/datasets/b", "--eval-data", "/data/c", "--model-repo", "s3://b/models",
        "--mode", "incremental", "--base-version", "3", "--replay-fraction", "0.2", "--run-id", "job-1",
        "--checkpoint-dir", "s3://b/ckpt", "--cache-dir", "/tmp/c", "--accelerator", "gpu", "--depth", "4",
        "--batch-size", "8", "--no-jit-compile", "--tolerance", "0.02", "--force"]
TINY = ["--depth", "1", "--width", "4", "--no-jit-compile", "--steps-per-epoch", "2", "--batch-size", "4",
        "--accelerator", "cpu"]


def test_the_entrypoint_and_fundus_seg_train_share_their_flags():
    ours = vars(build_parser().parse_args(ARGV))
    theirs = vars(fundus_seg_parser().parse_args(["train", *ARGV]))
    assert ours == {k: theirs[k] for k in ours}
    run, job = configs_from_args(build_parser().parse_args(ARGV))
    assert run.data == ("s3://b/datasets/a", "s3://b/datasets/b") and run.model.depth == 4 and not run.train.jit_compile
    assert (job.mode, job.base_version, job.replay_fraction, job.run_id) == ("incremental", 3, 0.2, "job-1")
    assert (job.checkpoint_dir, job.cache_dir, job.accelerator, job.eval_data) == ("s3://b/ckpt", "/tmp/c", "gpu", ("/data/c",))
    assert run.train.epochs == 3  # incremental: the paper's brief retrain unless epochs are set
    assert (job.tolerance, job.force) == (0.02, True)
    _, job = configs_from_args(build_parser().parse_args(ARGV[:-3]))
    assert (job.tolerance, job.force) == (0.01, False)  # the rollout gate's default


def test_the_cronjob_args_parse(tmp_path):
    """k8s/base runs the entrypoint with these args (after Kubernetes expands $(VAR) from env)."""
    cronjob = yaml.safe_load((Path(__file__).resolve().parents[2] / "k8s/base/retrain-cronjob.yaml").read_text())
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "training_job"]
    env = {e["name"]: e.get("value", "retrain-20260101") for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.mode == "full" and parsed.run_id == "retrain-20260101" and parsed.accelerator == "cpu"
    assert parsed.data == ("s3://fundus-seg/datasets/drishti-gs1", "s3://fundus-seg/datasets/rim-one-dl")


def test_config_file_with_a_job_section_under_flags(tmp_path, monkeypatch):
    config = tmp_path / "train.yaml"
    config.write_text("data: [s3://b/datasets/a]\ntrain: {epochs: 7}\n"
                      "job: {mode: incremental, base_version: latest, replay_fraction: 0.3, accelerator: cpu}\n")
    monkeypatch.setenv("FUNDUS_SEG_RUN_ID", "retrain-20260101")
    run, job = configs_from_args(build_parser().parse_args(["--config", str(config), "--replay-fraction", "0.1"]))
    assert run.data == ("s3://b/datasets/a",) and run.train.epochs == 7  # the file's epochs win over the mode default
    assert (job.mode, job.base_version, job.replay_fraction, job.accelerator) == ("incremental", "latest", 0.1, "cpu")
    assert job.run_id == "retrain-20260101"  # a restarted pod of the same Job finds its checkpoint
    run, job = configs_from_args(build_parser().parse_args(["--config", str(config), "--mode", "full", "--run-id", "x"]))
    assert job.mode == "full" and job.run_id == "x" and run.train.epochs == 7


def one_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    first = captured.err.splitlines()[0]
    assert first.startswith("python -m training_job: error: ")
    return captured.err


def test_missing_data_and_bad_manifests_fail_before_training(s3_bucket, tiny_datasets, tmp_path, capsys):
    repo = f"{s3_bucket}/models"
    common = ["--model-repo", repo, "--cache-dir", str(tmp_path / "cache"), "--accelerator", "cpu"]
    assert "no training data" in one_error(capsys, *common)
    assert f"{tmp_path}/none: no manifest.csv" in one_error(capsys, "--data", str(tmp_path / "none"), *common)
    assert f"{s3_bucket}/datasets/none: no manifest.csv there" in one_error(capsys, "--data", f"{s3_bucket}/datasets/none", *common)

    bad_columns = f"{s3_bucket}/datasets/bad-columns"
    storage.write_bytes(f"{bad_columns}/manifest.csv", b"id,split,image\na,train,images/a.jpg\n")
    assert f"{bad_columns}/manifest.csv: missing column(s) disc_mask" in one_error(capsys, "--data", bad_columns, *common)

    bad_rows = f"{s3_bucket}/datasets/bad-rows"
    storage.write_bytes(f"{bad_rows}/manifest.csv",
                        b"id,split,image,disc_mask\na,validation,images/a.jpg,masks/a.png\nb,train,/etc/passwd,masks/b.png\n")
    err = one_error(capsys, "--data", bad_rows, *common)
    assert f"{bad_rows}/manifest.csv: 2 problem(s)" in err and "split must be one of" in err and "relative path" in err

    missing_files = f"{s3_bucket}/datasets/missing-files"
    storage.write_bytes(f"{missing_files}/manifest.csv", b"id,split,image,disc_mask\na,train,images/a.jpg,masks/a.png\n")
    err = one_error(capsys, "--data", missing_files, *common)
    assert "no rows with split 'test' to score" in err
    storage.write_bytes(f"{missing_files}/manifest.csv",
                        b"id,split,image,disc_mask\na,train,images/a.jpg,masks/a.png\nb,test,images/b.jpg,masks/b.png\n")
    assert f"missing file {missing_files}/images/a.jpg" in one_error(capsys, "--data", missing_files, *common)

    assert "NoSuchBucket" in one_error(capsys, "--data", "s3://no-such-bucket-here/datasets/a", *common)
    assert model_repository.list_versions(repo, "optic-disc") == []


def test_a_dataset_key_leaving_the_cache_is_refused(s3_bucket, tmp_path, capsys):
    bucket = s3_bucket.removeprefix("s3://")
    client = storage.S3Storage().client
    client.put_object(Bucket=bucket, Key="datasets/evil/manifest.csv", Body=b"id,split,image,disc_mask\n")
    client.put_object(Bucket=bucket, Key="datasets/evil/images/../../../planted.txt", Body=b"x")
    cache = tmp_path / "cache"
    err = one_error(capsys, "--data", f"{s3_bucket}/datasets/evil", "--model-repo", str(tmp_path / "models"),
                    "--cache-dir", str(cache), "--accelerator", "cpu")
    assert f"refusing to download 's3://{bucket}/datasets/evil/images/../../../planted.txt'" in err
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_unknown_base_version_gpu_and_run_id_fail_clearly(tiny_datasets, tmp_path, capsys):
    data, repo = str(tiny_datasets["drishti-gs1"]), tmp_path / "models"
    common = ["--data", data, "--model-repo", str(repo), "--accelerator", "cpu"]
    assert "no published version to start from" in one_error(capsys, *common, "--mode", "incremental")
    (repo / "optic-disc" / "1").mkdir(parents=True)
    (repo / "optic-disc" / "1" / "saved_model.pb").write_bytes(b"")
    assert "no version 7 (published: 1)" in one_error(capsys, *common, "--mode", "incremental", "--base-version", "7")
    assert "run id must be" in one_error(capsys, *common, "--run-id", "../escape")
    assert "base version must be" in one_error(capsys, *common, "--mode", "incremental", "--base-version", "newest")
    assert "TensorFlow sees no GPU" in one_error(capsys, "--data", data, "--model-repo", str(repo), "--accelerator", "gpu")


@pytest.mark.parametrize("flag", ["--epochs", "--steps-per-epoch", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_settings_that_cannot_train_are_refused_by_both_clis(tmp_path, capsys, flag, value):
    """`--epochs 0` used to train nothing and publish the untrained model as the newest version."""
    argv = ["--data", str(tmp_path / "data"), "--model-repo", str(tmp_path / "models"), flag, value]
    setting = flag.removeprefix("--").replace("-", "_")
    err = one_error(capsys, *argv)
    assert err == f"python -m training_job: error: train: {setting} must be a whole number of at least 1, got {value}\n"
    assert fundus_seg_main(["train", *argv]) == 2
    assert capsys.readouterr().err == f"fundus-seg train: error: train: {setting} must be a whole number of at least 1, got {value}\n"
    config = tmp_path / "train.yaml"
    config.write_text(f"train: {{{setting}: {value}}}\n")
    assert "config.train: " in one_error(capsys, "--config", str(config), *argv[:4])
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_a_run_below_the_latest_version_is_published_only_with_force(tiny_datasets, tmp_path, capsys):
    repo = tmp_path / "models"
    latest = repo / "optic-disc" / "1"
    latest.mkdir(parents=True)
    (latest / "saved_model.pb").write_bytes(b"\x08\x01")
    (latest / "metrics.json").write_text(json.dumps({"test_metrics": {
        "drishti-gs1": {"n": 51, "dice_mean": 0.97, "rrp": 99.0},
        "refuge": {"n": 400, "dice_mean": 0.99, "rrp": 99.9}}}))  # not scored by this run: not compared
    argv = ["--data", str(tiny_datasets["drishti-gs1"]), "--model-repo", str(repo), "--run-id", "worse-1",
            "--epochs", "1", *TINY]

    assert main(argv) == 3
    out, err = capsys.readouterr()
    *progress, last = err.splitlines()
    assert out == "" and all(line.startswith("epoch ") for line in progress), err
    assert last.startswith("python -m training_job: error: not published: this run falls below the latest version 1 "
                           "of optic-disc by more than the tolerance 0.01: drishti-gs1: dice_mean ")
    assert "vs latest 0.97" in last and "refuge" not in last and "rerun with --force" in last
    assert storage.list_dir(str(repo / "optic-disc")) == ["1"]  # nothing half-published, no staging left
    assert storage.exists(str(repo / ".checkpoints" / "optic-disc" / "worse-1" / "state.json"))

    assert main([*argv, "--force"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == 2 and result["published"] and result["forced"]
    assert result["resumed_from_epoch"] == 1  # the refused run's checkpoint: not trained again
    metrics = json.loads((repo / "optic-disc" / "2" / "metrics.json").read_text())
    assert metrics["forced"] is True
    gate = metrics["publish_gate"]
    assert (gate["compared_with"], gate["tolerance"], gate["datasets"]) == (1, 0.01, ["drishti-gs1"])
    assert gate["regressions"] and all(r.startswith("drishti-gs1: ") for r in gate["regressions"])
    assert model_repository.list_versions(str(repo), "optic-disc") == [1, 2]


def test_publish_is_atomic_under_a_polling_reader(s3_bucket):
    """A reader listing versions never finds one without every file of the SavedModel and its metrics."""
    repo, name = f"{s3_bucket}/models", "optic-disc"
    model = build_unet(UNetConfig(depth=1, width=4))
    done, seen, partial = threading.Event(), set(), []

    def poll():
        while not done.is_set():
            for version in model_repository.list_versions(repo, name):
                if version in seen:
                    continue
                folder = model_repository.version_uri(repo, name, version)
                files = {"metrics.json", "model.keras", "variables/variables.index", "fingerprint.pb"}
                if not all(storage.exists(f"{folder}/{f}") for f in files):
                    partial.append(version)
                seen.add(version)

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    try:
        versions = [publish(model, {"n": i}, repo, name, run_id=f"run-{i}") for i in (1, 2)]
        assert publish(model, {"n": 3}, repo, name, run_id="run-1") == 1  # a rerun's publish is a no-op
    finally:
        done.set()
        reader.join(timeout=30)
    assert versions == [1, 2] and partial == []
    assert seen == {1, 2}
    card = storage.read_json(f"{repo}/{name}/2/metrics.json")  # the card, with what the run recorded kept
    assert card["n"] == 2 and card["run_id"] == "run-2"


def test_progress_is_a_bar_in_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    assert isinstance(progress_callback(2, 10), RichProgress)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(progress_callback(2, 10), EpochLines)

    lines = io.StringIO()
    callback = EpochLines(epochs=15, steps_per_epoch=2, initial_epoch=2, global_batch=16, stream=lines)
    callback.on_train_begin()
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(0)
    callback.on_train_batch_end(1)
    callback.on_epoch_end(2, {"loss": 0.41234, "dice": 0.87121})
    first, second = lines.getvalue().splitlines()
    assert first == "train: resuming at epoch 3/15"
    assert second.startswith("epoch 3/15 loss 0.4123 dice 0.8712 ") and " img/s elapsed 0:00:0" in second
    callback.on_epoch_end(3, {"loss": 0.5, "disc_dice": 0.94123, "cup_dice": 0.81234})  # stage 2: both outputs
    assert lines.getvalue().splitlines()[-1].startswith("epoch 4/15 loss 0.5000 disc_dice 0.9412 cup_dice 0.8123 ")
