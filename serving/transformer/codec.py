"""The transformer's wire formats, decoded to one `ImageBatch` and encoded from one result list.

Accepted (several images per request everywhere; `laterality` is optional, "L" or "R", per image):

* KServe/TF Serving v1 JSON: ``{"instances": [{"image_bytes": {"b64": "..."}, "laterality": "L"}, ...]}``
  (a bare ``{"b64": "...", "laterality": "R"}`` instance works too; ``laterality`` may be absent or null).
* A raw JPEG/PNG body (``Content-Type: image/jpeg``): one image, answered like v1; its laterality in
  the header ``fundus-seg-laterality: L`` or the query ``?laterality=L`` (the server passes both as
  the header; for a JSON body the header is refused: laterality goes in each instance).
* Open Inference Protocol v2 (REST and gRPC): one ``BYTES`` input of shape ``[N]`` (any name), the
  images, and optionally a second ``BYTES`` input named ``laterality`` of the same shape, each element
  ``"L"``, ``"R"`` or ``""`` (unknown).

Answered, per image (v1 ``{"predictions": [...]}``, one object per image, in order):

    {"mask": {"b64": PNG}, "disc": GEOMETRY, "cup": {"mask": {"b64": PNG}, **GEOMETRY} | null,
     "measurements": MEASUREMENTS | null, "confidence": {"score", "low", "reasons", "codes"},
     "pipeline": "two-stage" | "single-stage", "model_name": ..., "model_version": N, "timings_ms": {...}}

GEOMETRY is `preprocessing.geometry.DiscGeometry.to_dict()` (pixels of the original image, rounded to
0.01); MEASUREMENTS is `preprocessing.measurements.Measurements.to_dict()`; the confidence is
`preprocessing.confidence.Confidence.to_dict()`. ``cup`` is null for a single-stage version (it has no
cup stage); ``measurements`` is null then, and when no disc was found. OIP v2 answers the same with
outputs of shape ``[N]``: ``mask`` and ``cup_mask`` (PNG; raw bytes over gRPC, base64 text over REST
JSON, which cannot carry binary; an empty element where ``cup`` is null), ``disc``, ``cup``,
``measurements``, ``confidence`` and ``timings_ms`` (JSON text each; ``null`` where v1 has null),
``pipeline`` (text), plus the response's ``model_name``/``model_version``.

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

from serving.transformer.result import ImageAnswer

V1, RAW, V2_REST, V2_GRPC = "v1", "raw", "v2-rest", "v2-grpc"
LATERALITY = "laterality"  # the v1 instance key and the v2 input name
IMAGE_FIELDS = ("image_bytes", "dicom")  # v1: {"image_bytes": {"b64": JPEG/PNG/DICOM}} or {"dicom": {"b64": DICOM}}
LATERALITIES = ("L", "R")
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


def parse_laterality(value: Any, where: str) -> str | None:
    """"L" or "R"; None (or "": unknown) when absent; anything else is refused, without echoing much of it."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput(f'{where}: laterality must be "L" or "R" (or absent), got non-ASCII bytes') from None
    if value is None or value == "":
        return None
    if isinstance(value, str) and value in LATERALITIES:
        return value
    shown = repr(value)[:16] + ("..." if len(repr(value)) > 16 else "")
    raise InvalidInput(f'{where}: laterality must be "L" (left eye) or "R" (right eye), or absent; got {shown}')


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
    lateralities: list[str | None] = field(default_factory=list)  # per image: "L", "R" or None (unknown)

    def __post_init__(self) -> None:
        if not self.lateralities:
            self.lateralities = [None] * len(self.images)


def decode_request(payload: Any, max_images: int, version: str | None = None,
                   laterality: str | None = None) -> ImageBatch:
    """Any accepted request body (dict, raw bytes or InferRequest) -> ImageBatch.

    `version` and `laterality` come from the route or headers; `laterality` applies to a raw image body only."""
    version = parse_version(version)
    laterality = parse_laterality(laterality, "the laterality header")
    if laterality is not None and not isinstance(payload, (bytes, bytearray)):
        raise InvalidInput('the laterality header (or ?laterality=) is for a raw image body; in JSON give each '
                           'image its own: v1 {"image_bytes": {...}, "laterality": "L"}, v2 an input "laterality"')
    if isinstance(payload, InferRequest):
        images_input, laterality_input = _v2_inputs(payload)
        _check_count(_v2_count(images_input), max_images)
        images = _v2_elements(images_input, "images")
        lateralities = ([parse_laterality(e, f"input {LATERALITY!r} element {i}")
                         for i, e in enumerate(_v2_elements(laterality_input, LATERALITY))]
                        if laterality_input is not None else [])
        batch = ImageBatch([_v2_image(e, images_input.name, i) for i, e in enumerate(images)],
                           V2_GRPC if payload.from_grpc else V2_REST,
                           version or parse_version(payload.model_version), payload.id, lateralities)
    elif isinstance(payload, (bytes, bytearray)):
        batch = ImageBatch([bytes(payload)], RAW, version, lateralities=[laterality])
    elif isinstance(payload, dict):
        pairs = _v1_images(payload, max_images)
        batch = ImageBatch([image for image, _ in pairs], V1, version, lateralities=[side for _, side in pairs])
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


def _v2_inputs(request: InferRequest):
    """(images input, laterality input or None): one BYTES input, or two where the second is named 'laterality'."""
    inputs = request.inputs
    others = [i for i in inputs if i.name != LATERALITY]
    sides = [i for i in inputs if i.name == LATERALITY]
    if len(inputs) not in (1, 2) or len(others) != 1 or len(sides) > 1:
        names = [str(i.name)[:64] for i in inputs[:8]]
        raise InvalidInput(f"expected one BYTES input (the images) and optionally a BYTES input {LATERALITY!r} of "
                           f"the same shape; got {len(inputs)}: {names}")
    images = others[0]
    side = sides[0] if sides else None
    if side is not None:
        _v2_count(side)  # a well-formed shape before it is compared
        if list(side.shape) != list(images.shape):
            raise InvalidInput(f"input {LATERALITY!r} has shape {list(side.shape)[:8]}, the images "
                               f"{list(images.shape)[:8]}: give one laterality (\"L\", \"R\" or \"\") per image")
    return images, side


def _v2_count(tensor) -> int:
    """Elements an input claims, read before any element is converted."""
    shape = tensor.shape
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {str(tensor.name)[:64]!r}: shape must be a list of sizes >= 0")
    count = 1
    for size in shape:
        count *= size
        if count > INT64_MAX:
            break
    return count


def _v1_images(body: dict, max_images: int) -> list[tuple[bytes, str | None]]:
    instances = body.get("instances")
    if instances is None:
        keys = ", ".join(sorted(map(str, body))) or "none"
        raise InvalidInput(f'expected {{"instances": [{{"image_bytes": {{"b64": "..."}}}}]}}; got keys: {keys}')
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list')
    _check_count(len(instances), max_images)
    return [_v1_instance(i, instance) for i, instance in enumerate(instances)]


def _v1_instance(index: int, instance: Any) -> tuple[bytes, str | None]:
    where = f"instance {index}"
    side = parse_laterality(instance.get(LATERALITY), where) if isinstance(instance, dict) else None
    if isinstance(instance, dict) and (key := next((k for k in IMAGE_FIELDS if k in instance), None)):
        instance, where = instance[key], f"instance {index}: {key}"
    elif isinstance(instance, dict):
        instance = {k: v for k, v in instance.items() if k != LATERALITY}
    if not (isinstance(instance, dict) and set(instance) == {"b64"}):
        raise InvalidInput(f'{where}: expected {{"image_bytes": {{"b64": "<base64 JPEG or PNG>"}}}} '
                           f'or {{"dicom": {{"b64": "<base64 DICOM file>"}}}}')
    return _b64decode(instance["b64"], where), side


def _b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: b64 must be a string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None


def _v2_elements(tensor, what: str) -> list:
    """A BYTES input's elements (bytes over gRPC, text over REST), as many as its shape says."""
    if tensor.datatype != "BYTES":
        kind = "encoded JPEG/PNG" if what == "images" else '"L", "R" or ""'
        raise InvalidInput(f"input {tensor.name!r} must have datatype BYTES ({kind}), got {tensor.datatype}")
    try:
        elements = tensor.as_numpy().ravel().tolist() if tensor._raw_data is not None else _flatten(tensor.data)
    except Exception:  # malformed raw tensor
        raise InvalidInput(f"input {tensor.name!r}: cannot read the BYTES tensor") from None
    if len(elements) != _v2_count(tensor):
        raise InvalidInput(f"input {tensor.name!r} holds {len(elements)} elements but its shape "
                           f"{list(tensor.shape)} says {_v2_count(tensor)}")
    return elements


def _v2_image(element: Any, name: str, index: int) -> bytes:
    if isinstance(element, (bytes, bytearray)):
        return bytes(element)  # gRPC carries the image itself
    return _b64decode(element, f"input {name!r} element {index}")  # REST JSON: base64 text


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
        "mask": {"b64": _b64(r.mask_png)},
        "disc": r.disc,
        "cup": None if r.cup is None else {"mask": {"b64": _b64(r.cup_png or b"")}, **r.cup},
        "measurements": r.measurements,
        "confidence": r.confidence,
        "pipeline": r.pipeline,
        "model_name": model_name,
        "model_version": model_version,
        "timings_ms": r.timings_ms,
        **({"dicom_seg": {"b64": _b64(r.dicom_seg)}} if r.dicom_seg is not None else {}),
        **({"fhir_observation": r.fhir_observation} if r.fhir_observation is not None else {}),
    } for r in results]}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_v2(batch: ImageBatch, results: list[ImageAnswer], model_name: str, model_version: int) -> InferResponse:
    grpc = batch.protocol == V2_GRPC
    n = len(results)

    def png(name: str, items: list[bytes]) -> InferOutput:
        return InferOutput(name, [n], "BYTES", items if grpc else [_b64(i) for i in items],
                           parameters={"content_type": "image/png", **({} if grpc else {"encoding": "base64"})})

    def as_json(name: str, items: list) -> InferOutput:
        return InferOutput(name, [n], "BYTES", [json.dumps(i) for i in items],
                           parameters={"content_type": "application/json"})

    outputs = [
        png("mask", [r.mask_png for r in results]),
        as_json("disc", [r.disc for r in results]),
        as_json("timings_ms", [r.timings_ms for r in results]),
        png("cup_mask", [r.cup_png or b"" for r in results]),
        as_json("cup", [r.cup for r in results]),
        as_json("measurements", [r.measurements for r in results]),
        as_json("confidence", [r.confidence for r in results]),
        InferOutput("pipeline", [n], "BYTES", [r.pipeline for r in results], parameters={"content_type": "text/plain"}),
    ]
    return InferResponse(response_id=batch.request_id or str(uuid.uuid4()), model_name=model_name,
                         model_version=str(model_version), infer_outputs=outputs)
