"""Hostile clients against a real predictor: each gets a clear 4xx / gRPC code, memory stays flat,
other clients are answered within a second meanwhile, and the server is ready afterwards."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from tests.serving.predictor.helpers import SIZE, config, eventually, images, predict_request, rest, stubs

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
HEALTHY_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, publish):
    from serving.predictor.config import ServerLimits
    from serving.predictor.server import PredictorServer

    base = tmp_path_factory.mktemp("hostile") / "optic-disc"
    publish(base, 1)
    limits = ServerLimits(rest_body_timeout_s=1.0, rest_keepalive_timeout_s=2.0, rest_max_json_values=100_000)
    server = PredictorServer(config(model_name="optic-disc", model_base_path=base, max_request_bytes=1 * MiB,
                                    limits=limits))
    server.start_in_background()
    assert server.wait_until_ready(30)
    yield server
    server.shutdown()


def assert_healthy(server) -> None:
    """A well-behaved client on each API is answered within HEALTHY_WITHIN_S, and the server is ready."""
    predict, _ = stubs(server)
    started = time.monotonic()
    assert predict.Predict(predict_request("optic-disc", images(0.5)), timeout=HEALTHY_WITHIN_S).outputs
    status, _ = rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(0.5).tolist()})
    assert status == 200 and time.monotonic() - started < 2 * HEALTHY_WITHIN_S
    assert server.ready and rest(server, "GET", "/readyz")[0] == 200


def while_in_flight(server, hostile):
    """Run `hostile` in a thread, check other clients are served meanwhile, return its result."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(hostile()), daemon=True)
    thread.start()
    time.sleep(0.05)
    assert_healthy(server)
    thread.join(30)
    assert result, "the hostile request did not finish"
    return result[0]


def peak_rss_growth_mb(action) -> float:
    """Growth of this process's peak resident memory (the server runs in it) while `action` runs."""
    def read(field: str) -> float:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
        return int(line.split()[1]) / 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except OSError:
        pytest.skip("cannot reset the peak RSS counter here")
    before = read("VmRSS:")
    action()
    return read("VmHWM:") - before


def grpc_code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


# -- case 1: versions, names and labels -------------------------------------------------------

@pytest.mark.parametrize("method, path, status, fragment", [
    ("GET", "/v1/models/optic-disc/versions/" + "9" * 20, 400, "Failed to convert version: 99999"),
    ("GET", "/v1/models/optic-disc/versions/" + "9" * 5000, 400, "to numeric"),
    ("GET", "/v1/models/optic-disc/versions/" + "9" * 5000 + "/metadata", 400, "to numeric"),
    ("POST", "/v1/models/optic-disc/versions/" + "9" * 5000 + ":predict", 400, "to numeric"),
    ("POST", "/v1/models/optic-disc/versions/9223372036854775808:predict", 400, "to numeric"),  # int64 max + 1
    ("POST", "/v1/models/optic-disc/versions/9223372036854775807:predict", 404, "Specific(optic-disc, 9223"),
    ("GET", "/v1/models/optic-disc/versions/0001", 200, "AVAILABLE"),
    ("GET", "/v1/models/optic-disc/versions/%D9%A1", 404, "Malformed request"),  # an Arabic-Indic digit
    ("GET", "/v1/models/" + "n" * 5000, 400, "model name is 5000 characters long"),
    ("POST", "/v1/models/optic-disc/labels/" + "l" * 5000 + ":predict", 400, "version label is 5000 characters"),
])
def test_rest_versions_beyond_int64_and_huge_names_are_client_errors(server, method, path, status, fragment):
    got, body = rest(server, method, path, {"instances": images(0).tolist()} if method == "POST" else None)
    assert got == status
    assert fragment in json.dumps(body) and len(json.dumps(body)) < 2000  # never echoes megabytes
    assert_healthy(server)


@pytest.mark.parametrize("mutate, code, fragment", [
    (lambda r: setattr(r.model_spec, "version_label", "l" * 500_000), grpc.StatusCode.INVALID_ARGUMENT,
     "version label is 500000 characters long"),
    (lambda r: setattr(r.model_spec, "name", "n" * 500_000), grpc.StatusCode.INVALID_ARGUMENT,
     "model name is 500000 characters long"),
    (lambda r: setattr(r.model_spec, "signature_name", "s" * 500_000), grpc.StatusCode.FAILED_PRECONDITION,
     "Serving signature key"),
    (lambda r: r.output_filter.append("\u00e9" * 200_000), grpc.StatusCode.INVALID_ARGUMENT, "alias not found"),
])
def test_grpc_megabyte_names_get_short_clear_errors(server, mutate, code, fragment):
    """The echoed name used to overflow the client's 8 KiB metadata limit (RESOURCE_EXHAUSTED)."""
    request = predict_request("optic-disc", images(0))
    mutate(request)
    predict, _ = stubs(server)
    got, details = grpc_code(lambda: predict.Predict(request, timeout=10))
    assert got == code and fragment in details and len(details.encode()) <= 1000
    assert_healthy(server)


# -- case 2: TensorProto shape claims ---------------------------------------------------------

def claim(shape, dtype=types_pb2.DT_FLOAT, **values) -> dict:
    return {"images": dict(shape=shape, dtype=dtype, **values)}


@pytest.mark.parametrize("inputs, code, fragment", [
    (claim([1000, 128, 128, 4], float_val=[0.5]), grpc.StatusCode.INVALID_ARGUMENT, "would be padded from 1 values"),
    (claim([100000, 128, 128, 4], float_val=[0.5]), grpc.StatusCode.INVALID_ARGUMENT, "would be padded"),
    (claim([100000, 128, 128, 4]), grpc.StatusCode.INVALID_ARGUMENT, "would be padded from 0 values"),
    (claim([2 ** 62, 2 ** 62, 4]), grpc.StatusCode.INVALID_ARGUMENT, "would be padded"),
    (claim([1000, 128, 128, 4], tensor_content=bytes(64)), grpc.StatusCode.INVALID_ARGUMENT,
     "tensor_content holds 64 bytes"),
    (claim([10 ** 7], dtype=types_pb2.DT_STRING, string_val=[b"x"]), grpc.StatusCode.INVALID_ARGUMENT, "padded"),
    (claim([10 ** 7], dtype=types_pb2.DT_STRING, tensor_content=b"x"), grpc.StatusCode.INVALID_ARGUMENT,
     "string tensors cannot use tensor_content"),
    (claim([-1, SIZE, SIZE, 3], float_val=[0.5]), grpc.StatusCode.INVALID_ARGUMENT, "invalid shape [-1, 8, 8, 3]"),
    (claim([1] * 40, float_val=[0.5]), grpc.StatusCode.INVALID_ARGUMENT, "(rank 40)"),
    (claim([1, SIZE, SIZE, 3], float_val=[0.5] * (SIZE * SIZE * 3 + 1)), grpc.StatusCode.INVALID_ARGUMENT,
     "float_val holds 193 values"),
    (claim([1], dtype=999, float_val=[0.5]), grpc.StatusCode.INVALID_ARGUMENT, "dtype 999 is not supported"),
    (claim([200_000], dtype=types_pb2.DT_INT64, int64_val=[1] * 200_000), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "1600000 bytes"),  # consistent, but decodes to more than max_request_bytes (1 MiB)
    ({"images": dict(shape=[150_000], dtype=types_pb2.DT_FLOAT, float_val=[1.0]),  # fine alone, not together
      "extra": dict(shape=[150_000], dtype=types_pb2.DT_FLOAT, float_val=[1.0])},
     grpc.StatusCode.INVALID_ARGUMENT, "the limit is 448576"),
])
def test_grpc_shape_claims_are_refused_before_allocating(server, inputs, code, fragment):
    request = predict_request("optic-disc")
    for key, fields in inputs.items():
        tensor = request.inputs[key]
        for name, value in fields.items():
            if name == "shape":
                tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=size) for size in value)
            elif isinstance(value, list):
                getattr(tensor, name).extend(value)
            else:
                setattr(tensor, name, value)
    predict, _ = stubs(server)
    outcome: list = []

    def send() -> tuple:
        return grpc_code(lambda: predict.Predict(request, timeout=10))

    growth = peak_rss_growth_mb(lambda: outcome.append(while_in_flight(server, send)))
    got, details = outcome[0]
    assert (got, fragment in details) == (code, True), details
    assert growth < 50, f"refusing a {request.ByteSize()}-byte request grew the peak RSS by {growth:.0f} MB"


def test_grpc_float_val_requests_are_still_decoded(server):
    """The legitimate TF forms: one value per element, and TF's padding while it stays small."""
    predict, _ = stubs(server)
    for values in ([0.5] * (2 * SIZE * SIZE * 3), [0.5]):
        request = predict_request("optic-disc")
        tensor = request.inputs["images"]
        tensor.dtype = types_pb2.DT_FLOAT
        for size in (2, SIZE, SIZE, 3):
            tensor.tensor_shape.dim.add(size=size)
        tensor.float_val.extend(values)
        output = tf.make_ndarray(predict.Predict(request, timeout=10).outputs["disc_probability"])
        assert output.shape == (2, SIZE, SIZE, 1)


# -- case 3: hostile JSON ---------------------------------------------------------------------

@pytest.mark.parametrize("body, status, fragment", [
    (b'{"instances":' + b"[" * 40_000 + b"]" * 40_000 + b"}", 400, "nested too deeply"),
    (b'{"instances":' + b"[" * 900 + b"0" + b"]" * 900 + b"}", 400, "cannot read JSON as float"),
    (b'{"instances": [NaN]}', 400, "NaN is not a valid JSON number"),
    (b'{"instances": [[[[Infinity, -Infinity]]]]}', 400, "Infinity is not a valid JSON number"),
    (b'{"instances": ["\xff\xfe"]}', 400, "JSON Parse error"),
    (b'{"instances": [' + b"[]," * 60_000 + b"[]]}", 413, "at most 100000 are accepted"),
    (b'{"instances": [' + b"0," * 200_000 + b"0]}", 413, "JSON values"),
    (b'{"instances": [[[[' + b"1" * 5000 + b"]]]]}", 400, "JSON Parse error"),  # past int()'s digit limit
    (b'{"inputs": {"images": {"b64": 7}}}', 400, "cannot read JSON as float"),
    (b'{"signature_name": "' + b"s" * 500_000 + b'", "instances": [0]}', 400, "Serving signature key"),
])
def test_rest_hostile_json_is_a_client_error(server, body, status, fragment):
    outcome: list = []
    growth = peak_rss_growth_mb(lambda: outcome.append(
        while_in_flight(server, lambda: rest(server, "POST", "/v1/models/optic-disc:predict", body))))
    got, document = outcome[0]
    assert got == status and fragment in document["error"] and len(document["error"]) <= 1000, document
    assert growth < 50


# -- case 5: connection limits ----------------------------------------------------------------

def raw_http(server, data: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    connection.sendall(data)
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def read_response(connection: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body), without waiting for the close."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_rest_half_sent_body_gets_408_and_is_closed(server):
    body = json.dumps({"instances": images(0.5).tolist()}).encode()
    connection = raw_http(server, b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                          + body[:len(body) // 2])
    started = time.monotonic()
    answer = while_in_flight(server, lambda: read_response(connection))
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1s" in answer
    assert b"Connection: close" in answer  # closed once aiohttp's lingering read (<= 10 s) gives up
    assert 0.8 < time.monotonic() - started < 5  # rest_body_timeout_s = 1


def test_rest_unfinished_headers_are_cut_off_by_the_keepalive_timeout(server):
    connection = raw_http(server, b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    assert while_in_flight(server, lambda: read_until_closed(connection)) == b""
    assert 1.5 < time.monotonic() - started < 6  # rest_keepalive_timeout_s = 2


@pytest.mark.parametrize("request_head", [
    b"GET /v1/models/optic-disc HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
    b"GET /v1/models/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/models/optic-disc HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
])
def test_rest_header_limits(server, request_head):
    answer = read_until_closed(raw_http(server, request_head))
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert_healthy(server)


def test_grpc_metadata_limit(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_metadata_size", MiB)])
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request("optic-disc", images(0))
    assert predict.Predict(request, timeout=10, metadata=[("x-ok", "a" * 10_000)]).outputs
    got, details = grpc_code(lambda: predict.Predict(request, timeout=10, metadata=[("x-big", "a" * 40_000)]))
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata" in details
    assert_healthy(server)


def test_concurrency_limits_refuse_the_excess_at_once(tmp_path, publish, start_server):
    from serving.predictor.config import ServerLimits

    publish(tmp_path / "optic-disc", 1)
    limits = ServerLimits(grpc_max_concurrent_rpcs=1, rest_max_concurrent_requests=1)
    server = start_server(config(model_name="optic-disc", model_base_path=tmp_path / "optic-disc", model_threads=1,
                                 limits=limits))
    assert server.wait_until_ready(30)
    gate = threading.Event()
    server._executor.submit(gate.wait, 30)  # the only model thread is busy: requests wait in flight
    predict, _ = stubs(server)
    waiting = predict.Predict.future(predict_request("optic-disc", images(0)), timeout=30)
    rest_waiting: list = []
    rest_thread = threading.Thread(target=lambda: rest_waiting.append(
        rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(0).tolist()})))
    rest_thread.start()
    time.sleep(0.3)
    try:
        got, _ = grpc_code(lambda: predict.Predict(predict_request("optic-disc", images(0)), timeout=10))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
        status, body = rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(0).tolist()})
        assert status == 429 and "already in progress" in body["error"]
    finally:
        gate.set()
    assert waiting.result().outputs
    rest_thread.join(30)
    assert rest_waiting[0][0] == 200


# -- case 6: liveness -------------------------------------------------------------------------

def test_liveness_fails_when_the_poll_task_dies(tmp_path, publish, start_server):
    publish(tmp_path / "optic-disc", 1)
    server = start_server(config(model_name="optic-disc", model_base_path=tmp_path / "optic-disc"))
    assert server.wait_until_ready(30)
    assert rest(server, "GET", "/healthz") == (200, {"status": "alive"})

    server._loop.call_soon_threadsafe(server._poller.cancel)
    eventually(lambda: server._poller.done())
    assert rest(server, "GET", "/healthz") == (503, {"status": "not alive",
                                                     "problems": ["the model repository is no longer polled"]})
    assert rest(server, "GET", "/readyz")[0] == 200  # readiness is unchanged: it still answers


def test_liveness_fails_when_the_predict_pool_is_shut_down(tmp_path, publish, start_server):
    publish(tmp_path / "optic-disc", 1)
    server = start_server(config(model_name="optic-disc", model_base_path=tmp_path / "optic-disc",
                                 file_system_poll_wait_seconds=0))  # polls once: that alone is no problem
    assert server.wait_until_ready(30)
    eventually(lambda: server._poller.done())  # its one poll is over: that alone is no problem
    assert rest(server, "GET", "/healthz")[0] == 200

    server._executor.shutdown()
    status, body = rest(server, "GET", "/healthz")
    assert status == 503 and body["problems"] == ["the predict worker pool is shut down"]
