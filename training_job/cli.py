"""`fundus-seg train | evaluate | model-info`; `python -m training_job` takes the same flags as `train`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from fundus_seg.errors import EXIT_PUBLISH_REFUSED, FundusSegError, storage_errors
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.rollout import DEFAULT_TOLERANCE
from training_job.config import (
    ACCELERATORS,
    INCREMENTAL_EPOCHS,
    MODES,
    PIPELINES,
    JobOptions,
    RunConfig,
    SegmentStageConfig,
    configs_from_dict,
    read_config_file,
    two_stage,
    with_overrides,
)

RUN_ID_VARIABLES = ("FUNDUS_SEG_RUN_ID",)
"""Where a run id comes from when --run-id and the config file give none (set it from the Job's name).
Not CI's generic JOB_NAME: every run of a CI job would then be "already published"."""


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


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML/JSON run configuration, e.g. a mounted ConfigMap (flags override it)")
    parser.add_argument("--data", type=_csv, help="training dataset folders or URIs (s3://bucket/prefix), comma-separated")
    parser.add_argument("--eval-data", type=_csv, help="extra datasets whose test split is scored")
    parser.add_argument("--out", "--model-repo", dest="model_repo", help="model repository (folder or URI)")
    parser.add_argument("--model-name", help=f"default {DEFAULT_MODEL_NAME}")
    parser.add_argument("--pipeline", choices=PIPELINES,
                        help="two-stage: locate the disc, then segment disc and cup on a crop around it (what the bundled "
                             "model is); single-stage: the paper's whole-image disc model (default, unless the config "
                             "file has a `segment:` section; an incremental run keeps its base version's pipeline)")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int)
    group.add_argument("--steps-per-epoch", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--lr", type=float, dest="learning_rate", help="Adam learning rate (default 8e-4)")
    group.add_argument("--schedule", choices=("cosine", "constant"))
    group.add_argument("--loss", choices=("bce_dice", "dice"))
    group.add_argument("--seed", type=int)
    group.add_argument("--segment-epochs", type=int, help="two-stage: stage 2's epochs (default 30; incremental 3)")
    group.add_argument("--segment-steps-per-epoch", type=int, help="two-stage: stage 2's steps per epoch (default 200)")
    group.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="XLA-compile each training step (default on); --no-jit-compile starts faster: short runs")
    add_model_flags(parser)
    job = parser.add_argument_group("job (retraining, checkpoints, hardware)")
    job.add_argument("--mode", choices=MODES, help="full: train from scratch (default); incremental: start from "
                     f"--base-version's weights (default {INCREMENTAL_EPOCHS} epochs)")
    job.add_argument("--base-version", metavar="N|latest", help="version an incremental run starts from (default latest; "
                     "ignored by full runs)")
    job.add_argument("--replay-fraction", type=_fraction, metavar="F", help="incremental: share of every epoch drawn "
                     "from the base version's earlier datasets (default 0: no replay)")
    job.add_argument("--run-id", help="stable id of this run: checkpoints, resume, at most one published version "
                     f"(default ${' or $'.join(RUN_ID_VARIABLES)}; none: a one-off run without checkpoints)")
    job.add_argument("--checkpoint-dir", metavar="URI", help="checkpoints go to URI/<run-id>/ (default <model-repo>/.checkpoints/<model-name>)")
    job.add_argument("--cache-dir", help="local folder for downloaded datasets (default $XDG_CACHE_HOME/fundus-seg/datasets)")
    job.add_argument("--accelerator", choices=ACCELERATORS, help="cpu, gpu (MirroredStrategy over the visible GPUs), "
                     "tpu (TPUStrategy) or auto (default: gpu when one is visible)")
    gate = parser.add_argument_group("publishing gate (against the latest published version)")
    gate.add_argument("--tolerance", type=float, help="largest allowed drop of dice_mean (x100 for rrp) below the latest "
                      f"version on any dataset both were scored on (default {DEFAULT_TOLERANCE}); a bigger drop: "
                      f"nothing is published, exit {EXIT_PUBLISH_REFUSED}")
    gate.add_argument("--force", action="store_true", default=None,
                      help="publish even when the gate fails (metrics.json records \"forced\": true)")


MODEL_FLAGS = ("depth", "width", "increment_ratio", "batchnorm", "upsampling", "dropout")
TRAIN_FLAGS = ("epochs", "steps_per_epoch", "batch_size", "learning_rate", "schedule", "loss", "seed", "jit_compile")
JOB_FLAGS = ("mode", "base_version", "replay_fraction", "eval_data", "run_id", "checkpoint_dir", "cache_dir", "accelerator",
             "tolerance", "force")


def configs_from_args(args: argparse.Namespace) -> tuple[RunConfig, JobOptions]:
    """Config file (RunConfig plus its `job:` section), then flags, then the environment's run id."""
    raw = read_config_file(args.config) if args.config else {}
    run, job = configs_from_dict(raw)
    run = with_overrides(
        run,
        run={"data": args.data, "model_repo": args.model_repo, "model_name": args.model_name},
        train={k: getattr(args, k, None) for k in TRAIN_FLAGS},
        model={k: getattr(args, k, None) for k in MODEL_FLAGS},
    )
    if getattr(args, "pipeline", None) == "two-stage" and run.segment is None:
        run = two_stage(run)
    elif getattr(args, "pipeline", None) == "single-stage":
        run = dataclasses.replace(run, segment=None)
    segment_train = {k: v for k, v in (("epochs", getattr(args, "segment_epochs", None)),
                                       ("steps_per_epoch", getattr(args, "segment_steps_per_epoch", None))) if v is not None}
    if segment_train:
        if run.segment is None and (getattr(args, "mode", None) or job.mode) == "incremental":
            # the base version decides the pipeline; these settings apply if it is two-stage
            run = dataclasses.replace(run, segment=SegmentStageConfig(train=dataclasses.replace(
                SegmentStageConfig().train, epochs=INCREMENTAL_EPOCHS)))
        if run.segment is None:
            raise FundusSegError("--segment-epochs/--segment-steps-per-epoch need --pipeline two-stage")
        try:
            run = dataclasses.replace(run, segment=dataclasses.replace(
                run.segment, train=dataclasses.replace(run.segment.train, **segment_train)))
        except ValueError as exc:
            raise FundusSegError(f"segment: {exc}") from None
    flags = {k: v for k in JOB_FLAGS if (v := getattr(args, k, None)) is not None}
    if job.run_id is None and "run_id" not in flags:
        flags["run_id"] = next((os.environ[v] for v in RUN_ID_VARIABLES if os.environ.get(v)), None)
    try:
        job = dataclasses.replace(job, **flags)
    except ValueError as exc:
        raise FundusSegError(str(exc)) from None
    if job.mode == "incremental" and getattr(args, "epochs", None) is None and "epochs" not in (raw.get("train") or {}):
        run = with_overrides(run, train={"epochs": INCREMENTAL_EPOCHS})
    return run, job


def log_to_stderr() -> None:
    """Timestamped job events (resume, checkpoints, publish) for Kubernetes logs; stdout keeps the result."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("training_job", "fundus_seg"):
        logging.getLogger(name).setLevel(logging.INFO)


def resolve_version_dir(model: str | None) -> Path:
    """`REPO/NAME/VERSION`, or `REPO/NAME` (its latest version); default: the bundled model."""
    from fundus_seg.model_repository import local_version

    return local_version(Path(model) if model else BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME)


def cmd_train(args: argparse.Namespace) -> int:
    from training_job.job import run_training

    log_to_stderr()
    run, job = configs_from_args(args)
    with storage_errors():
        version, metrics = run_training(run, job)
    print(json.dumps({"version": version, "model_repo": run.model_repo, "model_name": run.model_name,
                      "mode": metrics.get("mode"), "base_version": metrics.get("base_version"),
                      "run_id": metrics.get("run_id"), "published": not metrics.get("already_published", False),
                      "forced": metrics.get("forced", False),
                      "resumed_from_epoch": metrics.get("resumed_from_epoch", 0),
                      "test_metrics": metrics["test_metrics"], "training_seconds": metrics["training_seconds"]}, indent=2))
    return 0


def _answer(version):
    """RGB -> (disc, cup) full-size masks with a loaded version's own pipeline (the report's overlays)."""
    import numpy as np

    from preprocessing.pipeline import finish
    from preprocessing.transform import preprocess_image
    from preprocessing.two_stage import segment_image

    if version.segment is not None:
        config = version.card.two_stage()

        def two_stage(rgb):
            answer = segment_image(rgb, version.predict, version.segment, config)
            return answer.disc, answer.cup

        return two_stage

    def single_stage(rgb):
        model_input, box = preprocess_image(rgb, version.card.preprocess)
        disc = finish(version.predict(model_input[None])[0], box, version.card.threshold)
        return disc, np.zeros_like(disc)

    return single_stage


def _human(result: dict) -> str:
    def value(number, suffix=""):
        return "-" if number is None else f"{number}{suffix}"

    cup, vcdr, flagged = result["cup"], result["vcdr"], result["flagged"]
    return (f"{result['model']} ({result['pipeline']}) on {result['data']} [{result['split']}]: n={result['n']} "
            f"Dice mean {result['dice_mean']} std {result['dice_std']} worst {result['dice_min']} "
            f"best {result['dice_max']} RRP {result['rrp']}% "
            f"(at 128x128: Dice {result['at_128']['dice_mean']}, RRP {result['at_128']['rrp']}%); "
            f"cup Dice {value(cup['dice_mean'])} (n={cup['n']}); vCDR MAE {value(vcdr['mae'])} "
            f"r {value(vcdr['pearson_r'])} (n={vcdr['n']}); glaucoma AUC {value(result['glaucoma_auc'])}; "
            f"flagged {flagged['n']}/{result['n']}")


def _check_outputs(per_image: str | None, report: str | None) -> None:
    """--per-image's folder and --report's folder exist (created) and can be written to."""
    for flag, folder in (("--per-image", Path(per_image).parent if per_image else None),
                         ("--report", Path(report) if report else None)):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FundusSegError(f"{flag} {folder}: cannot create the folder ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK):
            raise FundusSegError(f"{flag} {folder}: not writable")
    if per_image and Path(per_image).is_dir():
        raise FundusSegError(f"--per-image {per_image}: is a folder; give a file name (e.g. {per_image}/scores.csv)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fundus_seg.model_repository import load_version
    from training_job.evaluate import evaluate_single_stage_images, evaluate_two_stage_images, score_images

    _check_outputs(args.per_image, args.report)  # before minutes of scoring, not after
    version_dir = resolve_version_dir(args.model)
    version = load_version(version_dir)  # scored with the preprocessing and threshold on its card
    if version.segment is not None:
        images = evaluate_two_stage_images(version.predict, version.segment, args.data, args.split,
                                           version.card.two_stage())
    else:
        images = evaluate_single_stage_images(version.predict, args.data, args.split, version.card.preprocess,
                                              threshold=version.card.threshold)
    result = {"model": str(version_dir), "data": args.data, "split": args.split, "pipeline": version.card.pipeline,
              **score_images(images)}
    if args.per_image:
        from training_job.evaluation_report import write_per_image

        write_per_image(args.per_image, images)
    if args.report:
        from training_job.evaluation_report import write_report

        write_report(args.report, images, result, args.data, _answer(version), n_worst=args.worst,
                     title=f"{version_dir} on {args.data} [{args.split}]", per_image=args.per_image)
    print(json.dumps(result) if args.json else _human(result))
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from training_job.unet import build_unet, flops_per_image, trainable_params

    config = with_overrides(RunConfig(), model={k: getattr(args, k) for k in MODEL_FLAGS}).model
    model = build_unet(config)
    print(json.dumps({"architecture": config.name, "batchnorm": config.batchnorm, "upsampling": config.upsampling,
                      "trainable_params": trainable_params(model), "gflops_per_image": round(flops_per_image(model) / 1e9, 3)}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a U-Net and publish a new model version",
                           description="Train (full or incremental), score every test split, publish the next version.")
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="Dice, RRP, cup Dice, vCDR and glaucoma AUC of a model version on a dataset split")
    evaluate.add_argument("--model", help="REPO/NAME[/VERSION] (default: the bundled model)")
    evaluate.add_argument("--data", required=True, help="dataset folder")
    evaluate.add_argument("--split", default="test", choices=("train", "test"))
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--per-image", metavar="FILE", help="also write one CSV row per image (id, disc_dice, cup_dice, "
                          "vcdr_pred, vcdr_true, vcdr_manifest, rrp_ok, confidence, flagged, reasons, label, ...)")
    evaluate.add_argument("--report", metavar="DIR", help="also write plots (Dice, vCDR, Bland-Altman), overlays of "
                          "the worst images and DIR/index.html")
    evaluate.add_argument("--worst", type=_count, default=8, metavar="N", help="overlays in --report (default 8)")
    evaluate.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("model-info", help="parameters and FLOPs of a U-Net configuration")
    add_model_flags(info)
    info.set_defaults(func=cmd_model_info)
