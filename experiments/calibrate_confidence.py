"""Where the confidence checks' thresholds come from: their signals on the TRAINING splits.

    .venv/bin/python experiments/calibrate_confidence.py [--model REPO/NAME/VERSION] \
        --data ../shared/data/drishti-gs1,../shared/data/rim-one-dl

Without --model: the experts' discs only (size in the field of view, full-field or crop). With a
two-stage version: every signal `preprocessing.confidence.assess` looks at, over the training images
(the model has seen them, so these are its spreads at its best: a threshold at their extremes fires
on what the model does NOT usually do). Prints percentiles per signal; `Limits` in
preprocessing/confidence.py records the values chosen, with margin, from this output. Test splits
are never read.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.confidence import field_of_view  # noqa: E402
from preprocessing.datasets import read_manifest  # noqa: E402
from preprocessing.decode import decode_image, decode_mask  # noqa: E402

PERCENTILES = (0, 1, 5, 50, 95, 99, 100)


def spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {f"p{p}": round(float(np.percentile(values, p)), 3) for p in PERCENTILES} | {"n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/drishti-gs1,../shared/data/rim-one-dl")
    parser.add_argument("--model", help="a two-stage version directory")
    parser.add_argument("--keras", nargs=2, metavar=("STAGE1", "STAGE2"),
                        help="or the two stages' Keras files before they are assembled into a version")
    args = parser.parse_args()
    signals: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        signals.setdefault(name, []).append(float(value))

    version = None
    if args.model:
        from fundus_seg.model_repository import load_version
        from preprocessing.two_stage import segment_image

        version = load_version(Path(args.model))
        config = version.card.two_stage()
    elif args.keras:
        import keras

        from preprocessing.two_stage import TwoStageConfig, segment_image

        stage1, stage2 = (keras.models.load_model(path, compile=False) for path in args.keras)

        class Stages:  # the two signatures of a version, from the Keras models
            predict = staticmethod(lambda batch: stage1(batch, training=False).numpy())
            segment = staticmethod(lambda batch: stage2(batch, training=False).numpy())

        version, config = Stages(), TwoStageConfig()
    for folder in args.data.split(","):
        for record in (r for r in read_manifest(folder) if r.split == "train"):
            rgb = decode_image(record.image.read_bytes())
            fov = field_of_view(rgb)
            disc = decode_mask(record.disc_mask.read_bytes())
            kind = "full_field" if fov.full_field else "crop"
            add(f"expert_size_in_field[{kind}]", 2 * math.sqrt(disc.sum() / math.pi) / max(fov.width_px, 1.0))
            add("fundus_colour", float(fov.fundus_colour))
            if version is not None:
                answer = segment_image(rgb, version.predict, version.segment, config)
                for name, value in answer.confidence.details.items():
                    add(f"{name}[{kind}]" if name == "size_in_field" else name, value)
                add("second_look", float(answer.second_look))
                add("low", float(answer.confidence.low))
                for reason in answer.confidence.reasons:
                    add(f"fired:{reason}", 1.0)
    print(json.dumps({name: spread(values) for name, values in sorted(signals.items())}, indent=1))


if __name__ == "__main__":
    main()
