"""Train stage 2 of the two-stage model: disc and cup on crops around the disc.

Stage 1 is the paper's whole-image U-Net (`training_job.train`, with zoom augmentation wide
enough for every instrument's disc scale); stage 2 is the same builder with two outputs, fed by
`training_job.crop_data`.
"""
from __future__ import annotations

import time

import keras

from preprocessing.transform import PreprocessConfig
from training_job.config import FieldOfViewAugment, SegmentStageConfig
from training_job.crop_data import CropSampler, CropSamples, crop_pipeline
from training_job.losses import DiscCupLoss, cup_dice, disc_dice
from training_job.progress import progress_callback
from training_job.train import TrainResult, learning_rate
from training_job.unet import build_unet


def compile_segment_model(model: keras.Model, config: SegmentStageConfig) -> keras.Model:
    total_steps = config.train.epochs * config.train.steps_per_epoch
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config.train, total_steps)),
        loss=DiscCupLoss(config.cup_weight),
        metrics=[keras.metrics.MeanMetricWrapper(disc_dice, name="disc_dice"),
                 keras.metrics.MeanMetricWrapper(cup_dice, name="cup_dice")],
        jit_compile=config.train.jit_compile,
    )
    return model


def train_segment_stage(
    config: SegmentStageConfig,
    datasets: list[CropSamples],
    preprocess: PreprocessConfig = PreprocessConfig(),
    model: keras.Model | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    progress: bool = True,
    workers: int = 2,
    replay: list[CropSamples] = (),
    replay_fraction: float = 0.0,
) -> TrainResult:
    keras.utils.set_random_seed(config.train.seed)
    if model is None:
        model = build_unet(config.model, channels=2)
    if not getattr(model, "optimizer", None) or not model.compiled:
        compile_segment_model(model, config)
    batch = config.train.batch_size

    def sampler(worker: int) -> CropSampler:
        return CropSampler(datasets, config.crop, preprocess, config.jitter, config.photometric,
                           seed=config.train.seed * 1000 + initial_epoch * 10 + worker,
                           replay=replay, replay_fraction=replay_fraction,
                           field_of_view=config.field_of_view or FieldOfViewAugment())

    all_callbacks = list(callbacks)
    if progress:
        all_callbacks.insert(0, progress_callback(config.train.epochs, config.train.steps_per_epoch, initial_epoch, batch))
    start = time.perf_counter()
    history = model.fit(crop_pipeline(sampler, batch, workers), epochs=config.train.epochs,
                        steps_per_epoch=config.train.steps_per_epoch, initial_epoch=initial_epoch,
                        callbacks=all_callbacks, verbose=0)
    seconds = time.perf_counter() - start
    losses = history.history.get("loss") or [float("nan")]
    images_seen = (config.train.epochs - initial_epoch) * config.train.steps_per_epoch * batch
    n_replay = round(images_seen * replay_fraction) if replay else 0
    return TrainResult(model, seconds, images_seen, float(losses[-1]), n_replay)
