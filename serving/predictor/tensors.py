"""TensorProto <-> numpy for the gRPC hot path.

Fixed-size dtypes travel as `tensor_content` (raw little-endian bytes, what TF Serving and
tf.make_tensor_proto produce), so they are decoded with np.frombuffer (no copy) and encoded with
one tobytes(); everything else (strings, float_val lists, bfloat16 ...) goes through TensorFlow.

A TensorProto's shape is only a claim: tf.make_ndarray pads a short value list with its last
value, so 90 bytes can ask for gigabytes. Every claim is checked against the payload and against
a byte budget (max_request_bytes, all inputs together) before anything is allocated.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.predictor.errors import InvalidArgument, RequestTooLarge

MAX_RANK = 32  # numpy allows 64 (numpy 1.x: 32); no served signature comes close

_NUMPY_DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
}
_DATA_TYPES = {dtype: enum for enum, dtype in _NUMPY_DTYPES.items()}

# The TensorProto field tf.make_ndarray reads for each dtype, and how many entries make one element.
_VALUE_FIELDS: dict[int, tuple[str, int]] = {
    getattr(types_pb2, name): (value_field, per_element)
    for value_field, per_element, names in [
        ("half_val", 1, ["DT_HALF", "DT_BFLOAT16"]),
        ("float8_val", 1, ["DT_FLOAT8_E5M2", "DT_FLOAT8_E4M3FN", "DT_FLOAT4_E2M1FN"]),
        ("float_val", 1, ["DT_FLOAT"]),
        ("double_val", 1, ["DT_DOUBLE"]),
        ("int_val", 1, ["DT_INT32", "DT_UINT8", "DT_UINT16", "DT_INT16", "DT_INT8", "DT_QINT32",
                        "DT_QUINT8", "DT_QINT8", "DT_QINT16", "DT_QUINT16", "DT_INT4", "DT_UINT4",
                        "DT_INT2", "DT_UINT2"]),
        ("int64_val", 1, ["DT_INT64"]),
        ("uint32_val", 1, ["DT_UINT32"]),
        ("uint64_val", 1, ["DT_UINT64"]),
        ("scomplex_val", 2, ["DT_COMPLEX64"]),
        ("dcomplex_val", 2, ["DT_COMPLEX128"]),
        ("bool_val", 1, ["DT_BOOL"]),
        ("string_val", 1, ["DT_STRING"]),
    ]
    for name in names if hasattr(types_pb2, name)
}


def dtype_name(data_type: int) -> str:
    """TensorFlow's short name of a DataType enum ("float", "int32", "string")."""
    return types_pb2.DataType.Name(data_type).removeprefix("DT_").lower()


def numpy_dtype(data_type: int) -> np.dtype:
    """The numpy dtype that holds a DataType (object for strings)."""
    if data_type in _NUMPY_DTYPES:
        return _NUMPY_DTYPES[data_type]
    import tensorflow as tf

    return np.dtype(tf.dtypes.as_dtype(data_type).as_numpy_dtype)


def decoded_bytes(proto: tensor_pb2.TensorProto, key: str, budget: int) -> int:
    """Bytes `proto` decodes to, once its shape claim is known to fit its payload and `budget`.

    INVALID_ARGUMENT when the shape contradicts the payload (or pads a short value list beyond
    `budget`), RESOURCE_EXHAUSTED when a consistent tensor is simply larger than `budget`.
    """
    if proto.tensor_shape.unknown_rank:
        raise InvalidArgument(f"input '{key}': a request tensor needs a known shape")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > MAX_RANK or any(size < 0 for size in shape):
        raise InvalidArgument(f"input '{key}': invalid shape {_shown(shape)}: dimensions must be >= 0 "
                              f"and at most {MAX_RANK} of them")
    if proto.dtype not in _VALUE_FIELDS:
        known = proto.dtype in types_pb2.DataType.values()
        raise InvalidArgument(f"input '{key}': dtype {dtype_name(proto.dtype) if known else proto.dtype} "
                              "is not supported in requests")
    elements = math.prod(shape)
    itemsize = numpy_dtype(proto.dtype).itemsize
    claimed = f"shape {_shown(shape)} of {dtype_name(proto.dtype)}"
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise InvalidArgument(f"input '{key}': string tensors cannot use tensor_content; use string_val")
        if len(proto.tensor_content) != elements * itemsize:
            raise InvalidArgument(f"input '{key}': tensor_content holds {len(proto.tensor_content)} bytes, "
                                  f"{claimed} needs {elements * itemsize}")
    else:
        value_field, per_element = _VALUE_FIELDS[proto.dtype]
        values = len(getattr(proto, value_field))
        if values > elements * per_element or values % per_element:
            raise InvalidArgument(f"input '{key}': {value_field} holds {values} values, {claimed} takes "
                                  f"{elements * per_element}")
        if values < elements * per_element and elements * itemsize > budget:  # TF would pad
            raise InvalidArgument(f"input '{key}': {claimed} would be padded from {values} values to "
                                  f"{elements * itemsize} bytes; the limit is {budget}")
    if elements * itemsize > budget:
        raise RequestTooLarge(f"input '{key}': {claimed} is {elements * itemsize} bytes, more than the "
                              f"{budget} bytes left of the request limit")
    return elements * itemsize


def to_ndarray(proto: tensor_pb2.TensorProto, key: str, budget: int) -> np.ndarray:
    """Decode one request tensor of at most `budget` bytes; a malformed one is INVALID_ARGUMENT."""
    decoded_bytes(proto, key, budget)
    return _decode(proto, key)


def decode_inputs(tensors: Mapping[str, tensor_pb2.TensorProto], budget: int) -> dict[str, np.ndarray]:
    """Decode a request's inputs, checking every claim first so that a refusal allocates nothing."""
    for key, proto in tensors.items():
        budget -= decoded_bytes(proto, key, budget)
    return {key: _decode(proto, key) for key, proto in tensors.items()}


def _decode(proto: tensor_pb2.TensorProto, key: str) -> np.ndarray:
    dtype = _NUMPY_DTYPES.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape([d.size for d in proto.tensor_shape.dim])
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # any decoding failure is a malformed request
        raise InvalidArgument(f"input '{key}': cannot decode TensorProto: {exc}") from exc


def _shown(shape: list[int]) -> str:
    return str(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, ...] (rank {len(shape)})"


def fill_tensor_proto(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """Encode an output into `proto` in place (e.g. a response map entry), avoiding extra copies."""
    data_type = _DATA_TYPES.get(array.dtype)
    if data_type is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = data_type
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = array.tobytes()
