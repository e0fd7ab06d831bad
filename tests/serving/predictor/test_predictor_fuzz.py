"""Fuzzing the request codecs: whatever a client sends, only PredictorError (a clear status) may
escape, and nothing decodes beyond its budget. About ten seconds in all."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402

from serving.predictor.errors import PredictorError  # noqa: E402
from serving.predictor.rest_codec import RestPredictRequest  # noqa: E402
from serving.predictor.servable import TensorSpec  # noqa: E402
from serving.predictor.tensors import to_ndarray  # noqa: E402

BUDGET = 64 * 1024
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

int32 = st.integers(-2 ** 31, 2 ** 31 - 1)
VALUE_FIELDS = {
    "float_val": st.floats(width=32), "double_val": st.floats(), "int_val": int32, "half_val": int32,
    "int64_val": st.integers(-2 ** 63, 2 ** 63 - 1), "uint32_val": st.integers(0, 2 ** 32 - 1),
    "uint64_val": st.integers(0, 2 ** 64 - 1), "bool_val": st.booleans(), "string_val": st.binary(max_size=8),
    "scomplex_val": st.floats(width=32), "dcomplex_val": st.floats(),
}
small_dims = st.lists(st.integers(-2, 5), max_size=6)
wild_dims = st.lists(st.one_of(st.integers(-2, 5), st.integers(-2 ** 63, 2 ** 63 - 1)), max_size=40)


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(st.one_of(st.sampled_from(types_pb2.DataType.values()),
                                                        st.integers(-3, 1000))))
    shape = draw(st.one_of(small_dims, wild_dims))
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape)
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=512))
    for name in draw(st.sets(st.sampled_from(sorted(VALUE_FIELDS)), max_size=3)):
        getattr(proto, name).extend(draw(st.lists(VALUE_FIELDS[name], max_size=300)))
    return proto


@FUZZ
@given(tensor_protos())
def test_to_ndarray_refuses_clearly_or_decodes_within_budget(proto):
    try:
        array = to_ndarray(proto, "x", BUDGET)
    except PredictorError:
        return
    assert isinstance(array, np.ndarray)
    assert array.size * array.dtype.itemsize <= BUDGET
    assert list(array.shape) == [d.size for d in proto.tensor_shape.dim]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 200, 2 ** 200) | st.floats() | st.text(max_size=8)
    | st.fixed_dictionaries({"b64": st.one_of(st.text(max_size=12), st.integers())}),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=60)
documents = st.one_of(
    st.fixed_dictionaries({"instances": json_values}, optional={"signature_name": json_values}),
    st.fixed_dictionaries({"inputs": json_values}, optional={"signature_name": json_values}),
    json_values)


def signature(**inputs) -> SimpleNamespace:
    return SimpleNamespace(inputs={key: TensorSpec(key, dtype, shape) for key, (dtype, shape) in inputs.items()})


SIGNATURES = [
    signature(images=(types_pb2.DT_FLOAT, (-1, 2, 2, 3))),
    signature(x=(types_pb2.DT_INT32, (-1,))),
    signature(text=(types_pb2.DT_STRING, None)),
    signature(images=(types_pb2.DT_FLOAT, None), text=(types_pb2.DT_STRING, (-1,))),
]


def decode(body: bytes) -> None:
    try:
        parsed = RestPredictRequest.parse(body, max_values=10_000)
        for sig in SIGNATURES:
            try:
                parsed.decode(sig)
            except PredictorError:
                pass
    except PredictorError:
        pass


@FUZZ
@given(documents)
def test_rest_json_refuses_clearly(document):
    decode(json.dumps(document).encode())


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda depth, open_: b'{"instances": ' + open_ * depth,
                           st.integers(0, 3000), st.sampled_from([b"[", b"{\"a\":", b"[{\"b64\": [", b"[\"x\","]))))
def test_rest_bytes_refuse_clearly(body):
    decode(body)
