"""Hostile input against `fundus-seg serve` on loopback: both real processes, real sockets.

Every case asserts what the caller gets, that a healthy caller is answered within a second while
the attack is in flight, that the transformer's resident memory stays bounded, and that the
service is still ready afterwards. The predictor's own cases are in tests/serving/predictor/.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from serving.client import GrpcClient, RestClient
from tests.serving.helpers import http, logs_of

pytestmark = pytest.mark.slow
MiB = 1024 * 1024
HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 300


@pytest.fixture(scope="module")
def service(tmp_path_factory, saved_model_template):
    import shutil

    from serving.local_service import LocalService, LocalServiceConfig

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(saved_model_template, root / "repo" / "optic-disc" / "1")
    config = LocalServiceConfig(model_repo=root / "repo", http_port=0, grpc_port=0, predictor_grpc_port=0,
                         predictor_rest_port=0, poll_seconds=0.2, log_dir=root / "logs",
                         extra_transformer_args=["--header_timeout_s", str(HEADER_TIMEOUT_S),
                                                 "--body_timeout_s", "6",
                                                 "--max_connections", str(MAX_CONNECTIONS)])
    with LocalService(config) as stack:
        assert stack.wait_ready(120), logs_of(stack)[-3000:]
        yield stack


@pytest.fixture(scope="module")
def small_jpeg(drishti) -> bytes:
    image = Image.open(drishti[0][0]).convert("RGB")
    image.thumbnail((512, 512))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# -- what every case checks ------------------------------------------------------------------------


class Memory:
    """Resident memory of one process: current, and the peak since `reset` (Linux /proc)."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def _kib(self, field: str) -> int:
        line = next(l for l in self.status.read_text().splitlines() if l.startswith(field + ":"))
        return int(line.split()[1])

    def reset(self) -> int:
        self.clear_refs.write_text("5")  # resets VmHWM to the current RSS
        return self._kib("VmRSS")

    def peak(self) -> int:
        return self._kib("VmHWM")


@contextmanager
def survives(service, small_jpeg: bytes, max_growth_mb: float = 80.0):
    """A healthy caller segments an image (and reads readiness) over and over while the body of
    the `with` attacks; all of them must be answered, each within a second. Afterwards the
    transformer's peak memory grew by less than `max_growth_mb` and the service is ready."""
    memory = Memory(service.processes["transformer"].pid)
    before_kib = memory.reset()
    latencies: list[tuple[str, float, int | str]] = []
    stop = threading.Event()

    def healthy() -> None:
        client = RestClient(service.config.url, timeout=10)
        try:
            while not stop.is_set():
                for what in ("ready", "segment"):
                    started = time.perf_counter()
                    try:
                        outcome = (http(f"{service.config.url}/v2/health/ready")[0] if what == "ready"
                                   else client.segment([small_jpeg])[0].model_version)
                    except Exception as exc:  # recorded, and fails the check below
                        outcome = f"{type(exc).__name__}: {exc}"
                    latencies.append((what, time.perf_counter() - started, outcome))
                time.sleep(0.05)
        finally:
            client.close()

    thread = threading.Thread(target=healthy, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert latencies, "the healthy caller never got to run"
    failed = [(w, o) for w, _, o in latencies if o not in (200, 1)]
    assert not failed, f"healthy requests failed during the attack: {failed[:5]}"
    slowest = max(latencies, key=lambda item: item[1])
    assert slowest[1] < 1.0, f"a healthy {slowest[0]} took {slowest[1]:.2f}s during the attack"
    growth_mb = (memory.peak() - before_kib) / 1024
    print(f"transformer peak resident growth: {growth_mb:.0f} MB")  # `pytest -s` shows it (docs/SERVING.md)
    assert growth_mb < max_growth_mb, f"transformer resident memory grew by {growth_mb:.0f} MB"
    assert service.ready()
    assert RestClient(service.config.url).segment([small_jpeg])[0].model_version == 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_request(service, head: bytes, body_parts=(), read_timeout: float = 30.0) -> tuple[int, bytes]:
    """Send bytes as they are (a client no library would let us be) and read the status line."""
    with socket.create_connection((service.config.host, service.config.http_port), timeout=read_timeout) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass  # the server may answer and close before we are done: read what it said
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


# -- 1. nobody can switch the service off ---------------------------------------------------------


def test_model_repository_endpoints_are_not_served(service, small_jpeg):
    import grpc

    with survives(service, small_jpeg):
        for action in ("unload", "load"):
            status, _ = http(f"{service.config.url}/v2/repository/models/optic-disc/{action}", b"", method="POST")
            assert status == 404
        client = GrpcClient(service.config.grpc_target)
        pb = client.pb
        with pytest.raises(grpc.RpcError) as caught:
            client._stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="optic-disc"))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        client.close()
    assert http(f"{service.config.url}/v2/health/live") == (200, {"live": True})


# -- 2. versions the predictor cannot represent ----------------------------------------------------


@pytest.mark.parametrize("version", ["9" * 5000, str(2**63), "99999999999999999999", "bad~label", "-1", "a" * 65])
def test_absurd_versions_are_400(service, small_jpeg, version):
    import grpc

    body = {"instances": [{"b64": b64(small_jpeg)}]}
    with survives(service, small_jpeg):
        for where in ("versions", "labels"):
            status, answer = http(f"{service.config.url}/v1/models/optic-disc/{where}/{version}:predict", body)
            assert status == 400, answer
        status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict", body,
                              headers={"fundus-seg-model-version": version})
        assert status == 400 and "version" in answer["error"], answer
        status, answer = http(f"{service.config.url}/v2/models/optic-disc/versions/{version}/infer", {
            "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [b64(small_jpeg)]}]})
        assert status == 400, answer
        client = GrpcClient(service.config.grpc_target)
        pb = client.pb
        request = pb.ModelInferRequest(model_name="optic-disc", model_version=version, inputs=[
            pb.ModelInferRequest.InferInputTensor(name="image_bytes", datatype="BYTES", shape=[1],
                                                  contents=pb.InferTensorContents(bytes_contents=[small_jpeg]))])
        with pytest.raises(grpc.RpcError) as caught:
            client._stub.ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        client.close()


# -- 3. valid requests with ordinary content types ------------------------------------------------


def test_json_with_charset_and_octet_stream_images_work(service, small_jpeg):
    with survives(service, small_jpeg):
        status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict",
                              {"instances": [{"b64": b64(small_jpeg)}]},
                              headers={"Content-Type": "application/json; charset=utf-8"})
        assert status == 200 and answer["predictions"][0]["model_version"] == 1, answer
        for content_type in ("application/octet-stream", "image/jpeg", "IMAGE/JPEG; q=1"):
            status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict", small_jpeg,
                                  headers={"Content-Type": content_type})
            assert status == 200, (content_type, answer)
        status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict", small_jpeg,
                              headers={"Content-Type": "text/csv"})
        assert status == 415 and "Content-Type" in answer["error"]


# -- 4. size limits hold for chunked bodies too ----------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/models/optic-disc/infer", "/v1/models/optic-disc:predict"])
def test_chunked_body_over_the_limit_is_413(service, small_jpeg, path):
    chunk = b"A" * MiB

    def chunks():
        for _ in range(70):  # 70 MiB, more than the 64 MiB limit, without a Content-Length
            yield b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        yield b"0\r\n\r\n"

    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    with survives(service, small_jpeg, max_growth_mb=120):
        status, answer = raw_request(service, head, chunks())
    assert status == 413, answer[:300]


# -- 5. counted before decoding --------------------------------------------------------------------


def test_a_million_tiny_instances_are_refused_before_parsing(service, small_jpeg):
    import grpc

    body = json.dumps({"instances": [{"b64": ""}] * 1_000_000}).encode()
    nested = b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with survives(service, small_jpeg, max_growth_mb=60):
        for payload in (body, nested):
            started = time.perf_counter()
            status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict", payload)
            assert status == 400 and "images" in answer["error"], answer
            assert time.perf_counter() - started < 2.0
        v2 = json.dumps({"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1_000_000],
                                     "data": [""] * 1_000_000}]}).encode()
        status, answer = http(f"{service.config.url}/v2/models/optic-disc/infer", v2)
        assert status == 400, answer
        client = GrpcClient(service.config.grpc_target)
        pb = client.pb
        request = pb.ModelInferRequest(model_name="optic-disc", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="image_bytes", datatype="BYTES", shape=[1_000_000],
            contents=pb.InferTensorContents(bytes_contents=[b""] * 1_000_000))])
        with pytest.raises(grpc.RpcError) as caught:
            client._stub.ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 16" in caught.value.details()
        client.close()


# -- 6. decoding is bounded and never on the event loop --------------------------------------------


def many_scans_jpeg(scans: int) -> bytes:
    """A tiny progressive JPEG whose shortest scan is repeated: thousands of scans in a few dozen KB."""
    buffer = io.BytesIO()
    Image.new("L", (2048, 2048), 128).save(buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"] + [len(data) - 2]
    start, end = min(zip(starts, starts[1:]), key=lambda pair: pair[1] - pair[0])
    return data[:-2] + data[start:end] * scans + b"\xff\xd9"


def big_png(side: int) -> bytes:
    image = np.zeros((side, side, 3), np.uint8)
    cv2.circle(image, (side // 2, side // 2), side // 3, (230, 180, 90), -1)
    ok, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return png.tobytes()


def test_a_jpeg_of_thousands_of_scans_is_refused_without_decoding(service, small_jpeg):
    bomb = many_scans_jpeg(3000)
    assert len(bomb) < 64 * 1024
    with survives(service, small_jpeg):
        started = time.perf_counter()
        status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict", bomb,
                              headers={"Content-Type": "image/jpeg"})
        assert status == 400 and "scans" in answer["error"], answer
        assert time.perf_counter() - started < 1.0


def test_two_largest_allowed_images_fit_the_memory_budget(service, small_jpeg):
    """Two 6320x6320 PNGs (40 MP each, 128 KB on the wire): valid, so 200, but decoded one at a
    time within the pixel budget, while small requests keep flowing. The bound: a two-stage version keeps
    the first photo decoded for its crop (the retained budget, 40 MP = 120 MB) while the second decodes
    (Pillow's image and its array, 2 x 120 MB), plus allocator slack; docs/SERVING.md "Memory"."""
    png = big_png(6320)
    assert len(png) < 1 * MiB
    with survives(service, small_jpeg, max_growth_mb=750):
        status, answer = http(f"{service.config.url}/v1/models/optic-disc:predict",
                              {"instances": [{"b64": b64(png)}, {"b64": b64(png)}]})
        assert status == 200, answer
        assert answer["predictions"][0]["disc"]["bbox"] is not None


# -- 8. slow and oversized connections --------------------------------------------------------------


def test_half_sent_headers_and_bodies_are_cut_off(service, small_jpeg):
    sockets = []
    with survives(service, small_jpeg):
        for i in range(256):
            sock = socket.create_connection((service.config.host, service.config.http_port), timeout=10)
            if i % 2:
                sock.sendall(b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                sock.sendall(b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" + small_jpeg[:100])
            sockets.append(sock)
        time.sleep(HEADER_TIMEOUT_S + 1.5)
        statuses = []
        for sock in sockets:
            try:
                answer = sock.recv(4096)
            except OSError:
                answer = b""
            statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0)
            sock.close()
    assert statuses.count(408) == 256, sorted(set(statuses))


def test_oversized_headers_are_431(service, small_jpeg):
    """Refused before they are held: httptools buffers a header until it is whole, so a 32 MiB one is counted as
    its bytes arrive (it grew the transformer by 94 MB once malloc kept freed blocks, before)."""
    with survives(service, small_jpeg, max_growth_mb=20):
        for head in (b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 * MiB) + b"\r\n\r\n",
                     b"GET /" + b"a" * (1 * MiB) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20_000)) + b"\r\n"):
            status, answer = raw_request(service, head)
            assert status == 431, answer[:200]


def test_connections_beyond_the_cap_are_refused_and_the_rest_served(service, small_jpeg):
    sockets, refused = [], 0
    try:
        for _ in range(MAX_CONNECTIONS + 40):
            sockets.append(socket.create_connection((service.config.host, service.config.http_port), timeout=10))
        time.sleep(0.5)
        for sock in sockets[-40:]:
            sock.settimeout(2)
            try:
                refused += sock.recv(4096).startswith(b"HTTP/1.1 503")
            except OSError:
                pass
    finally:
        for sock in sockets:
            sock.close()
    assert refused >= 30
    assert service.ready()
    assert RestClient(service.config.url).segment([small_jpeg])[0].model_version == 1


def test_bad_content_length_and_binary_extension(service, small_jpeg):
    with survives(service, small_jpeg):
        for head in (b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1e9\r\n\r\n",
                     b"POST /v1/models/optic-disc:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"):
            status, _ = raw_request(service, head)
            assert status == 400
        connection = HTTPConnection(service.config.host, service.config.http_port, timeout=30)
        connection.request("POST", "/v1/models/optic-disc:predict", body=b"x" * (65 * MiB),
                           headers={"Content-Type": "image/jpeg"})
        assert connection.getresponse().status == 413
        connection.close()


def test_grpc_oversized_metadata_is_refused(service, small_jpeg):
    import grpc

    client = GrpcClient(service.config.grpc_target)
    pb = client.pb
    request = pb.ModelInferRequest(model_name="optic-disc", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="image_bytes", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[small_jpeg]))])
    with survives(service, small_jpeg):
        with pytest.raises(grpc.RpcError) as caught:
            client._stub.ModelInfer(request, metadata=[("x-big", "a" * (1 * MiB))])
        assert caught.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                                       grpc.StatusCode.UNAVAILABLE)
        assert client.segment([small_jpeg])[0].model_version == 1
    client.close()
