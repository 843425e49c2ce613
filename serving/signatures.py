"""Signature definitions of a SavedModel, read from its graph file without TensorFlow.

TF Serving answers ``GET /v1/models/<name>/metadata`` with the SavedModel's
``SignatureDefMap`` printed as JSON. The embedded server reads the same graph
file (only the fields it needs: ``meta_graphs[].signature_def``,
declared below with ``descriptor_pb2`` with the field numbers of
``tensorflow/core/protobuf/{saved_model,meta_graph}.proto``,
``tensorflow/core/framework/{tensor_shape,types}.proto``) and prints it the same
way, so both servers report the same signatures, tensor names and shapes. The
same specs drive request validation (dtype, rank, fixed dimensions).
:func:`contract_signatures` gives the export contract's signatures in the same form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nebula_keras3.export import layout
from nebula_keras3.serving.proto_schema import (
    FIELD,
    add_field,
    add_map_field,
    add_message_field,
    add_tensor_shape,
    build_pool,
    message_class,
    message_to_dict,
    new_file,
)
from nebula_keras3.serving.errors import ServingError, invalid

# tensorflow/core/framework/types.proto (the values the REST API can carry, plus a few)
DATA_TYPES = {
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4,
    "DT_INT16": 5, "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9,
    "DT_BOOL": 10, "DT_QINT8": 11, "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14,
    "DT_QINT16": 15, "DT_QUINT16": 16, "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19,
    "DT_RESOURCE": 20, "DT_VARIANT": 21, "DT_UINT32": 22, "DT_UINT64": 23,
}
# TF's DataTypeString(), used in error messages ("... is not of expected type: float")
DTYPE_STRING = {
    "DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_INT32": "int32", "DT_UINT8": "uint8",
    "DT_INT16": "int16", "DT_INT8": "int8", "DT_STRING": "string", "DT_INT64": "int64",
    "DT_BOOL": "bool", "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_HALF": "half",
}
NUMPY_DTYPE = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_INT32": "int32", "DT_UINT8": "uint8",
    "DT_INT16": "int16", "DT_INT8": "int8", "DT_STRING": "object", "DT_INT64": "int64",
    "DT_BOOL": "bool", "DT_UINT32": "uint32", "DT_UINT64": "uint64",
}
PREDICT_METHOD = layout.PREDICT_METHOD
CLASSIFY_METHOD = "tensorflow/serving/classify"  # signature_constants kClassifyMethodName
REGRESS_METHOD = "tensorflow/serving/regress"  # kRegressMethodName
# the export contract's dtype names (numpy-style) as TF DataType names
CONTRACT_DTYPE = {"float32": "DT_FLOAT", "int64": "DT_INT64", "uint8": "DT_UINT8", "string": "DT_STRING"}
INIT_OP_SIGNATURE = "__saved_model_init_op"


def _build_pool():
    fd = new_file("nebula_serving/saved_model_subset.proto", "tensorflow")
    enum = fd.enum_type.add(name="DataType")
    for name, num in DATA_TYPES.items():
        enum.value.add(name=name, number=num)
    add_tensor_shape(fd)
    fd.message_type.add(name="TensorProto")  # only ever printed as {} (signature defaults)
    info = fd.message_type.add(name="TensorInfo")
    info.oneof_decl.add(name="encoding")
    add_field(info, "name", 1, FIELD.TYPE_STRING, oneof=0)
    add_field(info, "dtype", 2, FIELD.TYPE_ENUM, type_name=".tensorflow.DataType")
    add_message_field(info, "tensor_shape", 3, ".tensorflow.TensorShapeProto")
    sig = fd.message_type.add(name="SignatureDef")
    for number, name in ((1, "inputs"), (2, "outputs")):
        add_map_field(sig, name, number, FIELD.TYPE_STRING, FIELD.TYPE_MESSAGE,
                      value_type_name=".tensorflow.TensorInfo", scope=".tensorflow.SignatureDef")
    add_field(sig, "method_name", 3, FIELD.TYPE_STRING)
    add_map_field(sig, "defaults", 4, FIELD.TYPE_STRING, FIELD.TYPE_MESSAGE,
                  value_type_name=".tensorflow.TensorProto", scope=".tensorflow.SignatureDef")
    mg = fd.message_type.add(name="MetaGraphDef")
    add_map_field(mg, "signature_def", 5, FIELD.TYPE_STRING, FIELD.TYPE_MESSAGE,
                  value_type_name=".tensorflow.SignatureDef", scope=".tensorflow.MetaGraphDef")
    sm = fd.message_type.add(name="SavedModel")
    add_field(sm, "saved_model_schema_version", 1, FIELD.TYPE_INT64)
    add_message_field(sm, "meta_graphs", 2, ".tensorflow.MetaGraphDef", repeated=True)
    # tensorflow_serving/apis/get_model_metadata.proto: SignatureDefMap
    sdm = fd.message_type.add(name="SignatureDefMap")
    add_map_field(sdm, "signature_def", 1, FIELD.TYPE_STRING, FIELD.TYPE_MESSAGE,
                  value_type_name=".tensorflow.SignatureDef", scope=".tensorflow.SignatureDefMap")
    return build_pool(fd)


_POOL = _build_pool()
SavedModelProto = message_class(_POOL, "tensorflow.SavedModel")
SignatureDefMapProto = message_class(_POOL, "tensorflow.SignatureDefMap")


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output as a SignatureDef's TensorInfo describes it (TF DataType names)."""

    dtype: str  # "DT_FLOAT", ...
    shape: tuple[int, ...] | None  # -1 for unknown dims; None for unknown rank
    tensor_name: str = ""

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def shape_str(self) -> str:
        return "[?]" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"

    def check_shape(self, alias: str, arr) -> None:
        """The rank and fixed dimensions of an input (TF reports a mismatch at Run(), as INVALID_ARGUMENT)."""
        if self.shape is None:
            return
        if arr.ndim != len(self.shape) or any(d >= 0 and d != a for d, a in zip(self.shape, arr.shape)):
            raise invalid(f"input tensor alias {alias}: expected shape {self.shape_str()} "
                          f"but got [{','.join(map(str, arr.shape))}]")


@dataclass(frozen=True)
class SignatureSpec:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = PREDICT_METHOD


def read_saved_model_signatures(version_dir, tag: str = "serve"):
    """``(specs, signature_def_json)`` of the SavedModel graph file in ``version_dir``.

    ``specs`` maps each signature name (the init-op one excluded) to a SignatureSpec;
    ``signature_def_json`` is the SignatureDefMap in TF Serving's metadata JSON form.
    """
    path = Path(version_dir) / layout.SAVED_MODEL_FILE
    sm = SavedModelProto()
    sm.ParseFromString(path.read_bytes())
    if not sm.meta_graphs:
        raise ValueError(f"{path} holds no MetaGraphDef")
    mg = sm.meta_graphs[0]  # TF2 SavedModels hold exactly one, tagged "serve"
    sdm = SignatureDefMapProto()
    specs: dict[str, SignatureSpec] = {}
    for name, sig in mg.signature_def.items():
        sdm.signature_def[name].CopyFrom(sig)
        if name == INIT_OP_SIGNATURE:
            continue
        specs[name] = SignatureSpec(
            inputs={k: _spec(v) for k, v in sig.inputs.items()},
            outputs={k: _spec(v) for k, v in sig.outputs.items()},
            method_name=sig.method_name,
        )
    return specs, message_to_dict(sdm)


def _spec(info) -> TensorInfo:
    dtype = _POOL.FindEnumTypeByName("tensorflow.DataType").values_by_number[info.dtype].name
    shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorInfo(dtype, shape, info.name)


def contract_signatures(latent_dim: int, image_size: int) -> dict[str, SignatureSpec]:
    """The export contract's signatures (:func:`layout.signatures`) as SignatureSpecs, with the
    tensor names a SavedModel export gives them."""
    out = {}
    for name, sig in layout.signatures(latent_dim, image_size).items():
        in_names, out_names = layout.tf_tensor_names(name)
        out[name] = SignatureSpec(
            {k: TensorInfo(CONTRACT_DTYPE[t.dtype], t.shape, in_names[k]) for k, t in sig.inputs.items()},
            {k: TensorInfo(CONTRACT_DTYPE[t.dtype], t.shape, out_names[k]) for k, t in sig.outputs.items()},
            PREDICT_METHOD,
        )
    return out


def signature_def_json(specs: dict[str, SignatureSpec]) -> dict:
    """SignatureDefMap JSON for specs not read from a SavedModel (same shape as TF prints)."""
    sdm = SignatureDefMapProto()
    for name, spec in specs.items():
        sig = sdm.signature_def[name]
        sig.method_name = spec.method_name
        for key, which in (("inputs", spec.inputs), ("outputs", spec.outputs)):
            for k, t in which.items():
                info = getattr(sig, key)[k]
                info.name = t.tensor_name
                info.dtype = DATA_TYPES[t.dtype]
                if t.shape is None:
                    info.tensor_shape.unknown_rank = True
                else:
                    for d in t.shape:
                        info.tensor_shape.dim.add(size=d)
    return message_to_dict(sdm)


# --------------------------------------------------------------------------- TF's signature checks

def signature_def_debug_string(sig: dict) -> str:
    """SignatureDef::DebugString() (protobuf text format) from its JSON form, for TF's error messages."""
    out: list[str] = []

    def shape(ts: dict, ind: str):
        out.append(f"{ind}tensor_shape {{")
        for d in ts.get("dim", []):
            out.append(f"{ind}  dim {{")
            if int(d.get("size", 0)):
                out.append(f"{ind}    size: {int(d['size'])}")
            if d.get("name"):
                out.append(f"{ind}    name: {json.dumps(d['name'])}")
            out.append(f"{ind}  }}")
        if ts.get("unknown_rank"):
            out.append(f"{ind}  unknown_rank: true")
        out.append(f"{ind}}}")

    for field in ("inputs", "outputs"):
        for key in sorted(sig.get(field, {})):
            info = sig[field][key]
            out.append(f"{field} {{")
            out.append(f"  key: {json.dumps(key)}")
            out.append("  value {")
            if info.get("name"):
                out.append(f"    name: {json.dumps(info['name'])}")
            if info.get("dtype") and info["dtype"] != "DT_INVALID":
                out.append(f"    dtype: {info['dtype']}")
            if "tensor_shape" in info:
                shape(info["tensor_shape"], "    ")
            out.append("  }")
            out.append("}")
    if sig.get("method_name"):
        out.append(f"method_name: {json.dumps(sig['method_name'])}")
    return "\n".join(out) + "\n"


def check_predict_method_name(sig: SignatureSpec) -> None:
    """predict_util.cc VerifySignature (only with --enable_signature_method_name_check)."""
    allowed = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
    if sig.method_name not in allowed:
        raise ServingError("INTERNAL", "Expected prediction signature method_name to be one of {"
                                       f"{', '.join(allowed)}}}. Was: {sig.method_name}")


def check_classify_regress_signature(api: str, sig_name: str, signatures: dict[str, SignatureSpec],
                                     signature_defs: dict | None, method_name_check: bool) -> None:
    """servables/tensorflow/{classifier,regressor}.cc Get*SignatureDef + PreProcess* checks.

    ``api`` is "classify" or "regress"; ``signatures`` and ``signature_defs`` (the
    ``{"signature_def": {...}}`` JSON) are the served version's. Used by REST's
    :classify/:regress and gRPC's Classify/Regress (TF runs the same RunClassify /
    RunRegress for both); it always raises: no tf.Example signature is served.
    """
    sig = signatures.get(sig_name)
    if sig is None:
        raise invalid(f"No signature was found with the name: {sig_name}")
    sig_json = (signature_defs or {}).get("signature_def", {}).get(sig_name)
    kind, method = ("classification", CLASSIFY_METHOD) if api == "classify" else ("regression", REGRESS_METHOD)
    if method_name_check and sig.method_name != method:
        raise invalid(f"Expected {kind} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    n_out = len(sig.outputs)
    if api == "classify" and n_out not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {n_out}")
    if api == "regress" and n_out != 1:
        raise invalid("Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid(f"No {kind} inputs found in SignatureDef: {signature_def_debug_string(sig_json or {})}")
    raise ServingError("UNIMPLEMENTED", f"nebula serve does not run tf.Example {kind} signatures ({sig_name})")
