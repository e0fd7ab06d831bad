"""Runs the transformer in KServe's ModelServer, with the few things KServe lacks for our service.

* request size limit on REST (KServe has none; gRPC uses its receive-message limit), and a clear
  400 for OIP's binary tensor extension, which KServe mangles for binary BYTES;
* readiness: KServe's server-ready endpoints (``/v2/health/ready``, gRPC ServerReady) answer
  True whenever the process is up; here they follow the model's `healthy()`, i.e. the predictor
  has a version loaded, like ``GET /v1/models/<name>`` does;
* TF Serving's version routes on the transformer (``/v1/models/<m>/versions/<v>:predict``,
  ``/labels/<l>:predict``) and OIP's ``/v2/models/<m>/versions/<v>/infer``, which KServe 0.21
  answers with 501;
* binding to a chosen address: KServe always binds all interfaces, but the one-machine default
  must stay on 127.0.0.1.

`kserve.model_server` parses ``sys.argv`` when imported, so this module is only imported by the
transformer's own process (``python -m serving.transformer``).
"""
from __future__ import annotations

import logging
from concurrent import futures

import kserve.model_server as kserve_server
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse
from grpc import aio
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from serving.transformer.config import TransformerConfig
from serving.transformer.model import VERSION_HEADER, FundusTransformer

log = logging.getLogger(__name__)


DRAIN_LIMIT = 1024 * 1024 * 1024
"""Oversized bodies up to this size are read and discarded before the 413; larger ones are cut off."""


class RequestTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")


class RequestLimits:
    """ASGI middleware: refuse oversized bodies before they are read, and OIP binary bodies."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _reject(send, 400, "invalid Content-Length header")
            if int(length) > self.max_bytes:
                if int(length) <= DRAIN_LIMIT:  # read and drop it, so the client sees the 413, not a reset
                    while (await receive()).get("more_body"):
                        pass
                return await _reject(send, 413, f"request body is {int(length)} bytes, more than the limit of "
                                                f"{self.max_bytes} bytes; send fewer or smaller images")
        if b"inference-header-content-length" in headers:
            return await _reject(send, 400, "the binary tensor data extension is not supported: send the "
                                             "images as base64 strings in the BYTES input's data, or use gRPC")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # chunked upload without Content-Length
                    raise RequestTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


async def _reject(send, status: int, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class ReadyDataPlane(DataPlane):
    """Server readiness = every registered model is healthy (KServe: always True)."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all([await model.healthy() for model in models])


def add_routes(app: FastAPI, dataplane: DataPlane, max_request_bytes: int) -> None:
    """Our additions to KServe's FastAPI app; added before KServe's own, so they match first."""
    app.add_middleware(RequestLimits, max_bytes=max_request_bytes)

    async def too_large(_, exc: RequestTooLarge) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=413)

    app.add_exception_handler(RequestTooLarge, too_large)

    async def invalid_body(_, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 echoes the offending input, which may be an image: say where, not what.
        return JSONResponse({"error": f"not an inference request: {_problems(exc.errors())}"}, status_code=400)

    app.add_exception_handler(RequestValidationError, invalid_body)

    async def v1_predict(model_name: str, version: str, request: Request) -> ORJSONResponse:
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        headers = {**request.headers, VERSION_HEADER: version}
        payload, _ = dataplane.decode(body=await request.body(), headers=headers)
        response, _ = await dataplane.infer(model_name=model_name, request=payload, headers=headers)
        return ORJSONResponse(response)

    async def v2_infer(model_name: str, version: str, request: Request) -> ORJSONResponse:
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        try:
            parsed = InferenceRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidInput(f"not an inference request: {_problems(exc.errors())}") from None
        infer_request = InferRequest.from_inference_request(parsed, model_name)
        infer_request.model_version = version
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=dict(request.headers))
        body, _ = response.to_rest()
        return ORJSONResponse(body)

    for kind in ("versions", "labels"):
        app.add_api_route(f"/v1/models/{{model_name}}/{kind}/{{version}}:predict", v1_predict, methods=["POST"],
                          response_model=None)
    app.add_api_route("/v2/models/{model_name}/versions/{version}/infer", v2_infer, methods=["POST"],
                      response_model=None)


def _problems(errors: list[dict]) -> str:
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in errors[:5])


def _bound_servers(host: str) -> tuple[type, type]:
    """KServe's REST and gRPC servers, listening on `host` instead of all interfaces."""

    class BoundRESTServer(RESTServer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    class BoundGRPCServer(GRPCServer):
        async def start(self, max_workers: int) -> None:  # GRPCServer.start with our address
            servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
            self._server = aio.server(
                futures.ThreadPoolExecutor(max_workers=max_workers),
                interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
                options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                         ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length"))])
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
            address = f"[{host}]:{self._port}" if ":" in host else f"{host}:{self._port}"
            self._server.add_insecure_port(address)
            log.info("Starting gRPC server on %s", address)
            await self._server.start()
            await self._server.wait_for_termination()

    return BoundRESTServer, BoundGRPCServer


def serve(config: TransformerConfig, http_port: int = 8080, grpc_port: int = 8081, host: str = "0.0.0.0") -> None:
    """Serve until SIGINT/SIGTERM (KServe handles the signals and drains both servers)."""
    if host not in ("0.0.0.0", "::"):
        kserve_server.RESTServer, kserve_server.GRPCServer = _bound_servers(host)
    kserve_server.args.grpc_max_receive_message_length = config.max_request_bytes
    server = kserve_server.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1,
                                       enable_docs_url=False, grace_period=10)
    server.dataplane = ReadyDataPlane(model_registry=server.registered_models)
    add_routes(kserve_server.app, server.dataplane, config.max_request_bytes)
    model = FundusTransformer(config)
    log.info("Transformer for model %s -> predictor %s (%s)%s", config.model_name, config.predictor_host,
             config.predictor_api, f", rollout split from {config.rollout_file}" if config.rollout_file else "")
    server.start([model])
