"""Markdown tables in the paper's form from published versions' metrics.json.

    python -m training_job.report MODEL_REPO [MODEL_REPO ...]

One row per version: architecture, params, mode, data, budget, and per test set
Dice mean/std/worst/best and RRP at the original resolution (and mean Dice at 128x128).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _versions(repo: Path):
    """(repo name, metrics) of every published version, by model name, then version number (2 before 10)."""
    found = [p for p in repo.glob("*/*/metrics.json") if p.parent.name.isascii() and p.parent.name.isdigit()]
    for metrics in sorted(found, key=lambda p: (p.parent.parent.name, int(p.parent.name))):
        yield repo.name, json.loads(metrics.read_text())


def _budget(m: dict) -> str:
    t = m["config"]["train"]
    return f"{t['epochs']}x{t['steps_per_epoch']}x{t['batch_size']}, {m['training_seconds'] / 60:.1f} min"


def _data(m: dict) -> str:
    names = "+".join(Path(d.rstrip("/")).name for d in m["data"])
    if m.get("mode") != "incremental":
        return names
    replay = m.get("replay") or {}
    replayed = f", replay {replay['fraction']:g} of {'+'.join(Path(d).name for d in replay['data'])}" if replay else ""
    return f"{names} (from v{m['base_version']}{replayed})"


def table(repos: list[Path]) -> str:
    lines = [
        "| run | D/W/IR | params | trained on | budget (epochs x steps x batch, minutes) | test set | Dice mean | std | worst | best | RRP % | Dice @128 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for repo in repos:
        for name, m in _versions(repo):
            for dataset, s in sorted(m["test_metrics"].items()):
                lines.append(
                    f"| {name} | {m['architecture']} | {m['trainable_params'] / 1e6:.2f} M | {_data(m)} | {_budget(m)} | {dataset} "
                    f"| {s['dice_mean']:.3f} | {s['dice_std']:.3f} | {s['dice_min']:.3f} | {s['dice_max']:.3f} | {s['rrp']:.0f} | {s['at_128']['dice_mean']:.3f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([Path(p) for p in sys.argv[1:]]))
