"""The server's settings and their defaults (one home: ``nebula serve`` and ``ServingApp`` read them here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nebula_keras3.serving.config_files import DEFAULT_PROMETHEUS_PATH, BatchingOptions, ModelSpecConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port (0: no gRPC)
DEFAULT_GRPC_TARGET = f"{DEFAULT_HOST}:{DEFAULT_GRPC_PORT}"


@dataclass
class ServerOptions:
    models: list[ModelSpecConfig]
    config_file: str | None = None
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    poll_seconds: float = 1.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_buffered_body_bytes: int = 64 * 1024 * 1024  # all request bodies being read/held at once
    max_instances: int = 256
    max_concurrent_requests: int = 256
    intra_op_threads: int = 0
    prefer_onnx: bool = True
    prometheus_enabled: bool = True
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH
    drain_seconds: float = 30.0
    grpc_host: str = DEFAULT_HOST
    grpc_port: int = DEFAULT_GRPC_PORT
    rest_api_enable_cors_support: bool = False  # tensorflow_model_server --rest_api_enable_cors_support
    enable_signature_method_name_check: bool = False  # --enable_signature_method_name_check
    ui: bool = False  # nebula serve --ui: the gallery page at /ui/


DEFAULTS = ServerOptions(models=[])
