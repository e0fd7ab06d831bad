"""Markdown tables in the paper's form from published versions' cards (metrics.json).

    python -m training_job.report MODEL_REPO [MODEL_REPO ...]
    python -m training_job.report --glaucoma MODEL_REPO [MODEL_REPO ...]

One row per version: architecture, params, mode, data, budget, and per test set
Dice mean/std/worst/best and RRP at the original resolution (and mean Dice at 128x128).
`--glaucoma`: the two-stage versions' cup Dice, vCDR agreement, glaucoma AUC and confidence flags.
"""
from __future__ import annotations

import sys
from pathlib import Path

from fundus_seg.model_card import ModelCard
from fundus_seg.model_repository import CARD_FILE, version_number


def _versions(repo: Path):
    """(repo name, card) of every published version, by model name, then version number (2 before 10)."""
    found = [p for p in repo.glob(f"*/*/{CARD_FILE}") if version_number(p.parent.name) is not None]
    for path in sorted(found, key=lambda p: (p.parent.parent.name, int(p.parent.name))):
        yield repo.name, ModelCard.from_json(path.read_text())


def _budget(card: ModelCard) -> str:
    t = card.train
    budget = f"{t.epochs}x{t.steps_per_epoch}x{t.batch_size}"
    segment = ((card.extra.get("config") or {}).get("segment") or {}).get("train") if card.segment else None
    if segment:  # two-stage: stage 1's, then stage 2's
        budget += f" + {segment['epochs']}x{segment['steps_per_epoch']}x{segment['batch_size']}"
    return f"{budget}, {card.training_seconds / 60:.1f} min"


def _data(card: ModelCard) -> str:
    names = "+".join(Path(d.rstrip("/")).name for d in card.data)
    if card.mode != "incremental":
        return names
    replayed = (f", replay {card.replay_fraction:g} of {'+'.join(Path(d).name for d in card.replay_data)}"
                if card.replay_fraction else "")
    return f"{names} (from v{card.base_version}{replayed})"


def table(repos: list[Path]) -> str:
    lines = [
        "| run | D/W/IR | params | trained on | budget (epochs x steps x batch, minutes) | test set | Dice mean | std | worst | best | RRP % | Dice @128 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for repo in repos:
        for name, card in _versions(repo):
            for dataset, s in sorted(card.test_metrics.items()):
                lines.append(
                    f"| {name} | {card.architecture.name} | {card.trainable_params / 1e6:.2f} M | {_data(card)} "
                    f"| {_budget(card)} | {dataset} | {s.dice_mean:.3f} | {s.dice_std:.3f} | {s.dice_min:.3f} "
                    f"| {s.dice_max:.3f} | {s.rrp:.0f} | {s.at_128.dice_mean:.3f} |"
                )
    return "\n".join(lines)


def _figure(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def glaucoma_table(repos: list[Path]) -> str:
    lines = [
        "| run | pipeline | trained on | test set | disc Dice | RRP % | cup Dice | cup worst | vCDR MAE (masks) | vCDR r "
        "| vCDR MAE (experts' mean) | glaucoma AUC | flagged | disc Dice flagged / unflagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for repo in repos:
        for name, card in _versions(repo):
            if card.segment is None:
                continue
            for dataset, s in sorted(card.test_metrics.items()):
                cup, vcdr = s.more.get("cup") or {}, s.more.get("vcdr") or {}
                manifest, flagged = s.more.get("vcdr_manifest") or {}, s.more.get("flagged") or {}
                lines.append(
                    f"| {name} | {card.pipeline} | {_data(card)} | {dataset} | {_figure(s.dice_mean)} | {s.rrp:.0f} "
                    f"| {_figure(cup.get('dice_mean'))} | {_figure(cup.get('dice_min'))} | {_figure(vcdr.get('mae'))} "
                    f"| {_figure(vcdr.get('pearson_r'), 2)} | {_figure(manifest.get('mae'))} "
                    f"| {_figure(s.more.get('glaucoma_auc'))} | {flagged.get('n', '-')} of {s.n} "
                    f"| {_figure(flagged.get('disc_dice_flagged'))} / {_figure(flagged.get('disc_dice_unflagged'))} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments and arguments[0] == "--glaucoma":
        print(glaucoma_table([Path(p) for p in arguments[1:]]))
    else:
        print(table([Path(p) for p in arguments]))
