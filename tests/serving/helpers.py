"""The serving tests' helpers (`from tests.serving.helpers import ...`, by conftest and the test
modules alike): stand-in SavedModels, the bundled model, HTTP, a fake predictor for the transformer."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from tests.helpers import DRISHTI, eventually  # noqa: F401 (the serving tests' names for them)


def bundled_version() -> Path | None:
    """The newest complete bundled model version, if one has been published yet
    ($FUNDUS_SEG_TEST_MODEL_VERSION names another trained version directory instead)."""
    override = os.environ.get("FUNDUS_SEG_TEST_MODEL_VERSION")
    if override:
        return Path(override)
    versions = sorted((BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME).glob("*/saved_model.pb"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    return versions[-1].parent if versions else None


def build_saved_model(path: Path, bias: float, card: str | None = None) -> None:
    """A stand-in U-Net with the real serving signature: bright pixels -> disc probability
    (bias < -1: everything is disc); with `card`, also the `model_card` signature a version carries."""
    import tensorflow as tf

    class Bright(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = tf.Variable(float(bias))

        @tf.function(input_signature=[tf.TensorSpec([None, 128, 128, 3], tf.float32, name="images")])
        def serve(self, images):
            grey = tf.reduce_mean(images, axis=-1, keepdims=True)
            return {"disc_probability": tf.sigmoid((grey - self.bias) * 40.0)}

        @tf.function(input_signature=[])
        def model_card(self):
            return {"card": tf.constant(card or "")}

    module = Bright()
    signatures = {"serving_default": module.serve, **({"model_card": module.model_card} if card else {})}
    tf.saved_model.save(module, str(path), signatures=signatures)
    (path / "metrics.json").write_text(card or '{"test_metrics": {}}')


def logs_of(stack) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(stack.config.log_dir.glob("*.log")))


def disc_probability(size: int = 128, radius: float = 12.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius ** 2
    return inside.astype(np.float32)[..., None]


def http(url: str, body: bytes | dict | list | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, dict | str]:
    """(status, parsed JSON or text) of one request."""
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height (no pixel data): a decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


class FakePredictor:
    """The predictor's answers as the transformer sees them: versions, labels, cards, errors in order."""

    def __init__(self, versions=(3,), errors=(), labels=None, cards=None) -> None:
        self.versions, self.errors = list(versions), list(errors)
        self.labels, self.cards = dict(labels or {}), dict(cards or {})  # label -> version, version -> card JSON
        self.calls: list[tuple[tuple, str | None]] = []
        self.card_calls: list[str | None] = []

    def _resolve(self, version: str | None) -> int:
        from serving.transformer.predictor_client import VersionNotFound

        if version is None:
            return self.versions[-1]
        if version.isdigit():
            return int(version)
        if version not in self.labels:
            raise VersionNotFound(f"no label {version}")
        return self.labels[version]

    async def model_card(self, version=None):
        from serving.transformer.predictor_client import CardResult

        self.card_calls.append(version)
        if self.errors:
            raise self.errors.pop(0)
        number = self._resolve(version)
        return CardResult(self.cards.get(number), number)

    async def predict(self, images, version=None):
        from serving.transformer.predictor_client import PredictResult

        self.calls.append((images.shape, version))
        if self.errors:
            raise self.errors.pop(0)
        assert images.dtype == np.float32 and images.shape[1:] == (128, 128, 3)
        return PredictResult(np.repeat(disc_probability()[None], len(images), axis=0), self._resolve(version))

    async def available_versions(self) -> list[int]:
        return self.versions

    async def close(self) -> None:
        pass
