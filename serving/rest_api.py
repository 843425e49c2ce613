"""TF Serving REST API v1: URL parsing, request JSON -> tensors, tensors -> response JSON, errors.

Follows tensorflow/serving's ``http_rest_api_util.cc`` (URL regexes, version and
label rules), ``json_tensor.cc`` (row ``instances`` / columnar ``inputs`` formats,
type rules, ``{"b64": ...}``, ``predictions`` / ``outputs`` response shapes) and
``http_server.cc`` (status code -> HTTP status), including their error messages
where a client could reasonably match on them. Imports numpy and the standard
library only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from urllib.parse import unquote

import numpy as np

from nebula_keras3.export import layout
from nebula_keras3.serving import tf_json
from nebula_keras3.serving.errors import ServingError, invalid
from nebula_keras3.serving.signatures import DTYPE_STRING, NUMPY_DTYPE, SignatureSpec, TensorInfo
from nebula_keras3.serving.types import ModelRequest

DEFAULT_SIGNATURE = layout.SERVING_DEFAULT


# http_rest_api_util.cc AddCORSHeaders (with --rest_api_enable_cors_support)
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def error_body(message: str) -> bytes:
    """json_tensor.cc MakeJsonFromStatus: ``{"error": message}`` as rapidjson's PrettyWriter writes it."""
    return b'{\n    "error": ' + tf_json.string_token(message) + b"\n}"


# --------------------------------------------------------------------------- URLs

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
V1_PATH_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_INT64_MAX = 2**63 - 1


def parse_path(http_method: str, raw_path: str) -> ModelRequest:
    """Parse a /v1 request path like TF Serving's ParseModelInfo; raises ServingError."""
    malformed = invalid(f"Malformed request: {http_method} {raw_path}")
    if http_method == "POST":
        m = _PREDICT_RE.fullmatch(raw_path)
        if not m:
            raise malformed
        name, vstr, label, method = m.groups()
        sub = None
    elif http_method == "GET":
        m = _STATUS_RE.fullmatch(raw_path)
        if not m:
            raise malformed
        name, vstr, label, sub = m.groups()
        method = None
    else:
        raise malformed
    name = unquote(name) if name else ""
    version = None
    if vstr:
        v = int(vstr)
        if v > _INT64_MAX:
            raise invalid(f"Failed to convert version: {vstr} to numeric.")
        version = v
    if label:
        label = unquote(label)
    if http_method == "POST" and method not in ("predict", "classify", "regress"):
        raise malformed  # ":PREDICT" matches the (?i) regex but no handler, as in TF Serving
    if sub is not None and sub != "metadata":
        sub = None  # TF Serving matches "(?i)metadata" but answers anything but "metadata" with the status
    if not name:
        raise invalid("Missing model name in request.")
    if version is not None and label is not None:  # unreachable with the regexes; kept as TF has it
        raise invalid(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
    return ModelRequest(name, version, label, method, sub)


# --------------------------------------------------------------------------- JSON in

def json_str(val) -> str:
    """json_tensor.cc JsonValueToDebugString (rapidjson PrettyWriter, cut after 256 bytes)."""
    return tf_json.debug_string(val)


def _json_type(val) -> str:
    return tf_json.type_name(val)


def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object, read like json_tensor.cc ParseJson (rapidjson 1.1.0)."""
    try:
        doc = tf_json.parse(body)
    except tf_json.JsonParseError as e:
        raise invalid(str(e)) from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {json_str(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    if "signature_name" in doc:
        sig = doc["signature_name"]
        if not isinstance(sig, str):
            raise invalid(
                f"JSON Value: {json_str(doc)} not formatted correctly. "
                "'signature_name' key must be a string value."
            )
        return sig
    return ""


def _is_b64_object(val) -> bool:
    """json_tensor.cc IsValBase64Object: an object with exactly one member, "b64", a string."""
    return (isinstance(val, dict) and tf_json.member_count(val) == 1
            and isinstance(val.get("b64"), str))


def _is_element_object(val) -> bool:
    return isinstance(val, dict) and not _is_b64_object(val)


def _dense_shape(val) -> list[int]:
    """Shape from the first element of every nested list (TF's GetDenseTensorShape), iteratively."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


# rapidjson's IsInt / IsInt64 / IsUint / IsUint64 ranges (json_tensor.cc AddValueToTensor);
# int8/int16/uint8 take any int32 (add_int_val) and are narrowed like Tensor::FromProto does.
_INT_RANGES = {
    "DT_INT32": (-(2**31), 2**31 - 1), "DT_INT16": (-(2**31), 2**31 - 1),
    "DT_INT8": (-(2**31), 2**31 - 1), "DT_UINT8": (-(2**31), 2**31 - 1),
    "DT_INT64": (-(2**63), 2**63 - 1), "DT_UINT32": (0, 2**32 - 1), "DT_UINT64": (0, 2**64 - 1),
}
_FLOAT_TYPES = ("DT_FLOAT", "DT_DOUBLE")
_NUMBER_TYPES = frozenset((int, float))  # exact types: bool (an int subclass) is not a number here
_INT_TYPE = {int}


def _type_error(val, dtype: str) -> ServingError:
    return invalid(
        f"JSON Value: {json_str(val)} Type: {_json_type(val)} is not of expected type: "
        f"{DTYPE_STRING.get(dtype, dtype)}"
    )


def _status_string(e: ServingError) -> str:
    """absl::Status::ToString(): "CODE: message"."""
    return f"{e.code}: {e.message}"


def _convert_leaf(val, dtype: str):
    """One JSON leaf -> Python value for ``dtype`` (json_tensor.cc FillTensorProto + AddValueToTensor)."""
    if isinstance(val, dict):
        if dtype != "DT_STRING":
            raise _type_error(val, dtype)
        if not _is_b64_object(val):
            raise invalid(f"JSON Value: {json_str(val)} not formatted correctly for base64 data")
        s = val["b64"]
        try:
            return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None
    if dtype in _FLOAT_TYPES:
        # IsNumber(): any number; GetFloat()/GetDouble() convert ints (rounded) and
        # overflow to +-inf (no "loss of precision" check since TF Serving 2.5)
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise _type_error(val, dtype)
        return float(val)
    if dtype in _INT_RANGES:
        if isinstance(val, bool) or not isinstance(val, int):
            raise _type_error(val, dtype)
        lo, hi = _INT_RANGES[dtype]
        if not lo <= val <= hi:
            raise _type_error(val, dtype)
        return val
    if dtype == "DT_STRING":
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode("utf-8", tf_json.ENCODING_ERRORS)
    if dtype == "DT_BOOL":
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    raise ServingError(
        "UNIMPLEMENTED", f"Conversion of JSON Value: {json_str(val)} to type: {DTYPE_STRING.get(dtype, dtype)}"
    )


def _fill(val, shape: list[int], dtype: str, out: list, level: int = 0) -> None:
    """TF's FillTensorProto: every leaf at depth == rank, every list of the expected size."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {json_str(val)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert_leaf(val, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: {shape[level]}"
        )
    if level == rank - 1:
        # fast path: a row of plain numbers converts exactly as _convert_leaf would, in C
        types = set(map(type, val))
        if dtype in _FLOAT_TYPES and types <= _NUMBER_TYPES:
            out.extend(val)
            return
        if types == _INT_TYPE and dtype in _INT_RANGES and val:
            lo, hi = _INT_RANGES[dtype]
            if lo <= min(val) and max(val) <= hi:
                out.extend(val)
                return
        conv = _convert_leaf
        for v in val:
            if isinstance(v, list):
                raise invalid(f"Encountered list at unexpected level: {level + 1} expected < {rank}")
            out.append(conv(v, dtype))
    else:
        for v in val:
            _fill(v, shape, dtype, out, level + 1)


def _to_array(flat: list, shape: list[int], dtype: str) -> np.ndarray:
    np_dtype = NUMPY_DTYPE.get(dtype)
    if np_dtype is None:
        raise ServingError("UNIMPLEMENTED", f"Tensors of type {dtype} are not supported")
    if dtype == "DT_STRING":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if dtype in _FLOAT_TYPES:
        with np.errstate(over="ignore"):  # static_cast<float>(huge double) == inf
            return np.asarray(flat, dtype=np.float64).astype(np_dtype).reshape(shape)
    if dtype in ("DT_INT8", "DT_INT16", "DT_UINT8"):  # int32 values narrowed as Tensor::FromProto does
        return np.asarray(flat, dtype=np.int64).astype(np_dtype).reshape(shape)
    return np.asarray(flat, dtype=np_dtype).reshape(shape)


def _json_to_tensor(val, spec: TensorInfo, max_rank: int = 8) -> np.ndarray:
    shape = _dense_shape(val)
    if len(shape) > max_rank:
        raise invalid(f"JSON value nests lists {len(shape)} deep; tensors here have at most rank {max_rank}")
    flat: list = []
    _fill(val, shape, spec.dtype, flat)
    return _to_array(flat, shape, spec.dtype)


def parse_predict_inputs(doc: dict, signature: SignatureSpec,
                         signature_name: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """``(format, {input name: array})`` of a predict request; format is "row" or "columnar".

    json_tensor.cc FillPredictRequestFromJson, after the signature's input map is known.
    """
    infos = signature.inputs
    if not infos:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    max_rank = max((len(s.shape) if s.shape is not None else 8) for s in infos.values()) + 1
    has_inst, has_inp = "instances" in doc, "inputs" in doc
    if has_inst and has_inp:
        raise invalid(
            f"JSON Value: {json_str(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_inst:
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise invalid(f"JSON Value: {json_str(doc)} Expecting 'instances' to be an list/array")
        if not inst:
            raise invalid(f"JSON Value: {json_str(doc)} No values in 'instances' array")
        tensors = _instances_to_tensors(inst, infos, max_rank)
        fmt = "row"
    elif has_inp:
        tensors = _inputs_to_tensors(doc["inputs"], infos, max_rank)
        fmt = "columnar"
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    for name, arr in tensors.items():
        infos[name].check_shape(name, arr)
    batch = {a.shape[0] for a in tensors.values() if a.ndim}
    if len(batch) > 1:
        raise invalid(f"Input tensors must have equal 0th-dimension size, got {sorted(batch)}")
    return fmt, tensors


def _instances_to_tensors(inst: list, infos: dict[str, TensorInfo], max_rank: int) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInstancesList."""
    if not isinstance(inst[0], dict) and len(infos) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )
    objects = _is_element_object(inst[0])
    names = sorted(infos)
    rows: dict[str, list] = {n: [] for n in names}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item, name, i):  # AddInstanceItem
        if name not in infos:
            raise invalid(f"JSON object: does not have named input: {name}")
        spec = infos[name]
        shape = _dense_shape(item)
        if len(shape) >= max_rank:
            raise invalid(f"JSON value nests lists {len(shape)} deep; tensors here have at most rank {max_rank - 1}")
        flat: list = []
        _fill(item, shape, spec.dtype, flat)
        if name not in sizes:
            sizes[name], shapes[name] = len(flat), shape
        elif sizes[name] != len(flat):
            raise invalid(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        elif shapes[name] != shape:
            raise invalid(
                f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: [{','.join(map(str, shape))}]"
            )
        rows[name].extend(flat)

    for i, elem in enumerate(inst):
        if objects:
            if not _is_element_object(elem):
                raise invalid(f"Expecting object but got list at item {i} of input list")
            keys = set()
            for key, item in tf_json.members(elem):
                keys.add(key)
                try:
                    add(item, key, i)
                except ServingError as e:
                    raise invalid(
                        f"Failed to process element: {i} key: {key} of 'instances' list. "
                        f"Error: {_status_string(e)}"
                    ) from None
            if keys != set(names):
                raise invalid(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{json_str(elem)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(elem):
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, names[0], i)
            except ServingError as e:
                raise invalid(
                    f"Failed to process element: {i} of 'instances' list. Error: {_status_string(e)}"
                ) from None
    n = len(inst)
    # a key repeated inside one object appends its values twice (as TF does); Tensor::FromProto
    # then keeps the first n * size values
    return {name: _to_array(rows[name][: n * sizes[name]], [n] + shapes[name], infos[name].dtype)
            for name in rows}


def _inputs_to_tensors(val, infos: dict[str, TensorInfo], max_rank: int) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInputsMap."""
    if not isinstance(val, dict) or _is_b64_object(val):
        if len(infos) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        name = next(iter(infos))
        return {name: _json_to_tensor(val, infos[name], max_rank)}
    out = {}
    for name in sorted(infos):
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _json_to_tensor(val[name], infos[name], max_rank)
    return out


# --------------------------------------------------------------------------- JSON out

# "  0," .. "255," : fixed-width tokens; JSON allows the leading blanks.
_U8_TOKENS = np.frombuffer(b"".join(b"%3d" % i for i in range(256)), dtype=np.uint8).reshape(256, 3)


def _encode_fixed_width(tokens: np.ndarray) -> bytes:
    """Nested JSON arrays from a ``shape + (w,)`` array of fixed-width ASCII tokens."""
    x = tokens
    for _ in range(tokens.ndim - 1):
        n, w = x.shape[-2], x.shape[-1]
        lead = x.shape[:-2]
        body = np.empty(lead + (n, w + 1), dtype=np.uint8)
        body[..., :w] = x
        body[..., w] = ord(",")
        body = body.reshape(lead + (n * (w + 1),))
        body[..., -1] = ord("]")
        out = np.empty(lead + (n * (w + 1) + 1,), dtype=np.uint8)
        out[..., 0] = ord("[")
        out[..., 1:] = body
        x = out
    return x.tobytes()


def _float_token(v) -> str:
    v = np.float32(v) if not isinstance(v, np.float64) else v
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    s = str(v)
    if "." not in s and "e" not in s:
        s += ".0"
    return s


def _value_json(v, dtype_kind: str, as_bytes: bool) -> str:
    if dtype_kind == "f":
        return _float_token(v)
    if dtype_kind == "b":
        return "true" if v else "false"
    if dtype_kind in "iu":
        return str(int(v))
    b = v if isinstance(v, (bytes, bytearray)) else str(v).encode()
    if as_bytes:
        return '{"b64": "' + base64.b64encode(b).decode("ascii") + '"}'
    return json.dumps(b.decode("utf-8", "replace"))


# "  0," .. "255," as one uint32 each: one C-level gather makes the digits and commas of a row
_U8_TOKENS4 = np.frombuffer(b"".join(b"%3d," % i for i in range(256)), dtype=np.uint32)


@functools.lru_cache(maxsize=32)
def _u8_template(item_shape: tuple[int, ...]) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """One batch item's JSON with blank digits, and where its innermost lists' digits start.

    Fixed-width tokens make the layout a regular grid: the first digit of innermost list
    ``(i1, ..., ik)`` sits at ``offset + sum(i * stride)``, so one strided copy fills them all.
    """
    tpl = np.frombuffer(_encode_fixed_width(np.zeros(item_shape + (3,), np.uint8)), dtype=np.uint8)
    first = np.flatnonzero(tpl == 0).reshape(item_shape[:-1] + (3 * item_shape[-1],))[..., 0]
    offset = int(first.flat[0])
    strides = tuple(int(np.take(first, 1, axis=j).flat[0]) - offset if n > 1 else 0
                    for j, n in enumerate(first.shape))
    return tpl, offset, strides


def _encode_u8(arr: np.ndarray) -> bytes:
    """uint8 tensor (rank >= 2) -> nested JSON lists: cached template + one strided copy of the digits."""
    b, c = arr.shape[0], arr.shape[-1]
    tpl, offset, strides = _u8_template(arr.shape[1:])
    out = np.empty((b, tpl.size + 1), dtype=np.uint8)
    out[:, :-1] = tpl
    out[:, -1] = ord(",")
    out[-1, -1] = ord("]")
    for i in range(b):  # item by item: a cache-sized copy is several times faster than one big one
        tokens = _U8_TOKENS4.take(arr[i]).view(np.uint8).reshape(arr.shape[1:-1] + (4 * c,))
        grid = np.lib.stride_tricks.as_strided(
            out[i, offset:], shape=arr.shape[1:-1] + (4 * c - 1,), strides=strides + (1,), writeable=True)
        grid[...] = tokens[..., :-1]  # "ddd,ddd,ddd" (the template holds the brackets)
    return b"[" + out.tobytes()


def tensor_json(arr: np.ndarray, name: str) -> bytes:
    """One tensor as (nested) JSON, like TF Serving's AddTensorValues; ``*_bytes`` strings as b64."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8 and arr.ndim >= 1 and arr.size and 0 not in arr.shape:
        return _encode_u8(arr) if arr.ndim >= 2 else _encode_fixed_width(_U8_TOKENS[arr])
    as_bytes = arr.dtype.kind in "OSU" and name.endswith("_bytes")
    kind = arr.dtype.kind if arr.dtype.kind in "fbiu" else "O"

    def rec(a) -> str:
        if a.ndim == 0:
            return _value_json(a[()], kind, as_bytes)
        if a.ndim == 1:
            return "[" + ",".join(_value_json(a[i], kind, as_bytes) for i in range(a.shape[0])) + "]"
        return "[" + ",".join(rec(a[i]) for i in range(a.shape[0])) + "]"

    return rec(arr).encode()


def predict_response(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), as json_tensor.cc writes them."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == "row":
        batch = None
        for n in names:
            a = outputs[n]
            if a.ndim == 0:
                raise invalid(f"Tensor name: {n} has no shape information ")
            if a.shape[0] < 1:
                raise invalid(f"Tensor name: {n} has invalid batch size: {a.shape[0]}")
            if batch is not None and a.shape[0] != batch:
                raise invalid(f"Tensor name: {n} has inconsistent batch size: {a.shape[0]} expecting: {batch}")
            batch = a.shape[0]
        if len(names) == 1:
            return b'{"predictions": ' + tensor_json(outputs[names[0]], names[0]) + b"}"
        items = []
        for i in range(batch):
            items.append(
                b"{" + b",".join(json.dumps(n).encode() + b": " + tensor_json(outputs[n][i], n) for n in names) + b"}"
            )
        return b'{"predictions": [' + b",".join(items) + b"]}"
    if len(names) == 1:
        return b'{"outputs": ' + tensor_json(outputs[names[0]], names[0]) + b"}"
    return b'{"outputs": {' + b",".join(
        json.dumps(n).encode() + b": " + tensor_json(outputs[n], n) for n in names
    ) + b"}}"


# --------------------------------------------------------------------------- status / metadata

def model_status_json(versions: list[tuple[int, str, str, str]]) -> dict:
    """GetModelStatusResponse JSON from ``(version, state, error_code, error_message)``, newest first."""
    return {
        "model_version_status": [
            {"version": str(v), "state": state, "status": {"error_code": code, "error_message": msg}}
            for v, state, code, msg in sorted(versions, key=lambda t: -t[0])
        ]
    }


def model_metadata_json(name: str, version: int, signature_def_map: dict) -> dict:
    """GetModelMetadataResponse JSON (model_spec + metadata.signature_def), as http_rest_api_util.cc prints it."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": signature_def_map},
    }


# --------------------------------------------------------------------------- classify / regress

def _feature_value(v, name: str, kind: str | None) -> str:
    """json_tensor.cc AddValueToFeature: the feature's kind after adding ``v`` (or an error)."""
    def incompatible():
        return invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")

    if v is None or isinstance(v, list) or (isinstance(v, dict) and not _is_b64_object(v)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
    if isinstance(v, bool):
        want = "int64"
    elif isinstance(v, dict):
        want = "bytes"
        s = v["b64"]
        try:
            base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
        except (binascii.Error, ValueError):
            if kind in (None, want):
                raise invalid("Unable to base64 decode") from None
    elif isinstance(v, str):
        want = "bytes"
    elif isinstance(v, float) or not -(2**63) <= v < 2**64:
        want = "float"  # rapidjson IsDouble (integers beyond uint64 are doubles)
    else:
        want = "int64"
    if kind not in (None, want):
        raise incompatible()
    if want == "int64" and not isinstance(v, bool) and v >= 2**63:
        raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return want


def _check_example(val) -> None:
    """json_tensor.cc MakeExampleFromJsonObject (validation only)."""
    if not isinstance(val, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(val)}")
    for name, content in tf_json.members(val):
        kind = None
        for v in (content if isinstance(content, list) else [content]):
            kind = _feature_value(v, name, kind)


def check_classify_regress_request(doc: dict) -> None:
    """json_tensor.cc FillClassifyRegressRequestFromJson after ParseJson and FillSignature.

    The wording says "classify" for :regress too, as TF Serving's does.
    """
    if "context" in doc:
        _check_example(doc["context"])
    if "examples" not in doc:
        raise invalid(f"JSON Value: {json_str(doc)} When method is classify, key 'examples' is expected "
                      "and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {json_str(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {json_str(doc)} 'examples' value is an empty array")
    for ex in examples:
        _check_example(ex)
