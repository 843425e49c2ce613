"""Serving exported generators: TF Serving configs, and ``nebula serve`` / ``nebula client``.

Modules: ``app`` (Starlette server), ``rest_api`` (TF Serving REST v1 JSON), ``tf_json`` (rapidjson's
reading and writing as TF Serving uses them), ``grpc_api`` (TF Serving's gRPC services), ``tensor_proto``
(TensorProto <-> numpy), ``protos`` (tensorflow-serving-api's protos without TensorFlow), ``errors``,
``types``, ``options`` (server defaults), ``runtimes`` (ONNX Runtime / SavedModel runners), ``registry``
(versions, labels, hot pickup), ``batching``, ``metrics`` and ``tf_metrics`` (TF Serving's metric
families), ``config_files``, ``signatures`` (signature defs and TF's checks on them), ``client``, ``cli``,
``testing``.
Importing this package imports nothing heavy.
"""
