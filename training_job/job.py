"""One training run end to end: data in, a published, evaluated model version out.

Used by `fundus-seg train` on one machine and by `python -m training_job` in a Kubernetes Job.
With a run id the run is restartable: it checkpoints every epoch to `<checkpoint_dir>/<run_id>/`,
a rerun resumes from the last complete epoch, and a rerun of a run that is already published
returns that version without training again. Every user-facing failure (missing data, bad
manifest, unknown base version, no GPU) is a FundusSegError raised before any training starts.

Publishing is gated like a rollout (`serving.rollout.compare_metrics`): a run whose test metrics
fall below the latest published version's by more than the tolerance on a dataset both were
scored on is not published (PublishRefused, exit 3; its checkpoint stays, so a rerun with
`force` publishes without training again), unless `force` is set, which metrics.json records.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fundus_seg import model_repository, storage
from fundus_seg.errors import EXIT_PUBLISH_REFUSED, FundusSegError, ModelRepositoryError
from fundus_seg.model_card import ModelCard
from preprocessing.datasets import Samples
from preprocessing.errors import DatasetError
from preprocessing.two_stage import LOCATOR_VIEW_RANGE
from serving.rollout import GateResult, compare_metrics
from training_job import strategy
from training_job.checkpoints import (
    CheckpointStore,
    EpochCheckpoint,
    Interrupted,
    StopOnSigterm,
)
from training_job.config import (
    EXTEND_EDGES,
    FIELD_OF_VIEW,
    INCREMENTAL_EPOCHS,
    LOCATOR_LOOKS,
    TIGHT_DISC_SHARE,
    WIDE_JITTER,
    WIDE_JITTER_SECOND_LOOKS,
    CropJitter,
    FieldOfViewAugment,
    JobOptions,
    RunConfig,
    SegmentStageConfig,
)
from training_job.data_sources import (
    DataCache,
    Dataset,
    dataset_name,
    default_cache_dir,
)
from training_job.evaluate import evaluate, evaluate_two_stage, keras_predictor
from training_job.export import publish
from training_job.segment_stage import compile_segment_model, train_segment_stage
from training_job.train import compile_model, train
from training_job.unet import build_unet, flops_per_image, trainable_params

__all__ = ["JobOptions", "run_training", "dataset_name"]

log = logging.getLogger(__name__)

CHECKPOINTS = ".checkpoints"


class PublishRefused(FundusSegError):
    """The run trained and was scored, but falls below the latest published version: nothing is published."""

    exit_code = EXIT_PUBLISH_REFUSED


@dataclass(frozen=True)
class BaseVersion:
    """The published version an incremental run starts from."""

    version: int
    uri: str
    card: ModelCard

    @property
    def seen_data(self) -> list[str]:
        """Every dataset this version's lineage was trained on."""
        return list(self.card.seen_data)

    def adopt(self, run: RunConfig) -> RunConfig:
        """The base's architecture and preprocessing (and, two-stage, its stage 2's and crop): its weights only make
        sense with them. The base's pipeline decides the run's: an incremental run retrains what is served."""
        updated = dataclasses.replace(run, model=self.card.architecture, preprocess=self.card.preprocess)
        if self.card.segment is not None:
            segment = run.segment or SegmentStageConfig(train=dataclasses.replace(
                SegmentStageConfig().train, epochs=INCREMENTAL_EPOCHS))
            updated = dataclasses.replace(updated, segment=dataclasses.replace(
                segment, model=self.card.segment.architecture, crop=self.card.segment.crop))
        else:
            updated = dataclasses.replace(updated, segment=None)
        log.info("incremental: starting from version %d (%s, architecture %s)", self.version, updated.pipeline,
                 updated.model.name)
        return updated

    def load_model(self) -> keras.Model:
        """The Keras model published next to the SavedModel (stage 1 of a two-stage version); call inside the
        strategy's scope."""
        return self._load(model_repository.KERAS_FILE, "the Keras model that training_job publishes with every version")

    def load_segment_model(self) -> keras.Model:
        """Stage 2's Keras model of a two-stage base version."""
        return self._load(model_repository.SEGMENT_KERAS_FILE, "a two-stage version holds stage 2's Keras model")

    def _load(self, name: str, why: str) -> keras.Model:
        with tempfile.TemporaryDirectory(prefix="fundus-seg-base-") as scratch:
            local = Path(scratch) / name
            try:
                local.write_bytes(storage.read_bytes(storage.join(self.uri, name)))
            except FileNotFoundError:
                raise ModelRepositoryError(f"{self.uri}: no {name}; incremental training starts from {why}") from None
            return keras.models.load_model(local, compile=False)


def resolve_base(run: RunConfig, requested: int | str | None) -> BaseVersion:
    where = storage.join(run.model_repo, run.model_name)
    versions = model_repository.list_versions(run.model_repo, run.model_name)
    if not versions:
        raise ModelRepositoryError(f"{where}: no published version to start from; train one with --mode full first")
    version = versions[-1] if requested in (None, "latest") else int(requested)
    if version not in versions:
        raise ModelRepositoryError(f"{where}: no version {version} (published: {', '.join(map(str, versions))})")
    card = model_repository.read_card(run.model_repo, run.model_name, version)
    return BaseVersion(version, model_repository.version_uri(run.model_repo, run.model_name, version), card)


def checkpoint_store(run: RunConfig, options: JobOptions) -> CheckpointStore | None:
    """`<checkpoint_dir>/<run_id>/`; none without a run id (nothing could find it again)."""
    if not options.run_id:
        return None
    root = options.checkpoint_dir or storage.join(run.model_repo, CHECKPOINTS, run.model_name)
    return CheckpointStore(storage.join(root, options.run_id))


def already_published(run: RunConfig, options: JobOptions) -> tuple[int, dict] | None:
    if not options.run_id:
        return None
    version = model_repository.version_for_run(run.model_repo, run.model_name, options.run_id)
    if version is None:
        return None
    metrics = model_repository.read_card(run.model_repo, run.model_name, version).to_dict()
    log.info("run %s is already published as %s version %d: nothing to do", options.run_id, run.model_name, version)
    return version, {**metrics, "version": version, "already_published": True}


def require_test_split(datasets: list[Dataset]) -> None:
    """Scoring happens after training: find a dataset without test rows before spending the time."""
    for data in datasets:
        if not data.split_size("test"):
            raise DatasetError(f"{data.uri}: no rows with split 'test' to score (every training, replay and "
                               "--eval-data dataset is scored on its test split)")


def test_metrics(model: keras.Model, run: RunConfig, datasets: list[Dataset | str],
                 segment_model: keras.Model | None = None) -> dict:
    """Per dataset name (the URI's last segment; the whole URI where two share a name). A two-stage run is scored
    through the very pipeline serving runs (`preprocessing.two_stage`), with cup, vCDR and confidence figures."""
    predict = keras_predictor(model)
    datasets = [d if isinstance(d, Dataset) else Dataset(str(d), Path(d)) for d in datasets]
    names = [d.name for d in datasets]
    if segment_model is None:
        return {(d.name if names.count(d.name) == 1 else d.uri): evaluate(predict, d.folder, "test", run.preprocess)
                for d in datasets}
    config = run.segment.pipeline(run.preprocess)
    segment = keras_predictor(segment_model)
    return {(d.name if names.count(d.name) == 1 else d.uri): evaluate_two_stage(predict, segment, d.folder, "test", config)
            for d in datasets}


def train_segment(run: RunConfig, options: JobOptions, base: BaseVersion | None, training_sets: list[Dataset],
                  replay_sets: list[Dataset], store: CheckpointStore | None, accelerator, stop: StopOnSigterm):
    """Stage 2 of a two-stage run, after stage 1, with its own checkpoints (`<run>/segment/`): a run stopped in
    stage 2 resumes there, stage 1 already complete. Returns (TrainResult, seconds of earlier attempts)."""
    config = run.segment
    segment_store = CheckpointStore(storage.join(store.uri, "segment")) if store else None
    state = segment_store.state() if segment_store else None
    description = {"segment": dataclasses.asdict(config), "preprocess": dataclasses.asdict(run.preprocess),
                   "mode": options.mode, "base_version": base.version if base else None,
                   "replay_fraction": options.replay_fraction if base else 0.0}
    if state:
        segment_store.check(state, description)
    mirror = config.field_of_view is not None and config.field_of_view.p_mirror > 0
    crops = [d.load_crops("train", config.crop, mirror) for d in training_sets]
    replay = [d.load_crops("train", config.crop, mirror) for d in replay_sets]
    with accelerator.strategy.scope():
        keras.utils.set_random_seed(config.train.seed)
        model = base.load_segment_model() if base else build_unet(config.model, channels=2)
        compile_segment_model(model, config)
        if state:
            state = segment_store.restore(model, state)
            log.info("resuming stage 2 of run %s from epoch %d of %d", options.run_id, state.epoch, config.train.epochs)
    initial_epoch = min(state.epoch, config.train.epochs) if state else 0
    callbacks = [stop]
    if segment_store:
        callbacks.insert(0, EpochCheckpoint(segment_store, description, config.train.steps_per_epoch, state,
                                            base.version if base else None))
    result = train_segment_stage(config, crops, run.preprocess, model=model, callbacks=callbacks,
                                 initial_epoch=initial_epoch, replay=replay,
                                 replay_fraction=options.replay_fraction if base else 0.0)
    return result, state.training_seconds if state else 0.0


def publish_gate(run: RunConfig, options: JobOptions, metrics: dict) -> GateResult | None:
    """This run's test metrics against the latest published version's, on the datasets both were scored on
    (the rollout gate's rule); None when there is no latest version, or it has no readable metrics.json."""
    latest = model_repository.latest_version(run.model_repo, run.model_name)
    if latest is None:
        return None
    try:
        card = model_repository.read_card(run.model_repo, run.model_name, latest)
    except ModelRepositoryError as exc:
        log.warning("%s; publishing without comparing with version %d", exc, latest)
        return None
    return compare_metrics(card, ModelCard.from_dict(metrics), options.tolerance, model_name=run.model_name, serving_version=latest,
                           shared_only=True, baseline="latest")


def gated(metrics: dict, gate: GateResult | None, options: JobOptions, store: CheckpointStore | None) -> dict:
    """`metrics` with the gate's outcome recorded; PublishRefused when it failed and --force was not given."""
    if gate is None:
        return metrics
    regressions = [str(r) for r in gate.regressions]
    if regressions and not options.force:
        resume = f" (--run-id {options.run_id} resumes from its checkpoint: no training again)" if store else ""
        raise PublishRefused(f"not published: this run falls below the latest version {gate.serving} of {gate.model_name} "
                             f"by more than the tolerance {gate.tolerance:g}: {'; '.join(regressions)}; rerun with "
                             f"--force to publish anyway{resume}")
    if regressions:
        log.warning("publishing despite the gate (--force): %s", "; ".join(regressions))
    record = {"compared_with": gate.serving, "tolerance": gate.tolerance, "datasets": list(gate.compared),
              "regressions": regressions}
    return {**metrics, "publish_gate": record, **({"forced": True} if regressions else {})}


def build_metrics(run: RunConfig, options: JobOptions, model: keras.Model, seconds: float, images_seen: int,
                  scores: dict, segment_model: keras.Model | None = None, **lineage) -> dict:
    models = [model] + ([segment_model] if segment_model is not None else [])
    return {
        "model_name": run.model_name,
        "pipeline": run.pipeline,
        "architecture": run.model.name,
        "mode": options.mode,
        "base_version": None,
        "run_id": options.run_id,
        "data": list(run.data),
        "eval_data": list(options.eval_data),
        "trainable_params": sum(trainable_params(m) for m in models),
        "gflops_per_image": round(sum(flops_per_image(m) for m in models) / 1e9, 3),
        "training_seconds": round(seconds, 1),
        "training_images_seen": images_seen,
        "trained_on": f"{platform.node()} ({platform.machine()})",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": run.to_dict(),
        "test_metrics": scores,
        **lineage,
        **options.extra_metrics,
    }


def disc_shares(datasets: list[Samples]) -> dict[str, float]:
    """Each training set's median share of stage 1's view that the disc covers: its photo format."""
    return {d.name: float(np.median(d.masks.mean(axis=(1, 2, 3)))) for d in datasets}


def resolve_format_choices(run: RunConfig, shares: dict[str, float]) -> RunConfig:
    """Fill in what the config leaves to the data (None), from each training (and replay) set's photo format:
    - stage 1's `augment.extend_edges`: EXTEND_EDGES when every set photographs the disc region only, else 0;
    - stage 2's `field_of_view`: FIELD_OF_VIEW when every set has the same format, else off;
    - stage 2's `jitter` and `second_looks`: WIDE_JITTER and 3 looks when every set is whole photos, else the
      narrow default and 1;
    - `locator_looks` / `locator_view`: LOCATOR_LOOKS on a view as wide (in disc diameters) as the training views
      when every set is disc-filled, else none.
    Mixed formats already show both stages discs near and far from the photo's edge and at both scales; there the
    augmentations cost an unseen camera (docs/RESULTS.md, "The photo's edge is not the disc's")."""
    tight = {share > TIGHT_DISC_SHARE for share in shares.values()}
    described = ", ".join(f"{name} {share:.2f}" for name, share in shares.items())
    if run.augment.extend_edges is None:
        extend = EXTEND_EDGES if tight == {True} else 0.0
        log.info("stage 1: extend_edges %s (median disc share of the view: %s)", extend, described)
        run = dataclasses.replace(run, augment=dataclasses.replace(run.augment, extend_edges=extend))
    if run.segment is None:
        return run
    segment = run.segment
    if segment.field_of_view is None:
        segment = dataclasses.replace(segment, field_of_view=FIELD_OF_VIEW if len(tight) == 1 else FieldOfViewAugment())
    whole = tight == {False}
    if segment.jitter is None:
        segment = dataclasses.replace(segment, jitter=WIDE_JITTER if whole else CropJitter())
    if segment.second_looks is None:
        segment = dataclasses.replace(segment, second_looks=WIDE_JITTER_SECOND_LOOKS if whole else 1)
    if segment.locator_looks is None:
        segment = dataclasses.replace(segment, locator_looks=LOCATOR_LOOKS if tight == {True} else 0)
    if segment.locator_view is None:
        segment = dataclasses.replace(segment, locator_view=view_width(shares.values()))
    log.info("stage 2: field of view %s, jitter %s, second looks %d; stage 1: %d second looks on %.2f diameters "
             "(median disc share of the view: %s)", segment.field_of_view, segment.jitter, segment.second_looks,
             segment.locator_looks, segment.locator_view, described)
    return dataclasses.replace(run, segment=segment)


def view_width(shares) -> float:
    """How many disc diameters across a square view is whose disc covers the median of `shares` (pi d^2 / 4 of
    a side-1 square), within the range `locator_view` accepts."""
    share = float(np.median(list(shares))) if shares else 0.0
    width = math.sqrt(math.pi / (4.0 * share)) if share > 0 else LOCATOR_VIEW_RANGE[1]
    return round(min(max(width, LOCATOR_VIEW_RANGE[0]), LOCATOR_VIEW_RANGE[1]), 2)


def run_training(
    run: RunConfig,
    options: JobOptions = JobOptions(),
    model: keras.Model | None = None,
    accelerator: strategy.Accelerator | None = None,
) -> tuple[int, dict]:
    """Train (or resume), score every test split, publish the version; returns (version, metrics)."""
    if (done := already_published(run, options)) is not None:
        return done
    if not run.data:
        raise FundusSegError("no training data: pass --data URI[,URI...]")
    incremental = options.mode == "incremental"
    store = checkpoint_store(run, options)
    state = store.state() if store else None

    base = None
    if incremental:
        requested = options.base_version
        if requested in (None, "latest") and state and state.base_version:
            requested = state.base_version  # "latest" means the one this run started from
        base = resolve_base(run, requested)
        run = base.adopt(run)
    earlier = [u for u in base.seen_data if u not in run.data] if base and options.replay_fraction > 0 else []
    if base and options.replay_fraction > 0 and not earlier:
        log.warning("replay: version %d was trained on no other datasets than --data; nothing to replay", base.version)

    accelerator = accelerator or strategy.choose(options.accelerator)
    global_batch = accelerator.global_batch(run.train.batch_size)

    cache = DataCache(Path(options.cache_dir) if options.cache_dir else default_cache_dir())
    training_sets, replay_sets = cache.fetch_all(run.data), cache.fetch_all(earlier)
    scored = list({d.uri: d for d in [*training_sets, *replay_sets, *cache.fetch_all(options.eval_data)]}.values())
    require_test_split(scored)
    datasets = [d.load("train", run.preprocess) for d in training_sets]
    replay = [d.load("train", run.preprocess) for d in replay_sets]
    run = resolve_format_choices(run, disc_shares([*datasets, *replay]))

    description = {
        "run": run.to_dict(),
        "mode": options.mode,
        "base_version": base.version if base else None,
        "replay_fraction": options.replay_fraction if incremental else 0.0,
    }
    if state:
        store.check(state, description)

    total_steps = run.train.epochs * run.train.steps_per_epoch
    with accelerator.strategy.scope():
        keras.utils.set_random_seed(run.train.seed)
        if model is None:
            model = base.load_model() if base else build_unet(run.model)
        if not model.compiled:
            compile_model(model, run.train, total_steps)
        if state:
            state = store.restore(model, state)  # the previous checkpoint when the newest does not load
            log.info("resuming run %s from epoch %d of %d (%s)", options.run_id, state.epoch, run.train.epochs, store.uri)

    initial_epoch = min(state.epoch, run.train.epochs) if state else 0
    seconds_before = state.training_seconds if state else 0.0
    callbacks = []
    if store:
        callbacks.append(EpochCheckpoint(store, description, run.train.steps_per_epoch, state,
                                         base.version if base else None))
    segment_result, segment_seconds_before = None, 0.0
    with StopOnSigterm() as stop:
        result = train(run, datasets, model=model, callbacks=[*callbacks, stop], initial_epoch=initial_epoch,
                       global_batch=global_batch, replay=replay, replay_fraction=options.replay_fraction if incremental else 0.0)
        if stop.requested is None and run.segment is not None:
            segment_result, segment_seconds_before = train_segment(run, options, base, training_sets, replay_sets, store,
                                                                   accelerator, stop)
    if stop.requested is not None:
        stage = " of stage 1" if run.segment is not None and segment_result is None else ""
        if segment_result is not None:
            stage = " of stage 1, in stage 2"
        saved = (store.state_or_none() if store else None)
        if saved:
            raise Interrupted(f"stopped by SIGTERM after {saved.epoch} of {run.train.epochs} epochs{stage}; rerun with "
                              f"--run-id {options.run_id} to resume from the checkpoint in {store.uri}")
        raise Interrupted("stopped by SIGTERM before any checkpoint" + ("" if store else " (no --run-id, so none is kept)"))

    segment_model = segment_result.model if segment_result is not None else None
    scores = test_metrics(result.model, run, scored, segment_model)
    seen = list(dict.fromkeys([*(base.seen_data if base else []), *run.data]))
    seconds = seconds_before + result.seconds
    images_seen = run.train.epochs * run.train.steps_per_epoch * global_batch
    lineage = {}
    if segment_result is not None:
        seconds += segment_seconds_before + segment_result.seconds
        images_seen += run.segment.train.epochs * run.segment.train.steps_per_epoch * run.segment.train.batch_size
        lineage["stage_seconds"] = {"locate": round(seconds_before + result.seconds, 1),
                                    "segment": round(segment_seconds_before + segment_result.seconds, 1)}
    metrics = build_metrics(
        run, options, result.model, seconds, images_seen, scores, segment_model=segment_model, **lineage,
        base_version=base.version if base else None,
        seen_data=seen,
        replay={"fraction": options.replay_fraction, "data": earlier, "images": result.replay_images} if replay else None,
        epochs=run.train.epochs,
        resumed_from_epoch=initial_epoch,
        global_batch=global_batch,
        accelerator=accelerator.describe(),
    )
    metrics = gated(metrics, publish_gate(run, options, metrics), options, store)  # before anything is written
    version = publish(result.model, metrics, run.model_repo, run.model_name, run_id=options.run_id,
                      segment_model=segment_model)
    if store:
        store.delete()  # the version is out; a rerun of this run id now returns it without training
    metrics["version"] = version
    return version, metrics
