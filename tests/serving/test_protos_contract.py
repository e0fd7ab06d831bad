"""serving.protos against the official tensorflow-serving-api messages: the same schema, the same bytes.

The transformer speaks TF Serving's gRPC protocol through its own vendored messages (no TensorFlow);
these tests prove it is the same wire format as the official Python package, byte for byte, both
ways, and that the committed modules are what `python -m serving.protos.generate` writes.
"""
from __future__ import annotations

import filecmp
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from serving.protos import generate
from serving.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from serving.protos.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from serving.transformer.predictor_client import from_tensor_proto, to_tensor_proto

official = pytest.importorskip("tensorflow_serving.apis.predict_pb2").__name__  # the test extras' package
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2  # noqa: E402
from tensorflow.core.framework import tensor_shape_pb2 as tf_tensor_shape_pb2  # noqa: E402
from tensorflow.core.framework import types_pb2 as tf_types_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2 as tf_get_model_status_pb2  # noqa: E402
from tensorflow_serving.apis import model_pb2 as tf_model_pb2  # noqa: E402
from tensorflow_serving.apis import model_service_pb2 as tf_model_service_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2 as tf_prediction_service_pb2  # noqa: E402

MODULES = [(tensor_pb2, tf_tensor_pb2), (tensor_shape_pb2, tf_tensor_shape_pb2), (types_pb2, tf_types_pb2),
           (model_pb2, tf_model_pb2), (predict_pb2, tf_predict_pb2), (get_model_status_pb2, tf_get_model_status_pb2)]


def _proto(descriptor) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


@pytest.mark.parametrize("ours, theirs", MODULES, ids=lambda m: m.DESCRIPTOR.name)
def test_every_vendored_message_and_enum_is_the_official_one(ours, theirs):
    """Whole files: every message (nested ones, fields, numbers, types, oneofs, json names) and enum."""
    assert ours.DESCRIPTOR.name == theirs.DESCRIPTOR.name and ours.DESCRIPTOR.package == theirs.DESCRIPTOR.package
    assert ours.DESCRIPTOR.message_types_by_name.keys() == theirs.DESCRIPTOR.message_types_by_name.keys()
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        assert _proto(message) == _proto(theirs.DESCRIPTOR.message_types_by_name[name]), name
    assert ours.DESCRIPTOR.enum_types_by_name.keys() == theirs.DESCRIPTOR.enum_types_by_name.keys()
    for name, enum in ours.DESCRIPTOR.enum_types_by_name.items():
        mine, official_enum = descriptor_pb2.EnumDescriptorProto(), descriptor_pb2.EnumDescriptorProto()
        enum.CopyToProto(mine)
        theirs.DESCRIPTOR.enum_types_by_name[name].CopyToProto(official_enum)
        assert mine == official_enum, name


@pytest.mark.parametrize("stub, theirs, service", [
    (prediction_service_pb2_grpc.PredictionServiceStub, tf_prediction_service_pb2, "PredictionService"),
    (model_service_pb2_grpc.ModelServiceStub, tf_model_service_pb2, "ModelService")])
def test_the_vendored_methods_are_the_official_ones(stub, theirs, service):
    """The services keep only the methods the transformer calls, each as upstream has it: same path
    (package, service, method name), same request and response messages."""
    official_service = theirs.DESCRIPTOR.services_by_name[service]
    ours = {"prediction": __import__("serving.protos.tensorflow_serving.apis.prediction_service_pb2",
                                     fromlist=["x"]),
            "model": __import__("serving.protos.tensorflow_serving.apis.model_service_pb2", fromlist=["x"])}
    mine = next(m for m in ours.values() if service in m.DESCRIPTOR.services_by_name).DESCRIPTOR.services_by_name[service]
    assert mine.full_name == official_service.full_name
    for method in mine.methods:
        upstream = official_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == \
            (upstream.input_type.full_name, upstream.output_type.full_name)
    assert stub is not None


def _request(module, tensors):
    request = module.PredictRequest()
    request.model_spec.name = "optic-disc"
    request.model_spec.version.value = 7
    request.model_spec.signature_name = "segment"
    for key, proto in tensors.items():
        request.inputs[key].CopyFrom(proto)
    request.output_filter.extend(["disc_probability", "cup_probability"])
    return request


def _cases():
    """The messages the transformer sends and reads, as the official package builds them."""
    rng = np.random.default_rng(0)
    float_images = rng.random((2, 128, 128, 3), dtype=np.float32)
    uint8_images = rng.integers(0, 255, (3, 4, 5, 3), dtype=np.uint8)
    import tensorflow as tf

    labelled = tf_predict_pb2.PredictRequest()
    labelled.model_spec.name, labelled.model_spec.version_label = "optic-disc", "canary"
    labelled.model_spec.signature_name = "model_card"
    answer = tf_predict_pb2.PredictResponse()
    answer.model_spec.name, answer.model_spec.version.value = "optic-disc", 3
    answer.outputs["disc_probability"].CopyFrom(tf.make_tensor_proto(float_images[..., :1]))
    answer.outputs["card"].CopyFrom(tf.make_tensor_proto(np.array([b'{"pipeline": "two-stage"}'], dtype=object)))
    constant = tf_predict_pb2.PredictResponse()
    constant.outputs["disc_probability"].dtype = tf_types_pb2.DT_FLOAT
    constant.outputs["disc_probability"].tensor_shape.dim.add(size=4)
    constant.outputs["disc_probability"].float_val.append(0.25)  # TF Serving's compressed constant tensor
    status = tf_get_model_status_pb2.GetModelStatusResponse()
    for version, state in ((2, "END"), (3, "AVAILABLE"), (4, "LOADING")):
        entry = status.model_version_status.add(version=version)
        entry.state = tf_get_model_status_pb2.ModelVersionStatus.State.Value(state)
    status.model_version_status[0].status.error_code = 9
    status.model_version_status[0].status.error_message = "missing signature 'segment'"
    return {
        "float32 request": _request(tf_predict_pb2, {"images": tf.make_tensor_proto(float_images)}),
        "uint8 request": _request(tf_predict_pb2, {"images": tf.make_tensor_proto(uint8_images)}),
        "label request": labelled,
        "answer with card": answer,
        "compressed answer": constant,
        "status request": tf_get_model_status_pb2.GetModelStatusRequest(
            model_spec=tf_model_pb2.ModelSpec(name="optic-disc")),
        "status answer": status,
    }


OURS = {"PredictRequest": predict_pb2.PredictRequest, "PredictResponse": predict_pb2.PredictResponse,
        "GetModelStatusRequest": get_model_status_pb2.GetModelStatusRequest,
        "GetModelStatusResponse": get_model_status_pb2.GetModelStatusResponse}


@pytest.mark.parametrize("case", list(_cases()))
def test_the_same_bytes_both_ways(case):
    message = _cases()[case]
    wire = message.SerializeToString(deterministic=True)
    mine = OURS[message.DESCRIPTOR.name].FromString(wire)
    assert mine.SerializeToString(deterministic=True) == wire
    mine.DiscardUnknownFields()
    assert mine.SerializeToString(deterministic=True) == wire  # every field is known to ours
    assert type(message).FromString(mine.SerializeToString()) == message


def test_the_clients_tensor_is_what_tensorflow_makes():
    """to_tensor_proto (no TensorFlow) writes the bytes tf.make_tensor_proto writes; from_tensor_proto
    reads TensorFlow's, raw and compressed."""
    import tensorflow as tf

    images = np.random.default_rng(1).random((3, 128, 128, 3), dtype=np.float32)
    assert to_tensor_proto(images).SerializeToString() == tf.make_tensor_proto(images).SerializeToString()
    request = _request(predict_pb2, {"images": to_tensor_proto(images)})
    assert request.SerializeToString(deterministic=True) == _request(
        tf_predict_pb2, {"images": tf.make_tensor_proto(images)}).SerializeToString(deterministic=True)
    theirs = tf.make_tensor_proto(images[..., :1])
    np.testing.assert_array_equal(from_tensor_proto(tensor_pb2.TensorProto.FromString(theirs.SerializeToString())),
                                  images[..., :1])
    compressed = _cases()["compressed answer"].outputs["disc_probability"].SerializeToString()
    np.testing.assert_array_equal(from_tensor_proto(tensor_pb2.TensorProto.FromString(compressed)), [0.25] * 4)
    equalised = np.random.default_rng(2).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)  # a uint8 version's input
    assert to_tensor_proto(equalised).SerializeToString() == tf.make_tensor_proto(equalised).SerializeToString()
    assert len(to_tensor_proto(equalised).tensor_content) == equalised.size  # a quarter of float32's bytes


def test_the_committed_modules_are_what_generate_writes(tmp_path):
    # its own process: grpcio-tools' protoc beside TensorFlow's protobuf in one process crashes
    subprocess.run([sys.executable, "-m", "serving.protos.generate", str(tmp_path)], check=True, timeout=120,
                   capture_output=True)
    here = generate.HERE
    for generated in tmp_path.rglob("*.py"):
        committed = here / generated.relative_to(tmp_path)
        assert committed.is_file() and filecmp.cmp(generated, committed, shallow=False), \
            f"{committed} is stale: run python -m serving.protos.generate"


def test_the_transformer_imports_no_tensorflow():
    """A fresh interpreter: the transformer's entrypoint, server, model and predictor client (both
    APIs' stubs) load without TensorFlow or the official TF Serving package."""
    code = ("import sys\n"
            "import serving.transformer.__main__, serving.transformer.server, serving.transformer.model\n"
            "from serving.transformer.predictor_client import GrpcPredictor, to_tensor_proto\n"
            "GrpcPredictor('127.0.0.1:1', 'm')._stubs()\n"
            "import numpy; to_tensor_proto(numpy.zeros((1, 2), numpy.float32))\n"
            "import serving.client\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_serving', 'keras'}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
