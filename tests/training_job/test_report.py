"""`python -m training_job.report`: the tables in docs/RESULTS.md, from published metrics.json files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fundus_seg.paths import BUNDLED_MODEL_REPO, REPO_ROOT
from training_job.report import table

HEADER_ROWS = 2


def metrics(dice: float, *, mode: str = "full", base: int | None = None, replay: dict | None = None,
            data=("../shared/data/drishti-gs1",)) -> dict:
    scores = {"n": 51, "dice_mean": dice, "dice_std": 0.0312, "dice_min": 0.5, "dice_max": 0.9876, "rrp": 88.2,
              "at_128": {"dice_mean": dice - 0.001}}
    return {"architecture": "6/16/1.4", "trainable_params": 932437, "mode": mode, "base_version": base,
            "data": list(data), "replay": replay, "training_seconds": 402.0,
            "config": {"model": {"depth": 6, "width": 16, "increment_ratio": 1.4},
                       "train": {"epochs": 6, "steps_per_epoch": 25, "batch_size": 32}},
            "test_metrics": {"rim-one-dl": {**scores, "dice_mean": dice - 0.5}, "drishti-gs1": scores}}


def publish(repo: Path, version: int | str, document: dict, model: str = "optic-disc") -> None:
    (repo / model / str(version)).mkdir(parents=True)
    (repo / model / str(version) / "metrics.json").write_text(json.dumps(document))


def rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()[HEADER_ROWS:]]


def test_versions_come_in_numeric_order_with_every_test_set(tmp_path):
    repo = tmp_path / "runs"
    for version in (10, 2, 1):  # written out of order; 10 sorts before 2 as text
        publish(repo, version, metrics(0.9 + version / 1000))
    publish(repo, "latest", metrics(0.1))  # not a version
    publish(repo, ".tmp-11", metrics(0.1))
    dice = [(r[5], r[6]) for r in rows(table([repo]))]
    assert dice == [("drishti-gs1", "0.901"), ("rim-one-dl", "0.401"), ("drishti-gs1", "0.902"),
                    ("rim-one-dl", "0.402"), ("drishti-gs1", "0.910"), ("rim-one-dl", "0.410")]


def test_a_row_holds_every_column_in_the_papers_form(tmp_path):
    repo = tmp_path / "incr"
    publish(repo, 1, metrics(0.931))
    publish(repo, 2, metrics(0.932, mode="incremental", base=1, data=["s3://b/datasets/rim-one-dl"],
                             replay={"fraction": 0.5, "data": ["s3://b/datasets/drishti-gs1"], "images": 400}))
    first, _, second, _ = rows(table([repo]))
    assert first == ["incr", "6/16/1.4", "0.93 M", "drishti-gs1", "6x25x32, 6.7 min", "drishti-gs1", "0.931",
                     "0.031", "0.500", "0.988", "88", "0.930"]
    assert second[3] == "rim-one-dl (from v1, replay 0.5 of drishti-gs1)"


def test_the_bundled_models_rows_in_results_md_are_what_the_report_prints():
    """docs/RESULTS.md quotes the report on models/ (every bundled version; their runs named `bundle` there)."""
    printed = subprocess.run([sys.executable, "-m", "training_job.report", str(BUNDLED_MODEL_REPO)], check=True,
                             capture_output=True, text=True, cwd=REPO_ROOT).stdout
    bundle_rows = [r[1:] for r in rows(printed)]
    versions = [v for v in (BUNDLED_MODEL_REPO / "optic-disc").iterdir() if v.name.isdigit()]
    assert len(versions) >= 4 and len(bundle_rows) == 2 * len(versions)  # single-stage v1, two-stage v2..., both test sets
    results = (REPO_ROOT / "docs" / "RESULTS.md").read_text()
    documented = [r[1:] for r in rows("\n\n" + "\n".join(line for line in results.splitlines()
                                                         if line.startswith("| bundle |")))]
    for row in bundle_rows:
        assert row in documented, row


def test_results_md_counts_the_images_the_bundled_models_lineage_saw():
    """The bundled version's own training_images_seen, plus its base's (the first step's row)."""

    bundled = json.loads((BUNDLED_MODEL_REPO / "optic-disc" / "1" / "metrics.json").read_text())
    results = (REPO_ROOT / "docs" / "RESULTS.md").read_text()
    budgets = {}
    for row in rows("\n\n" + "\n".join(line for line in results.splitlines() if line.startswith("| bundle |"))):
        if "+" in row[4]:
            continue  # the two-stage version's two budgets
        epochs, steps, batch = map(int, row[4].split(",")[0].split("x"))
        budgets[row[3].endswith(f"(from v{bundled['base_version']})")] = epochs * steps * batch
    assert budgets[True] == bundled["training_images_seen"] == 16_000  # the second step is the bundled version
    total = budgets[False] + budgets[True]
    assert f"({total:,} images" in results
    paper = 15 * 100 * 96  # the paper's recipe, as RESULTS.md quotes it
    assert f"{paper:,} images" in results and f"{round(100 * total / paper)}% of the paper's recipe" in results
