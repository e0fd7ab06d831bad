"""The serving tests' helpers (`from tests.serving.helpers import ...`, by conftest and the test
modules alike): stand-in SavedModels, the bundled model, HTTP, a fake predictor for the transformer."""
from __future__ import annotations

import copy
import http.client
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

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


def bundled_two_stage() -> Path | None:
    """The newest bundled version that is two-stage (models/optic-disc/2 once it is published), if any
    ($FUNDUS_SEG_TEST_TWO_STAGE_VERSION names another trained two-stage version directory instead)."""
    from fundus_seg.model_card import ModelCard

    override = os.environ.get("FUNDUS_SEG_TEST_TWO_STAGE_VERSION")
    if override:
        return Path(override)

    for card in sorted((BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME).glob("*/metrics.json"),
                       key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1, reverse=True):
        if (card.parent / "saved_model.pb").is_file() and ModelCard.from_json(card.read_text()).segment is not None:
            return card.parent
    return None


def build_two_stage_version(path: Path, seed: int = 0) -> Path:
    """A tiny, untrained two-stage version through the real export (both signatures, the card): for the
    contract and the pipeline's plumbing, not for its answers."""
    import keras

    from training_job.config import UNetConfig
    from training_job.export import save_serving_model
    from training_job.unet import build_unet

    keras.utils.set_random_seed(seed)
    tiny = UNetConfig(depth=2, width=4, increment_ratio=1.0, input_size=128)
    architecture = {"depth": 2, "width": 4, "increment_ratio": 1.0, "input_size": 128}
    card = {"model_name": DEFAULT_MODEL_NAME, "mode": "full", "data": [], "test_metrics": {},
            "config": {"model": architecture, "preprocess": {"crop_fraction": 0.1, "size": 128},
                       "segment": {"model": architecture, "crop": {"multiple": 2.5, "size": 128}}}}
    return save_serving_model(build_unet(tiny, channels=1), path, card, segment_model=build_unet(tiny, channels=2))


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


def crop_probability(size: int = 128, multiple: float = 2.5, cup_fraction: float = 0.5, shift: float = 0.0) -> np.ndarray:
    """What a good stage 2 answers on a crop: a disc of the crop's expected diameter (size / multiple),
    `shift` diameters right of the centre, and a cup of `cup_fraction` of its diameter inside; S x S x 2."""
    radius = size / multiple / 2
    yy, xx = np.mgrid[:size, :size] + 0.5
    distance = np.hypot(yy - size / 2, xx - size / 2 - shift * 2 * radius)
    return np.stack([distance <= radius, distance <= radius * cup_fraction], axis=-1).astype(np.float32)


class FakePredictor:
    """The predictor's answers as the transformer sees them: versions, labels, cards, errors in order.

    `serving_default` answers `disc_probability()` for every image; `segment` (a two-stage version's
    stage 2) answers `segment(crops, call_number)`, by default `crop_probability()` for every crop."""

    def __init__(self, versions=(3,), errors=(), labels=None, cards=None, segment=None) -> None:
        self.versions, self.errors = list(versions), list(errors)
        self.labels, self.cards = dict(labels or {}), dict(cards or {})  # label -> version, version -> card JSON
        self.segment = segment or (lambda crops, _: np.repeat(crop_probability()[None], len(crops), axis=0))
        self.calls: list[tuple[tuple, str | None]] = []
        self.signatures: list[str] = []
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

    async def predict(self, images, version=None, signature="serving_default"):
        from serving.transformer.predictor_client import PredictResult

        self.calls.append((images.shape, version))
        self.signatures.append(signature)
        if self.errors:
            raise self.errors.pop(0)
        assert images.dtype == np.float32 and images.shape[1:] == (128, 128, 3)
        if signature == "segment":
            return PredictResult(self.segment(images, self.signatures.count("segment")), self._resolve(version))
        assert signature == "serving_default", signature
        return PredictResult(np.repeat(disc_probability()[None], len(images), axis=0), self._resolve(version))

    async def available_versions(self) -> list[int]:
        return self.versions

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# An HTTP fake of the Kubernetes API server (the rollout tests' cluster)
#
# An HTTP fake of the Kubernetes API server on 127.0.0.1, for the rollout tests.
#
# It serves the two kinds `fundus-seg rollout` touches -- `serving.kserve.io/v1beta1`
# inferenceservices and `v1` configmaps -- with the API server's rules that matter to a client:
#
# * GET (object or list, `fieldSelector=metadata.name=...`), POST (create; 409 AlreadyExists),
#   PUT (replace; 409 Conflict on a stale `metadata.resourceVersion`), PATCH with
#   `application/merge-patch+json` (RFC 7386) or `application/json-patch+json` (RFC 6902), and
#   415 for strategic merge patches on custom resources, as the real server answers;
# * a patch or update whose body names a `resourceVersion` other than the stored one is a 409
#   Conflict (optimistic concurrency); every write bumps `resourceVersion`, a spec change bumps
#   `generation`; the status of a custom resource is not writable through the main resource;
# * 404 NotFound with a `Status` body for missing objects;
# * `?watch=true` streams newline-delimited `{"type", "object"}` events (synthetic ADDED events
#   for the current objects first unless a `resourceVersion` is given) until `timeoutSeconds`.
#
# Tests drive the "controller" side directly: `put`, `set_status`, `fail_next_writes`.
# The tests at the bottom check the fake itself with plain HTTP, so the rollout tests rest on
# behaviour that is pinned down.

ISVC_API = "/apis/serving.kserve.io/v1beta1"
ROUTES = [
    (re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/(?P<plural>inferenceservices)"
                r"(?:/(?P<name>[^/]+))?$"), ("serving.kserve.io/v1beta1", "InferenceService", True)),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>configmaps)(?:/(?P<name>[^/]+))?$"),
     ("v1", "ConfigMap", False)),
]


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target, operations):
    """RFC 6902 JSON patch: add, remove, replace, test."""
    document = copy.deepcopy(target)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "add" and isinstance(node, list):
            node.insert(key, op["value"])
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and (key not in node if isinstance(node, dict) else key >= len(node)):
                raise ValueError(f"nothing to replace at {op['path']}")
            node[key] = op["value"]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return document


class FakeKubeAPI:
    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.events: list[tuple[int, str, str, dict]] = []  # (resourceVersion, plural, type, object)
        self.requests: list[dict] = []  # method, path, query, content_type, body
        self.revision = 100
        self.changed = threading.Condition()
        self.failures: list[tuple[int, str]] = []  # injected answers for the next writes
        self.closed = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

            def do_PUT(self):
                fake._handle(self, "PUT")

            def do_PATCH(self):
                fake._handle(self, "PATCH")

            def do_DELETE(self):
                fake._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- test controls (the "controller" side) -------------------------------------------------

    def _record(self, plural: str, kind: str, obj: dict) -> None:
        with self.changed:
            self.revision += 1
            obj["metadata"]["resourceVersion"] = str(self.revision)
            self.events.append((self.revision, plural, kind, copy.deepcopy(obj)))
            self.changed.notify_all()

    def put(self, plural: str, namespace: str, obj: dict) -> dict:
        """Store an object as-is (status included), as if a controller created it."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        key = (plural, namespace, meta["name"])
        event = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self._record(plural, event, obj)
        return copy.deepcopy(obj)

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def set_status(self, plural: str, namespace: str, name: str, status: dict) -> None:
        """What a controller does: write status (and observe the current generation)."""
        obj = self.objects[(plural, namespace, name)]
        obj["status"] = {**copy.deepcopy(status), "observedGeneration": obj["metadata"].get("generation", 1)}
        self._record(plural, "MODIFIED", obj)

    def fail_next_writes(self, *answers: tuple[int, str]) -> None:
        """Answer the next PUT/PATCH/POST calls with these (status, reason), e.g. (409, "Conflict")."""
        self.failures.extend(answers)

    def writes(self, plural: str | None = None) -> list[dict]:
        return [r for r in self.requests if r["method"] in ("POST", "PUT", "PATCH")
                and (plural is None or f"/{plural}" in r["path"])]

    # -- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _send(handler, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(self, handler, code: int, reason: str, message: str) -> None:
        self._send(handler, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": message, "reason": reason, "code": code})

    def _handle(self, handler, method: str) -> None:
        parsed = urlparse(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0]
        body = json.loads(raw) if raw else None
        self.requests.append({"method": method, "path": parsed.path, "query": query,
                              "content_type": content_type, "body": body})
        for pattern, (api_version, kind, custom) in ROUTES:  # noqa: B007 (used after the break)
            match = pattern.match(parsed.path)
            if match:
                break
        else:
            return self._status(handler, 404, "NotFound", f"the server could not find {parsed.path}")
        ns, plural, name = match["ns"], match["plural"], match["name"]
        if method in ("POST", "PUT", "PATCH") and self.failures:
            code, reason = self.failures.pop(0)
            if code == 409 and name and (plural, ns, name) in self.objects:
                # a concurrent writer got there first: the stored object really changed
                self._record(plural, "MODIFIED", self.objects[(plural, ns, name)])
            return self._status(handler, code, reason, f"injected {reason}")
        try:
            if method == "GET" and name is None:
                if query.get("watch", "").lower() in ("true", "1", "t"):  # Go ParseBool, as the API server
                    return self._watch(handler, plural, ns, query)
                items = [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                         if p == plural and n == ns and self._selected(o, query)]
                return self._send(handler, 200, {"apiVersion": api_version, "kind": f"{kind}List",
                                                 "metadata": {"resourceVersion": str(self.revision)}, "items": items})
            if method == "POST" and name is None:
                return self._create(handler, plural, ns, body, api_version, kind)
            if name is None:
                return self._status(handler, 405, "MethodNotAllowed", f"{method} on a collection")
            key = (plural, ns, name)
            current = self.objects.get(key)
            if current is None:
                return self._status(handler, 404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET":
                return self._send(handler, 200, copy.deepcopy(current))
            if method == "DELETE":
                del self.objects[key]
                self._record(plural, "DELETED", current)
                return self._send(handler, 200, current)
            if method == "PUT":
                updated = copy.deepcopy(body)
            elif content_type == "application/merge-patch+json":
                updated = merge_patch(current, body)
            elif content_type == "application/json-patch+json":
                updated = json_patch(current, body)
            elif content_type == "application/strategic-merge-patch+json" and custom:
                return self._status(handler, 415, "UnsupportedMediaType",
                                    "strategic merge patch is not supported for custom resources")
            else:
                return self._status(handler, 415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
            return self._update(handler, key, current, updated, custom)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return self._status(handler, 422, "Invalid", f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _selected(obj: dict, query: dict) -> bool:
        selector = query.get("fieldSelector")
        if not selector:
            return True
        field, _, value = selector.partition("=")
        return field == "metadata.name" and obj["metadata"]["name"] == value.lstrip("=")

    def _create(self, handler, plural, ns, body, api_version, kind):
        name = body["metadata"]["name"]
        if (plural, ns, name) in self.objects:
            return self._status(handler, 409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj.update(apiVersion=api_version, kind=kind)
        obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), generation=1,
                               creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        obj["metadata"].pop("resourceVersion", None)
        self.objects[(plural, ns, name)] = obj
        self._record(plural, "ADDED", obj)
        return self._send(handler, 201, copy.deepcopy(obj))

    def _update(self, handler, key, current, updated, custom):
        plural, ns, name = key
        wanted = (updated.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return self._status(handler, 409, "Conflict",
                                f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                                "modified; please apply your changes to the latest version and try again")
        if updated.get("metadata", {}).get("name", name) != name:
            return self._status(handler, 400, "BadRequest", "metadata.name cannot change")
        metadata = {**current["metadata"], **{k: v for k, v in (updated.get("metadata") or {}).items()
                                              if k in ("labels", "annotations")}}
        updated["metadata"] = metadata
        if custom:  # status is a subresource: not writable through the object
            updated["status"] = copy.deepcopy(current.get("status"))
            if updated["status"] is None:
                updated.pop("status")
            if updated.get("spec") != current.get("spec"):
                metadata["generation"] = current["metadata"].get("generation", 1) + 1
        self.objects[key] = updated
        self._record(plural, "MODIFIED", updated)
        return self._send(handler, 200, copy.deepcopy(updated))

    def _watch(self, handler, plural, ns, query):
        # Chunked, one event per chunk, as the API server streams: clients see each event at once.
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)

        def chunk(data: bytes):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        def emit(event_type, obj):
            chunk((json.dumps({"type": event_type, "object": obj}) + "\n").encode())

        with self.changed:
            since = int(query.get("resourceVersion") or 0)
            if not since:
                since = self.revision
                current = [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                           if p == plural and n == ns and self._selected(o, query)]
            else:
                current = []
        try:
            for obj in current:
                emit("ADDED", obj)
            while True:
                with self.changed:
                    pending = [e for e in self.events if e[0] > since and e[1] == plural
                               and e[3]["metadata"].get("namespace") == ns and self._selected(e[3], query)]
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self.closed:
                            handler.wfile.write(b"0\r\n\r\n")
                            return
                        self.changed.wait(min(remaining, 0.5))
                        continue
                for revision, _, event_type, obj in pending:
                    emit(event_type, obj)
                    since = revision
        except (BrokenPipeError, ConnectionResetError):
            return


def kube_api_client(fake: FakeKubeAPI):
    """A real kubernetes ApiClient pointed at the fake."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = fake.url
    return client.ApiClient(configuration)
