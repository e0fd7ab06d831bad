"""A small Python client for hospital integrations: images in, disc (and cup) masks and measurements out.

    from serving.client import RestClient, GrpcClient, overlay

    client = RestClient("http://127.0.0.1:8080")          # or GrpcClient("127.0.0.1:8081")
    [result] = client.segment(["eye.jpg"], laterality="R") # paths or bytes; several per request
    result.disc["vertical_diameter_px"], result.model_version
    result.measurements.vcdr, result.confidence.low        # measurements: None for a single-stage model
    mask, cup = result.mask(), result.cup_mask()           # bool arrays at the image's size (cup: None)
    Path("eye-overlay.png").write_bytes(overlay(Path("eye.jpg").read_bytes(), result))

REST speaks KServe v1 (`POST /v1/models/<name>:predict`, images as {"b64": ...}); gRPC speaks the
Open Inference Protocol v2 (`ModelInfer`, raw image bytes both ways, no base64). Both clients
are thread-safe (one connection per thread). Errors raise `SegmentationError` with the server's
message and status. The answer's wire form is `serving.transformer.codec`'s; this module is its
one reader on the client side.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True)
class Confidence:
    """How much to trust an answer: `low` answers (not a fundus photo, no disc found, ...) must not be read as
    a confident disc; `reasons` say why in words, `codes` in stable names (`preprocessing.confidence`)."""

    score: float
    low: bool
    reasons: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, document: dict) -> Confidence:
        return cls(float(document["score"]), bool(document["low"]), tuple(document.get("reasons") or ()),
                   tuple(document.get("codes") or ()))

    def to_dict(self) -> dict:
        return {"score": self.score, "low": self.low, "reasons": list(self.reasons), "codes": list(self.codes)}


@dataclass(frozen=True)
class Sectors:
    """One value per 90-degree sector of the disc. With the eye's laterality known the horizontal sectors are
    `nasal`/`temporal`; without it they are the image's `left`/`right` (the others are then None)."""

    superior: float
    inferior: float
    nasal: float | None = None
    temporal: float | None = None
    left: float | None = None
    right: float | None = None

    @classmethod
    def from_dict(cls, document: dict) -> Sectors:
        return cls(**{k: document.get(k) for k in ("superior", "inferior", "nasal", "temporal", "left", "right")})

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Measurements:
    """The glaucoma measurements of the disc and cup (`preprocessing.measurements`): pixels of the image."""

    laterality: str | None
    vcdr: float
    hcdr: float
    area_cdr: float
    rim_to_disc: float
    rim_width_px: Sectors
    isnt_holds: bool | None  # None without laterality
    rim_to_radius: Sectors | None = None
    more: dict = field(default_factory=dict, compare=False)  # disc_center, areas and extents, as sent

    @classmethod
    def from_dict(cls, document: dict) -> Measurements:
        own = {"laterality", "vcdr", "hcdr", "area_cdr", "rim_to_disc", "rim_width_px", "isnt_holds", "rim_to_radius"}
        radius = document.get("rim_to_radius")
        return cls(document.get("laterality"), float(document["vcdr"]), float(document["hcdr"]),
                   float(document["area_cdr"]), float(document["rim_to_disc"]),
                   Sectors.from_dict(document["rim_width_px"]), document.get("isnt_holds"),
                   Sectors.from_dict(radius) if isinstance(radius, dict) else None,
                   {k: v for k, v in document.items() if k not in own})

    def to_dict(self) -> dict:
        return {"laterality": self.laterality, "vcdr": self.vcdr, "hcdr": self.hcdr, "area_cdr": self.area_cdr,
                "rim_to_disc": self.rim_to_disc, "rim_width_px": self.rim_width_px.to_dict(),
                **({"rim_to_radius": self.rim_to_radius.to_dict()} if self.rim_to_radius else {}),
                "isnt_holds": self.isnt_holds, **self.more}


@dataclass
class Segmentation:
    """One image's answer. `cup`, `cup_png` and `measurements` are None for a single-stage model (no cup
    stage), `measurements` also when no disc was found; `confidence` is None only from a service that
    predates it."""

    mask_png: bytes
    disc: dict
    model_name: str
    model_version: int | None
    timings_ms: dict = field(default_factory=dict)
    cup_png: bytes | None = None
    cup: dict | None = None  # the cup's geometry, in the form of `disc`
    measurements: Measurements | None = None
    confidence: Confidence | None = None
    pipeline: str | None = None  # "two-stage" or "single-stage"

    @classmethod
    def from_parts(cls, mask_png: bytes, disc: dict, model_name: str, model_version, timings_ms: dict | None,
                   cup_png: bytes | None, cup: dict | None, measurements: dict | None, confidence: dict | None,
                   pipeline: str | None) -> Segmentation:
        """From the wire's pieces (either protocol's)."""
        return cls(mask_png, disc, model_name, _version(model_version), timings_ms or {},
                   cup_png if cup is not None else None, cup,
                   Measurements.from_dict(measurements) if measurements else None,
                   Confidence.from_dict(confidence) if confidence else None, pipeline)

    def mask(self) -> np.ndarray:
        """The disc mask as an H x W bool array, at the original image's size."""
        return _png_mask(self.mask_png)

    def cup_mask(self) -> np.ndarray | None:
        """The cup mask like `mask()`; None when the model has no cup stage."""
        return None if self.cup_png is None else _png_mask(self.cup_png)

    def to_dict(self) -> dict:
        """Everything but the mask bytes (JSON-ready)."""
        return {"disc": self.disc, "cup": self.cup,
                "measurements": self.measurements.to_dict() if self.measurements else None,
                "confidence": self.confidence.to_dict() if self.confidence else None, "pipeline": self.pipeline,
                "model_name": self.model_name, "model_version": self.model_version, "timings_ms": self.timings_ms}


def _png_mask(png: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if decoded is None:
        raise SegmentationError("the service returned a mask that is not a PNG")
    return decoded > 0


def _sides(laterality: str | Sequence[str | None] | None, count: int) -> list[str | None]:
    """One laterality per image: the same for all (a str), one each (a sequence), or none."""
    if laterality is None or isinstance(laterality, str):
        return [laterality] * count
    sides = list(laterality)
    if len(sides) != count:
        raise SegmentationError(f"{len(sides)} lateralities for {count} images")
    return sides


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

    def segment(self, images: Iterable[Image], version: int | str | None = None,
                laterality: str | Sequence[str | None] | None = None) -> list[Segmentation]:
        """Segment several images in one request; `version` pins a model version number or label;
        `laterality` ("L"/"R", one for all images or one each) names the horizontal sectors nasal/temporal."""
        data = [_read(i) for i in images]
        instances = [{"image_bytes": {"b64": base64.b64encode(d).decode("ascii")},
                      **({"laterality": side} if side is not None else {})}
                     for d, side in zip(data, _sides(laterality, len(data)), strict=True)]
        where = "" if version is None else f"/{'versions' if str(version).isdigit() else 'labels'}/{version}"
        status, body = self.request("POST", f"/v1/models/{self.model_name}{where}:predict",
                                    json.dumps({"instances": instances}).encode())
        document = _json(body)
        if status != 200:
            raise SegmentationError(f"HTTP {status}: {document.get('error', body[:200])}", status)
        return [Segmentation.from_parts(
                    base64.b64decode(p["mask"]["b64"]), p["disc"], p["model_name"], p.get("model_version"),
                    p.get("timings_ms"), base64.b64decode(p["cup"]["mask"]["b64"]) if p.get("cup") else None,
                    {k: v for k, v in p["cup"].items() if k != "mask"} if p.get("cup") else None,
                    p.get("measurements"), p.get("confidence"), p.get("pipeline"))
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

    def segment(self, images: Iterable[Image], version: int | str | None = None,
                laterality: str | Sequence[str | None] | None = None) -> list[Segmentation]:
        """As `RestClient.segment`; the lateralities travel as a second BYTES input `laterality`."""
        import grpc

        data = [_read(i) for i in images]
        sides = _sides(laterality, len(data))
        pb = self.pb
        inputs = [pb.ModelInferRequest.InferInputTensor(name="image_bytes", datatype="BYTES", shape=[len(data)],
                                                        contents=pb.InferTensorContents(bytes_contents=data))]
        if any(side is not None for side in sides):
            inputs.append(pb.ModelInferRequest.InferInputTensor(
                name="laterality", datatype="BYTES", shape=[len(data)],
                contents=pb.InferTensorContents(bytes_contents=[(s or "").encode() for s in sides])))
        request = pb.ModelInferRequest(model_name=self.model_name,
                                       model_version="" if version is None else str(version), inputs=inputs)
        try:
            response = self._stub.ModelInfer(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise SegmentationError(f"{exc.code().name}: {exc.details()}", exc.code().name) from None
        outputs = _outputs(response)
        n = len(outputs["mask"])

        def column(name: str, parse=json.loads) -> list:
            return [parse(x) for x in outputs[name]] if name in outputs else [None] * n

        return [Segmentation.from_parts(mask, disc, response.model_name, response.model_version, timings, cup_png,
                                        cup, measurements, confidence, pipeline)
                for mask, disc, timings, cup_png, cup, measurements, confidence, pipeline in zip(
                    outputs["mask"], column("disc"), column("timings_ms"), column("cup_mask", bytes), column("cup"),
                    column("measurements"), column("confidence"), column("pipeline", bytes.decode), strict=True)]

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


DISC_COLOUR, CUP_COLOUR, TEXT_COLOUR, LOW_COLOUR = (0, 255, 0), (0, 140, 255), (255, 255, 255), (255, 40, 40)


def overlay(image: Image, answer: Segmentation | np.ndarray, color: tuple[int, int, int] = DISC_COLOUR,
            cup_color: tuple[int, int, int] = CUP_COLOUR) -> bytes:
    """PNG of the image with the disc contour (green) and, where the answer has one, the cup contour (blue)
    drawn on it, and in the top-left corner the vCDR and "LOW CONFIDENCE" when the answer is low.
    `answer` is a `Segmentation`, or just a disc mask at the image's size (RGB colours)."""
    from preprocessing.decode import decode_image

    rgb = decode_image(_read(image))
    if isinstance(answer, Segmentation):
        mask, cup = answer.mask(), answer.cup_mask()
        lines = [f"vCDR {answer.measurements.vcdr:.2f}"] if answer.measurements is not None else []
        low = answer.confidence is not None and answer.confidence.low
    else:
        mask, cup, lines, low = np.asarray(answer), None, [], False
    if rgb.shape[:2] != mask.shape[:2] or (cup is not None and cup.shape != mask.shape):
        raise SegmentationError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                f"{rgb.shape[1]}x{rgb.shape[0]}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(2, round(min(mask.shape[:2]) / 250))
    for outline, colour in ((mask, color), (cup, cup_color)):
        if outline is not None:
            contours, _ = cv2.findContours(outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(bgr, contours, -1, colour[::-1], thickness, lineType=cv2.LINE_AA)
    scale = max(0.6, min(mask.shape[:2]) / 700)
    y = 0
    for text, colour in [(line, TEXT_COLOUR) for line in lines] + ([("LOW CONFIDENCE", LOW_COLOUR)] if low else []):
        (_, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        y += int(height * 1.6)
        origin = (int(height * 0.6), y)
        cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness * 3, cv2.LINE_AA)
        cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour[::-1], thickness, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:
        raise SegmentationError("could not encode the overlay")
    return png.tobytes()
