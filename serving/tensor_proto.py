"""``tensorflow.TensorProto`` <-> numpy, without TensorFlow.

Reading follows TensorFlow's ``Tensor::FromProto`` (``tensorflow/core/framework/tensor.cc``):
the shape must be fully known with non-negative dims; ``tensor_content`` (raw
little-endian bytes, exactly ``elements * itemsize`` of them) wins over the typed
``*_val`` field; a typed field with fewer values than elements repeats its last
value, an empty one gives zeros, extra values are ignored. Writing follows
``Tensor::AsProtoField`` (what TF Serving's Predict answers with): dtype, shape
and the typed field (``uint8`` -> ``int_val``, ``string`` -> ``string_val`` ...).
"""

from __future__ import annotations

import numpy as np

from nebula_keras3.serving.signatures import DATA_TYPES, NUMPY_DTYPE

DTYPE_NAME = {num: name for name, num in DATA_TYPES.items()}
# numpy dtype per TF DataType (TF's DataTypeToEnum); half and uint16 only travel over gRPC
_NUMPY = {**NUMPY_DTYPE, "DT_HALF": "float16", "DT_UINT16": "uint16"}
DTYPE_OF_NUMPY = {np.dtype(v).str if v != "object" else "O": k for k, v in _NUMPY.items()}
# the typed value field of each dtype (tensor.proto)
_FIELD = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val", "DT_UINT8": "int_val",
    "DT_INT16": "int_val", "DT_INT8": "int_val", "DT_UINT16": "int_val", "DT_INT64": "int64_val",
    "DT_STRING": "string_val", "DT_BOOL": "bool_val", "DT_HALF": "half_val", "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
}


class TensorProtoError(ValueError):
    """A TensorProto that TensorFlow would not turn into a tensor (message says why)."""


def dtype_name(proto) -> str:
    return DTYPE_NAME.get(proto.dtype, f"DataType({proto.dtype})")


def shape_of(proto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise TensorProtoError("unknown rank")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise TensorProtoError(f"negative dimension in shape {list(shape)}")
    return shape


def _decode_string_list(content: bytes, n: int) -> list[bytes]:
    """TF's string tensor_content: n varint32 lengths, then the bytes (port::DecodeStringList)."""
    lengths, pos = [], 0
    for _ in range(n):
        value, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise TensorProtoError("malformed string tensor_content")
            b = content[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        lengths.append(value)
    out = []
    for length in lengths:
        if pos + length > len(content):
            raise TensorProtoError("malformed string tensor_content")
        out.append(bytes(content[pos:pos + length]))
        pos += length
    if pos != len(content):
        raise TensorProtoError("malformed string tensor_content")
    return out


def to_numpy(proto, *, max_elements: int | None = None) -> np.ndarray:
    """The array a TensorProto holds; raises TensorProtoError where TF's FromProto fails."""
    name = dtype_name(proto)
    if name not in _FIELD:
        raise TensorProtoError(f"unsupported dtype {name}")
    shape = shape_of(proto)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if max_elements is not None and n > max_elements:
        raise TensorProtoError(f"{n} elements; at most {max_elements} are allowed")
    np_dtype = np.dtype(_NUMPY[name])
    if name == "DT_STRING":
        if proto.tensor_content:
            values = _decode_string_list(proto.tensor_content, n)
        else:
            values = _fill(list(proto.string_val), n, b"")
        arr = np.empty(n, dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != n * np_dtype.itemsize:
            raise TensorProtoError(f"tensor_content holds {len(content)} bytes, "
                                   f"{n} x {np_dtype.itemsize} expected")
        return np.frombuffer(content, dtype=np_dtype.newbyteorder("<")).astype(np_dtype).reshape(shape)
    vals = getattr(proto, _FIELD[name])
    if name == "DT_HALF":  # half_val holds the 16-bit patterns as int32
        arr = np.asarray(vals, dtype=np.int32).astype(np.uint16).view(np.float16)
    elif _FIELD[name] == "int_val":  # int32 values cast to the narrower type (static_cast: wraps)
        arr = np.asarray(vals, dtype=np.int32).astype(np_dtype)
    else:
        arr = np.asarray(vals, dtype=np_dtype)
    if arr.size == n:
        return arr.reshape(shape)
    if arr.size > n:
        return arr[:n].reshape(shape)
    if arr.size == 0:
        return np.zeros(shape, dtype=np_dtype)
    return np.concatenate([arr, np.full(n - arr.size, arr[-1], dtype=np_dtype)]).reshape(shape)


def _new_proto():
    """A ``tensorflow.TensorProto`` of tensorflow-serving-api's modules (imported only when one is made here)."""
    from nebula_keras3.serving.protos import TensorProto

    return TensorProto()


def _fill(values: list, n: int, zero):
    if len(values) >= n:
        return values[:n]
    return values + [values[-1] if values else zero] * (n - len(values))


def from_numpy(arr: np.ndarray, proto=None, *, dtype: str | None = None):
    """``arr`` as a TensorProto the way TF's AsProtoField writes it (typed values field)."""
    arr = np.asarray(arr)
    if dtype is None:
        dtype = DTYPE_OF_NUMPY.get("O" if arr.dtype == object else arr.dtype.str)
        if dtype is None:
            raise TensorProtoError(f"no TensorFlow dtype for numpy {arr.dtype}")
    proto = _new_proto() if proto is None else proto
    proto.dtype = DATA_TYPES[dtype]
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=int(d))
    flat = arr.reshape(-1)
    field = getattr(proto, _FIELD[dtype])
    if dtype == "DT_STRING":
        field.extend([v if isinstance(v, bytes) else str(v).encode() for v in flat])
    elif dtype == "DT_HALF":
        field.extend(flat.astype(np.float16).view(np.uint16).astype(np.int32).tolist())
    else:
        field.extend(flat.astype(_NUMPY[dtype], copy=False).tolist())
    return proto


def from_numpy_content(arr: np.ndarray, proto=None, *, dtype: str | None = None):
    """``arr`` as a TensorProto with raw ``tensor_content`` (TF's AsProtoTensorContent; not for strings)."""
    arr = np.asarray(arr)
    if dtype is None:
        dtype = DTYPE_OF_NUMPY.get(arr.dtype.str)
    if dtype is None or dtype == "DT_STRING":
        return from_numpy(arr, proto, dtype=dtype)
    proto = _new_proto() if proto is None else proto
    proto.dtype = DATA_TYPES[dtype]
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=int(d))
    proto.tensor_content = np.ascontiguousarray(arr, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()
    return proto
