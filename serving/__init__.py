"""Serving exported generators: TF Serving configs, and ``nebula serve`` / ``nebula client``.

Modules: ``server`` (start-up and shutdown of all the parts), ``predict`` (the one Predict /
Classify / Regress path), ``app`` (TF Serving's REST API v1 on Starlette), ``rest_api`` (its
URLs and JSON <-> tensors), ``tf_json`` (rapidjson's reading and writing as TF Serving uses
them), ``grpc_api`` (TF Serving's gRPC services), ``tensor_proto`` (TensorProto <-> numpy),
``protos`` (tensorflow-serving-api's protos without TensorFlow), ``proto_schema`` (declaring
proto messages field by field), ``errors``, ``types``, ``options`` (server settings, batching
options, defaults), ``runtimes`` (ONNX Runtime / SavedModel runners), ``registry`` (versions,
labels, hot pickup, reload), ``batching``, ``metrics`` and ``tf_metrics`` (TF Serving's metric
families), ``config_files``, ``signatures`` (signature defs and TF's checks on them), ``client``,
``cli``. Importing this package imports nothing heavy.
"""
