"""tensorflow.serving.PredictionService and ModelService over grpc.aio, with TF Serving's protos.

The response builders for status and metadata are shared with the REST API, which (like TF
Serving's) renders the very same protos as JSON.
"""
from __future__ import annotations

import functools
import logging

import grpc
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.predictor.errors import (
    InvalidArgument,
    PredictorError,
    Unimplemented,
    clip,
)
from serving.predictor.model_manager import ModelManager, ModelRef, ModelVersion
from serving.predictor.prediction import PredictionCore
from serving.predictor.tensors import decode_inputs, fill_tensor_proto

log = logging.getLogger(__name__)

_OK, _UNKNOWN = 0, 2  # tensorflow.error.Code


def model_ref(spec: model_pb2.ModelSpec) -> ModelRef:
    if not spec.name:
        raise InvalidArgument("Missing ModelSpec name")
    choice = spec.WhichOneof("version_choice")
    return ModelRef(spec.name,
                    version=spec.version.value if choice == "version" else None,
                    label=spec.version_label if choice == "version_label" else None)


def fill_model_spec(spec: model_pb2.ModelSpec, name: str, version: int, signature_name: str = "") -> None:
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature_name


def status_response(versions: list[ModelVersion]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for mv in versions:
        entry = response.model_version_status.add(version=mv.version, state=int(mv.state))
        entry.status.error_code = _UNKNOWN if mv.error else _OK
        entry.status.error_message = mv.error
    return response


def metadata_response(mv: ModelVersion) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, mv.model, mv.version)
    response.metadata["signature_def"].Pack(mv.servable.signature_def_map())
    return response


def _grpc_errors(method):
    """Turn PredictorErrors into gRPC status codes (messages clipped to fit a client's metadata
    limit); anything else is INTERNAL (and logged)."""
    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except PredictorError as exc:
            await context.abort(exc.code, clip(str(exc)))
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see server log")
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: PredictionCore, manager: ModelManager, max_input_bytes: int) -> None:
        self._core = core
        self._manager = manager
        self._max_input_bytes = max_input_bytes

    @_grpc_errors
    async def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        ref = model_ref(request.model_spec)
        # Raw tensor_content decodes without a copy; value lists (float_val ...) are converted in a thread.
        prediction = await self._core.predict(
            ref, request.model_spec.signature_name,
            lambda signature: decode_inputs(request.inputs, self._max_input_bytes),
            request.output_filter, api="grpc",
            decode_in_thread=any(not tensor.tensor_content for tensor in request.inputs.values()))
        response = predict_pb2.PredictResponse()
        fill_model_spec(response.model_spec, ref.name, prediction.model_version, prediction.signature_name)
        for key, array in prediction.outputs.items():
            fill_tensor_proto(array, response.outputs[key])
        return response

    @_grpc_errors
    async def GetModelMetadata(self, request, context) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        return metadata_response(self._manager.resolve(model_ref(request.model_spec)))

    @_grpc_errors
    async def Classify(self, request, context):
        raise Unimplemented("Classify is not supported by this predictor; use Predict")

    @_grpc_errors
    async def Regress(self, request, context):
        raise Unimplemented("Regress is not supported by this predictor; use Predict")

    @_grpc_errors
    async def MultiInference(self, request, context):
        raise Unimplemented("MultiInference is not supported by this predictor; use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    @_grpc_errors
    async def GetModelStatus(self, request, context) -> get_model_status_pb2.GetModelStatusResponse:
        return status_response(self._manager.status(model_ref(request.model_spec)))

    @_grpc_errors
    async def HandleReloadConfigRequest(self, request, context):
        raise Unimplemented("Edit the --model_config_file instead; it is re-read on every poll")


_SERVING, _NOT_SERVING = 1, 2  # grpc.health.v1.HealthCheckResponse.ServingStatus
_HEALTH_SERVICES = {"", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"}


def _health_handler(manager: ModelManager) -> grpc.GenericRpcHandler:
    """grpc.health.v1.Health/Check: SERVING once every model has an AVAILABLE version.

    Its messages have one field each, wire-identical to StringValue (service) and Int32Value
    (status), so no grpcio-health-checking dependency is needed; Kubernetes gRPC probes work.
    """
    async def check(request: wrappers_pb2.StringValue, context) -> wrappers_pb2.Int32Value:
        if request.value not in _HEALTH_SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, clip(f"unknown service {request.value!r}"))
        return wrappers_pb2.Int32Value(value=_SERVING if manager.is_ready() else _NOT_SERVING)

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.Int32Value.SerializeToString)})


def add_services(server: grpc.aio.Server, core: PredictionCore, manager: ModelManager,
                 max_input_bytes: int) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, manager, max_input_bytes), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    server.add_generic_rpc_handlers((_health_handler(manager),))
