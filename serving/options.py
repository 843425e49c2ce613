"""The server's settings and their defaults (one home: ``nebula serve`` and the server read them here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nebula_keras3.serving.config_files import ModelSpecConfig, SSLSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port (0: no gRPC)
DEFAULT_GRPC_TARGET = f"{DEFAULT_HOST}:{DEFAULT_GRPC_PORT}"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters (session_bundle_config.proto) as TF Serving applies them.

    ``max_batch_size`` is the largest request (task) accepted; batches run with at most
    ``max_batch_size`` rows, or ``max_execution_batch_size`` rows when
    ``enable_large_batch_splitting`` lets a request be split across batches
    (bundle_factory_util.h GetQueueOptions). A batch is padded up to the next of
    ``allowed_batch_sizes`` with copies of its last request's first row
    (batching_session.cc MergeInputTensors); ``pad_variable_length_inputs`` pads
    inputs of different non-batch sizes up to the largest, with their first value.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 2
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @property
    def execution_batch_size(self) -> int:
        """Most rows one model call gets (SharedBatchScheduler's execution batch size limit)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, rows: int) -> int:
        """batching_util.cc RoundToLowestAllowedBatchSize."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


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
    ssl: SSLSettings | None = None  # --ssl_config_file: gRPC over TLS
    rest_api_enable_cors_support: bool = False  # tensorflow_model_server --rest_api_enable_cors_support
    enable_signature_method_name_check: bool = False  # --enable_signature_method_name_check
    enable_model_warmup: bool = True  # --enable_model_warmup
    num_request_iterations_for_warmup: int = 1  # --num_request_iterations_for_warmup
    ui: bool = False  # nebula serve --ui: the gallery page at /ui/


DEFAULTS = ServerOptions(models=[])
