"""The predictor tests' helpers (`from tests.serving.predictor.helpers import ...`, by conftest and
the test modules alike): clients for a predictor started in-process, what a version is asked and
answers, and a fake loader for the ModelManager's deterministic tests."""
from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np

from tests.serving.helpers import bundled_version, http  # noqa: F401 (re-exported)
from tests.serving.helpers import eventually as _eventually

SIZE = 8  # tiny spatial size for most tests; the contract test uses the real 128

eventually = functools.partial(_eventually, timeout=15.0, interval=0.05)  # in-process servers are quick


def expected(value: float, k: float) -> float:
    return float(1 / (1 + np.exp(-value * k)))


def config(**overrides):
    from serving.predictor.config import PredictorConfig

    values = dict(host="127.0.0.1", grpc_port=0, rest_api_port=0, file_system_poll_wait_seconds=0.1)
    values.update(overrides)
    return PredictorConfig(**values)


# -- clients ---------------------------------------------------------------------------------

def rest(server, method: str, path: str, body: object | bytes | None = None) -> tuple[int, object]:
    return http(f"http://127.0.0.1:{server.rest_port}{path}", body, method=method)


def stubs(server):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def predict_request(name: str, images: np.ndarray | None = None, *, version: int | None = None,
                    label: str | None = None, signature: str = "", key: str = "images",
                    output_filter=()):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if images is not None:
        request.inputs[key].CopyFrom(tf.make_tensor_proto(images))
    request.output_filter.extend(output_filter)
    return request


def images(value: float, rows: int = 1, size: int = SIZE) -> np.ndarray:
    return np.full((rows, size, size, 3), value, dtype=np.float32)


NOT_SERVED = "not served"
"""What `served_version` says when the predictor answers NOT_FOUND: no such version is being served."""
UNKNOWN_LABEL = "unknown label"
"""What `served_version` says when the predictor does not know the label (INVALID_ARGUMENT, TF Serving's wording)."""


def served_version(server, model: str = "optic-disc", **spec) -> int | str:
    """The version that answered a Predict for `spec` (version=N, label=L or nothing), or NOT_SERVED /
    UNKNOWN_LABEL when the predictor answers that no version is served for it. Any other failure -- a
    crash, a timeout, a bad request -- raises, so a check that a version is not served cannot pass on
    a dead server."""
    predict, _ = stubs(server)
    try:
        response = predict.Predict(predict_request(model, images(1), **spec), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND and "Servable not found" in (exc.details() or ""):
            return NOT_SERVED
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "Unrecognized servable version label" in (
                exc.details() or ""):
            return UNKNOWN_LABEL
        raise
    return response.model_spec.version.value


# -- the ModelManager with a fake loader (no TensorFlow) -----------------------------------------

def make_version(base: Path, version: int, content: bytes = b"ok") -> None:
    (base / str(version)).mkdir(parents=True, exist_ok=True)
    (base / str(version) / "saved_model.pb").write_bytes(content)


def fake_load(path: Path):
    if (path / "saved_model.pb").read_bytes() == b"broken":
        raise ValueError("not a SavedModel")
    return SimpleNamespace(path=path)


async def until(condition, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


async def settled(manager, timeout: float = 5.0) -> None:
    """Until every load and unload the manager has started has finished: what a poll did is then
    all visible (the evidence a negative check waits for, instead of a sleep)."""
    async def wait() -> None:
        while manager._tasks:
            await asyncio.gather(*list(manager._tasks), return_exceptions=True)
    await asyncio.wait_for(wait(), timeout)


def run(coroutine_function, *args) -> None:
    asyncio.run(coroutine_function(*args))
