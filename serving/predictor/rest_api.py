"""TF Serving's REST API (/v1/models/...) plus /healthz, /readyz and Prometheus metrics, on aiohttp.

URLs are matched with TF Serving's own patterns; errors are `{"error": "..."}` with TF Serving's
HTTP statuses; status and metadata are the gRPC protos rendered as JSON, as TF Serving does.
JSON parsing and rendering run in a worker thread so large bodies never stall the event loop.

Limits (ServerLimits): a :predict body must arrive within rest_body_timeout_s (else 408 and the
connection is closed), at most rest_max_concurrent_requests run at once (else 429), and error
messages are clipped. Request line and header limits are aiohttp's own; it answers those (400)
in plain text before any handler runs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST

from fundus_seg.model_repository import version_number
from serving.predictor.config import ServerLimits
from serving.predictor.errors import (
    InvalidArgument,
    NotFound,
    PredictorError,
    ResourceExhausted,
    Unimplemented,
    clip,
)
from serving.predictor.grpc_service import metadata_response, status_response
from serving.predictor.metrics import PredictorMetrics
from serving.predictor.model_manager import ModelManager, ModelRef
from serving.predictor.prediction import PredictionCore
from serving.predictor.rest_codec import RestPredictRequest, encode_response

log = logging.getLogger(__name__)


class _DropMalformedRequests(logging.Filter):
    """aiohttp logs a traceback for every malformed request (a header too long ...) after answering
    it 400; a hostile client could flood the log that way. Other errors are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


http_log = logging.getLogger(f"{__name__}.http")  # aiohttp's request handler logs here
http_log.addFilter(_DropMalformedRequests())

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?", re.IGNORECASE)
_POST = re.compile(_MODEL + r":(?P<verb>classify|regress|predict)", re.IGNORECASE)


def _json(document, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(document, indent=1).encode(), status=status,
                        content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": clip(message)}, status)


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PredictorError as exc:
        return _error(exc.http_status, str(exc))
    except web.HTTPException as exc:  # 404 unknown path, 405, 413 body too large ...
        if exc.status < 400:
            raise
        return _error(exc.status, exc.text if exc.text and not exc.text.startswith(f"{exc.status}:")
                      else exc.reason)


class RestApi:
    def __init__(self, core: PredictionCore, manager: ModelManager, metrics: PredictorMetrics,
                 limits: ServerLimits, liveness: Callable[[], list[str]]) -> None:
        self._core = core
        self._manager = manager
        self._metrics = metrics
        self._limits = limits
        self._liveness = liveness
        self._predicting = 0  # :predict requests in progress (all state is on the event loop)

    def app(self, max_request_bytes: int) -> web.Application:
        app = web.Application(client_max_size=max_request_bytes, middlewares=[_json_errors])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/monitoring/prometheus/metrics", self.prometheus)
        app.router.add_get("/v1/models/{tail:.+}", self.model_get)
        app.router.add_post("/v1/models/{tail:.+}", self.model_post)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 503 once the process can no longer serve (a restart is the only cure)."""
        problems = self._liveness()
        if problems:
            return _json({"status": "not alive", "problems": problems}, 503)
        return _json({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        snapshot = self._manager.snapshot()
        models = {name: {str(v): state.name for v, state in sorted(versions.items())}
                  for name, versions in snapshot.items()}
        ready = self._manager.is_ready()
        return _json({"status": "ready" if ready else "not ready", "models": models}, 200 if ready else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def model_get(self, request: web.Request) -> web.Response:
        match = _GET.fullmatch(request.path)
        if match is None:
            raise NotFound(f"Malformed request: GET {request.path}")
        ref = _ref(match)
        if match["metadata"]:
            mv = self._manager.resolve(ref)
            return _json({"model_spec": _proto_json(metadata_response(mv).model_spec),
                          "metadata": {"signature_def": _proto_json(mv.servable.signature_def_map())}})
        return _json(_proto_json(status_response(self._manager.status(ref))))

    async def model_post(self, request: web.Request) -> web.Response:
        match = _POST.fullmatch(request.path)
        if match is None:
            raise NotFound(f"Malformed request: POST {request.path}")
        if match["verb"].lower() != "predict":
            raise Unimplemented(f"{match['verb']} is not supported by this predictor; use :predict")
        ref = _ref(match)
        limits = self._limits
        if self._predicting >= limits.rest_max_concurrent_requests:
            raise ResourceExhausted(f"{limits.rest_max_concurrent_requests} predict requests are already in "
                                    "progress; retry later")
        self._predicting += 1
        try:
            try:
                async with asyncio.timeout(limits.rest_body_timeout_s):
                    body = await request.read()  # raises 413 past client_max_size
            except TimeoutError:
                response = _error(408, f"the request body did not arrive within {limits.rest_body_timeout_s:g}s")
                response.force_close()  # the rest of the body is not worth waiting for
                return response
            loop = asyncio.get_running_loop()
            parsed = await loop.run_in_executor(None, RestPredictRequest.parse, body, limits.rest_max_json_values)
            prediction = await self._core.predict(ref, parsed.signature_name, parsed.decode, api="rest",
                                                  decode_in_thread=True)
            payload = await loop.run_in_executor(None, encode_response, prediction.outputs, parsed.row_format)
        finally:
            self._predicting -= 1
        return web.Response(body=payload, content_type="application/json")


def _ref(match: re.Match) -> ModelRef:
    version = None
    if match["version"]:
        version = version_number(match["version"])
        if version is None:  # TF Serving's wording
            raise InvalidArgument(f"Failed to convert version: {clip(match['version'], 40)} to numeric.")
    return ModelRef(match["name"], version, match["label"])
