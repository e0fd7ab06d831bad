"""The transformer's wire formats, decoded to one `ImageBatch` and encoded from one result list.

Accepted (several images per request everywhere):

* KServe/TF Serving v1 JSON: ``{"instances": [{"image_bytes": {"b64": "..."}}, ...]}`` (a bare
  ``{"b64": "..."}`` instance works too) -> ``{"predictions": [{"mask": {"b64": PNG}, "disc": {...},
  "model_name": ..., "model_version": N, "timings_ms": {...}}]}``.
* A raw JPEG/PNG body (``Content-Type: image/jpeg``): one image, answered like v1.
* Open Inference Protocol v2 (REST and gRPC): one ``BYTES`` input of shape ``[N]`` -> outputs
  ``mask`` (PNG; raw bytes over gRPC, base64 text over REST JSON, which cannot carry binary),
  ``disc`` and ``timings_ms`` (JSON text), plus the response's ``model_name``/``model_version``.

Every problem with the request raises KServe's `InvalidInput` (HTTP 400, gRPC INVALID_ARGUMENT)
whose message names the offending image; image bytes never appear in a message.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

V1, RAW, V2_REST, V2_GRPC = "v1", "raw", "v2-rest", "v2-grpc"
IMAGE_KEYS = ("image_bytes", "b64")
INT64_MAX = 2**63 - 1
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def parse_version(text: str | None) -> str | None:
    """A caller's version (route, header or gRPC field): a number within int64 (TF Serving's
    version type) or a label; anything else is the caller's mistake, said before it goes further."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise InvalidInput(f"model version must be a string, got {type(text).__name__}")
    if text.isascii() and text.isdigit():
        if len(text) > 19 or int(text) > INT64_MAX:
            raise InvalidInput(f"model version {text[:24]}{'...' if len(text) > 24 else ''} is not a "
                               f"version number (at most {INT64_MAX})")
        return str(int(text))
    if not _LABEL.fullmatch(text):
        raise InvalidInput("model version must be a number or a label of letters, digits, '_', '.', '-' "
                           "(at most 64, not starting with a digit)")
    return text


def json_structure_fits(body: bytes, max_images: int) -> bool:
    """Whether a JSON body could be a request of at most `max_images` images, judged from its bytes
    before it is parsed: every instance costs a few '{', '[' or ',' and base64 holds none of them, so
    a body with more than a request ever needs (a million tiny instances, deep nesting) is refused
    without building a single Python object."""
    budget = 256 + 8 * max_images
    return body.count(b"{") + body.count(b"[") + body.count(b",") <= budget


@dataclass
class ImageBatch:
    """The images of one request and how to answer it."""

    images: list[bytes]
    protocol: str  # V1, RAW, V2_REST or V2_GRPC
    version: str | None = None  # a version number or label the caller asked for
    request_id: str | None = None


@dataclass
class ImageAnswer:
    """One image's answer, protocol-neutral."""

    mask_png: bytes
    disc: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)


def decode_request(payload: Any, max_images: int, version: str | None = None) -> ImageBatch:
    """Any accepted request body (dict, raw bytes or InferRequest) -> ImageBatch."""
    version = parse_version(version)
    if isinstance(payload, InferRequest):
        _check_count(_v2_count(payload), max_images)
        batch = ImageBatch(_v2_images(payload), V2_GRPC if payload.from_grpc else V2_REST,
                           version or parse_version(payload.model_version), payload.id)
    elif isinstance(payload, (bytes, bytearray)):
        batch = ImageBatch([bytes(payload)], RAW, version)
    elif isinstance(payload, dict):
        batch = ImageBatch(_v1_images(payload, max_images), V1, version)
    else:
        raise InvalidInput(f"expected a JSON object with 'instances', got {type(payload).__name__}")
    _check_count(len(batch.images), max_images)
    return batch


def _check_count(count: int, max_images: int) -> None:
    if count == 0:
        raise InvalidInput("the request holds no images")
    if count > max_images:
        raise InvalidInput(f"the request holds {count} images, more than the limit of {max_images}; "
                           "split it into several requests")


def _v2_count(request: InferRequest) -> int:
    """Images a v2 request claims, read before any element is converted."""
    if len(request.inputs) != 1:
        names = [str(i.name)[:64] for i in request.inputs[:8]]
        raise InvalidInput(f"expected exactly one BYTES input (the images), got {len(request.inputs)}: {names}")
    shape = request.inputs[0].shape
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {str(request.inputs[0].name)[:64]!r}: shape must be a list of sizes >= 0")
    count = 1
    for size in shape:
        count *= size
        if count > INT64_MAX:
            break
    return count


def _v1_images(body: dict, max_images: int) -> list[bytes]:
    instances = body.get("instances")
    if instances is None:
        keys = ", ".join(sorted(map(str, body))) or "none"
        raise InvalidInput(f'expected {{"instances": [{{"image_bytes": {{"b64": "..."}}}}]}}; got keys: {keys}')
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list')
    _check_count(len(instances), max_images)
    return [_v1_instance(i, instance) for i, instance in enumerate(instances)]


def _v1_instance(index: int, instance: Any) -> bytes:
    where = f"instance {index}"
    if isinstance(instance, dict) and "image_bytes" in instance:
        instance, where = instance["image_bytes"], f"instance {index}: image_bytes"
    if not (isinstance(instance, dict) and set(instance) == {"b64"}):
        raise InvalidInput(f'{where}: expected {{"image_bytes": {{"b64": "<base64 JPEG or PNG>"}}}}')
    return _b64decode(instance["b64"], where)


def _b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: b64 must be a string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None


def _v2_images(request: InferRequest) -> list[bytes]:
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidInput(f"expected exactly one BYTES input (the images), got {len(names)}: {names}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} must have datatype BYTES (encoded JPEG/PNG), "
                           f"got {tensor.datatype}")
    try:
        elements = tensor.as_numpy().ravel().tolist() if tensor._raw_data is not None else _flatten(tensor.data)
    except Exception:  # malformed raw tensor
        raise InvalidInput(f"input {tensor.name!r}: cannot read the BYTES tensor") from None
    if len(elements) != _v2_count(request):
        raise InvalidInput(f"input {tensor.name!r} holds {len(elements)} elements but its shape "
                           f"{list(tensor.shape)} says {_v2_count(request)}")
    images = []
    for i, element in enumerate(elements):
        if isinstance(element, (bytes, bytearray)):
            images.append(bytes(element))  # gRPC carries the image itself
        else:
            images.append(_b64decode(element, f"input {tensor.name!r} element {i}"))  # REST JSON: base64 text
    return images


def _flatten(data: Any) -> list:
    if data is None:
        return []
    if isinstance(data, (list, tuple)):
        return [x for item in data for x in _flatten(item)]
    return [data]


# -- responses ----------------------------------------------------------------------------------


def encode_response(batch: ImageBatch, results: list[ImageAnswer], model_name: str,
                    model_version: int) -> dict | InferResponse:
    if batch.protocol in (V2_REST, V2_GRPC):
        return encode_v2(batch, results, model_name, model_version)
    return encode_v1(results, model_name, model_version)


def encode_v1(results: list[ImageAnswer], model_name: str, model_version: int) -> dict:
    return {"predictions": [{
        "mask": {"b64": base64.b64encode(r.mask_png).decode("ascii")},
        "disc": r.disc,
        "model_name": model_name,
        "model_version": model_version,
        "timings_ms": r.timings_ms,
    } for r in results]}


def encode_v2(batch: ImageBatch, results: list[ImageAnswer], model_name: str, model_version: int) -> InferResponse:
    grpc = batch.protocol == V2_GRPC
    masks = [r.mask_png if grpc else base64.b64encode(r.mask_png).decode("ascii") for r in results]
    n = len(results)
    outputs = [
        InferOutput("mask", [n], "BYTES", masks,
                    parameters={"content_type": "image/png", **({} if grpc else {"encoding": "base64"})}),
        InferOutput("disc", [n], "BYTES", [json.dumps(r.disc) for r in results],
                    parameters={"content_type": "application/json"}),
        InferOutput("timings_ms", [n], "BYTES", [json.dumps(r.timings_ms) for r in results],
                    parameters={"content_type": "application/json"}),
    ]
    return InferResponse(response_id=batch.request_id or str(uuid.uuid4()), model_name=model_name,
                         model_version=str(model_version), infer_outputs=outputs)
