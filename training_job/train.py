"""Fit the U-Net on a mix of datasets with the paper's augmentation."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from preprocessing.augment import dynamic_augment, static_augment
from preprocessing.datasets import Samples, mix
from training_job.config import RunConfig, TrainConfig
from training_job.losses import LOSSES, dice_coefficient
from training_job.progress import progress_callback
from training_job.unet import build_unet


@dataclass
class TrainResult:
    model: keras.Model
    seconds: float
    images_seen: int
    final_loss: float
    replay_images: int = 0


def input_pipeline(images: np.ndarray, masks: np.ndarray, run: RunConfig, global_batch: int) -> tf.data.Dataset:
    """Shuffled, repeated, dynamically augmented batches; augmentation runs on whole batches."""
    images, masks = static_augment(images, masks, run.augment)
    return (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .shuffle(len(images), seed=run.train.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(global_batch, drop_remainder=True)
        .map(lambda x, y: dynamic_augment(x, y, run.augment), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_arrays(
    datasets: list[Samples], seed: int, replay: list[Samples] = (), replay_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """The paper's mix of `datasets`, plus (incremental replay) images of earlier datasets making up
    `replay_fraction` of the result, so the old instruments keep being seen; returns (images, masks, n_replay)."""
    images, masks = mix(datasets, seed=seed)
    if not replay or replay_fraction <= 0:
        return images, masks, 0
    wanted = max(1, round(len(images) * replay_fraction / (1.0 - replay_fraction)))
    old_images, old_masks = mix(list(replay), seed=seed + 1, replicate_to=math.ceil(wanted / len(replay)))
    order = np.random.default_rng(seed).permutation(len(images) + wanted)
    images = np.concatenate([images, old_images[:wanted]])[order]
    masks = np.concatenate([masks, old_masks[:wanted]])[order]
    return images, masks, wanted


def learning_rate(config: TrainConfig, total_steps: int):
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, total_steps), alpha=0.05)
    raise ValueError(f"unknown learning-rate schedule {config.schedule!r}")


def compile_model(model: keras.Model, config: TrainConfig, total_steps: int) -> keras.Model:
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config, total_steps)),
        loss=LOSSES[config.loss],
        metrics=[keras.metrics.MeanMetricWrapper(dice_coefficient, name="dice")],
        jit_compile=config.jit_compile,
    )
    return model


def train(
    run: RunConfig,
    datasets: list[Samples],
    model: keras.Model | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    global_batch: int | None = None,
    progress: bool = True,
    replay: list[Samples] = (),
    replay_fraction: float = 0.0,
) -> TrainResult:
    """Train `model` (a fresh U-Net when None) on the mixed `train` samples of `datasets`.

    A model passed in must be compiled already when training under a distribution strategy
    (its optimizer's variables belong in the strategy's scope).
    """
    keras.utils.set_random_seed(run.train.seed)
    images, masks, n_replay = training_arrays(datasets, run.train.seed, replay, replay_fraction)
    global_batch = global_batch or run.train.batch_size
    if model is None:
        model = build_unet(run.model)
    total_steps = run.train.epochs * run.train.steps_per_epoch
    if not getattr(model, "optimizer", None) or not model.compiled:
        compile_model(model, run.train, total_steps)
    all_callbacks = list(callbacks)
    if progress:  # first, so that its img/s leaves out the time other callbacks (checkpoints) take
        all_callbacks.insert(0, progress_callback(run.train.epochs, run.train.steps_per_epoch, initial_epoch, global_batch))
    start = time.perf_counter()
    history = model.fit(
        input_pipeline(images, masks, run, global_batch),
        epochs=run.train.epochs,
        steps_per_epoch=run.train.steps_per_epoch,
        initial_epoch=initial_epoch,
        callbacks=all_callbacks,
        shuffle=False,  # the pipeline shuffles (and repeats) itself
        verbose=0,
    )
    seconds = time.perf_counter() - start
    losses = history.history.get("loss") or [float("nan")]
    images_seen = (run.train.epochs - initial_epoch) * run.train.steps_per_epoch * global_batch
    return TrainResult(model, seconds, images_seen, float(losses[-1]), n_replay)
