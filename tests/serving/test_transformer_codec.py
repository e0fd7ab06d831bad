"""Wire formats: every accepted request shape decodes to the images, every bad one to a clear 400."""
from __future__ import annotations

import base64
import json
import re

import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from serving.transformer.codec import (
    RAW,
    V1,
    V2_GRPC,
    V2_REST,
    ImageAnswer,
    ImageBatch,
    decode_request,
    encode_response,
)

PNG = b"\x89PNG\r\n\x1a\n not really"
B64 = base64.b64encode(PNG).decode()


def v2(data, datatype="BYTES", grpc=False, n=None, version=None) -> InferRequest:
    tensor = InferInput("image_bytes", [n if n is not None else len(data)], datatype, data)
    request = InferRequest("optic-disc", [tensor], request_id="r1", from_grpc=grpc, model_version=version)
    return request


def test_v1_instances_in_both_spellings():
    batch = decode_request({"instances": [{"image_bytes": {"b64": B64}}, {"b64": B64}]}, max_images=4)
    assert batch.images == [PNG, PNG] and batch.protocol == V1 and batch.version is None


def test_raw_body_is_one_image():
    batch = decode_request(PNG, max_images=4, version="3")
    assert (batch.images, batch.protocol, batch.version) == ([PNG], RAW, "3")


def test_v2_rest_base64_and_grpc_raw_bytes():
    rest = decode_request(v2([B64, B64]), max_images=4)
    grpc = decode_request(v2([PNG], grpc=True, version="canary"), max_images=4)
    assert rest.images == [PNG, PNG] and rest.protocol == V2_REST and rest.request_id == "r1"
    assert grpc.images == [PNG] and grpc.protocol == V2_GRPC and grpc.version == "canary"


@pytest.mark.parametrize("payload, message", [
    ({"inputs": []}, "instances"),
    ({"instances": {"b64": B64}}, "must be a list"),
    ({"instances": []}, "no images"),
    ({"instances": [B64]}, "instance 0"),
    ({"instances": [{"image_bytes": B64}]}, "instance 0: image_bytes"),
    ({"instances": [{"b64": B64}, {"b64": "not base64!"}]}, "instance 1: not valid base64"),
    ({"instances": [{"b64": 42}]}, "must be a string"),
    ({"instances": [{"b64": B64}] * 5}, "more than the limit of 4"),
    ([1, 2], "JSON object"),
    (None, "JSON object"),
])
def test_bad_v1_requests(payload, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        decode_request(payload, max_images=4)
    assert B64 not in str(caught.value)


@pytest.mark.parametrize("request_, message", [
    (lambda: v2([1.0, 2.0], datatype="FP32"), "datatype BYTES"),
    (lambda: v2(["%%%"]), "element 0: not valid base64"),
    (lambda: v2([]), "no images"),
    (lambda: InferRequest("optic-disc", [InferInput("a", [1], "BYTES", [B64]), InferInput("b", [1], "BYTES", [B64])]),
     "expected one BYTES input"),
    (lambda: InferRequest("optic-disc", [InferInput("laterality", [1], "BYTES", ["L"])]), "expected one BYTES input"),
    (lambda: InferRequest("optic-disc", [InferInput("i", [1], "BYTES", [B64]), InferInput("laterality", [1], "BYTES", ["L"]),
                                         InferInput("laterality", [1], "BYTES", ["R"])]), "expected one BYTES input"),
])
def test_bad_v2_requests(request_, message):
    with pytest.raises(InvalidInput, match=message):
        decode_request(request_(), max_images=4)


def with_sides(images: list, sides: list, grpc: bool = False, shape=None) -> InferRequest:
    return InferRequest("optic-disc", [InferInput("image_bytes", [len(images)], "BYTES", images),
                                       InferInput("laterality", shape or [len(sides)], "BYTES", sides)],
                        from_grpc=grpc)


def test_laterality_per_image_in_every_protocol():
    v1 = decode_request({"instances": [{"image_bytes": {"b64": B64}, "laterality": "L"}, {"b64": B64, "laterality": "R"},
                                       {"b64": B64}, {"image_bytes": {"b64": B64}, "laterality": None}]}, max_images=4)
    assert v1.images == [PNG] * 4 and v1.lateralities == ["L", "R", None, None]
    assert decode_request(PNG, max_images=4, laterality="R").lateralities == ["R"]
    assert decode_request(PNG, max_images=4).lateralities == [None]
    rest = decode_request(with_sides([B64, B64, B64], ["L", "", "R"]), max_images=4)
    grpc = decode_request(with_sides([PNG, PNG], [b"R", b""], grpc=True), max_images=4)
    assert rest.lateralities == ["L", None, "R"] and grpc.lateralities == ["R", None] and grpc.images == [PNG, PNG]
    assert decode_request(v2([B64, B64]), max_images=4).lateralities == [None, None]


@pytest.mark.parametrize("decode, message", [
    (lambda: decode_request({"instances": [{"b64": B64}, {"b64": B64, "laterality": "left"}]}, 4),
     "instance 1: laterality must be \"L\""),
    (lambda: decode_request({"instances": [{"image_bytes": {"b64": B64}, "laterality": 1}]}, 4), "instance 0: laterality"),
    (lambda: decode_request({"instances": [{"image_bytes": {"b64": B64}, "laterality": "l"}]}, 4), "got 'l'"),
    (lambda: decode_request(PNG, 4, laterality="OD"), "the laterality header: laterality must be"),
    (lambda: decode_request({"instances": [{"b64": B64}]}, 4, laterality="L"), "is for a raw image body"),
    (lambda: decode_request(with_sides([B64], ["X" * 10_000]), 4), "element 0: laterality must be"),
    (lambda: decode_request(with_sides([PNG], [b"\xff"], grpc=True), 4), "non-ASCII"),
    (lambda: decode_request(with_sides([B64, B64], ["L"]), 4), "has shape [1], the images [2]"),
    (lambda: decode_request(with_sides([B64], ["L"], shape=[10**12]), 4), "has shape"),
    (lambda: decode_request(InferRequest("optic-disc", [InferInput("i", [1], "BYTES", [B64]),
                                                        InferInput("laterality", [1], "FP32", [1.0])]), 4),
     "'laterality' must have datatype BYTES"),
])
def test_bad_laterality_is_refused_naming_where(decode, message):
    with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
        decode()
    assert "X" * 100 not in str(caught.value)  # a long value is not echoed


RESULTS = [ImageAnswer(PNG, {"area_px": 10}, {"total": 1.0}), ImageAnswer(PNG, {"area_px": 0}, {"total": 2.0})]
CUP = b"\x89PNG cup"
TWO_STAGE = ImageAnswer(PNG, {"area_px": 10}, {"total": 1.0}, cup_png=CUP, cup={"area_px": 3},
                        measurements={"vcdr": 0.5}, confidence={"score": 0.9, "low": False, "reasons": [], "codes": []},
                        pipeline="two-stage")
SINGLE_STAGE = ImageAnswer(PNG, {"area_px": 0}, {"total": 2.0},
                           confidence={"score": 0.1, "low": True, "reasons": ["r"], "codes": ["no_disc_located"]})


def test_v1_answers_cup_measurements_confidence_and_pipeline():
    two, single = encode_response(ImageBatch([], V1), [TWO_STAGE, SINGLE_STAGE], "optic-disc", 7)["predictions"]
    assert base64.b64decode(two["cup"]["mask"]["b64"]) == CUP and two["cup"]["area_px"] == 3
    assert two["measurements"] == {"vcdr": 0.5} and two["confidence"]["low"] is False and two["pipeline"] == "two-stage"
    assert single["cup"] is None and single["measurements"] is None and single["pipeline"] == "single-stage"
    assert single["confidence"]["codes"] == ["no_disc_located"]
    assert set(two) == {"mask", "disc", "cup", "measurements", "confidence", "pipeline", "model_name", "model_version",
                        "timings_ms"} == set(single)


def test_v2_answers_the_same_fields_as_outputs():
    grpc = encode_response(ImageBatch([], V2_GRPC), [TWO_STAGE, SINGLE_STAGE], "optic-disc", 7).to_grpc()
    outputs = {o.name: list(o.contents.bytes_contents) for o in grpc.outputs}
    assert outputs["cup_mask"] == [CUP, b""]  # no cup stage: an empty element
    assert [json.loads(x) for x in outputs["cup"]] == [{"area_px": 3}, None]
    assert [json.loads(x) for x in outputs["measurements"]] == [{"vcdr": 0.5}, None]
    assert [json.loads(x)["low"] for x in outputs["confidence"]] == [False, True]
    assert outputs["pipeline"] == [b"two-stage", b"single-stage"]
    rest, _ = encode_response(ImageBatch([], V2_REST), [TWO_STAGE, SINGLE_STAGE], "optic-disc", 7).to_rest()
    outputs = {o["name"]: o for o in rest["outputs"]}
    assert [base64.b64decode(x) for x in outputs["cup_mask"]["data"]] == [CUP, b""]
    assert outputs["pipeline"]["data"] == ["two-stage", "single-stage"]
    assert json.loads(outputs["confidence"]["data"][1])["codes"] == ["no_disc_located"]


def test_v1_response():
    response = encode_response(ImageBatch([], V1), RESULTS, "optic-disc", 7)
    first = response["predictions"][0]
    assert base64.b64decode(first["mask"]["b64"]) == PNG
    assert first["disc"] == {"area_px": 10} and first["model_name"] == "optic-disc" and first["model_version"] == 7
    assert first["timings_ms"] == {"total": 1.0} and len(response["predictions"]) == 2


def test_v2_responses_carry_raw_png_over_grpc_and_base64_over_rest():
    grpc = encode_response(ImageBatch([], V2_GRPC, request_id="r1"), RESULTS, "optic-disc", 7).to_grpc()
    assert grpc.model_version == "7" and grpc.id == "r1"
    outputs = {o.name: o for o in grpc.outputs}
    assert list(outputs["mask"].contents.bytes_contents) == [PNG, PNG]
    assert json.loads(outputs["disc"].contents.bytes_contents[1]) == {"area_px": 0}

    rest, _ = encode_response(ImageBatch([], V2_REST), RESULTS, "optic-disc", 7).to_rest()
    outputs = {o["name"]: o for o in rest["outputs"]}
    assert [base64.b64decode(x) for x in outputs["mask"]["data"]] == [PNG, PNG]
    assert outputs["mask"]["parameters"]["encoding"] == "base64"
    assert json.loads(outputs["timings_ms"]["data"][0]) == {"total": 1.0}
