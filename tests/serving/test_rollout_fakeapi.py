"""The HTTP fake of the Kubernetes API server (tests/serving/helpers.py) checked with plain HTTP,
so the rollout tests rest on behaviour that is pinned down."""
from __future__ import annotations

import http.client
import json
import threading

from tests.serving.helpers import ISVC_API


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
