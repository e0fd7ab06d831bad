"""A two-stage training run end to end: both stages trained, one version holding both, scored through
the serving pipeline; an incremental run from it retrains both stages (with replay)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from fundus_seg import model_repository
from fundus_seg.model_card import ModelCard
from training_job.__main__ import main
from training_job.config import LOCATOR_AUGMENT

TINY_STAGE1 = ["--depth", "1", "--width", "4", "--no-jit-compile", "--steps-per-epoch", "2", "--batch-size", "4",
               "--accelerator", "cpu"]
TINY_SEGMENT = {"segment": {"model": {"depth": 1, "width": 4, "increment_ratio": 1.0, "input_size": 64},
                            "crop": {"multiple": 2.5, "size": 64},
                            "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "jit_compile": False}}}


def run_job(capsys, *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, json.loads(out) if code == 0 else {}


@pytest.mark.slow
def test_two_stage_full_then_incremental(tiny_datasets, tmp_path, capsys):
    config = tmp_path / "two-stage.yaml"
    config.write_text(yaml.safe_dump(TINY_SEGMENT))
    repo = tmp_path / "models"
    drishti, rim_one = str(tiny_datasets["drishti-gs1"]), str(tiny_datasets["rim-one-dl"])
    common = [*TINY_STAGE1, "--model-repo", str(repo), "--cache-dir", str(tmp_path / "cache"), "--config", str(config)]

    code, result = run_job(capsys, "--data", drishti, "--epochs", "1", "--run-id", "two-1", *common)
    assert code == 0 and result["version"] == 1
    card = model_repository.read_card(str(repo), "optic-disc", 1)
    assert card.pipeline == "two-stage" and card.segment.crop.size == 64
    scores = card.test_metrics["drishti-gs1"]
    assert scores.n == 2 and scores.more["cup"]["n"] == 2 and scores.more["vcdr"]["n"] == 2  # cup and vCDR scored
    assert "flagged" in scores.more and "glaucoma_auc" in scores.more
    version = model_repository.load_version(repo / "optic-disc" / "1")  # one SavedModel, both stages
    assert version.segment is not None
    crops = version.segment(np.zeros((3, 64, 64, 3), np.float32))
    assert crops.shape == (3, 64, 64, 2) and np.isfinite(crops).all()
    assert (repo / "optic-disc" / "1" / model_repository.SEGMENT_KERAS_FILE).is_file()
    assert not (repo / ".checkpoints" / "optic-disc" / "two-1").exists()  # published: both stages' checkpoints gone

    # incremental on the other instrument, with replay: the base's pipeline is kept, both stages retrained
    code, result = run_job(capsys, "--data", rim_one, "--mode", "incremental", "--epochs", "1",
                           "--replay-fraction", "0.5", "--run-id", "two-2", "--force", *common)
    assert code == 0 and result["version"] == 2 and result["base_version"] == 1
    card2 = model_repository.read_card(str(repo), "optic-disc", 2)
    assert card2.pipeline == "two-stage" and card2.base_version == 1
    assert set(card2.test_metrics) == {"drishti-gs1", "rim-one-dl"}  # the replayed instrument is scored too
    import keras

    old, new = (keras.models.load_model(repo / "optic-disc" / str(v) / model_repository.SEGMENT_KERAS_FILE, compile=False)
                for v in (1, 2))
    assert any(not np.array_equal(a, b) for a, b in zip(old.get_weights(), new.get_weights(), strict=True))
    assert card2.extra["stage_seconds"]["segment"] > 0


def test_a_single_stage_run_has_no_segment_stage():
    from training_job.config import RunConfig, run_config_from_dict, two_stage

    run = two_stage(RunConfig())
    assert run.pipeline == "two-stage" and run.augment == LOCATOR_AUGMENT  # the locator zooms wide, about the disc
    assert run_config_from_dict(run.to_dict()) == run
    assert "segment" not in RunConfig().to_dict() and RunConfig().pipeline == "single-stage"
    assert ModelCard.from_dict({"config": run.to_dict()}).segment.crop == run.segment.crop
