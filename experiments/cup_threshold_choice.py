"""The cup threshold of a two-stage version, chosen on the TRAINING splits (never a test split): cup Dice and
vCDR MAE (against the expert masks, and the manifest's experts' mean where present) at each threshold, stage 2's
cup map computed once per image (the threshold changes nothing before it).

    .venv/bin/python experiments/cup_threshold_choice.py --version models/optic-disc/3 \
        [--data ../shared/data/drishti-gs1,../shared/data/rim-one-dl] [--thresholds 0.3,0.4,0.5,0.6]

One JSON line per (dataset, threshold); docs/RESULTS.md, "The cup threshold".
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def memoized(predict):
    """`predict` with its answers kept per input: every threshold's pass reuses the model calls of the first."""
    answers = {}

    def call(batch):
        key = hashlib.sha1(batch.tobytes()).hexdigest()
        if key not in answers:
            answers[key] = predict(batch)
        return answers[key]

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="models/optic-disc/3")
    parser.add_argument("--data", default="../shared/data/drishti-gs1,../shared/data/rim-one-dl")
    parser.add_argument("--thresholds", default="0.3,0.35,0.4,0.45,0.5,0.55,0.6")
    args = parser.parse_args()
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(verbose=False)
    import keras

    from fundus_seg.model_card import ModelCard
    from fundus_seg.model_repository import CARD_FILE
    from training_job.evaluate import evaluate_two_stage_images, keras_predictor, score_images

    version = Path(args.version)
    config = ModelCard.from_json((version / CARD_FILE).read_text()).two_stage()
    locate, segment = (memoized(keras_predictor(keras.models.load_model(version / name, compile=False)))
                       for name in ("model.keras", "segment.keras"))
    for folder in args.data.split(","):
        for threshold in (float(t) for t in args.thresholds.split(",")):
            scores = score_images(evaluate_two_stage_images(
                locate, segment, folder, "train", dataclasses.replace(config, cup_threshold=threshold)))
            print(json.dumps({"data": Path(folder).name, "split": "train", "n": scores["n"], "cup_threshold": threshold,
                              "cup": scores["cup"]["dice_mean"], "vcdr_mae": scores["vcdr"]["mae"],
                              "vcdr_manifest_mae": scores["vcdr_manifest"]["mae"],
                              "glaucoma_auc": scores["glaucoma_auc"]}), flush=True)


if __name__ == "__main__":
    main()
