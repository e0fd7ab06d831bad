"""Whether the convex hull of disc and cup helps, measured on the TRAINING splits (never a test split).

    .venv/bin/python experiments/postprocess_choice.py --stage1 models/optic-disc/1/model.keras \
        --stage2 models/optic-disc/2/segment.keras

The figures in docs/RESULTS.md ("The two-stage model") came from this command, run before the bundled
stage 1 was fine-tuned (hence the single-stage v1 as the locator): disc Dice, RRP, cup Dice and vCDR MAE on
all 50 drishti-gs1 and the first 120 rim-one-dl training images, with and without `TwoStageConfig.convex`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", required=True)
    parser.add_argument("--stage2", required=True)
    parser.add_argument("--data", default="../shared/data/drishti-gs1,../shared/data/rim-one-dl")
    parser.add_argument("--limit", type=int, default=120, help="images per dataset (the first of its train split)")
    args = parser.parse_args()
    import keras

    from preprocessing.two_stage import TwoStageConfig
    from training_job.evaluate import evaluate_two_stage_images, keras_predictor, score_images

    stage1, stage2 = (keras.models.load_model(path, compile=False) for path in (args.stage1, args.stage2))
    locate, segment = keras_predictor(stage1), keras_predictor(stage2)
    for convex in (True, False):
        for folder in args.data.split(","):
            scores = score_images(evaluate_two_stage_images(locate, segment, folder, "train",
                                                            TwoStageConfig(convex=convex))[: args.limit])
            print(f"convex={convex} {Path(folder).name}: n={scores['n']} disc Dice {scores['dice_mean']} "
                  f"RRP {scores['rrp']} cup Dice {scores['cup']['dice_mean']} vCDR MAE {scores['vcdr']['mae']}",
                  flush=True)


if __name__ == "__main__":
    main()
