"""End to end through both processes (predictor + transformer) over REST and gRPC, on DRISHTI images.

The service serves the bundled model when one is published (then the Dice and area assertions
against the expert masks run), else a stand-in SavedModel with the real signature.
"""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from preprocessing.decode import decode_mask
from preprocessing.metrics import dice
from serving.client import GrpcClient, RestClient, SegmentationError, _outputs
from tests.serving.helpers import bundled_version, http, logs_of, png_header

pytestmark = pytest.mark.slow
MAX_REQUEST = 4 * 1024 * 1024
# The bundled model (models/optic-disc/1) scores a mean Dice of 0.924 on the first 8 DRISHTI-GS1
# test images through this service (0.948 on all 51, where one image, the 8th, is its worst at 0.789);
# the floor leaves a small margin, so a real regression fails.
DICE_FLOOR_8 = 0.92


@pytest.fixture(scope="module")
def service(tmp_path_factory, saved_model_template):
    from serving.local_service import LocalService, LocalServiceConfig

    root = tmp_path_factory.mktemp("e2e")
    (root / "repo" / "optic-disc").mkdir(parents=True)
    shutil.copytree(bundled_version() or saved_model_template, root / "repo" / "optic-disc" / "1")
    config = LocalServiceConfig(model_repo=root / "repo", http_port=0, grpc_port=0, predictor_grpc_port=0,
                         predictor_rest_port=0, poll_seconds=0.2, log_dir=root / "logs",
                         extra_transformer_args=["--max_request_bytes", str(MAX_REQUEST)])
    with LocalService(config) as stack:
        assert stack.wait_ready(120), logs_of(stack)[-3000:]
        yield stack


@pytest.fixture(scope="module")
def rest(service):
    client = RestClient(service.config.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(service):
    client = GrpcClient(service.config.grpc_target)
    yield client
    client.close()


def served_pipeline() -> str:
    """What the served version's card says it is (the stand-in has no segment stage)."""
    from fundus_seg.model_card import ModelCard

    version = bundled_version()
    return "single-stage" if version is None else ModelCard.from_json((version / "metrics.json").read_text()).pipeline


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_rest_and_grpc_answer_several_images_at_full_size(rest, grpc_client, drishti):
    images = [drishti[0][0].read_bytes(), drishti[1][0].read_bytes()]
    by_rest, by_grpc = rest.segment(images), grpc_client.segment(images)
    for results in (by_rest, by_grpc):
        assert len(results) == 2
        for result, (_, mask_path) in zip(results, drishti[:2]):
            assert result.mask().shape == decode_mask(mask_path.read_bytes()).shape
            assert result.model_name == "optic-disc" and result.model_version == 1
            assert {"area_px", "equivalent_radius_px", "centroid", "bbox", "ellipse", "vertical_diameter_px",
                    "horizontal_diameter_px"} <= result.disc.keys()
            assert result.timings_ms["total"] > 0
            assert result.pipeline == served_pipeline() and result.confidence is not None
            if result.pipeline == "single-stage":  # no cup stage: no cup, no measurements
                assert result.cup is None and result.cup_mask() is None and result.measurements is None
    for a, b in zip(by_rest, by_grpc):  # same pipeline whatever the protocol
        assert np.array_equal(a.mask(), b.mask()) and a.disc == b.disc and a.confidence == b.confidence


def test_open_inference_protocol_over_rest(service, rest, drishti):
    image_path, mask_path = drishti[0]
    status, body = http(f"{service.config.url}/v2/models/optic-disc/infer", {
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [b64(image_path.read_bytes())]}]})
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    assert body["model_version"] == "1"
    mask_png = base64.b64decode(outputs["mask"]["data"][0])
    disc = json.loads(outputs["disc"]["data"][0])
    [v1] = rest.segment([image_path])
    assert mask_png == v1.mask_png and disc == v1.disc  # the same answer as over v1
    mask = v1.mask()
    assert disc["area_px"] == int(mask.sum()) > 0  # the area is the mask's
    if bundled_version() is not None:  # and near the expert's (RRP's 10% on the radius is 21% on the area)
        expert = int(decode_mask(mask_path.read_bytes()).sum())
        assert abs(disc["area_px"] / expert - 1) < 0.21, (disc["area_px"], expert)


def raw_request(pb, elements: list[bytes], shape: list[int] | None = None, version: str = ""):
    """An OIP v2 request carrying its images in raw_input_contents, as KServe's and Triton's clients send
    them: one buffer for the input, each element a 4-byte little-endian length, then its bytes."""
    buffer = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    return pb.ModelInferRequest(
        model_name="optic-disc", model_version=version,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image_bytes", datatype="BYTES",
                                                      shape=[len(elements)] if shape is None else shape)],
        raw_input_contents=[buffer])


def test_open_inference_protocol_over_grpc_with_raw_input_contents(grpc_client, drishti):
    import grpc

    pb = grpc_client.pb
    images = [drishti[0][0].read_bytes(), drishti[1][0].read_bytes()]
    response = grpc_client._stub.ModelInfer(raw_request(pb, images), timeout=60)
    outputs = _outputs(response)
    assert response.model_name == "optic-disc" and response.model_version == "1"
    assert len(outputs["mask"]) == len(outputs["disc"]) == 2
    by_contents = grpc_client.segment(images)  # the same images in contents.bytes_contents
    for mask_png, disc, expected in zip(outputs["mask"], outputs["disc"], by_contents):
        assert mask_png == expected.mask_png and json.loads(disc) == expected.disc
    assert by_contents[0].disc != by_contents[1].disc  # two different images, each answered for itself

    refusals = [
        (raw_request(pb, images[:1] * 17), "more than the limit of 16"),
        (raw_request(pb, images, shape=[3]), "cannot read the BYTES tensor"),  # 2 elements, shape says 3
        (raw_request(pb, [b"garbage"]), "not a readable image"),
    ]
    for request, message in refusals:
        with pytest.raises(grpc.RpcError) as caught:
            grpc_client._stub.ModelInfer(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
    broken = raw_request(pb, images[:1])
    broken.raw_input_contents[0] = broken.raw_input_contents[0][:-100] + (10**6).to_bytes(4, "little")
    with pytest.raises(grpc.RpcError) as caught:  # a length prefix pointing past the buffer
        grpc_client._stub.ModelInfer(broken, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert grpc_client.segment([images[0]])[0].model_version == 1


def test_raw_image_body(service, image_bytes):
    status, body = http(f"{service.config.url}/v1/models/optic-disc:predict", image_bytes,
                        headers={"Content-Type": "image/jpeg"})
    assert status == 200, body
    assert body["predictions"][0]["model_version"] == 1


def test_dice_against_the_expert_masks(rest, grpc_client, drishti):
    pairs = drishti[:8]
    scores = []
    for i, (image_path, mask_path) in enumerate(pairs):
        client = rest if i % 2 else grpc_client
        [result] = client.segment([image_path.read_bytes()])
        scores.append(dice(result.mask(), decode_mask(mask_path.read_bytes())))
    if bundled_version() is None:
        pytest.skip("no bundled model in models/optic-disc/ yet (or $FUNDUS_SEG_TEST_MODEL_VERSION): the stand-in "
                    f"model cannot reach Dice {DICE_FLOOR_8} "
                    f"(it scored {np.mean(scores):.2f}); everything else in this module ran")
    assert np.mean(scores) >= DICE_FLOOR_8, f"Dice per image: {[round(s, 3) for s in scores]}"


def _bad_requests(image: bytes):
    half = image[: len(image) // 3]
    yield "not json", "/v1/models/optic-disc:predict", b"{ nope", {}, 400, "Unrecognized request format"
    yield "a JSON list", "/v1/models/optic-disc:predict", [1, 2], {}, 400, "JSON object"
    yield "no instances", "/v1/models/optic-disc:predict", {"inputs": []}, {}, 400, "instances"
    yield "empty list", "/v1/models/optic-disc:predict", {"instances": []}, {}, 400, "no images"
    yield "bad base64", "/v1/models/optic-disc:predict", {"instances": [{"b64": "**"}]}, {}, 400, "base64"
    yield "empty image", "/v1/models/optic-disc:predict", {"instances": [{"b64": ""}]}, {}, 400, "empty image"
    yield "not an image", "/v1/models/optic-disc:predict", {"instances": [{"b64": b64(b"%PDF-1.4 hello")}]}, {}, \
        400, "not a readable image"
    yield "truncated JPEG", "/v1/models/optic-disc:predict", {"instances": [{"b64": b64(half)}]}, {}, 400, "corrupt"
    yield "decompression bomb", "/v1/models/optic-disc:predict", \
        {"instances": [{"b64": b64(png_header(9000, 9000))}]}, {}, 400, "larger than the limit"
    yield "too many images", "/v1/models/optic-disc:predict", {"instances": [{"b64": "AA=="}] * 17}, {}, 400, \
        "more than the limit of 16"
    yield "too large", "/v1/models/optic-disc:predict", b"x" * (MAX_REQUEST + 1), {}, 413, "limit"
    yield "unknown model", "/v1/models/cup:predict", {"instances": [{"b64": b64(image)}]}, {}, 404, "cup"
    yield "unknown version", "/v1/models/optic-disc/versions/99:predict", {"instances": [{"b64": b64(image)}]}, \
        {}, 404, "version 99"
    yield "unknown label", "/v1/models/optic-disc/labels/canary:predict", {"instances": [{"b64": b64(image)}]}, \
        {}, 404, "canary"
    yield "v2 wrong datatype", "/v2/models/optic-disc/infer", \
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, {}, 400, "BYTES"
    yield "v2 wrong shape", "/v2/models/optic-disc/infer", {"inputs": [{"name": "x", "data": [b64(image)]}]}, {}, \
        400, "inputs.0.datatype"
    yield "v2 unknown version", "/v2/models/optic-disc/versions/99/infer", \
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [b64(image)]}]}, {}, 404, "99"
    yield "v2 binary extension", "/v2/models/optic-disc/infer", b"{}", \
        {"Inference-Header-Content-Length": "2"}, 400, "base64"


def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(service, rest, image_bytes):
    for name, path, body, headers, status, message in _bad_requests(image_bytes):
        got, answer = http(service.config.url + path, body, headers)
        assert got == status, (name, got, answer)
        assert message in json.dumps(answer), (name, answer)
        assert b64(image_bytes)[100:200] not in json.dumps(answer)  # never echoed
    assert rest.segment([image_bytes])[0].model_version == 1
    assert b64(image_bytes)[1000:1100] not in logs_of(service)  # images are never logged


def test_bad_input_over_grpc(service, grpc_client, image_bytes):
    import grpc

    cases = [(dict(images=[b"garbage"]), "INVALID_ARGUMENT", "not a readable image"),
             (dict(images=[image_bytes], version=99), "NOT_FOUND", "version 99"),
             (dict(images=[b"x" * (MAX_REQUEST + 10)]), "RESOURCE_EXHAUSTED", "")]
    for kwargs, code, message in cases:
        with pytest.raises(SegmentationError) as caught:
            grpc_client.segment(**kwargs)
        assert caught.value.status == code and message in str(caught.value)
    unknown = GrpcClient(service.config.grpc_target, model_name="cup")
    with pytest.raises(SegmentationError) as caught:
        unknown.segment([image_bytes])
    assert caught.value.status == "NOT_FOUND"
    unknown.close()
    pb = grpc_client.pb
    request = pb.ModelInferRequest(model_name="optic-disc", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1.0]))])
    with pytest.raises(grpc.RpcError) as caught:
        grpc_client._stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_client.segment([image_bytes])[0].model_version == 1


def test_health_readiness_and_metrics(service, rest):
    url = service.config.url
    assert http(f"{url}/")[1] == {"status": "alive"}
    assert http(f"{url}/v2/health/ready") == (200, {"ready": True})
    assert http(f"{url}/v1/models/optic-disc")[0] == 200
    assert rest.ready()
    status, text = http(f"{url}/metrics")
    assert status == 200
    for needle in ('fundus_transformer_requests_total{outcome="ok",protocol="v1"}',
                   'fundus_transformer_model_version{model="optic-disc"} 1.0',
                   "fundus_transformer_request_seconds_bucket", "request_predict_seconds"):
        assert needle in text, needle
    status, text = http(f"http://127.0.0.1:{service.config.predictor_rest_port}/monitoring/prometheus/metrics")
    assert status == 200 and "optic-disc" in text
