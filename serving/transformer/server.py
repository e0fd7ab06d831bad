"""The transformer's two servers: KServe's routes and data plane, behind limits KServe lacks.

KServe's `ModelServer` serves more than a public port should and cannot be hardened from outside:
its model-repository extension lets any caller unload the model (`POST /v2/repository/models/
<m>/unload`, gRPC `RepositoryModelUnload`), its readiness is always True, its v1 parser takes
`application/json; charset=utf-8` for an image, it has no header limits or timeouts, and on
SIGTERM it unloads the model before requests have drained. So the routes here are KServe's (v1,
Open Inference Protocol v2 over REST and gRPC, health, metadata, metrics) minus the repository
extension, the handlers call KServe's `DataPlane` and our KServe `Model`, and the servers
(uvicorn, grpc.aio) are configured, and stopped in order, here:

* HTTP: header size (431), header and body deadlines (408), a connection cap (503), request size
  (413, chunked bodies included), a budget for request bodies held at once (503 + Retry-After),
  and JSON refused before parsing when its structure is larger than `max_images` can need;
* gRPC: the same message size, a metadata size limit, a cap on concurrent calls, the same image
  count checked on the protobuf before anything is converted;
* SIGTERM/SIGINT: readiness turns false, both servers stop accepting, in-flight requests finish
  (up to `drain_s`), then the model's pool and predictor connection close.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import grpc
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc_interceptor import AsyncExceptionToStatusInterceptor
from kserve import errors as kserve_errors
from kserve.errors import InvalidInput, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import metrics_handler
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.transformer.budget import Budget
from serving.transformer.codec import LATERALITY, json_structure_fits
from serving.transformer.config import TransformerConfig
from serving.transformer.http_guard import guarded_protocol
from serving.transformer.model import LATERALITY_HEADER, OUTPUTS_HEADER, VERSION_HEADER, FundusTransformer

log = logging.getLogger(__name__)

SERVER_NAME = "fundus-seg-transformer"
DRAIN_LIMIT = 1024 * 1024 * 1024
"""Oversized bodies up to this size are read and dropped before the 413 (a client that is cut off
mid-upload sees a reset, not the answer); larger ones are cut off."""
OFFLOAD_BYTES = 256 * 1024
"""JSON bodies larger than this are parsed in a worker thread, so the event loop never waits on them."""


class ORJSONResponse(JSONResponse):
    """JSON rendered by orjson (FastAPI's own ORJSONResponse is deprecated)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class RequestTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes; send fewer or smaller images")


class BodyTimeout(Exception):
    def __init__(self, total_s: float, idle_s: float) -> None:
        super().__init__(f"request body not received in time (all of it within {total_s:g}s, "
                         f"no pause over {idle_s:g}s)")


# -- ASGI: limits on what a request may cost before it reaches a route -------------------------------


class RequestLimits:
    """Outermost ASGI layer: size, deadlines and the shared body budget, for every HTTP request.

    The budget is drawn as bytes arrive, not from Content-Length: a client must really send
    what it holds, and a full budget answers 503 + Retry-After instead of growing memory."""

    def __init__(self, app, config: TransformerConfig) -> None:
        self.app, self.config = app, config
        self.bodies = Budget(config.max_inflight_bytes, "request-body")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, limits = self.config.max_request_bytes, self.config.http
        headers = dict(scope.get("headers") or [])
        if b"inference-header-content-length" in headers:
            return await reject(send, 400, "the binary tensor data extension is not supported: send the images "
                                           "as base64 strings in the BYTES input's data, or use gRPC")
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) <= 20):
                return await reject(send, 400, "invalid Content-Length header")
            if int(length) > limit:
                if int(length) <= DRAIN_LIMIT:  # read and drop it (deadlines apply), so the client sees the 413
                    await drain(receive, limits.header_timeout_s, limits.body_timeout_s)
                return await reject(send, 413, f"request body is {int(length)} bytes, more than the limit of "
                                               f"{limit} bytes; send fewer or smaller images")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout_s
        received, body_done = 0, False

        async def limited_receive():
            """The body as it arrives: at most `limit` bytes, none of them later than the deadlines
            (no byte for `header_timeout_s`, or not all within `body_timeout_s`), every byte
            counted against the shared budget while the request lives."""
            nonlocal received, body_done
            if body_done:  # after the body only http.disconnect remains: no deadline on that
                return await receive()
            wait = min(limits.header_timeout_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except TimeoutError:
                raise BodyTimeout(limits.body_timeout_s, limits.header_timeout_s) from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received + chunk > limit:  # a chunked upload without Content-Length
                    raise RequestTooLarge(limit)
                if chunk and not self.bodies.try_take(chunk):
                    raise BodyBudgetFull()
                received += chunk
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if received:
                self.bodies.give(received)


class BodyBudgetFull(Exception):
    def __init__(self) -> None:
        super().__init__("the service is busy with other large requests; retry shortly")


async def drain(receive, idle_s: float, total_s: float) -> None:
    """Read a request body to its end and drop it; gives up silently at either deadline."""
    try:
        async with asyncio.timeout(total_s):
            while True:
                message = await asyncio.wait_for(receive(), idle_s)
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
    except TimeoutError:
        return


async def reject(send, status: int, message: str, retry_after: int | None = None) -> None:
    """Answer before (or instead of) reading the body; the connection closes, so nothing half-read lingers."""
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    body = orjson.dumps({"error": message})
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- REST routes -----------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def v1_payload(body: bytes, content_type: str | None, max_images: int) -> dict | bytes:
    """A v1 body as KServe's data plane takes it: the JSON document, or the raw image bytes.

    JSON is `application/json` with any parameters (charset) or any `+json` type; an image is
    `image/*`, `application/dicom` (a DICOM fundus photo, Part 10) or `application/octet-stream`; without a
    Content-Type the body's first byte decides.
    """
    media = media_type(content_type)
    if not media:
        media = "application/json" if body.lstrip()[:1] in (b"{", b"[") else "application/octet-stream"
    if media.startswith("image/") or media in ("application/octet-stream", "application/dicom"):
        return body
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(media)
    if not json_structure_fits(body, max_images):
        raise InvalidInput(f"the request holds more JSON structure than {max_images} images can need; "
                           "send at most that many instances, without nesting")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Unrecognized request format: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidInput(f'Unrecognized request format: expected a JSON object with "instances", '
                           f"got a JSON {type(document).__name__}")
    return document


def v2_payload(body: bytes, model_name: str, max_images: int) -> InferRequest:
    if not json_structure_fits(body, max_images):
        raise InvalidInput(f"the request holds more JSON structure than {max_images} images can need")
    try:
        parsed = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"not an inference request: {_problems(exc.errors())}") from None
    return InferRequest.from_inference_request(parsed, model_name)


class UnsupportedMediaType(Exception):
    def __init__(self, media: str) -> None:
        super().__init__(f"Content-Type {media[:64]!r} is not accepted: send application/json (v1 instances) "
                         "or the image itself as image/jpeg, image/png, application/dicom or application/octet-stream")


def _problems(errors: list[dict]) -> str:
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in errors[:5])


def build_app(dataplane: DataPlane, model: FundusTransformer, config: TransformerConfig) -> FastAPI:
    """The REST app: exactly these routes, nothing a caller could use to change the service."""
    app = FastAPI(title=SERVER_NAME, docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=ORJSONResponse)
    max_images = config.max_images

    async def parse(function, *args):
        body = args[0]
        if len(body) > OFFLOAD_BYTES:
            return await asyncio.get_running_loop().run_in_executor(None, function, *args)
        return function(*args)

    async def ready_model(model_name: str) -> None:
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)

    async def v1(model_name: str, request: Request, version: str | None) -> ORJSONResponse:
        await ready_model(model_name)
        headers = dict(request.headers)
        if version is not None:  # the route's version; decode_request checks it like the header's
            headers[VERSION_HEADER] = version
        side = request.query_params.getlist("laterality")
        if side:  # ?laterality= is the header's other spelling; decode_request checks the value
            if len(set(side)) > 1 or headers.get(LATERALITY_HEADER, side[0]) != side[0]:
                raise InvalidInput("laterality is given twice, differently (the query and the header)")
            headers[LATERALITY_HEADER] = side[0]
        outputs = request.query_params.getlist("outputs")
        if outputs:  # ?outputs=dicom-seg,fhir is the header's other spelling
            headers[OUTPUTS_HEADER] = ",".join([*outputs, headers.get(OUTPUTS_HEADER, "")])
        payload = await parse(v1_payload, await request.body(), request.headers.get("content-type"), max_images)
        response, _ = await dataplane.infer(model_name=model_name, request=payload, headers=headers)
        return ORJSONResponse(response)

    async def v1_predict(model_name: str, request: Request) -> ORJSONResponse:
        return await v1(model_name, request, None)

    async def v1_predict_version(model_name: str, version: str, request: Request) -> ORJSONResponse:
        return await v1(model_name, request, version)

    async def v2(model_name: str, request: Request, version: str | None) -> ORJSONResponse:
        await ready_model(model_name)
        headers = dict(request.headers)
        infer_request = await parse(v2_payload, await request.body(), model_name, max_images)
        if version is not None:  # checked by decode_request, like the message's own
            infer_request.model_version = version
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=headers)
        body, _ = response.to_rest()
        return ORJSONResponse(body)

    async def v2_infer(model_name: str, request: Request) -> ORJSONResponse:
        return await v2(model_name, request, None)

    async def v2_infer_version(model_name: str, version: str, request: Request) -> ORJSONResponse:
        return await v2(model_name, request, version)

    async def live() -> JSONResponse:
        alive = model.live()
        return JSONResponse({"status": "alive" if alive else "not alive"}, status_code=200 if alive else 503)

    async def v2_live() -> JSONResponse:
        alive = model.live()
        return JSONResponse({"live": alive}, status_code=200 if alive else 503)

    async def v2_ready() -> JSONResponse:
        ready = await dataplane.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_ready(model_name: str) -> dict:
        await ready_model(model_name)
        return {"name": model_name, "ready": True}

    async def models() -> dict:
        return {"models": list(dataplane.model_registry.get_models())}

    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": _version(), "extensions": []}

    async def model_metadata(model_name: str) -> dict:
        return await dataplane.model_metadata(model_name)

    routes: list[tuple[str, Any, str]] = [
        ("/", live, "GET"),
        ("/metrics", metrics_handler, "GET"),
        ("/v1/models", models, "GET"),
        ("/v1/models/{model_name}", model_ready, "GET"),
        ("/v1/models/{model_name}:predict", v1_predict, "POST"),
        ("/v1/models/{model_name}/versions/{version}:predict", v1_predict_version, "POST"),
        ("/v1/models/{model_name}/labels/{version}:predict", v1_predict_version, "POST"),
        ("/v2", server_metadata, "GET"),
        ("/v2/health/live", v2_live, "GET"),
        ("/v2/health/ready", v2_ready, "GET"),
        ("/v2/models", models, "GET"),
        ("/v2/models/{model_name}", model_metadata, "GET"),
        ("/v2/models/{model_name}/ready", model_ready, "GET"),
        ("/v2/models/{model_name}/infer", v2_infer, "POST"),
        ("/v2/models/{model_name}/versions/{version}/infer", v2_infer_version, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], response_model=None)
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def status(code: int, headers: dict | None = None):
        async def handler(_, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": str(exc)}, status_code=code, headers=headers)
        return handler

    app.add_exception_handler(RequestTooLarge, status(413, {"connection": "close"}))
    app.add_exception_handler(BodyTimeout, status(408, {"connection": "close"}))
    app.add_exception_handler(BodyBudgetFull, status(503, {"connection": "close", "retry-after": "1"}))
    app.add_exception_handler(UnsupportedMediaType, status(415))

    async def invalid_body(_, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 echoes the offending input, which may be an image: say where, not what.
        return JSONResponse({"error": f"not an inference request: {_problems(exc.errors())}"}, status_code=400)

    async def http_error(_, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for kind, code in _KSERVE_STATUS.items():
        app.add_exception_handler(kind, _answer(code))
    app.add_exception_handler(Exception, _internal_error)


_KSERVE_STATUS = {kserve_errors.InvalidInput: 400, kserve_errors.ModelNotFound: 404,
                  kserve_errors.ModelNotReady: 503, kserve_errors.ServerNotReady: 503,
                  kserve_errors.InferenceError: 500, NotImplementedError: 501}


def _answer(code: int):
    """KServe's status and body for its errors, logged as one line: a caller's mistake (or a probe
    before the model is up) is not a traceback, and a flood of bad requests is not a flood of logs."""
    async def handler(_, exc: Exception) -> JSONResponse:
        (log.warning if code in (500, 501) else log.debug)("HTTP %d: %s", code, exc)
        return JSONResponse({"error": str(exc)}, status_code=code)
    return handler


async def _internal_error(_, exc: Exception) -> JSONResponse:
    log.error("request failed", exc_info=exc)  # a bug: the traceback is wanted, the request is not logged
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the transformer's log"}, status_code=500)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fundus-seg")
    except PackageNotFoundError:
        return "unknown"


class ReadyDataPlane(DataPlane):
    """Server readiness = every registered model is healthy (KServe: always True)."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all([await model.healthy() for model in models])


# -- gRPC ------------------------------------------------------------------------------------------


class ErrorStatus(AsyncExceptionToStatusInterceptor):
    """KServe's errors as gRPC status codes, each logged as one line (KServe logs a traceback for
    every bad request, and answers its own InferenceError with INVALID_ARGUMENT)."""

    CODES = {kserve_errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
             kserve_errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
             kserve_errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
             kserve_errors.ServerNotReady: grpc.StatusCode.UNAVAILABLE,
             kserve_errors.InferenceError: grpc.StatusCode.INTERNAL,
             NotImplementedError: grpc.StatusCode.UNIMPLEMENTED}

    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context, method_name: str) -> None:
        code = next((c for kind, c in self.CODES.items() if isinstance(ex, kind)), None)
        if code is None:
            if isinstance(ex, grpc.aio.AbortError):
                raise ex
            log.error("%s failed", method_name, exc_info=ex)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the transformer's log")
        (log.warning if code == grpc.StatusCode.INTERNAL else log.debug)("%s: %s: %s", method_name, code.name, ex)
        await context.abort(code, getattr(ex, "reason", None) or str(ex))


class TransformerServicer(InferenceServicer):
    """KServe's OIP v2 servicer, minus the model-repository RPCs, with limits checked on the protobuf."""

    def __init__(self, dataplane: DataPlane, model: FundusTransformer, config: TransformerConfig) -> None:
        super().__init__(dataplane, None)
        self._model, self._config = model, config

    async def RepositoryModelLoad(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "model repository operations are not served")

    async def RepositoryModelUnload(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "model repository operations are not served")

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._model.live())

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=_version(), extensions=[])

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        # Counted on the message itself: KServe's conversion would otherwise build every element first.
        # At most two inputs (the images and, optionally, one named "laterality"), each of at most max_images.
        max_images = self._config.max_images
        inputs = request.inputs
        sides = sum(i.name == LATERALITY for i in inputs)
        most = max((len(i.contents.bytes_contents) for i in inputs), default=0)
        if len(inputs) > 1 + (sides == 1) or most > max_images or len(request.raw_input_contents) > len(inputs):
            raise InvalidInput(f"the request holds {most} images in {len(inputs)} inputs; send one BYTES input of "
                               f"at most {max_images} images (and optionally a BYTES input {LATERALITY!r} of the "
                               "same shape)")
        return await super().ModelInfer(request, context)  # the version is checked by decode_request


# -- the process -----------------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this module decides how the process stops."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class TransformerServer:
    def __init__(self, config: TransformerConfig, http_port: int = 8080, grpc_port: int = 8081,
                 host: str = "0.0.0.0") -> None:
        self.config, self.http_port, self.grpc_port, self.host = config, http_port, grpc_port, host
        self.model = FundusTransformer(config)
        registry = ModelRepository()
        registry.update(self.model)
        self.dataplane = ReadyDataPlane(model_registry=registry)
        self._stop: asyncio.Event | None = None

    def _http_server(self) -> _Uvicorn:
        limits = self.config.http
        app = RequestLimits(build_app(self.dataplane, self.model, self.config), self.config)
        return _Uvicorn(uvicorn.Config(
            app, host=self.host, port=self.http_port, http=guarded_protocol(limits), lifespan="off",
            log_config=None, access_log=False, timeout_keep_alive=limits.keep_alive_s,
            timeout_graceful_shutdown=int(self.config.drain_s), limit_concurrency=limits.max_connections,
            server_header=False))

    def _grpc_server(self) -> grpc.aio.Server:
        config = self.config
        server = grpc.aio.server(
            interceptors=(ErrorStatus(),),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[("grpc.max_receive_message_length", config.max_request_bytes),
                     ("grpc.max_send_message_length", config.max_request_bytes),
                     ("grpc.max_metadata_size", config.http.max_header_bytes),
                     ("grpc.max_concurrent_streams", 32),
                     ("grpc.max_connection_idle_ms", config.http.keep_alive_s * 1000 * 4),
                     ("grpc.max_connection_age_ms", 10 * 60 * 1000),
                     ("grpc.max_connection_age_grace_ms", int(config.drain_s * 1000)),
                     ("grpc.http2.max_pings_without_data", 2),
                     ("grpc.so_reuseport", 0)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            TransformerServicer(self.dataplane, self.model, config), server)
        address = f"[{self.host}]:{self.grpc_port}" if ":" in self.host else f"{self.host}:{self.grpc_port}"
        server.add_insecure_port(address)
        return server

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain: not ready, stop accepting, finish, close."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        http, rpc = self._http_server(), self._grpc_server()
        await rpc.start()
        http_task = asyncio.create_task(http.serve())
        stop_task = asyncio.create_task(self._stop.wait())
        log.info("Transformer for model %s -> predictor %s (%s): REST %s:%d, gRPC %s:%d", self.config.model_name,
                 self.config.predictor_host, self.config.predictor_api, self.host, self.http_port, self.host,
                 self.grpc_port)
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        failed = http_task.done() and not self._stop.is_set()
        log.info("Stopping: readiness off, draining in-flight requests (up to %gs)", self.config.drain_s)
        self.model.draining = True
        http.should_exit = True
        await asyncio.gather(rpc.stop(self.config.drain_s), http_task, return_exceptions=True)
        stop_task.cancel()
        self.model.stop()
        await self.model.predictor.close()
        log.info("Transformer stopped")
        if failed:
            http_task.result()  # re-raise why the REST server ended on its own
            raise RuntimeError("the REST server stopped unexpectedly")


def serve(config: TransformerConfig, http_port: int = 8080, grpc_port: int = 8081, host: str = "0.0.0.0") -> None:
    """Run the transformer in this process until SIGTERM/SIGINT."""
    import copy

    from kserve.logging import KSERVE_LOG_CONFIG, configure_logging

    log_config = copy.deepcopy(KSERVE_LOG_CONFIG)  # our modules log like KServe's own
    log_config["loggers"]["serving"] = {"handlers": ["kserve"], "level": "INFO", "propagate": False}
    configure_logging(log_config)
    asyncio.run(TransformerServer(config, http_port, grpc_port, host).serve())
