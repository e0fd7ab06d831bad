"""Wire formats: every accepted request shape decodes to the images, every bad one to a clear 400."""
from __future__ import annotations

import base64
import json

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
     "exactly one BYTES input"),
])
def test_bad_v2_requests(request_, message):
    with pytest.raises(InvalidInput, match=message):
        decode_request(request_(), max_images=4)


RESULTS = [ImageAnswer(PNG, {"area_px": 10}, {"total": 1.0}), ImageAnswer(PNG, {"area_px": 0}, {"total": 2.0})]


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
