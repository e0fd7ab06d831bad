"""README: "Every command refuses bad input with one clear line and exit code 2". Checked on the
console script itself (a real process, as a user or a Job runs it) for `fundus-seg data push` and
`fundus-seg rollout`: exit status 2, one `fundus-seg <command>: error: ...` line (a dataset's bad rows
listed under it) or argparse's usage error, no traceback, and nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from fundus_seg.paths import REPO_ROOT

SCRIPT = Path(sys.executable).parent / "fundus-seg"
CLI = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "fundus_seg.cli"]


def fundus_seg(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def refused(done: subprocess.CompletedProcess, command: str, message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"fundus-seg {command}: error: "), done.stderr
    error = done.stderr[done.stderr.index(errors[0]):]  # a dataset's bad rows follow on indented lines
    assert message in error, error


def dataset(folder: Path, n: int = 2) -> Path:
    rows = ["id,split,image,disc_mask"]
    for i in range(n):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"images/{i}.png"), np.full((40, 40, 3), 120, np.uint8))
        mask = np.zeros((40, 40), np.uint8)
        cv2.circle(mask, (20, 20), 6, 255, -1)
        cv2.imwrite(str(folder / f"masks/{i}.png"), mask)
        rows.append(f"img{i},{'test' if i == 0 else 'train'},images/{i}.png,masks/{i}.png")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_data_push_refuses_bad_input_with_exit_2(tmp_path, s3_bucket):
    good = dataset(tmp_path / "good")
    done = fundus_seg("data", "push", str(good), str(tmp_path / "pushed"), "--no-progress")
    assert done.returncode == 0, done.stderr  # the control: a good dataset goes through
    assert (tmp_path / "pushed" / "manifest.csv").is_file()

    broken = dataset(tmp_path / "broken")
    (broken / "images/1.png").unlink()
    refused(fundus_seg("data", "push", str(broken), str(tmp_path / "out1"), "--no-progress"), "data", "img1")
    refused(fundus_seg("data", "push", str(tmp_path / "nowhere"), str(tmp_path / "out2"), "--no-progress"),
            "data", "no manifest.csv")
    (broken / "manifest.csv").write_text("id,split,image\nimg0,test,images/0.png\n")  # no disc_mask column
    refused(fundus_seg("data", "push", str(broken), str(tmp_path / "out3"), "--no-progress"), "data", "disc_mask")
    refused(fundus_seg("data", "push", str(good), f"{s3_bucket}-missing/datasets/good", "--no-progress"),
            "data", "NoSuchBucket")
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3))

    usage = fundus_seg("data", "push", str(good))  # no URI: argparse's own usage error, also 2
    assert usage.returncode == 2 and "the following arguments are required: uri" in usage.stderr


def model_repo(root: Path, scores: dict[int, float]) -> Path:
    """Versions with a saved_model.pb placeholder and the metrics.json the rollout gate reads."""
    for version, dice in scores.items():
        folder = root / "optic-disc" / str(version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"placeholder")
        (folder / "metrics.json").write_text(json.dumps({"test_metrics": {
            "drishti-gs1": {"dice_mean": dice, "rrp": 90.0}}}))
    return root


def test_rollout_refuses_bad_input_with_exit_2(tmp_path):
    repo = model_repo(tmp_path / "models", {1: 0.95, 2: 0.95, 3: 0.80})
    local = ["--local", str(repo)]
    refused(fundus_seg("rollout", "start", *local, "--version", "7"), "rollout", "version 7 of optic-disc is not published")
    refused(fundus_seg("rollout", "start", *local, "--version", "two"), "rollout", "--version must be an integer")
    refused(fundus_seg("rollout", "start", *local, "--version", "2", "--percent", "150"), "rollout",
            "--percent must be between 1 and 99")
    refused(fundus_seg("rollout", "start", *local, "--run-id", "no-such-run"), "rollout", "no-such-run")
    refused(fundus_seg("rollout", "promote", *local), "rollout", "no canary to promote")
    refused(fundus_seg("rollout", "start", *local, "--version", "3"), "rollout", "--force")  # the gate: 0.80 < 0.95
    refused(fundus_seg("rollout", "start", *local, "--model-repo", str(repo), "--version", "2"), "rollout",
            "drop --model-repo")
    assert not (repo / "models.config").exists() and not (repo / "rollout.json").exists()

    done = fundus_seg("rollout", "start", *local, "--version", "2", "--percent", "10")
    assert done.returncode == 0, done.stderr  # the control: a good request goes through
    assert json.loads((repo / "rollout.json").read_text())["canary"] == 2
    refused(fundus_seg("rollout", "promote", *local, "--version", "3"), "rollout", "the canary is version 2, not 3")
    assert json.loads((repo / "rollout.json").read_text())["canary"] == 2

    for argv in (["rollout", "start", "--version", "2"],  # neither --local nor --isvc
                 ["rollout", "start", *local, "--percent", "ten", "--version", "2"],
                 ["rollout", "launch", *local]):
        usage = fundus_seg(*argv)
        assert usage.returncode == 2 and "usage:" in usage.stderr and "Traceback" not in usage.stderr, argv
