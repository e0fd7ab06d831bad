"""TensorProto <-> numpy for the gRPC hot path.

Fixed-size dtypes travel as `tensor_content` (raw little-endian bytes, what TF Serving and
tf.make_tensor_proto produce), so they are decoded with np.frombuffer (no copy) and encoded with
one tobytes(); everything else (strings, float_val lists, bfloat16 ...) goes through TensorFlow.
"""
from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.predictor.errors import InvalidArgument

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


def dtype_name(data_type: int) -> str:
    """TensorFlow's short name of a DataType enum ("float", "int32", "string")."""
    return types_pb2.DataType.Name(data_type).removeprefix("DT_").lower()


def numpy_dtype(data_type: int) -> np.dtype:
    """The numpy dtype that holds a DataType (object for strings)."""
    if data_type in _NUMPY_DTYPES:
        return _NUMPY_DTYPES[data_type]
    import tensorflow as tf

    return np.dtype(tf.dtypes.as_dtype(data_type).as_numpy_dtype)


def to_ndarray(proto: tensor_pb2.TensorProto, key: str = "") -> np.ndarray:
    """Decode a request tensor; a malformed one is the client's fault (INVALID_ARGUMENT)."""
    dtype = _NUMPY_DTYPES.get(proto.dtype)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if dtype is not None and proto.tensor_content:
        content = proto.tensor_content
        if any(size < 0 for size in shape) or len(content) != math.prod(shape) * dtype.itemsize:
            raise InvalidArgument(
                f"input '{key}': tensor_content holds {len(content)} bytes, "
                f"shape {shape} of {dtype_name(proto.dtype)} needs {math.prod(shape) * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # any decoding failure is a malformed request
        raise InvalidArgument(f"input '{key}': cannot decode TensorProto: {exc}") from exc


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
