"""What `fundus-seg evaluate` writes for people: the per-image CSV and a report folder.

    write_per_image(path, scores)                      one row per test image (`ImageScore`'s fields)
    write_report(directory, scores, summary, ...)      dice.png, vcdr.png, bland_altman.png, worst/*.png, index.html

The plots need only the scores. The overlays of the worst images need their masks, which the evaluation does
not keep (a dataset's full-size masks would not fit in memory): `answer` (RGB -> predicted disc, cup) runs the
version again on just those images.
"""
from __future__ import annotations

import csv
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocessing.datasets import Record, read_manifest
from preprocessing.decode import decode_image, decode_mask
from training_job.evaluate import ImageScore

Answer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # H x W x 3 uint8 -> (disc, cup) H x W bool

PER_IMAGE_COLUMNS = ("id", "disc_dice", "cup_dice", "vcdr_pred", "vcdr_true", "rrp_ok", "confidence", "flagged",
                     "reasons", "label", "second_look", "vcdr_manifest", "disc_dice_128", "rrp_ok_128")
"""The issue's columns first (#10), then the rest of `ImageScore`, every field once."""
DEFAULT_WORST = 8
OVERLAY_SIDE = 512  # pixels of the zoomed overlay panel
COLOURS = {  # matplotlib colour names: the experts' in cool, the model's in warm colours
    "expert disc": "lime", "expert cup": "cyan", "predicted disc": "red", "predicted cup": "yellow",
}
PLOTS = (("dice.png", "Dice distribution"), ("vcdr.png", "Predicted vs expert vCDR"),
         ("bland_altman.png", "Bland-Altman: vCDR"))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_per_image(path: str | Path, scores: Sequence[ImageScore]) -> Path:
    """CSV, one row per image; empty cells where a value does not exist (no cup mask, no disc segmented)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PER_IMAGE_COLUMNS)
        for score in scores:
            writer.writerow([_cell(getattr(score, column)) for column in PER_IMAGE_COLUMNS])
    return path


def worst(scores: Sequence[ImageScore], n: int = DEFAULT_WORST) -> list[ImageScore]:
    """The `n` lowest disc Dice, worst first (ties by id, so reruns pick the same images)."""
    return sorted(scores, key=lambda s: (s.disc_dice, s.id))[: max(n, 0)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a Job or a server
    import matplotlib.pyplot as plt

    return plt


def _empty(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="grey")


def _format(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plot_dice(scores: Sequence[ImageScore], path: Path) -> None:
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    bins = np.linspace(0.0, 1.0, 21)
    for axes, name, values in (
        (panels[0], "disc", [s.disc_dice for s in scores]),
        (panels[1], "cup", [s.cup_dice for s in scores if s.cup_dice is not None]),
    ):
        if values:
            axes.hist(values, bins=bins, color="tab:blue" if name == "disc" else "tab:orange", edgecolor="white")
            axes.axvline(float(np.mean(values)), color="black", linestyle="--", linewidth=1)
            axes.set_title(f"{name} Dice: mean {np.mean(values):.3f}, n={len(values)}")
        else:
            _empty(axes, f"no {name} Dice\n(no {name} masks or no {name} predicted)")
            axes.set_title(f"{name} Dice")
        axes.set_xlim(0, 1)
        axes.set_xlabel("Dice")
    panels[0].set_ylabel("images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _vcdr_pairs(scores: Sequence[ImageScore]) -> list[ImageScore]:
    return [s for s in scores if s.vcdr_pred is not None and s.vcdr_true is not None]


def plot_vcdr(scores: Sequence[ImageScore], summary: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.8, 4.6))
    pairs = _vcdr_pairs(scores)
    agreement = summary.get("vcdr") or {}
    for label, colour in (("glaucoma", "tab:red"), ("normal", "tab:green"), ("", "tab:blue")):
        group = [s for s in pairs if (s.label if s.label in ("glaucoma", "normal") else "") == label]
        if group:
            axes.scatter([s.vcdr_true for s in group], [s.vcdr_pred for s in group], s=18, color=colour,
                         label=label or "no label", alpha=0.8)
    axes.plot([0, 1], [0, 1], color="grey", linewidth=1, label="identity")
    if pairs:
        axes.legend(loc="upper left", fontsize=8)
    else:
        _empty(axes, "no vCDR pairs\n(no cup masks or no cup predicted)")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="expert vCDR (masks)", ylabel="predicted vCDR", aspect="equal")
    axes.set_title(f"vCDR: r={_format(agreement.get('pearson_r'))}, MAE={_format(agreement.get('mae'))}, "
                   f"n={agreement.get('n', len(pairs))}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_bland_altman(scores: Sequence[ImageScore], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.6, 4.2))
    pairs = _vcdr_pairs(scores)
    if pairs:
        predicted = np.asarray([s.vcdr_pred for s in pairs], np.float64)
        true = np.asarray([s.vcdr_true for s in pairs], np.float64)
        mean, difference = (predicted + true) / 2.0, predicted - true
        bias, sd = float(difference.mean()), float(difference.std(ddof=1)) if len(pairs) > 1 else 0.0
        axes.scatter(mean, difference, s=18, color="tab:blue", alpha=0.8)
        axes.axhline(bias, color="black", linewidth=1, label=f"bias {bias:+.3f}")
        for sign in (-1, 1):
            axes.axhline(bias + sign * 1.96 * sd, color="grey", linestyle="--", linewidth=1,
                         label="bias ± 1.96 SD" if sign > 0 else None)
        axes.legend(loc="upper right", fontsize=8)
        axes.set_title(f"vCDR Bland-Altman: bias {bias:+.3f}, limits {bias - 1.96 * sd:+.3f} .. "
                       f"{bias + 1.96 * sd:+.3f}", fontsize=10)
    else:
        _empty(axes, "no vCDR pairs")
        axes.set_title("vCDR Bland-Altman", fontsize=10)
    axes.set(xlabel="mean of predicted and expert vCDR", ylabel="predicted - expert vCDR")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    found, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in found if len(c) > 2]


def _view(masks: Sequence[np.ndarray], height: int, width: int) -> tuple[int, int, int, int]:
    """A square around every mask's pixels with a margin (the disc is ~2% of a fundus photo); the whole image
    when all are empty."""
    union = np.zeros((height, width), bool)
    for mask in masks:
        union |= np.asarray(mask, bool)
    if not union.any():
        return 0, 0, width, height
    x, y, w, h = cv2.boundingRect(union.astype(np.uint8))
    side = int(max(w, h) * 1.6) + 16
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(min(max(cx - side / 2.0, 0), max(width - side, 0)))
    y0 = int(min(max(cy - side / 2.0, 0), max(height - side, 0)))
    return x0, y0, min(x0 + side, width), min(y0 + side, height)


@dataclass(frozen=True)
class Overlay:
    score: ImageScore
    file: str  # relative to the report folder


def _caption(score: ImageScore) -> str:
    reasons = score.reasons.replace(";", ", ") or "none"
    return (f"{score.id}: disc Dice {score.disc_dice:.3f}, cup Dice {_format(score.cup_dice)}; "
            f"vCDR {_format(score.vcdr_pred)} (expert {_format(score.vcdr_true)}); "
            f"confidence {score.confidence:.2f}{' (flagged)' if score.flagged else ''}; reasons: {reasons}")


def plot_overlay(rgb: np.ndarray, truth: tuple[np.ndarray, np.ndarray | None], predicted: tuple[np.ndarray, np.ndarray],
                 score: ImageScore, path: Path) -> None:
    """The whole image (left) and a zoom on the disc (right), with the experts' and the model's contours."""
    plt = _pyplot()
    height, width = rgb.shape[:2]
    outlines = {"expert disc": truth[0], "expert cup": truth[1], "predicted disc": predicted[0],
                "predicted cup": predicted[1]}
    x0, y0, x1, y1 = _view([truth[0], predicted[0]], height, width)
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(10, 5.4), gridspec_kw={"width_ratios": [width / height, 1]})
    whole.imshow(rgb)
    whole.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white", linewidth=1))
    zoom.imshow(rgb[y0:y1, x0:x1], extent=(x0, x1, y1, y0))
    for name, mask in outlines.items():
        if mask is None:
            continue
        style = "-" if name.startswith("expert") else "--"
        for number, contour in enumerate(_contours(mask)):
            closed = np.vstack([contour, contour[:1]])
            for axes, line in ((whole, 0.8), (zoom, 1.6)):
                axes.plot(closed[:, 0], closed[:, 1], style, color=COLOURS[name], linewidth=line,
                          label=name if axes is zoom and number == 0 else None)
    for axes in (whole, zoom):
        axes.set_axis_off()
    zoom.set(xlim=(x0, x1), ylim=(y1, y0))
    if zoom.get_legend_handles_labels()[0]:
        zoom.legend(loc="lower right", fontsize=8, framealpha=0.6)
    figure.suptitle(_caption(score), fontsize=9, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=OVERLAY_SIDE / 5.4)
    plt.close(figure)


def render_overlays(directory: Path, scores: Sequence[ImageScore], records: dict[str, Record], answer: Answer
                    ) -> list[Overlay]:
    """One PNG per image in `scores`, under `directory/worst/`; one image in memory at a time."""
    (directory / "worst").mkdir(parents=True, exist_ok=True)
    overlays = []
    for rank, score in enumerate(scores, start=1):
        record = records[score.id]
        rgb = decode_image(record.image.read_bytes())
        truth = (decode_mask(record.disc_mask.read_bytes()),
                 decode_mask(record.cup_mask.read_bytes()) if record.cup_mask is not None else None)
        file = f"worst/{rank:02d}-{_safe(score.id)}.png"
        plot_overlay(rgb, truth, answer(rgb), score, directory / file)
        overlays.append(Overlay(score, file))
    return overlays


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "image"


def _rows(summary: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows.extend(_rows(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _index(title: str, summary: dict, overlays: Sequence[Overlay], per_image: str | None) -> str:
    e = html.escape
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e('-' if v is None else str(v))}</td></tr>" for k, v in _rows(summary))
    plots = "\n".join(f'<figure><a href="{file}"><img src="{file}" alt="{e(alt)}"></a><figcaption>{e(alt)}</figcaption>'
                      f"</figure>" for file, alt in PLOTS)
    worst_rows = "\n".join(
        f'<figure class="overlay"><a href="{e(o.file)}"><img src="{e(o.file)}" alt="{e(o.score.id)}"></a>'
        f"<figcaption>{e(_caption(o.score))}</figcaption></figure>" for o in overlays)
    link = f'<p>Per-image scores: <a href="{e(per_image)}">{e(per_image)}</a></p>' if per_image else ""
    legend = ", ".join(f"{e(name)}: {e(colour)}{' (dashed)' if name.startswith('predicted') else ''}"
                       for name, colour in COLOURS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}} figure{{display:inline-block;margin:0.5em}}
img{{max-width:480px}} .overlay img{{max-width:640px}} figcaption{{font-size:85%;max-width:640px}}</style></head>
<body><h1>{e(title)}</h1>
<h2>Summary</h2>
<table>
{table}
</table>
{link}
<h2>Plots</h2>
{plots}
<h2>Worst {len(overlays)} images by disc Dice</h2>
<p>Contours: {legend}.</p>
{worst_rows or "<p>none</p>"}
</body></html>
"""


def write_report(directory: str | Path, scores: Sequence[ImageScore], summary: dict, folder: str | Path,
                 answer: Answer | None, title: str = "fundus-seg evaluation", n_worst: int = DEFAULT_WORST,
                 per_image: str | Path | None = None) -> Path:
    """The plots, the overlays of the `n_worst` images of `folder` (none without `answer`) and `index.html`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plot_dice(scores, directory / "dice.png")
    plot_vcdr(scores, summary, directory / "vcdr.png")
    plot_bland_altman(scores, directory / "bland_altman.png")
    overlays = []
    if answer is not None and n_worst > 0:
        records = {r.id: r for r in read_manifest(folder)}
        overlays = render_overlays(directory, worst(scores, n_worst), records, answer)
    link = None
    if per_image is not None:
        target = Path(per_image).resolve()
        try:
            link = target.relative_to(directory.resolve()).as_posix()
        except ValueError:
            link = target.as_uri()
    index = directory / "index.html"
    index.write_text(_index(title, summary, overlays, link))
    return index
