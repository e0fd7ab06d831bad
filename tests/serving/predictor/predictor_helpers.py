"""Clients and helpers for predictor tests (imported by the test modules and conftest)."""
from __future__ import annotations

import time
from typing import Callable

import grpc
import numpy as np

from tests.serving.serving_helpers import http

SIZE = 8  # tiny spatial size for most tests; the contract test uses the real 128


def expected(value: float, k: float) -> float:
    return float(1 / (1 + np.exp(-value * k)))


def config(**overrides):
    from serving.predictor.config import PredictorConfig

    values = dict(host="127.0.0.1", grpc_port=0, rest_api_port=0, file_system_poll_wait_seconds=0.1)
    values.update(overrides)
    return PredictorConfig(**values)


def eventually(check: Callable[[], object], timeout: float = 15.0, interval: float = 0.05):
    """Retry `check` until it returns something truthy (the result is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(interval)


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
