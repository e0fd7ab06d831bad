"""A small Python client for hospital integrations: images in, disc masks and measurements out.

    from serving.client import RestClient, GrpcClient, overlay

    client = RestClient("http://127.0.0.1:8080")          # or GrpcClient("127.0.0.1:8081")
    [result] = client.segment(["eye.jpg"])                 # paths or bytes; several per request
    result.disc["vertical_diameter_px"], result.model_version
    mask = result.mask()                                   # bool array at the image's size
    Path("eye-overlay.png").write_bytes(overlay(Path("eye.jpg").read_bytes(), mask))

REST speaks KServe v1 (`POST /v1/models/<name>:predict`, images as {"b64": ...}); gRPC speaks the
Open Inference Protocol v2 (`ModelInfer`, raw image bytes both ways, no base64). Both clients
are thread-safe (one connection per thread). Errors raise `SegmentationError` with the server's
message and status.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fundus_seg.errors import FundusSegError
from fundus_seg.paths import DEFAULT_MODEL_NAME

Image = bytes | str | os.PathLike
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_GRPC = "127.0.0.1:8081"


class SegmentationError(FundusSegError):
    """The service refused or failed a request; `status` is the HTTP status or gRPC code name."""

    def __init__(self, message: str, status: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Segmentation:
    """One image's answer."""

    mask_png: bytes
    disc: dict
    model_name: str
    model_version: int | None
    timings_ms: dict = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        """The disc mask as an H x W bool array, at the original image's size."""
        decoded = cv2.imdecode(np.frombuffer(self.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE)
        if decoded is None:
            raise SegmentationError("the service returned a mask that is not a PNG")
        return decoded > 0

    def to_dict(self) -> dict:
        """Everything but the mask bytes (JSON-ready)."""
        return {"disc": self.disc, "model_name": self.model_name, "model_version": self.model_version,
                "timings_ms": self.timings_ms}


def _read(image: Image) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return Path(image).read_bytes()


def _version(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class RestClient:
    """KServe v1 REST: `{"instances": [{"image_bytes": {"b64": ...}}]}`."""

    def __init__(self, url: str = DEFAULT_URL, model_name: str = DEFAULT_MODEL_NAME, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SegmentationError(f"not an http(s) URL: {url!r}")
        self.url, self.model_name, self.timeout = url.rstrip("/"), model_name, timeout
        self._parsed = parsed
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
            connection = kind(self._parsed.hostname, self._parsed.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP exchange on this thread's kept-alive connection (reconnects once if it went stale)."""
        prefix = self._parsed.path.rstrip("/")
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, prefix + path, body=body,
                                   headers={"Content-Type": "application/json"} if body is not None else {})
                response = connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                connection.close()
                self._local.connection = None
                if attempt or not isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                   BrokenPipeError)):
                    raise SegmentationError(f"cannot reach {self.url}: {exc}") from None
        raise AssertionError("unreachable")

    def segment(self, images: Iterable[Image], version: int | str | None = None) -> list[Segmentation]:
        """Segment several images in one request; `version` pins a model version number or label."""
        instances = [{"image_bytes": {"b64": base64.b64encode(_read(i)).decode("ascii")}} for i in images]
        where = "" if version is None else f"/{'versions' if str(version).isdigit() else 'labels'}/{version}"
        status, body = self.request("POST", f"/v1/models/{self.model_name}{where}:predict",
                                    json.dumps({"instances": instances}).encode())
        document = _json(body)
        if status != 200:
            raise SegmentationError(f"HTTP {status}: {document.get('error', body[:200])}", status)
        return [Segmentation(base64.b64decode(p["mask"]["b64"]), p["disc"], p["model_name"],
                             _version(p.get("model_version")), p.get("timings_ms", {}))
                for p in document["predictions"]]

    def ready(self) -> bool:
        try:
            return self.request("GET", f"/v1/models/{self.model_name}")[0] == 200
        except SegmentationError:
            return False

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _json(body: bytes) -> dict:
    try:
        document = json.loads(body)
    except ValueError:
        return {"error": body[:200].decode("utf-8", "replace")}
    return document if isinstance(document, dict) else {"error": str(document)[:200]}


@contextmanager
def _without_argv():
    """Importing kserve parses sys.argv for its server flags; hide the caller's own arguments."""
    saved = sys.argv[:]
    sys.argv[:] = saved[:1]
    try:
        yield
    finally:
        sys.argv[:] = saved


def oip_protos():
    """KServe's Open Inference Protocol v2 gRPC modules (pb2, pb2_grpc)."""
    with _without_argv():
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


class GrpcClient:
    """Open Inference Protocol v2 over gRPC: one BYTES input `image_bytes`, raw bytes both ways."""

    def __init__(self, target: str = DEFAULT_GRPC, model_name: str = DEFAULT_MODEL_NAME, timeout: float = 60.0,
                 max_message_bytes: int = 256 * 1024 * 1024) -> None:
        import grpc

        self.pb, rpc = oip_protos()
        self.target, self.model_name, self.timeout = target, model_name, timeout
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self._stub = rpc.GRPCInferenceServiceStub(self._channel)

    def segment(self, images: Iterable[Image], version: int | str | None = None) -> list[Segmentation]:
        import grpc

        data = [_read(i) for i in images]
        pb = self.pb
        request = pb.ModelInferRequest(
            model_name=self.model_name, model_version="" if version is None else str(version),
            inputs=[pb.ModelInferRequest.InferInputTensor(
                name="image_bytes", datatype="BYTES", shape=[len(data)],
                contents=pb.InferTensorContents(bytes_contents=data))])
        try:
            response = self._stub.ModelInfer(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise SegmentationError(f"{exc.code().name}: {exc.details()}", exc.code().name) from None
        outputs = _outputs(response)
        return [Segmentation(mask, json.loads(disc), response.model_name, _version(response.model_version),
                             json.loads(timings))
                for mask, disc, timings in zip(outputs["mask"], outputs["disc"], outputs["timings_ms"], strict=True)]

    def ready(self) -> bool:
        import grpc

        try:
            return self._stub.ModelReady(self.pb.ModelReadyRequest(name=self.model_name), timeout=5).ready
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self._channel.close()


def _outputs(response) -> dict[str, list[bytes]]:
    """BYTES outputs by name, whether sent as contents or as raw (length-prefixed) buffers."""
    outputs = {}
    for i, output in enumerate(response.outputs):
        if output.contents.bytes_contents:
            outputs[output.name] = list(output.contents.bytes_contents)
        elif i < len(response.raw_output_contents):
            outputs[output.name] = _split_raw(response.raw_output_contents[i])
    missing = {"mask", "disc", "timings_ms"} - outputs.keys()
    if missing:
        raise SegmentationError(f"the response lacks output(s) {sorted(missing)}")
    return outputs


def _split_raw(buffer: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(buffer):
        size = int.from_bytes(buffer[offset:offset + 4], "little")
        items.append(bytes(buffer[offset + 4:offset + 4 + size]))
        offset += 4 + size
    return items


def connect(url: str | None = None, grpc: str | None = None, model_name: str = DEFAULT_MODEL_NAME,
            timeout: float = 60.0) -> RestClient | GrpcClient:
    """A gRPC client when `grpc` (host:port) is given, else a REST client for `url`."""
    if grpc:
        return GrpcClient(grpc, model_name, timeout)
    return RestClient(url or DEFAULT_URL, model_name, timeout)


def overlay(image: Image, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)) -> bytes:
    """PNG of the image with the disc contour drawn on it (the mask must be at the image's size)."""
    from preprocessing.decode import decode_image

    rgb = decode_image(_read(image))
    if rgb.shape[:2] != mask.shape[:2]:
        raise SegmentationError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                f"{rgb.shape[1]}x{rgb.shape[0]}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(2, round(min(mask.shape[:2]) / 250))
    cv2.drawContours(bgr, contours, -1, color[::-1], thickness, lineType=cv2.LINE_AA)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:
        raise SegmentationError("could not encode the overlay")
    return png.tobytes()
