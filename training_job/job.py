"""One training run end to end: data in, a published, evaluated model version out.

Used by `fundus-seg train` on one machine and by `python -m training_job` in a Kubernetes Job.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from preprocessing.datasets import Samples, load_split
from preprocessing.errors import FundusSegError
from training_job.config import RunConfig
from training_job.evaluate import evaluate, keras_predictor
from training_job.export import publish
from training_job.train import train
from training_job.unet import flops_per_image, trainable_params


@dataclass(frozen=True)
class JobOptions:
    """How this run relates to earlier ones (the model itself is described by RunConfig)."""

    mode: str = "full"  # "full" | "incremental"
    base_version: int | None = None
    eval_data: tuple[str, ...] = ()
    """Extra datasets whose test split is scored (e.g. the other instrument)."""
    run_id: str | None = None
    extra_metrics: dict = field(default_factory=dict)


def dataset_name(location: str) -> str:
    return Path(location.rstrip("/")).name


def load_training_data(run: RunConfig) -> list[Samples]:
    if not run.data:
        raise FundusSegError("no training data: pass --data DIR[,DIR...]")
    return [load_split(folder, "train", run.preprocess) for folder in run.data]


def test_metrics(model: keras.Model, run: RunConfig, folders: list[str]) -> dict:
    predict = keras_predictor(model)
    return {dataset_name(f): evaluate(predict, f, "test", run.preprocess) for f in folders}


def build_metrics(run: RunConfig, options: JobOptions, model: keras.Model, seconds: float, images_seen: int, scores: dict) -> dict:
    return {
        "model_name": run.model_name,
        "architecture": run.model.name,
        "mode": options.mode,
        "base_version": options.base_version,
        "run_id": options.run_id,
        "data": list(run.data),
        "eval_data": list(options.eval_data),
        "trainable_params": trainable_params(model),
        "gflops_per_image": round(flops_per_image(model) / 1e9, 3),
        "training_seconds": round(seconds, 1),
        "training_images_seen": images_seen,
        "trained_on": f"{platform.node()} ({platform.machine()})",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": run.to_dict(),
        "test_metrics": scores,
        **options.extra_metrics,
    }


def run_training(run: RunConfig, options: JobOptions = JobOptions(), model: keras.Model | None = None) -> tuple[int, dict]:
    """Train, score every test split, publish the version; returns (version, metrics)."""
    datasets = load_training_data(run)
    result = train(run, datasets, model=model)
    folders = list(dict.fromkeys([*run.data, *options.eval_data]))
    scores = test_metrics(result.model, run, folders)
    metrics = build_metrics(run, options, result.model, result.seconds, result.images_seen, scores)
    version = publish(result.model, metrics, run.model_repo, run.model_name, run_id=options.run_id)
    metrics["version"] = version
    return version, metrics
