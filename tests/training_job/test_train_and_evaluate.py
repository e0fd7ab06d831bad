"""A short real training run on real DRISHTI images must clearly beat a trivial baseline."""
import json
import threading

import numpy as np
import pytest

from fundus_seg import model_repository
from fundus_seg.cli import main
from fundus_seg.errors import ModelRepositoryError
from preprocessing.datasets import load_split
from preprocessing.metrics import dice
from tests.helpers import DRISHTI
from training_job.cli import resolve_version_dir


def mean_mask_baseline_dice() -> float:
    """Predict the average training mask for every test image (a model that ignores the image)."""
    train, test = load_split(DRISHTI, "train"), load_split(DRISHTI, "test")
    prior = train.masks.mean(axis=0)[..., 0]
    prior_mask = prior >= np.quantile(prior, 1 - train.masks.mean())  # same area as the average disc
    return float(np.mean([dice(prior_mask, m[..., 0] >= 0.5) for m in test.masks]))


@pytest.mark.slow
def test_short_real_training_beats_baseline_and_publishes_a_complete_version(tmp_path, capsys):
    import time

    from training_job.unet import UNetConfig, build_unet, trainable_params

    repo = tmp_path / "models"
    started = time.monotonic()
    code = main(["train", "--data", str(DRISHTI), "--out", str(repo), "--depth", "4", "--width", "8", "--ir", "1.5",
                 "--epochs", "4", "--steps-per-epoch", "20", "--batch-size", "16", "--lr", "0.003", "--seed", "1", "--no-jit-compile"])
    wall = time.monotonic() - started
    assert code == 0
    version_dir = repo / "optic-disc" / "1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] == trainable_params(build_unet(UNetConfig(depth=4, width=8, increment_ratio=1.5)))
    assert 0 < metrics["training_seconds"] < wall and metrics["mode"] == "full"  # the loop only: no loading, scoring
    assert metrics["training_images_seen"] == 4 * 20 * 16
    assert metrics["config"]["model"]["depth"] == 4

    assert main(["evaluate", "--model", str(repo / "optic-disc"), "--data", str(DRISHTI), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 51 and {"dice_mean", "dice_std", "dice_min", "dice_max", "rrp", "at_128"} <= set(result)
    baseline = mean_mask_baseline_dice()
    assert result["dice_mean"] > baseline + 0.1, (result, baseline)  # measured: 0.81 vs 0.64
    assert result["at_128"]["dice_mean"] > baseline + 0.1


def test_atomic_publish_is_never_seen_partial(tmp_path):
    """A reader polling the repository sees no version, or a complete one, never a half-written one."""

    from training_job.export import save_serving_model
    from training_job.unet import UNetConfig, build_unet

    model = build_unet(UNetConfig(depth=2, width=4))
    source = save_serving_model(model, tmp_path / "export", {"model_name": "optic-disc"})
    expected = sorted(p.relative_to(source).as_posix() for p in source.rglob("*"))
    repo, seen_partial, stop = tmp_path / "repo", [], threading.Event()

    def reader():
        while not stop.is_set():
            for version in (repo / "optic-disc").glob("[0-9]*"):
                files = sorted(p.relative_to(version).as_posix() for p in version.rglob("*"))
                if files != expected:
                    seen_partial.append(files)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        versions = [model_repository.publish_version(source, str(repo), "optic-disc") for _ in range(5)]
    finally:
        stop.set()
        thread.join()
    assert versions == [1, 2, 3, 4, 5] and not seen_partial


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ModelRepositoryError, match="no model version found"):
        resolve_version_dir(str(tmp_path))
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(DRISHTI)]) == 2
    assert "no model version found" in capsys.readouterr().err
