"""An HTTP fake of the Kubernetes API server on 127.0.0.1, for the rollout tests.

It serves the two kinds `fundus-seg rollout` touches -- `serving.kserve.io/v1beta1`
inferenceservices and `v1` configmaps -- with the API server's rules that matter to a client:

* GET (object or list, `fieldSelector=metadata.name=...`), POST (create; 409 AlreadyExists),
  PUT (replace; 409 Conflict on a stale `metadata.resourceVersion`), PATCH with
  `application/merge-patch+json` (RFC 7386) or `application/json-patch+json` (RFC 6902), and
  415 for strategic merge patches on custom resources, as the real server answers;
* a patch or update whose body names a `resourceVersion` other than the stored one is a 409
  Conflict (optimistic concurrency); every write bumps `resourceVersion`, a spec change bumps
  `generation`; the status of a custom resource is not writable through the main resource;
* 404 NotFound with a `Status` body for missing objects;
* `?watch=true` streams newline-delimited `{"type", "object"}` events (synthetic ADDED events
  for the current objects first unless a `resourceVersion` is given) until `timeoutSeconds`.

Tests drive the "controller" side directly: `put`, `set_status`, `fail_next_writes`.
The tests at the bottom check the fake itself with plain HTTP, so the rollout tests rest on
behaviour that is pinned down.
"""
from __future__ import annotations

import copy
import http.client
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

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

    def start(self) -> "FakeKubeAPI":
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
        for pattern, (api_version, kind, custom) in ROUTES:
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


@pytest.fixture
def kube_api():
    fake = FakeKubeAPI().start()
    yield fake
    fake.stop()


def kube_api_client(fake: FakeKubeAPI):
    """A real kubernetes ApiClient pointed at the fake."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = fake.url
    return client.ApiClient(configuration)


# ---------------------------------------------------------------------------------------------
# The fake itself, over plain HTTP


def call(fake, method, path, body=None, content_type="application/json"):
    connection = http.client.HTTPConnection("127.0.0.1", fake.server.server_address[1], timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=data, headers={"Content-Type": content_type} if data else {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, json.loads(payload) if payload else None


def isvc_path(name=""):
    return f"{ISVC_API}/namespaces/ns/inferenceservices" + (f"/{name}" if name else "")


def test_fake_get_patch_conflict_and_not_found(kube_api):
    status, body = call(kube_api, "GET", isvc_path("m"))
    assert status == 404 and body["reason"] == "NotFound"
    kube_api.put("inferenceservices", "ns", {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                             "metadata": {"name": "m"}, "spec": {"predictor": {"minReplicas": 1}},
                                             "status": {"url": "http://m"}})
    status, obj = call(kube_api, "GET", isvc_path("m"))
    rv = obj["metadata"]["resourceVersion"]
    status, patched = call(kube_api, "PATCH", isvc_path("m"),
                           {"metadata": {"resourceVersion": rv}, "spec": {"predictor": {"minReplicas": None, "x": 1}},
                            "status": {"url": "ignored"}}, "application/merge-patch+json")
    assert status == 200 and patched["spec"] == {"predictor": {"x": 1}}
    assert patched["metadata"]["generation"] == 2 and patched["status"] == {"url": "http://m"}
    status, body = call(kube_api, "PATCH", isvc_path("m"), {"metadata": {"resourceVersion": rv}, "spec": {}},
                        "application/merge-patch+json")
    assert status == 409 and body["reason"] == "Conflict"
    status, patched = call(kube_api, "PATCH", isvc_path("m"),
                           [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 10}],
                           "application/json-patch+json")
    assert status == 200 and patched["spec"]["predictor"]["canaryTrafficPercent"] == 10
    status, body = call(kube_api, "PATCH", isvc_path("m"), {"spec": {}}, "application/strategic-merge-patch+json")
    assert status == 415


def test_fake_configmap_create_and_replace(kube_api):
    path = "/api/v1/namespaces/ns/configmaps"
    status, created = call(kube_api, "POST", path, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    assert status == 201 and created["kind"] == "ConfigMap"
    assert call(kube_api, "POST", path, {"metadata": {"name": "c"}})[0] == 409
    stale = created["metadata"]["resourceVersion"]
    assert call(kube_api, "PUT", f"{path}/c", {"metadata": {"name": "c", "resourceVersion": stale}, "data": {"k": "2"}})[0] == 200
    status, body = call(kube_api, "PUT", f"{path}/c", {"metadata": {"name": "c", "resourceVersion": stale}, "data": {}})
    assert status == 409 and body["reason"] == "Conflict"
    assert call(kube_api, "PUT", f"{path}/missing", {"metadata": {"name": "missing"}})[0] == 404


def test_fake_watch_streams_current_state_then_changes(kube_api):
    kube_api.put("inferenceservices", "ns", {"metadata": {"name": "m"}, "spec": {}})
    kube_api.put("inferenceservices", "ns", {"metadata": {"name": "other"}, "spec": {}})
    threading.Timer(0.3, kube_api.set_status, ("inferenceservices", "ns", "m", {"url": "u"})).start()
    connection = http.client.HTTPConnection("127.0.0.1", kube_api.server.server_address[1], timeout=10)
    connection.request("GET", isvc_path() + "?watch=true&fieldSelector=metadata.name%3Dm&timeoutSeconds=2")
    response = connection.getresponse()
    events = [json.loads(line) for line in response.read().decode().splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "m"), ("MODIFIED", "m")]
    assert events[1]["object"]["status"]["url"] == "u"
