"""Predict, metadata and status over gRPC and REST, checked against TF Serving's wire contract."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from tests.serving.predictor.helpers import SIZE, config, expected, images, predict_request, rest, stubs

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, publish):
    """Two models from a TF Serving model config file: the real-shaped one and a tiny one."""
    from serving.predictor.server import PredictorServer

    root = tmp_path_factory.mktemp("api")
    publish(root / "optic-disc", 1, k=1, size=128)
    publish(root / "tiny", 3)
    models_config = root / "models.config"
    models_config.write_text(f"""
        model_config_list {{
          config {{ name: "optic-disc" base_path: "{root / 'optic-disc'}" model_platform: "tensorflow" }}
          config {{ name: "tiny" base_path: "{root / 'tiny'}" model_platform: "tensorflow" }}
        }}""")
    server = PredictorServer(config(model_config_file=models_config, max_request_bytes=1 * MiB))
    server.start_in_background()
    assert server.wait_until_ready(30)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def grpc_stubs(server):
    return stubs(server)


# -- gRPC --------------------------------------------------------------------------------------

def test_grpc_predict_wire_format_matches_tf_serving(server):
    x = np.random.default_rng(0).random((2, 128, 128, 3), dtype=np.float32)
    request = predict_request("optic-disc", x)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    raw_call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=predict_pb2.PredictRequest.SerializeToString)
    response = predict_pb2.PredictResponse.FromString(raw_call(request, timeout=30))  # raw bytes on the wire

    assert response.model_spec.name == "optic-disc"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    tensor = response.outputs["disc_probability"]
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 128, 128, 1]
    want = 1 / (1 + np.exp(-x.mean(-1, keepdims=True)))
    np.testing.assert_allclose(tf.make_ndarray(tensor), want, rtol=1e-5)


def test_grpc_predict_accepts_float_val_tensors_and_output_filter(grpc_stubs):
    predict, _ = grpc_stubs
    request = predict_request("tiny", signature="stats", output_filter=["mean"])
    tensor = request.inputs["images"]
    tensor.dtype = types_pb2.DT_FLOAT
    for size in (2, SIZE, SIZE, 3):
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend([0.5] * (SIZE * SIZE * 3) + [2.0] * (SIZE * SIZE * 3))

    response = predict.Predict(request, timeout=30)
    assert list(response.outputs) == ["mean"]
    assert response.model_spec.signature_name == "stats"
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["mean"]), [0.5, 2.0])


def test_grpc_predict_by_version(grpc_stubs):
    predict, _ = grpc_stubs
    response = predict.Predict(predict_request("tiny", images(0.5), version=3), timeout=30)
    assert response.model_spec.version.value == 3
    value = tf.make_ndarray(response.outputs["disc_probability"])
    np.testing.assert_allclose(value, np.full((1, SIZE, SIZE, 1), expected(0.5, 3)), rtol=1e-6)


def test_grpc_get_model_metadata(grpc_stubs):
    predict, _ = grpc_stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "optic-disc"
    response = predict.GetModelMetadata(request, timeout=30)

    assert response.model_spec.name == "optic-disc" and response.model_spec.version.value == 1
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    serving = signature_defs.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert serving.inputs["images"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in serving.inputs["images"].tensor_shape.dim] == [-1, 128, 128, 3]
    assert [d.size for d in serving.outputs["disc_probability"].tensor_shape.dim] == [-1, 128, 128, 1]


def test_grpc_get_model_status(grpc_stubs):
    _, models = grpc_stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = models.GetModelStatus(request, timeout=30)
    [status] = response.model_version_status
    assert status.version == 3
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""


@pytest.mark.parametrize("mutate, code, fragment", [
    (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
    (lambda r: setattr(r.model_spec.version, "value", 7), grpc.StatusCode.NOT_FOUND, "Specific(tiny, 7)"),
    (lambda r: setattr(r.model_spec, "version_label", "gold"), grpc.StatusCode.INVALID_ARGUMENT, "label: gold"),
    (lambda r: setattr(r.model_spec, "name", ""), grpc.StatusCode.INVALID_ARGUMENT, "name"),
    (lambda r: (r.inputs["pixels"].CopyFrom(r.inputs["images"]), r.inputs.__delitem__("images")),
     grpc.StatusCode.INVALID_ARGUMENT,
     "Missing but required: {images}"),
    (lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(images(1).astype(np.float64))),
     grpc.StatusCode.INVALID_ARGUMENT, "to be float but float64"),
    (lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4, 4, 3), np.float32))),
     grpc.StatusCode.INVALID_ARGUMENT, "shape [1, 4, 4, 3]"),
    (lambda r: setattr(r.inputs["images"], "tensor_content", b"123"), grpc.StatusCode.INVALID_ARGUMENT,
     "tensor_content"),
    (lambda r: setattr(r.model_spec, "signature_name", "nope"), grpc.StatusCode.FAILED_PRECONDITION,
     '"nope" not found'),
    (lambda r: r.output_filter.append("nope"), grpc.StatusCode.INVALID_ARGUMENT, "alias not found"),
])
def test_grpc_bad_requests_get_tf_serving_codes(grpc_stubs, mutate, code, fragment):
    predict, _ = grpc_stubs
    request = predict_request("tiny", images(1))
    mutate(request)
    with pytest.raises(grpc.RpcError) as caught:
        predict.Predict(request, timeout=30)
    assert caught.value.code() == code
    assert fragment in caught.value.details()
    assert predict.Predict(predict_request("tiny", images(1)), timeout=30).outputs  # still serving


def test_grpc_unsupported_calls(grpc_stubs):
    predict, models = grpc_stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    with pytest.raises(grpc.RpcError) as caught:
        predict.Classify(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "tiny"
    with pytest.raises(grpc.RpcError) as caught:
        predict.GetModelMetadata(metadata_request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as caught:
        models.GetModelStatus(status_request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- REST --------------------------------------------------------------------------------------

def test_rest_row_format_like_tf_serving(server):
    x = np.random.default_rng(1).random((1, 128, 128, 3), dtype=np.float32)
    status, body = rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": x.tolist()})
    assert status == 200 and list(body) == ["predictions"]
    predictions = np.asarray(body["predictions"], dtype=np.float32)
    assert predictions.shape == (1, 128, 128, 1)
    np.testing.assert_allclose(predictions, 1 / (1 + np.exp(-x.mean(-1, keepdims=True))), rtol=1e-5)


def test_rest_named_instances_columnar_and_versions(server):
    x = images(0.25, rows=2)
    want = np.full((2, SIZE, SIZE, 1), expected(0.25, 3))
    status, body = rest(server, "POST", "/v1/models/tiny/versions/3:predict",
                        {"instances": [{"images": row} for row in x.tolist()]})
    assert status == 200
    np.testing.assert_allclose(body["predictions"], want, rtol=1e-6)
    status, body = rest(server, "POST", "/v1/models/tiny:predict", {"inputs": {"images": x.tolist()}})
    assert status == 200 and list(body) == ["outputs"]
    np.testing.assert_allclose(body["outputs"], want, rtol=1e-6)
    status, body = rest(server, "POST", "/v1/models/tiny:predict",
                        {"signature_name": "stats", "instances": x.tolist()})
    assert status == 200
    assert body["predictions"] == [{"mean": 0.25, "max": 0.25}] * 2


def test_rest_status_and_metadata_json(server):
    expected_status = {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest(server, "GET", "/v1/models/tiny") == (200, expected_status)
    assert rest(server, "GET", "/v1/models/tiny/versions/3") == (200, expected_status)
    status, body = rest(server, "GET", "/v1/models/optic-disc/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "optic-disc", "version": "1", "signature_name": ""}
    serving = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in serving["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "128", "128", "3"]


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/v1/models/nope:predict", {"instances": [[0]]}, 404, "Latest(nope)"),
    ("POST", "/v1/models/tiny/versions/9:predict", {"instances": [[0]]}, 404, "Specific(tiny, 9)"),
    ("POST", "/v1/models/tiny/labels/gold:predict", {"instances": [[0]]}, 400, "label: gold"),
    ("POST", "/v1/models/tiny:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/tiny:predict", {"rows": []}, 400, "Missing 'inputs' or 'instances'"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[1, 2, 3]]}, 400, "shape [1, 3]"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[1, 2], [3]]}, 400, "cannot read JSON as float"),
    ("POST", "/v1/models/tiny:predict", {"inputs": {"pixels": [[0]]}}, 400, "Sent extra: {pixels}"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[0]], "signature_name": "x"}, 400, '"x" not found'),
    ("POST", "/v1/models/tiny:classify", {"examples": []}, 501, "classify"),
    ("POST", "/v1/models/tiny:predict", b"[" + b"0," * (1 * MiB) + b"0]", 413, ""),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/tiny/versions/9", None, 404, "Could not find version 9"),
    ("GET", "/v2/elsewhere", None, 404, ""),
])
def test_rest_bad_requests_get_tf_serving_errors(server, method, path, body, status, fragment):
    got_status, got_body = rest(server, method, path, body)
    assert got_status == status
    assert isinstance(got_body, dict) and fragment in got_body["error"]
    good = rest(server, "POST", "/v1/models/tiny:predict", {"instances": images(0).tolist()})
    assert good[0] == 200  # the server keeps serving


def test_health_and_prometheus_metrics(server):
    assert rest(server, "GET", "/healthz")[0] == 200
    assert rest(server, "GET", "/readyz")[0] == 200
    rest(server, "POST", "/v1/models/tiny:predict", {"instances": images(0).tolist()})
    status, text = rest(server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    ok_rest = (("api", "rest"), ("model", "tiny"), ("status", "OK"), ("version", "3"))
    assert samples["predictor_requests_total", ok_rest] >= 1
    assert samples["predictor_model_version_state", (("model", "tiny"), ("version", "3"))] == 30
    assert samples["predictor_model_default_version", (("model", "optic-disc"),)] == 1
    assert any(name == "predictor_request_latency_seconds_count" for name, _ in samples)
