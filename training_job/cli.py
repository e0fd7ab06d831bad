"""`fundus-seg train | evaluate | model-info`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from preprocessing.errors import ModelRepositoryError
from training_job.config import RunConfig, load_run_config, with_overrides


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("architecture (D/W/IR)")
    group.add_argument("--depth", type=int, help="down-sampling steps D (default 6)")
    group.add_argument("--width", type=int, help="first-level filters W (default 40)")
    group.add_argument("--ir", type=float, dest="increment_ratio", help="width increment ratio per level (default 1.1)")
    group.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None, help="batch normalisation (default on)")
    group.add_argument("--upsampling", action=argparse.BooleanOptionalAction, default=None, help="bilinear up-sampling instead of transposed convolution")
    group.add_argument("--dropout", type=float, help="spatial dropout rate inside each block (default 0)")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML/JSON run configuration (flags override it)")
    parser.add_argument("--data", type=_csv, help="training dataset folders or URIs, comma-separated")
    parser.add_argument("--eval-data", type=_csv, default=(), help="extra datasets whose test split is scored")
    parser.add_argument("--out", "--model-repo", dest="model_repo", help="model repository (folder or URI)")
    parser.add_argument("--model-name", help=f"default {DEFAULT_MODEL_NAME}")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int)
    group.add_argument("--steps-per-epoch", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--lr", type=float, dest="learning_rate", help="Adam learning rate (default 8e-4)")
    group.add_argument("--schedule", choices=("cosine", "constant"))
    group.add_argument("--loss", choices=("bce_dice", "dice"))
    group.add_argument("--seed", type=int)
    add_model_flags(parser)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    base = load_run_config(args.config) if args.config else RunConfig()
    return with_overrides(
        base,
        run={"data": args.data, "model_repo": args.model_repo, "model_name": args.model_name},
        train={k: getattr(args, k) for k in ("epochs", "steps_per_epoch", "batch_size", "learning_rate", "schedule", "loss", "seed")},
        model={k: getattr(args, k) for k in ("depth", "width", "increment_ratio", "batchnorm", "upsampling", "dropout")},
    )


def resolve_version_dir(model: str | None) -> Path:
    """`REPO/NAME/VERSION`, or `REPO/NAME` (its latest version); default: the bundled model."""
    path = Path(model) if model else BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(int(p.name) for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file())
    if not versions:
        raise ModelRepositoryError(f"{path}: no model version found (expected {path}/<version>/saved_model.pb)")
    return path / str(versions[-1])


def cmd_train(args: argparse.Namespace) -> int:
    from training_job.job import JobOptions, run_training

    run = run_config_from_args(args)
    version, metrics = run_training(run, JobOptions(eval_data=args.eval_data))
    print(json.dumps({"version": version, "model_repo": run.model_repo, "test_metrics": metrics["test_metrics"],
                      "training_seconds": metrics["training_seconds"]}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training_job.evaluate import evaluate, load_predictor

    version_dir = resolve_version_dir(args.model)
    result = evaluate(load_predictor(version_dir), args.data, args.split)
    result = {"model": str(version_dir), "data": args.data, "split": args.split, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{version_dir} on {args.data} [{args.split}]: n={result['n']} Dice mean {result['dice_mean']} "
              f"std {result['dice_std']} worst {result['dice_min']} best {result['dice_max']} RRP {result['rrp']}% "
              f"(at 128x128: Dice {result['at_128']['dice_mean']}, RRP {result['at_128']['rrp']}%)")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from training_job.unet import UNetConfig, build_unet, flops_per_image, trainable_params

    config = with_overrides(RunConfig(), model={k: getattr(args, k) for k in ("depth", "width", "increment_ratio", "batchnorm", "upsampling", "dropout")}).model
    model = build_unet(config)
    print(json.dumps({"architecture": config.name, "batchnorm": config.batchnorm, "upsampling": config.upsampling,
                      "trainable_params": trainable_params(model), "gflops_per_image": round(flops_per_image(model) / 1e9, 3)}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a U-Net and publish a new model version")
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="Dice and RRP of a model version on a dataset split")
    evaluate.add_argument("--model", help="REPO/NAME[/VERSION] (default: the bundled model)")
    evaluate.add_argument("--data", required=True, help="dataset folder")
    evaluate.add_argument("--split", default="test", choices=("train", "test"))
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("model-info", help="parameters and FLOPs of a U-Net configuration")
    add_model_flags(info)
    info.set_defaults(func=cmd_model_info)
