"""`fundus-seg evaluate` end to end on real DRISHTI images: the JSON, the per-image CSV and the report agree."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fundus_seg.cli import main
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME

DISC_KEYS = {"n", "dice_mean", "dice_std", "dice_min", "dice_max", "rrp", "at_128"}
TOP_LEVEL = {"model", "data", "split", "pipeline", *DISC_KEYS, "cup", "vcdr", "vcdr_manifest", "glaucoma_auc", "flagged"}
REQUIRED_COLUMNS = ["id", "disc_dice", "cup_dice", "vcdr_pred", "vcdr_true", "rrp_ok", "confidence", "flagged"]
PLOTS = ("dice.png", "vcdr.png", "bland_altman.png")


def evaluate_json(capsys, *args: str) -> dict:
    assert main(["evaluate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def mann_whitney_auc(scores: list[float], positive: list[bool]) -> float:
    """By counting pairs (ties half), independent of preprocessing.metrics.roc_auc's rank formula."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def assert_png(path: Path, min_bytes: int = 5_000) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > min_bytes, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= 300 and image.height >= 300, (path, image.size)
        return image.size


def test_two_stage_json_csv_and_report_agree(two_stage_version, drishti_six, tmp_path, capsys):
    csv_path, report = tmp_path / "scores.csv", tmp_path / "report"
    result = evaluate_json(capsys, "--model", str(two_stage_version.parent), "--data", str(drishti_six),
                           "--per-image", str(csv_path), "--report", str(report))
    assert set(result) == TOP_LEVEL and result["pipeline"] == "two-stage" and result["model"] == str(two_stage_version)

    columns, rows = read_rows(csv_path)
    assert columns[: len(REQUIRED_COLUMNS)] == REQUIRED_COLUMNS
    assert {"vcdr_manifest", "reasons", "label", "second_look", "disc_dice_128", "rrp_ok_128"} <= set(columns)
    with (drishti_six / "manifest.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [m["id"] for m in manifest]
    assert [r["label"] for r in rows] == [m["label"] for m in manifest]
    assert [number(r["vcdr_manifest"]) for r in rows] == [float(m["vcdr_expert_mean"]) for m in manifest]

    disc = np.array([float(r["disc_dice"]) for r in rows])
    assert result["n"] == 6
    assert result["dice_mean"] == pytest.approx(disc.mean(), abs=5e-5)
    assert result["dice_std"] == pytest.approx(disc.std(), abs=5e-5)
    assert (result["dice_min"], result["dice_max"]) == (disc.min(), disc.max())
    assert result["rrp"] == pytest.approx(100 * np.mean([r["rrp_ok"] == "true" for r in rows]), abs=0.05)
    assert result["at_128"]["dice_mean"] == pytest.approx(np.mean([float(r["disc_dice_128"]) for r in rows]), abs=5e-5)
    assert result["dice_mean"] > 0.5  # the fixture really segments: the overlays and vCDR below are not of empty masks

    cup = [float(r["cup_dice"]) for r in rows]
    assert result["cup"]["n"] == 6 and result["cup"]["dice_mean"] == pytest.approx(np.mean(cup), abs=5e-5)
    pairs = [(float(r["vcdr_pred"]), float(r["vcdr_true"])) for r in rows if r["vcdr_pred"]]
    assert result["vcdr"]["n"] == len(pairs) > 2
    assert result["vcdr"]["mae"] == pytest.approx(np.mean([abs(p - t) for p, t in pairs]), abs=5e-5)
    assert result["vcdr"]["pearson_r"] == pytest.approx(np.corrcoef(*zip(*pairs, strict=True))[0, 1], abs=5e-5)
    manifest_pairs = [(float(r["vcdr_pred"]), float(r["vcdr_manifest"])) for r in rows if r["vcdr_pred"]]
    assert result["vcdr_manifest"] == {"n": len(manifest_pairs),
                                       "mae": pytest.approx(np.mean([abs(p - t) for p, t in manifest_pairs]), abs=5e-5)}
    predicted = [number(r["vcdr_pred"]) or 0.0 for r in rows]
    assert result["glaucoma_auc"] == pytest.approx(
        mann_whitney_auc(predicted, [r["label"] == "glaucoma" for r in rows]), abs=5e-5)
    flagged = [r for r in rows if r["flagged"] == "true"]
    assert result["flagged"]["n"] == len(flagged) and result["flagged"]["share"] == pytest.approx(len(flagged) / 6, abs=1e-4)
    assert all(r["reasons"] for r in flagged)  # a flag always says why

    for name in PLOTS:
        assert_png(report / name)
    overlays = sorted((report / "worst").glob("*.png"))
    assert len(overlays) == 6  # --worst 8 of a 6-image dataset: all of them, worst first
    worst_first = sorted(rows, key=lambda r: (float(r["disc_dice"]), r["id"]))
    assert [p.name.split("-", 1)[1] for p in overlays] == [f"{r['id']}.png" for r in worst_first]
    for path in overlays:
        assert_png(path, min_bytes=50_000)
    index = (report / "index.html").read_text()
    for file in [*PLOTS, *(f"worst/{p.name}" for p in overlays)]:
        assert f'src="{file}"' in index, file
    assert "glaucoma_auc" in index and worst_first[0]["id"] in index
    assert f'href="{csv_path.resolve().as_uri()}"' in index  # the CSV lies outside the report: linked by URI


def test_a_dataset_without_cup_masks_or_labels_is_scored_on_its_discs(two_stage_version, disc_only, tmp_path, capsys):
    csv_path, report = tmp_path / "report" / "scores.csv", tmp_path / "report"
    result = evaluate_json(capsys, "--model", str(two_stage_version), "--data", str(disc_only),
                           "--per-image", str(csv_path), "--report", str(report), "--worst", "2")
    assert set(result) == TOP_LEVEL and result["n"] == 6 and result["dice_mean"] > 0.5
    assert result["cup"] == {"n": 0, "dice_mean": None, "dice_std": None, "dice_min": None, "dice_max": None}
    assert result["vcdr"] == {"n": 0, "mae": None, "pearson_r": None}
    assert result["vcdr_manifest"] == {"n": 0, "mae": None}
    assert result["glaucoma_auc"] is None
    assert result["flagged"]["n"] >= 0 and result["flagged"]["share"] is not None

    _, rows = read_rows(csv_path)
    assert len(rows) == 6
    assert all(r["cup_dice"] == r["vcdr_true"] == r["vcdr_manifest"] == r["label"] == "" for r in rows)
    assert all(r["vcdr_pred"] for r in rows)  # the model still measures a vCDR: there is just nothing to compare it to
    for name in PLOTS:
        assert_png(report / name)
    assert len(list((report / "worst").glob("*.png"))) == 2
    index = (report / "index.html").read_text()
    assert 'href="scores.csv"' in index and all(f'src="{name}"' in index for name in PLOTS)


def test_single_stage_versions_keep_their_disc_scores_and_add_empty_cup_and_vcdr(drishti_six, capsys):
    from fundus_seg.model_repository import load_version
    from training_job.evaluate import evaluate

    version = BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME / "1"  # the paper's single-stage model
    result = evaluate_json(capsys, "--model", str(version), "--data", str(drishti_six))
    assert set(result) == TOP_LEVEL and result["pipeline"] == "single-stage"
    loaded = load_version(version)
    today = evaluate(loaded.predict, drishti_six, "test", loaded.card.preprocess, threshold=loaded.card.threshold)
    for key in ("n", "dice_min", "dice_max", "rrp"):
        assert result[key] == today[key], key
    for key in ("dice_mean", "dice_std"):  # per-image Dice is rounded to 4 decimals before the mean
        assert result[key] == pytest.approx(today[key], abs=1.5e-4), key
    assert result["at_128"]["dice_mean"] == pytest.approx(today["at_128"]["dice_mean"], abs=1.5e-4)
    assert result["cup"]["n"] == 0 and result["vcdr"]["n"] == 0 and result["vcdr_manifest"]["n"] == 0
    assert result["glaucoma_auc"] is None  # labels, but no predicted vCDR to rank them by
    assert result["flagged"]["n"] == 0  # the bundled model is sure of these six

    assert main(["evaluate", "--model", str(version), "--data", str(drishti_six)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    for words in (f"Dice mean {result['dice_mean']}", "cup Dice - (n=0)", "vCDR MAE - ", "glaucoma AUC -",
                  "flagged 0/6"):
        assert words in line, (words, line)


@pytest.mark.parametrize("flags, message", [
    (["--per-image", "{tmp}"], "is a folder"),
    (["--per-image", "{tmp}/a-file/scores.csv"], "cannot create the folder"),
    (["--report", "{tmp}/a-file"], "cannot create the folder"),
])
def test_unwritable_outputs_are_refused_before_scoring(tmp_path, capsys, flags, message):
    (tmp_path / "a-file").write_text("not a folder")
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["evaluate", "--model", str(tmp_path / "no-such-repo"), "--data", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and flags[0] in err[0], err
