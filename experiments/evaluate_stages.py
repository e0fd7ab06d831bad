"""Score a stage-1 and a stage-2 Keras model together through the serving pipeline, without publishing: the
ablations in docs/RESULTS.md pair one locator with stage-2 variants (experiments/stage2-ablation.sh).

    .venv/bin/python experiments/evaluate_stages.py --stage1 runs/x/stage1.keras --stage2 runs/y/stage2/model.keras \
        --data ../shared/data/drishti-gs1,runs/loro-r3/rim-one-r3 [--multiple 1.75] [--oracle] [--split train] [--flip]

--stage2 takes several models, comma-separated: stage 2 is then their ensemble (the mean of their probabilities).
--oracle cuts stage 2's crop around the EXPERT disc (what stage 2 does when stage 1 is right).
Prints one JSON line per dataset: disc/cup Dice, RRP, flagged (as `fundus-seg evaluate --json`).
--locations prints, instead, how far stage 1's location is from the expert disc: per dataset, how many test images
it sizes below 0.7 or above 1.4 of the expert diameter or puts more than 0.3 diameters off (stage 2 is not run).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def locations(locate, folder: str, config, split: str = "test") -> dict:
    """Stage 1's location (after its own looks, if the config has them) against the expert disc on every image of
    the split: counts of the ways it goes wrong."""
    import math

    from preprocessing.datasets import read_manifest
    from preprocessing.decode import decode_image, decode_mask
    from preprocessing.disc_crop import disc_center_and_diameter
    from preprocessing.two_stage import locate_again, locate_input, read_location

    ratios, shifts = [], []
    for record in (r for r in read_manifest(folder) if r.split == split):
        rgb = decode_image(record.image.read_bytes())
        stage1 = locate_input(rgb, config)
        [located] = locate_again([rgb], [read_location(locate(stage1.input[None])[0], stage1.box, config.threshold)],
                                 locate, config)  # with --locator-looks: after the locator's own looks
        x, y, diameter = disc_center_and_diameter(decode_mask(record.disc_mask.read_bytes()))
        ratios.append(located.diameter / diameter)
        shifts.append(math.hypot(located.center_x - x, located.center_y - y) / diameter)
    oversized = sorted(r for r in ratios if r > 1.4)
    return {"n": len(ratios), "undersized": sum(r < 0.7 for r in ratios), "oversized": len(oversized),
            "oversized_ratio_range": [round(oversized[0], 2), round(oversized[-1], 2)] if oversized else None,
            "off_centre": sum(s > 0.3 for s in shifts),
            "median_ratio": round(sorted(ratios)[len(ratios) // 2], 2)}


def mirrored_mean(segment):
    """Stage 2 with horizontal-flip test-time augmentation: the mean of its probabilities on the crop and, mirrored
    back, on the crop's mirror image (one batch of twice the rows)."""
    import numpy as np

    def both(crops):
        crops = np.asarray(crops)
        out = np.asarray(segment(np.concatenate([crops, crops[:, :, ::-1]])))
        return 0.5 * (out[:len(crops)] + out[len(crops):, :, ::-1])
    return both


def ensemble_mean(segments):
    """Stage 2 as the mean of several stage-2 models' probabilities on the same crops."""
    import numpy as np

    def mean(crops):
        return np.mean([np.asarray(segment(crops)) for segment in segments], axis=0)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", required=True)
    parser.add_argument("--stage2", required=True)
    parser.add_argument("--data", required=True, help="dataset folders, comma-separated (their test split)")
    parser.add_argument("--multiple", type=float, default=1.75, help="the crop multiple stage 2 was trained with")
    parser.add_argument("--size", type=int, default=128, help="the crop side (stage 2's input) stage 2 was trained with")
    parser.add_argument("--second-looks", type=int, default=1)
    parser.add_argument("--locator-looks", type=int, default=0, help="stage 1's own second looks (TwoStageConfig)")
    parser.add_argument("--locator-view", type=float, default=1.5, help="their side, in located disc diameters")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--locations", action="store_true", help="score stage 1's location only")
    parser.add_argument("--flip", action="store_true",
                        help="test-time augmentation: stage 2's answer averaged with its answer on the mirrored crop")
    parser.add_argument("--label", default="", help="a name printed with each line")
    parser.add_argument("--split", default="test", choices=("train", "test"),
                        help="the split scored: an unseen instrument's train split is a selection set, its test split "
                             "the report")
    parser.add_argument("--per-image", metavar="DIR", help="also write each dataset's rows as DIR/<dataset>.csv "
                        "(the columns of `fundus-seg evaluate --per-image`)")
    args = parser.parse_args()
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(verbose=False)
    import keras

    from preprocessing.disc_crop import DiscCropConfig
    from preprocessing.two_stage import TwoStageConfig
    from training_job.evaluate import evaluate_two_stage_images, keras_predictor, score_images
    from training_job.evaluation_report import write_per_image

    stage1 = keras.models.load_model(args.stage1, compile=False)
    stage2 = [keras_predictor(keras.models.load_model(path, compile=False)) for path in args.stage2.split(",")]
    locate, segment = keras_predictor(stage1), stage2[0] if len(stage2) == 1 else ensemble_mean(stage2)
    if args.flip:
        segment = mirrored_mean(segment)
    config = TwoStageConfig(crop=DiscCropConfig(multiple=args.multiple, size=args.size), second_looks=args.second_looks,
                            locator_looks=args.locator_looks, locator_view=args.locator_view)
    for folder in args.data.split(","):
        if args.locations:
            print(json.dumps({"label": args.label, "data": Path(folder).name, "split": args.split, **locations(locate, folder, config, args.split)}))
            continue
        images = evaluate_two_stage_images(locate, segment, folder, args.split, config, oracle=args.oracle)
        if args.per_image:
            write_per_image(Path(args.per_image) / f"{Path(folder).name}.csv", images)
        scores = score_images(images)
        brief = {"label": args.label, "data": Path(folder).name, "split": args.split, "oracle": args.oracle, "flip": args.flip, "size": args.size, "looks": args.second_looks,
                 "locator_looks": args.locator_looks, "locator_view": args.locator_view, "n": scores["n"],
                 "disc": scores["dice_mean"], "disc_min": scores["dice_min"], "rrp": scores["rrp"],
                 "cup": scores["cup"]["dice_mean"], "flagged": scores["flagged"]["n"],
                 "disc_flagged": scores["flagged"]["disc_dice_flagged"], "disc_unflagged": scores["flagged"]["disc_dice_unflagged"]}
        print(json.dumps(brief), flush=True)


if __name__ == "__main__":
    main()
