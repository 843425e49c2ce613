"""TF Serving's warmup file: ``<version>/assets.extra/tf_serving_warmup_requests``.

A TFRecord file of ``tensorflow.serving.PredictionLog`` records
(``tensorflow_serving/apis/prediction_log.proto``). TF Serving started with
``--enable_model_warmup`` replays each record ``--num_request_iterations_for_warmup``
times before the version becomes AVAILABLE (``servables/tensorflow/saved_model_warmup_util.cc``),
so the first real request does not pay for lazy initialisation; ``nebula serve``
replays the same file (:func:`read_predict_requests`).

:func:`write_warmup_file` writes a few ``predict_log`` records per signature of the
export contract (:mod:`layout`), at the given batch sizes. Reading and writing need
numpy and protobuf only (no TensorFlow, no ``tensorflow-serving-api``): the messages
are declared field for field below, and TFRecord framing is :mod:`nebula_keras3.tfrecord`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nebula_keras3 import tfrecord
from nebula_keras3.export import layout
from nebula_keras3.serving.proto_schema import (
    FIELD,
    REPEATED,
    add_field,
    add_map_field,
    add_message_field,
    add_tensor_shape,
    add_wrappers,
    build_pool,
    message_class,
    new_file,
)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords
DEFAULT_BATCH_SIZES = (1, 4)  # a single request and a small batch (within any max_batch_size)


class WarmupError(ValueError):
    """A warmup file that cannot be replayed (message says which file and why)."""


# --------------------------------------------------------------------------- messages


def _build_pool():
    wrappers = add_wrappers("nebula_warmup/wrappers.proto", "Int64Value")
    tf = new_file("nebula_warmup/tensor.proto", "tensorflow")
    add_tensor_shape(tf)
    tensor = tf.message_type.add(name="TensorProto")  # tensorflow/core/framework/tensor.proto
    add_field(tensor, "dtype", 1, FIELD.TYPE_INT32)  # the DataType enum, as its number
    add_message_field(tensor, "tensor_shape", 2, ".tensorflow.TensorShapeProto")
    add_field(tensor, "version_number", 3, FIELD.TYPE_INT32)
    add_field(tensor, "tensor_content", 4, FIELD.TYPE_BYTES)
    for name, number, ftype in (("float_val", 5, FIELD.TYPE_FLOAT), ("double_val", 6, FIELD.TYPE_DOUBLE),
                                ("int_val", 7, FIELD.TYPE_INT32), ("string_val", 8, FIELD.TYPE_BYTES),
                                ("int64_val", 10, FIELD.TYPE_INT64), ("bool_val", 11, FIELD.TYPE_BOOL),
                                ("half_val", 13, FIELD.TYPE_INT32), ("uint32_val", 16, FIELD.TYPE_UINT32),
                                ("uint64_val", 17, FIELD.TYPE_UINT64)):
        add_field(tensor, name, number, ftype, label=REPEATED)

    fd = new_file("nebula_warmup/prediction_log.proto", "tensorflow.serving", [wrappers.name, tf.name])
    spec = fd.message_type.add(name="ModelSpec")  # apis/model.proto
    spec.oneof_decl.add(name="version_choice")
    add_field(spec, "name", 1, FIELD.TYPE_STRING)
    add_message_field(spec, "version", 2, ".google.protobuf.Int64Value", oneof=0)
    add_field(spec, "version_label", 4, FIELD.TYPE_STRING, oneof=0)
    add_field(spec, "signature_name", 3, FIELD.TYPE_STRING)
    req = fd.message_type.add(name="PredictRequest")  # apis/predict.proto
    add_message_field(req, "model_spec", 1, ".tensorflow.serving.ModelSpec")
    add_map_field(req, "inputs", 2, FIELD.TYPE_STRING, FIELD.TYPE_MESSAGE, value_type_name=".tensorflow.TensorProto",
                  scope=".tensorflow.serving.PredictRequest")
    add_field(req, "output_filter", 3, FIELD.TYPE_STRING, label=REPEATED)
    predict_log = fd.message_type.add(name="PredictLog")
    add_message_field(predict_log, "request", 1, ".tensorflow.serving.PredictRequest")
    log = fd.message_type.add(name="PredictionLog")
    log.oneof_decl.add(name="log_type")
    # the other kinds are only told apart here (nebula serve replays predict logs only)
    for name, number in (("classify_log", 2), ("regress_log", 3), ("multi_inference_log", 4),
                         ("session_run_log", 5), ("predict_streamed_log", 7)):
        kind = "".join(p.capitalize() for p in name.split("_"))
        fd.message_type.add(name=kind)
        add_message_field(log, name, number, f".tensorflow.serving.{kind}", oneof=0)
    add_message_field(log, "predict_log", 6, ".tensorflow.serving.PredictLog", oneof=0)
    return build_pool(wrappers, tf, fd)


_POOL = _build_pool()
PredictionLog = message_class(_POOL, "tensorflow.serving.PredictionLog")

# tensorflow/core/framework/types.proto numbers of the contract's dtypes
_DTYPE_NUMBER = {"float32": 1, "int64": 9}
_NUMPY_OF_NUMBER = {1: np.float32, 9: np.int64}


# --------------------------------------------------------------------------- writing


def _tensor(proto, arr: np.ndarray) -> None:
    proto.dtype = _DTYPE_NUMBER[str(arr.dtype)]
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=int(d))
    proto.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def warmup_requests(latent_dim: int, image_size: int, model_name: str = layout.DEFAULT_MODEL_NAME,
                    batch_sizes=DEFAULT_BATCH_SIZES) -> list:
    """One PredictionLog (predict_log) per signature of the export contract and batch size.

    Inputs are fixed and reproducible: latents of a seeded normal draw for ``z``,
    seeds ``0..n-1`` for the seed signatures.
    """
    logs = []
    rng = np.random.default_rng(0)
    for name, sig in layout.signatures(latent_dim, image_size).items():
        for n in batch_sizes:
            log = PredictionLog()
            req = log.predict_log.request
            req.model_spec.name = model_name
            req.model_spec.signature_name = name
            for key, spec in sig.inputs.items():
                if key == layout.Z:
                    arr = rng.standard_normal((int(n), int(latent_dim))).astype(np.float32)
                else:
                    arr = np.arange(int(n), dtype=spec.dtype)
                _tensor(req.inputs[key], arr)
            logs.append(log)
    return logs


def write_warmup_file(version_dir, latent_dim: int, image_size: int, *, model_name: str = layout.DEFAULT_MODEL_NAME,
                      batch_sizes=DEFAULT_BATCH_SIZES) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests`` into a version folder being written."""
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"warmup batch sizes must be positive, got {list(batch_sizes)}")
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    logs = warmup_requests(latent_dim, image_size, model_name, sizes)
    path.write_bytes(b"".join(tfrecord.frame(log.SerializeToString()) for log in logs))
    return path


# --------------------------------------------------------------------------- reading


def read_predict_requests(version_dir) -> list[tuple[str, dict[str, np.ndarray]]] | None:
    """``[(signature_name, {input: array})]`` of a version's warmup file; None when it has none.

    Raises WarmupError where TF Serving's warmup fails the load: a record that does not
    parse, a log kind other than predict_log (UNIMPLEMENTED there too), more than 1000 records.
    """
    from nebula_keras3.serving import tensor_proto

    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WarmupError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        records = tfrecord.read_records(raw, str(path))
    except tfrecord.TFRecordError as e:
        raise WarmupError(str(e)) from None
    out = []
    for i, data in enumerate(records):
        if i >= MAX_RECORDS:
            raise WarmupError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        log = PredictionLog()
        try:
            log.ParseFromString(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise WarmupError(f"Failed to parse warmup record {i} from {path}") from None
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise WarmupError(f"Unsupported log_type for warmup: {kind} (record {i} of {path}; "
                              "nebula serve replays predict_log records)")
        req = log.predict_log.request
        try:
            inputs = {k: tensor_proto.to_numpy(v) for k, v in req.inputs.items()}
        except tensor_proto.TensorProtoError as e:
            raise WarmupError(f"record {i} of {path}: {e}") from None
        out.append((req.model_spec.signature_name or layout.SERVING_DEFAULT, inputs))
    return out
