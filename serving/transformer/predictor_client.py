"""Calls to the predictor in TF Serving's own protocols: gRPC PredictionService (default) or REST v1.

KServe's built-in predictor clients speak the Open Inference Protocol, which TF Serving does not;
these speak TF Serving's gRPC API (its messages vendored in `serving.protos`, so no TensorFlow is
imported or installed) and its /v1 REST API, so the same transformer fronts the real TF Serving in
the cluster and our predictor on one machine.

Connections are created lazily on first use, i.e. inside the event loop that serves requests
(grpc.aio channels and aiohttp sessions are bound to the loop that creates them).

A version is a number (``"3"``), a label (``"canary"``) or None (the predictor's latest).
TF Serving's REST predict response does not say which version answered, so the REST client pins
a version number itself (the latest AVAILABLE one from the model status) to report it truthfully.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fundus_seg.model_repository import CARD_OUTPUT, CARD_SIGNATURE, SEGMENT_OUTPUTS, SEGMENT_SIGNATURE
from fundus_seg.model_repository import INPUT_KEY as INPUT
from fundus_seg.model_repository import OUTPUT_KEY as OUTPUT
from fundus_seg.model_repository import SERVING_SIGNATURE as SIGNATURE

OUTPUTS = {SIGNATURE: (OUTPUT,), SEGMENT_SIGNATURE: SEGMENT_OUTPUTS}
"""The outputs each prediction signature answers with, in the order they are stacked on the last axis."""


class PredictorCallError(Exception):
    """The predictor did not answer; subclasses say why so the transformer can pick a status."""


class VersionNotFound(PredictorCallError):
    """No such model version or label is loaded (or, without a version, no version at all)."""


class PredictorUnavailable(PredictorCallError):
    """Unreachable, timed out, or not serving."""


@dataclass
class PredictResult:
    probability: np.ndarray  # N x H x W x C float32: the signature's OUTPUTS stacked on the last axis
    version: int | None  # None only when the REST API answered for a label it cannot resolve


@dataclass
class CardResult:
    card: bytes | None  # the card's JSON; None: this version has no model_card signature
    version: int | None


class Predictor(Protocol):
    async def predict(self, images: np.ndarray, version: str | None = None,
                      signature: str = SIGNATURE) -> PredictResult: ...
    async def model_card(self, version: str | None = None) -> CardResult: ...
    async def available_versions(self) -> list[int]: ...
    async def close(self) -> None: ...


def _is_number(version: str | None) -> bool:
    return version is not None and version.isascii() and version.isdigit()


# -- gRPC -------------------------------------------------------------------------------------


def to_tensor_proto(array: np.ndarray):
    """A uint8 array (a version's equalised bytes) as DT_UINT8, anything else as float32: a TensorProto of raw bytes
    (what tf.make_tensor_proto does, without TF ops)."""
    from serving.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    if array.dtype == np.uint8:
        array, dtype = np.ascontiguousarray(array), types_pb2.DT_UINT8
    else:
        array, dtype = np.ascontiguousarray(array, dtype="<f4"), types_pb2.DT_FLOAT
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=array.tobytes())


def from_tensor_proto(proto) -> np.ndarray:
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype="<f4").reshape(shape)
    values = np.asarray(proto.float_val, dtype=np.float32)
    size = int(np.prod(shape)) if shape else 1
    if values.size == size:
        return values.reshape(shape)
    if values.size == 1:  # TF Serving compresses a constant tensor to one value
        return np.full(shape, values[0], dtype=np.float32)
    raise PredictorCallError(f"predictor returned {values.size} values for shape {shape}")


class GrpcPredictor:
    def __init__(self, host: str, model_name: str, timeout_s: float = 30.0) -> None:
        self.host, self.model_name, self.timeout_s = host, model_name, timeout_s
        self._channel = None

    def _stubs(self):
        import grpc

        from serving.protos.tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.host, options=[
                ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
            self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        return self._prediction, self._models

    def _spec(self, spec, version: str | None) -> None:
        spec.name = self.model_name
        if _is_number(version):
            spec.version.value = int(version)
        elif version:
            spec.version_label = version

    async def predict(self, images: np.ndarray, version: str | None = None,
                      signature: str = SIGNATURE) -> PredictResult:
        from serving.protos.tensorflow_serving.apis import predict_pb2

        prediction, _ = self._stubs()
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version)
        request.model_spec.signature_name = signature
        request.inputs[INPUT].CopyFrom(to_tensor_proto(images))
        request.output_filter.extend(OUTPUTS[signature])
        try:
            response = await prediction.Predict(request, timeout=self.timeout_s)
        except Exception as exc:
            raise _grpc_error(exc, self.model_name, version) from None
        missing = [key for key in OUTPUTS[signature] if key not in response.outputs]
        if missing:
            raise PredictorCallError(f"predictor answered {signature!r} without output(s) {missing}")
        arrays = [from_tensor_proto(response.outputs[key]) for key in OUTPUTS[signature]]
        return PredictResult(_stacked(arrays, signature), response.model_spec.version.value)

    async def model_card(self, version: str | None = None) -> CardResult:
        from serving.protos.tensorflow_serving.apis import predict_pb2

        prediction, _ = self._stubs()
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version)
        request.model_spec.signature_name = CARD_SIGNATURE
        try:
            response = await prediction.Predict(request, timeout=self.timeout_s)
        except Exception as exc:
            error = _grpc_error(exc, self.model_name, version)
            if _no_card(exc):
                return CardResult(None, int(version) if _is_number(version) else None)
            raise error from None
        tensor = response.outputs[CARD_OUTPUT]
        return CardResult(tensor.string_val[0] if tensor.string_val else None, response.model_spec.version.value)

    async def available_versions(self) -> list[int]:
        from serving.protos.tensorflow_serving.apis import get_model_status_pb2

        _, models = self._stubs()
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        try:
            response = await models.GetModelStatus(request, timeout=min(self.timeout_s, 5.0))
        except Exception:
            return []
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return sorted(s.version for s in response.model_version_status if s.state == available)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _no_card(exc: Exception) -> bool:
    """TF Serving's answer for a signature the version does not have (a version from before cards)."""
    import grpc

    return (isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                                                     grpc.StatusCode.INVALID_ARGUMENT)
            and CARD_SIGNATURE in (exc.details() or ""))


def _grpc_error(exc: Exception, model: str, version: str | None) -> PredictorCallError:
    import grpc

    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    if code == grpc.StatusCode.NOT_FOUND or (code == grpc.StatusCode.INVALID_ARGUMENT and version
                                              and not _is_number(version) and "label" in (detail or "")):
        return VersionNotFound(_not_found(model, version, detail))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.RESOURCE_EXHAUSTED):
        return PredictorUnavailable(f"predictor unavailable ({code.name}): {detail}")
    return PredictorCallError(f"predictor failed ({code.name if code else type(exc).__name__}): {detail}")


def _not_found(model: str, version: str | None, detail: str) -> str:
    what = f"version {version}" if _is_number(version) else f"version label {version!r}" if version else "any version"
    return f"model {model} has no {what} loaded ({detail})"


# -- REST -------------------------------------------------------------------------------------


class RestPredictor:
    def __init__(self, host: str, model_name: str, timeout_s: float = 30.0, status_cache_s: float = 1.0) -> None:
        self.base = host if host.startswith("http") else f"http://{host}"
        self.model_name, self.timeout_s, self.status_cache_s = model_name, timeout_s, status_cache_s
        self._session = None
        self._versions: tuple[float, list[int]] = (float("-inf"), [])

    def _client(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def predict(self, images: np.ndarray, version: str | None = None,
                      signature: str = SIGNATURE) -> PredictResult:
        if version is not None:
            return await self._predict(images, version, signature)
        for attempt in range(2):  # the cached latest may just have been replaced: refresh once
            versions = await self._cached_versions(refresh=attempt > 0)
            if not versions:
                raise VersionNotFound(_not_found(self.model_name, None, "no AVAILABLE version"))
            try:
                return await self._predict(images, str(versions[-1]), signature)
            except VersionNotFound:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def model_card(self, version: str | None = None) -> CardResult:
        if version is None:
            versions = await self._cached_versions(refresh=True)
            if not versions:
                raise VersionNotFound(_not_found(self.model_name, None, "no AVAILABLE version"))
            version = str(versions[-1])
        status, payload = await self._post(version, {"signature_name": CARD_SIGNATURE, "inputs": {}})
        number = int(version) if _is_number(version) else None
        if status == 400 and CARD_SIGNATURE in _rest_error(payload):
            return CardResult(None, number)
        self._raise_for(status, payload, version)
        import orjson

        outputs = orjson.loads(payload)["outputs"]
        card = outputs[CARD_OUTPUT] if isinstance(outputs, dict) else outputs
        return CardResult(card.encode() if isinstance(card, str) else None, number)

    async def _post(self, version: str, document: dict) -> tuple[int, bytes]:
        import aiohttp
        import orjson

        where = f"versions/{version}" if _is_number(version) else f"labels/{version}"
        url = f"{self.base}/v1/models/{self.model_name}/{where}:predict"
        body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            async with self._client().post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                return response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PredictorUnavailable(f"predictor unreachable at {self.base}: {exc or type(exc).__name__}") from None

    def _raise_for(self, status: int, payload: bytes, version: str) -> None:
        if status == 200:
            return
        detail = _rest_error(payload)
        if status == 404 or (status == 400 and not _is_number(version) and "label" in detail):
            raise VersionNotFound(_not_found(self.model_name, version, detail))
        if status in (429, 503, 504):
            raise PredictorUnavailable(f"predictor unavailable (HTTP {status}): {detail}")
        raise PredictorCallError(f"predictor failed (HTTP {status}): {detail}")

    async def _predict(self, images: np.ndarray, version: str, signature: str = SIGNATURE) -> PredictResult:
        import orjson

        status, payload = await self._post(version, {"signature_name": signature,
                                                     "inputs": {INPUT: images if images.dtype == np.uint8 else np.asarray(images, np.float32)}})
        self._raise_for(status, payload, version)
        outputs = orjson.loads(payload)["outputs"]
        keys = OUTPUTS[signature]
        if not isinstance(outputs, dict):  # TF Serving sends a lone output without its name
            outputs = {keys[0]: outputs} if len(keys) == 1 else {}
        missing = [key for key in keys if key not in outputs]
        if missing:
            raise PredictorCallError(f"predictor answered {signature!r} without output(s) {missing}")
        arrays = [np.asarray(outputs[key], dtype=np.float32) for key in keys]
        return PredictResult(_stacked(arrays, signature), int(version) if _is_number(version) else None)

    async def _cached_versions(self, refresh: bool = False) -> list[int]:
        checked, versions = self._versions
        if refresh or not versions or time.monotonic() - checked > self.status_cache_s:
            return await self.available_versions()
        return versions

    async def available_versions(self) -> list[int]:
        try:
            async with self._client().get(f"{self.base}/v1/models/{self.model_name}") as response:
                document = await response.json(content_type=None) if response.status == 200 else {}
        except Exception:
            document = {}
        versions = sorted(int(s["version"]) for s in document.get("model_version_status", [])
                          if s.get("state") == "AVAILABLE")
        self._versions = (time.monotonic(), versions)
        return versions

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _stacked(arrays: list[np.ndarray], signature: str) -> np.ndarray:
    """The signature's outputs (each N x H x W x 1) as one N x H x W x C array."""
    if len(arrays) == 1:
        return arrays[0]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise PredictorCallError(f"predictor answered {signature!r} with outputs of different shapes "
                                 f"{[list(a.shape) for a in arrays]}")
    return np.concatenate(arrays, axis=-1)


def _rest_error(payload: bytes) -> str:
    import orjson

    try:
        return str(orjson.loads(payload).get("error", ""))[:500]
    except Exception:
        return payload[:200].decode("utf-8", "replace")


def make_predictor(api: str, host: str, model_name: str, timeout_s: float = 30.0) -> Predictor:
    if api == "grpc":
        return GrpcPredictor(host, model_name, timeout_s)
    return RestPredictor(host, model_name, timeout_s)
