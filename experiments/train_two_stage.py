"""Train the two stages of the bundled two-stage model on CPU, resumably (docs/RESULTS.md, "Two-stage").

    .venv/bin/python experiments/train_two_stage.py --stage 2 --out runs/two-stage \
        --data ../shared/data/drishti-gs1,../shared/data/rim-one-dl
    .venv/bin/python experiments/train_two_stage.py --stage 1 --out runs/two-stage --base models/optic-disc/1

Stage 2 (disc + cup on disc-centred crops) trains from scratch; stage 1 (the whole-image locator)
fine-tunes the paper's model `--base` with zoom augmentation wide enough for a disc filling 5% or
60% of the image. Each epoch is checkpointed (Keras BackupAndRestore): rerun the same command to
resume. Every epoch appends {epoch, seconds, loss, dice...} to `<out>/stage<N>/log.jsonl`, the
time-to-Dice curve. `fundus-seg export-two-stage` then assembles the version.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class EpochLog:
    """Keras callback appending one JSON line per epoch, with the wall time spent so far (resumes add up)."""

    def __new__(cls, path: Path):
        import keras

        class _Log(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = time.perf_counter()
                self.before = 0.0
                if path.exists() and (lines := path.read_text().splitlines()):
                    self.before = json.loads(lines[-1])["seconds"]

            def on_epoch_end(self, epoch, logs=None):
                record = {"epoch": epoch + 1, "seconds": round(self.before + time.perf_counter() - self.start, 1),
                          **{k: round(float(v), 5) for k, v in (logs or {}).items() if k != "learning_rate"}}
                with path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")

        return _Log()


def resolved(config, args):
    """What the flags left at None, chosen from the training data as the training job chooses
    (`training_job.job.resolve_format_choices`)."""
    from preprocessing.datasets import load_split
    from training_job.config import RunConfig
    from training_job.job import disc_shares, resolve_format_choices

    shares = disc_shares([load_split(folder, "train") for folder in args.data.split(",")])
    return resolve_format_choices(RunConfig(segment=config), shares).segment


def stage2(args) -> None:
    import keras

    from training_job.config import CropJitter, FieldOfViewAugment, SegmentStageConfig, TrainConfig
    from training_job.crop_data import load_crops
    from training_job.segment_stage import train_segment_stage

    defaults = SegmentStageConfig()  # what a flag left out keeps
    jitter = {k: v for k, v in (("scale", args.jitter_scale), ("shift", args.jitter_shift)) if v is not None}
    config = SegmentStageConfig(train=TrainConfig(epochs=args.epochs or 30, steps_per_epoch=args.steps or 200,
                                                  batch_size=16, learning_rate=args.lr, seed=args.seed),
                                model=dataclasses.replace(defaults.model, input_size=args.size or defaults.model.input_size,
                                                          dropout=args.dropout if args.dropout is not None else defaults.model.dropout,
                                                          width=args.width or defaults.model.width,
                                                          increment_ratio=args.increment_ratio or defaults.model.increment_ratio),
                                crop=dataclasses.replace(defaults.crop, **({"multiple": args.multiple} if args.multiple else {}),
                                                         size=args.size or defaults.crop.size),
                                jitter=dataclasses.replace(CropJitter(), **jitter) if jitter else None,
                                photometric=dataclasses.replace(defaults.photometric, **json.loads(args.photometric)),
                                field_of_view=None if args.field_of_view is None and args.mirror is None else
                                FieldOfViewAugment(p=args.field_of_view or 0.0, p_mirror=args.mirror or 0.0),
                                second_looks=args.second_looks,
                                cup_weight=args.cup_weight if args.cup_weight is not None else defaults.cup_weight)
    config = resolved(config, args)
    out = Path(args.out) / "stage2"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    started = time.perf_counter()
    datasets = [load_crops(folder, "train", config.crop, config.field_of_view.p_mirror > 0) for folder in args.data.split(",")]
    print(f"crops loaded in {time.perf_counter() - started:.1f} s: {[len(d) for d in datasets]}", flush=True)
    callbacks = [keras.callbacks.BackupAndRestore(str(out / "backup")), EpochLog(out / "log.jsonl")]
    start = keras.models.load_model(args.init, compile=False) if args.init else None  # compiled with this config's rate
    result = train_segment_stage(config, datasets, model=start, callbacks=callbacks, workers=args.workers)
    result.model.save(out / "model.keras")
    print(f"stage 2 trained in {result.seconds:.0f} s -> {out / 'model.keras'}", flush=True)


def locator_zoom(args) -> dict:
    """--zoom / --zoom-on-disc / --extend-edges over LOCATOR_AUGMENT's (bundled version 2's stage 1: --zoom 0.4,2.2 --zoom-on-disc 0)."""
    changed = {"zoom_range": args.zoom, "zoom_on_disc": args.zoom_on_disc, "extend_edges": args.extend_edges}
    return {k: v for k, v in changed.items() if v is not None}


def stage1(args) -> None:
    import keras

    from fundus_seg.model_card import ModelCard
    from fundus_seg.model_repository import KERAS_FILE
    from preprocessing.datasets import load_split
    from training_job.config import LOCATOR_AUGMENT, RunConfig, TrainConfig
    from training_job.job import disc_shares, resolve_format_choices
    from training_job.train import compile_model, train

    base = keras.models.load_model(Path(args.base) / KERAS_FILE, compile=False)
    base_card = ModelCard.from_json((Path(args.base) / "metrics.json").read_text())
    run = RunConfig(data=tuple(args.data.split(",")), model=base_card.architecture, preprocess=base_card.preprocess,
                    train=TrainConfig(epochs=args.epochs or 12, steps_per_epoch=args.steps or 60, batch_size=32,
                                      learning_rate=4e-4, seed=args.seed),
                    augment=dataclasses.replace(LOCATOR_AUGMENT, **locator_zoom(args)))
    out = Path(args.out) / "stage1"
    out.mkdir(parents=True, exist_ok=True)
    datasets = [load_split(folder, "train", run.preprocess) for folder in run.data]
    run = resolve_format_choices(run, disc_shares(datasets))
    (out / "config.json").write_text(json.dumps(run.to_dict(), indent=2))
    compile_model(base, run.train, run.train.epochs * run.train.steps_per_epoch)
    callbacks = [keras.callbacks.BackupAndRestore(str(out / "backup")), EpochLog(out / "log.jsonl")]
    result = train(run, datasets, model=base, callbacks=callbacks)
    result.model.save(out / "model.keras")
    print(f"stage 1 fine-tuned in {result.seconds:.0f} s -> {out / 'model.keras'}", flush=True)


def export(args) -> None:
    """Assemble stage 1 (`<out>/stage1/model.keras`, else --base's) and stage 2 into one two-stage version: score
    both test splits through the serving pipeline, then publish it with its card into --repo."""
    import keras

    from fundus_seg.model_card import ModelCard
    from fundus_seg.model_repository import KERAS_FILE, read_card
    from training_job.evaluate import evaluate_two_stage, keras_predictor
    from training_job.export import publish
    from training_job.unet import flops_per_image, trainable_params

    out = Path(args.out)
    base_card = ModelCard.from_json((Path(args.base) / "metrics.json").read_text())
    stage1_file = out / "stage1" / "model.keras"
    stage1 = keras.models.load_model(stage1_file if stage1_file.exists() else Path(args.base) / KERAS_FILE, compile=False)
    stage2 = keras.models.load_model(out / "stage2" / "model.keras", compile=False)
    stage1_config = json.loads((out / "stage1" / "config.json").read_text()) if stage1_file.exists() else base_card.to_dict()["config"]
    stage1_config["model"] = dataclasses.asdict(base_card.architecture)  # a fine-tune keeps the base's architecture
    stage2_config = json.loads((out / "stage2" / "config.json").read_text())
    logs = {stage: [json.loads(line) for line in log.read_text().splitlines()] if (log := out / stage / "log.jsonl").exists()
            else [] for stage in ("stage1", "stage2")}
    seconds = sum(entries[-1]["seconds"] for entries in logs.values() if entries)
    # Lineage: a stage's log opens with {"epoch": 0, "from": ...} when its weights started from another version's;
    # a stage 1 whose log has no epoch after that one is that version's, unchanged.
    started_from = {stage: entries[0].get("from") if entries else None for stage, entries in logs.items()}
    stage1_copied = stage1_file.exists() and started_from["stage1"] is not None and len(logs["stage1"]) == 1
    document = {
        "model_name": "optic-disc",
        "mode": "full",
        "data": args.data.split(","),
        "seen_data": args.data.split(","),
        "training_seconds": round(seconds + (0.0 if stage1_file.exists() else base_card.training_seconds or 0.0), 1),
        "trainable_params": trainable_params(stage1) + trainable_params(stage2),
        "gflops_per_image": round((flops_per_image(stage1) + flops_per_image(stage2)) / 1e9, 3),
        "stage1_from": started_from["stage1"] if stage1_copied else None if stage1_file.exists() else str(args.base),
        "stage1_fine_tuned_from": str(args.base) if stage1_file.exists() and not stage1_copied else None,
        "stage2_fine_tuned_from": started_from["stage2"],
        "config": {**stage1_config, "segment": {**stage2_config, "cup_threshold": 0.5, "convex": True,
                                                 **({} if args.second_looks is None else
                                                    {"second_looks": args.second_looks})}},
        "test_metrics": {},
    }
    card = ModelCard.from_dict(document)
    locate, segment = keras_predictor(stage1), keras_predictor(stage2)
    for folder in args.data.split(","):
        started = time.perf_counter()
        scores = evaluate_two_stage(locate, segment, folder, "test", card.two_stage())
        document["test_metrics"][Path(folder).name] = scores
        print(f"{Path(folder).name}: {json.dumps(scores)} ({time.perf_counter() - started:.0f} s)", flush=True)
    version = publish(stage1, document, args.repo, "optic-disc", segment_model=stage2)
    print(f"published {args.repo}/optic-disc/{version}: {read_card(args.repo, 'optic-disc', version).pipeline}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("1", "2", "export"), required=True)
    parser.add_argument("--repo", default="runs/two-stage/models", help="export: the model repository to publish into")
    parser.add_argument("--out", default="runs/two-stage")
    parser.add_argument("--data", default="../shared/data/drishti-gs1,../shared/data/rim-one-dl")
    parser.add_argument("--base", default="models/optic-disc/1", help="stage 1: the whole-image version to fine-tune")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--zoom", type=lambda v: tuple(float(x) for x in v.split(",")), default=None,
                        help="stage 1: LOW,HIGH zoom range (default training_job.config.LOCATOR_AUGMENT's)")
    parser.add_argument("--zoom-on-disc", type=float, default=None, help="stage 1: share of zooms about the disc")
    parser.add_argument("--extend-edges", type=float, default=None, help="stage 1: share of views with the photo's edge "
                        "colours beyond its edges instead of black")
    parser.add_argument("--multiple", type=float, help="stage 2: crop side / disc diameter (default SegmentStageConfig's, "
                        "1.75; version 2 was trained with 2.5)")
    parser.add_argument("--init", help="stage 2: a stage-2 Keras model to continue training from (e.g. a version's "
                        "segment.keras), instead of from scratch")
    parser.add_argument("--lr", type=float, default=1e-3, help="stage 2: peak learning rate (cosine schedule)")
    parser.add_argument("--size", type=int, help="stage 2: the crop's side in pixels, which is stage 2's U-Net input "
                        "(default SegmentStageConfig's, 128; a multiple of 2**depth = 64)")
    parser.add_argument("--dropout", type=float, help="stage 2: spatial dropout rate inside each U-Net block (default "
                        "SegmentStageConfig's, 0)")
    parser.add_argument("--width", type=int, help="stage 2: the U-Net's first-level filters (default "
                        "SegmentStageConfig's, 16); its cost grows with the square")
    parser.add_argument("--increment-ratio", type=float, help="stage 2: filters' growth per level (default "
                        "SegmentStageConfig's, 1.4)")
    parser.add_argument("--cup-weight", type=float, help="stage 2: the cup's weight in the loss against the disc's "
                        "(default SegmentStageConfig's, 1)")
    parser.add_argument("--jitter-scale", type=lambda v: tuple(float(x) for x in v.split(",")),
                        help="stage 2: LOW,HIGH factor of the located diameter's error (default CropJitter's)")
    parser.add_argument("--jitter-shift", type=float, help="stage 2: centre error, in diameters (default CropJitter's)")
    parser.add_argument("--field-of-view", type=float, help="stage 2: share of crops cut to a tight square around the "
                        "disc, as an instrument that photographs only the nerve head delivers them (neither this nor --mirror: both chosen "
                        "from the data as the training job chooses; one of them: the other is 0)")
    parser.add_argument("--mirror", type=float, help="stage 2: share of crops mirrored, not black, beyond the photo's "
                        "edges (see --field-of-view)")
    parser.add_argument("--second-looks", type=int, help="stage 2 / export: how many times serving may cut the crop "
                        "again (default: the training job's choice from the data)")
    parser.add_argument("--photometric", default="{}", help='stage 2: PhotometricConfig fields to change, as JSON '
                        '(e.g. \'{"p_saturation": 0.5}\')')
    args = parser.parse_args()
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(verbose=False)
    {"1": stage1, "2": stage2, "export": export}[args.stage](args)


if __name__ == "__main__":
    main()
