"""The bundled default model is present, complete, and scores what its metrics.json says."""
import json

import pytest

from fundus_seg.cli import main
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from training_job.cli import resolve_version_dir
from tests.helpers import DRISHTI


def test_bundled_model_is_a_complete_version():
    version_dir = resolve_version_dir(None)
    assert version_dir.parent == BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME
    assert {"saved_model.pb", "variables", "metrics.json", "model.keras"} <= {p.name for p in version_dir.iterdir()}
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert set(metrics["test_metrics"]) == {"drishti-gs1", "rim-one-dl"}
    size = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
    assert size < 20e6, "the bundled model should stay a few MB"


@pytest.mark.slow
def test_bundled_model_reproduces_its_recorded_drishti_score(capsys):
    metrics = json.loads((resolve_version_dir(None) / "metrics.json").read_text())["test_metrics"]["drishti-gs1"]
    assert main(["evaluate", "--data", str(DRISHTI), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == metrics["n"] == 51
    assert result["dice_mean"] == pytest.approx(metrics["dice_mean"], abs=0.002)
    assert result["rrp"] == pytest.approx(metrics["rrp"], abs=2.0)
