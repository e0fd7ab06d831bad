"""Tiny SavedModels, a model repository publisher, and clients for a predictor started in-process."""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.serving.predictor.helpers import SIZE


def build_model(path: Path, k: float, size: int = SIZE) -> None:
    """disc_probability = sigmoid(mean over channels * k): k tells versions apart."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = tf.Variable(float(k))

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def serve(self, images):
            return {"disc_probability": tf.sigmoid(tf.reduce_mean(images, -1, keepdims=True) * self.k)}

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def stats(self, images):
            return {"mean": tf.reduce_mean(images, [1, 2, 3]), "max": tf.reduce_max(images, [1, 2, 3])}

    module = Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "stats": module.stats})
    (path / "metrics.json").write_text(json.dumps({"k": k}))


@pytest.fixture(scope="session")
def model_templates(tmp_path_factory) -> Callable[[float, int], Path]:
    """Built once per (k, size): saving a SavedModel costs ~0.5 s."""
    root = tmp_path_factory.mktemp("templates")
    cache: dict[tuple[float, int], Path] = {}

    def get(k: float, size: int = SIZE) -> Path:
        if (k, size) not in cache:
            build_model(root / f"k{k}-s{size}", k, size)
            cache[k, size] = root / f"k{k}-s{size}"
        return cache[k, size]
    return get


@pytest.fixture(scope="session")
def publish(model_templates) -> Callable[..., Path]:
    """Publish a version like the training job does: write a hidden temp dir, then rename it."""
    def publish(base: Path, version: int, k: float | None = None, size: int = SIZE,
                corrupt: bool = False) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".tmp-{version}-{time.monotonic_ns()}"
        shutil.copytree(model_templates(version if k is None else k, size), staging)
        if corrupt:
            (staging / "saved_model.pb").write_bytes(b"\x00 not a SavedModel \xff" * 10)
        os.rename(staging, base / str(version))
        return base / str(version)
    return publish


@pytest.fixture
def start_server():
    """Start PredictorServers in background threads on free ports; stopped after the test."""
    from serving.predictor.server import PredictorServer

    servers = []

    def start(config) -> PredictorServer:
        server = PredictorServer(config).start_in_background()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
