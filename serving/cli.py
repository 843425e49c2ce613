"""``nebula serve`` and ``nebula client``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from nebula_keras3.export.layout import DEFAULT_MODEL_NAME
from nebula_keras3.serving.options import DEFAULT_GRPC_TARGET, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_URL, DEFAULTS


def _fail(msg: str):
    click.echo(f"error: {msg}", err=True)
    sys.exit(1)


@click.command("serve")
@click.option("--model-base-path", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of version folders (TF Serving's base path), or an export base holding <model-name>/.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True, help="Model name in the URLs.")
@click.option("--model-config-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TF Serving ModelServerConfig text file (models, version policy, labels); "
                   "overrides --model-base-path/--model-name and is re-read when it changes.")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="REST port.")
@click.option("--grpc-port", default=DEFAULTS.grpc_port, show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (tensorflow.serving.PredictionService and ModelService); 0 turns gRPC off.")
@click.option("--max-batch-size", default=DEFAULTS.batching.max_batch_size, show_default=True, type=click.IntRange(1, 4096))
@click.option("--batch-timeout-micros", default=DEFAULTS.batching.batch_timeout_micros, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--max-enqueued-batches", default=DEFAULTS.batching.max_enqueued_batches, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--num-batch-threads", default=DEFAULTS.batching.num_batch_threads, show_default=True, type=click.IntRange(1, 256),
              help="Batches that may run at once.")
@click.option("--batching-parameters-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TF Serving BatchingParameters text file (values there win over the flags).")
@click.option("--monitoring-config-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TF Serving MonitoringConfig text file (Prometheus on/off and path).")
@click.option("--poll-seconds", "--file-system-poll-wait-seconds", "poll_seconds", default=DEFAULTS.poll_seconds,
              show_default=True, type=click.FloatRange(0.05, 3600), help="How often to look for new versions.")
@click.option("--max-body-bytes", default=DEFAULTS.max_body_bytes, show_default=True, type=click.IntRange(1024))
@click.option("--max-instances", default=DEFAULTS.max_instances, show_default=True, type=click.IntRange(1),
              help="Most images (rows) one predict request may ask for.")
@click.option("--max-concurrent-requests", default=DEFAULTS.max_concurrent_requests, show_default=True, type=click.IntRange(1),
              help="Requests handled at once; more are answered 429 at once.")
@click.option("--intra-op-threads", default=DEFAULTS.intra_op_threads, show_default=True, type=click.IntRange(0, 256),
              help="ONNX Runtime threads per model call (0: its default).")
@click.option("--runtime", type=click.Choice(["auto", "savedmodel"]), default="auto", show_default=True,
              help="auto: ONNX Runtime where the version folder holds the ONNX model, else TensorFlow; "
                   "savedmodel: always TensorFlow.")
@click.option("--graceful-timeout", "drain_seconds", default=DEFAULTS.drain_seconds, show_default=True,
              type=click.FloatRange(0), help="Seconds to finish in-flight requests on shutdown.")
@click.option("--rest-api-enable-cors-support", "--rest_api_enable_cors_support", "rest_api_enable_cors_support",
              is_flag=True, help="Add CORS headers to REST responses (tensorflow_model_server's flag).")
@click.option("--enable-signature-method-name-check", "--enable_signature_method_name_check",
              "enable_signature_method_name_check", is_flag=True,
              help=":classify/:regress/:predict check the signature's method_name, as TF Serving's flag.")
@click.option("--ssl-config-file", "--ssl_config_file", "ssl_config_file",
              type=click.Path(dir_okay=False, path_type=Path),
              help="TF Serving SSLConfig text file (server_key, server_cert, custom_ca: PEM text; client_verify): "
                   "gRPC over TLS, as tensorflow_model_server --ssl_config_file.")
@click.option("--enable-model-warmup/--no-enable-model-warmup", "--enable_model_warmup/--no-enable_model_warmup",
              "enable_model_warmup", default=DEFAULTS.enable_model_warmup, show_default=True,
              help="Replay a version's assets.extra/tf_serving_warmup_requests before it becomes AVAILABLE.")
@click.option("--num-request-iterations-for-warmup", "--num_request_iterations_for_warmup",
              "num_request_iterations_for_warmup",
              default=DEFAULTS.num_request_iterations_for_warmup, show_default=True, type=click.IntRange(1, 1000),
              help="How many times each warmup request runs.")
@click.option("--ui", is_flag=True, help="Also serve a gallery page at /ui/ on the REST port (uses the REST API only).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_command(model_base_path, model_name, model_config_file, host, port, batching_parameters_file,
                  monitoring_config_file, ssl_config_file, runtime, log_level, **settings):
    """Serve exported generators over TF Serving's REST API v1 and gRPC API (ONNX Runtime or TensorFlow)."""
    # ``settings``: the options named as ServerOptions / BatchingOptions fields, passed on as they are
    # (one spelling, no forwarding list); the parameters above are turned into fields here.
    from dataclasses import fields

    from nebula_keras3.serving import config_files as cf
    from nebula_keras3.serving.options import BatchingOptions

    batching = BatchingOptions(**{f.name: settings.pop(f.name) for f in fields(BatchingOptions) if f.name in settings})
    grpc_port = settings.pop("grpc_port")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if model_config_file is not None:
            models = cf.load_model_config_file(model_config_file)
        elif model_base_path is not None:
            models = [cf.ModelSpecConfig(model_name, model_base_path.resolve())]
        else:
            _fail("give --model-base-path (and --model-name) or --model-config-file")
        for m in models:
            if not m.base_path.is_dir():
                _fail(f"model {m.name}: base path {m.base_path} is not a folder")
        if batching_parameters_file is not None:
            batching = cf.load_batching_parameters(batching_parameters_file, batching)
        prom_on, prom_path = True, DEFAULTS.prometheus_path
        if monitoring_config_file is not None:
            prom_on, prom_path = cf.load_monitoring_config(monitoring_config_file)
        ssl = cf.load_ssl_config(ssl_config_file) if ssl_config_file is not None else None
    except cf.ConfigError as e:
        _fail(str(e))
    if ssl is not None and not grpc_port:
        _fail("--ssl-config-file secures gRPC; it needs a --grpc-port")
    if grpc_port:
        missing = _grpc_missing()
        if missing and ssl is None and click.get_current_context().get_parameter_source("grpc_port").name == "DEFAULT":
            click.echo(f"nebula serve: gRPC off ({missing}; pip install 'nebula-keras3[grpc]')", err=True)
            grpc_port = 0
        elif missing:
            _fail(f"--grpc-port {grpc_port}: {missing} "
                  "(pip install 'nebula-keras3[grpc]'; --grpc-port 0 turns gRPC off)")
    if grpc_port and ssl is not None:
        from nebula_keras3.serving.grpc_api import server_credentials

        try:
            server_credentials(ssl)  # a key or certificate grpc refuses fails here, before any model loads
        except cf.ConfigError as e:
            _fail(f"{ssl_config_file}: {e}")
    if grpc_port:
        if grpc_port == port:
            _fail(f"--grpc-port and --port are both {port}; give two ports (or --grpc-port 0)")
        reason = _port_in_use(host, grpc_port)
        if reason:
            _fail(f"cannot listen for gRPC on {host}:{grpc_port}: {reason} "
                  "(another server? --grpc-port 0 turns gRPC off)")

    import uvicorn

    from nebula_keras3.serving.options import ServerOptions
    from nebula_keras3.serving.server import create_app

    options = ServerOptions(
        models=models,
        config_file=str(model_config_file) if model_config_file else None,
        batching=batching,
        prefer_onnx=runtime == "auto",
        prometheus_enabled=prom_on,
        prometheus_path=prom_path,
        grpc_host=host,
        grpc_port=grpc_port,
        ssl=ssl,
        **settings,
    )
    app = create_app(options)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=options.drain_seconds, lifespan="on", server_header=False,
    )
    grpc_note = f", gRPC{' (TLS)' if ssl else ''} {host}:{grpc_port}" if grpc_port else ""
    click.echo(f"nebula serve: http://{host}:{port}/v1/models/{models[0].name}{grpc_note} "
               f"(batching {batching.max_batch_size} rows / {batching.batch_timeout_micros} us, "
               f"pid {os.getpid()})", err=True)
    if options.ui:
        click.echo(f"nebula serve: gallery page http://{host}:{port}/ui/", err=True)
    server = _GracefulServer(config)
    server.run()
    if not server.started:
        sys.exit(1)
    click.echo("nebula serve: stopped (in-flight requests finished, batch queues drained)", err=True)


def _grpc_missing() -> str | None:
    """What the gRPC server lacks (grpcio, tensorflow-serving-api's protos), found without importing them."""
    from importlib.util import find_spec

    for module, package in (("grpc", "grpcio"), ("tensorflow_serving", "tensorflow-serving-api"),
                            ("tensorflow", "tensorflow (its generated *_pb2 files)")):
        if find_spec(module) is None:
            return f"{package} is not installed"
    return None


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now (None when it can); the server binds it again right after."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return str(e.strerror or e)
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no obstacle
        try:
            s.bind(addr)
        except OSError as e:
            return e.strerror or str(e)
    return None


def _server_class():
    import signal

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown; a drained server exits 0 instead.

        uvicorn puts the previous SIGTERM handler back once it has stopped, while the process still
        tears down; a second SIGTERM then (orchestrators repeat theirs) would kill it with -15. The
        handler installed here, and restored there, ignores SIGTERM once shutdown has begun, and
        SIGTERM is ignored outright once uvicorn has returned.
        """

        def run(self, sockets=None):
            signal.signal(signal.SIGTERM, self._sigterm_outside_uvicorn)
            try:
                return super().run(sockets)
            finally:
                if self.should_exit:  # Python resets its own handlers to SIG_DFL at exit, not SIG_IGN
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)

        def _sigterm_outside_uvicorn(self, sig, frame):
            if self.should_exit:
                return  # already drained and stopping: one exit is enough
            signal.signal(sig, signal.SIG_DFL)  # not serving yet: die as a signalled process does
            signal.raise_signal(sig)

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    return GracefulServer


def _GracefulServer(config):  # noqa: N802 - reads like the class it builds
    return _server_class()(config)


@click.command("client")
@click.option("--url", help=f"Server base URL (default {DEFAULT_URL}); "
                           f"with --grpc host:port (default {DEFAULT_GRPC_TARGET}).")
@click.option("--grpc", "use_grpc", is_flag=True, help="Call the gRPC API (PredictionService.Predict) instead of REST.")
@click.option("--model", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("-n", "n", default=16, show_default=True, type=click.IntRange(1, 4096), help="Images.")
@click.option("--seed", default=0, show_default=True, type=int, help="First seed; images use seed..seed+n-1.")
@click.option("--version", "model_version", type=click.IntRange(0), help="Model version.")
@click.option("--label", help="Version label (e.g. stable, canary).")
@click.option("--ncols", type=click.IntRange(1), help="Grid columns (default: square).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(0.1))
@click.option("-o", "--out", default="grid.png", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ssl-ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --grpc: TLS, trusting this CA (PEM) for the server's certificate.")
@click.option("--ssl-cert-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --grpc: this client certificate (PEM), for a server with client_verify.")
@click.option("--ssl-key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --grpc: the private key (PEM) of --ssl-cert-file.")
@click.option("--ssl-target-name", help="With --grpc: the name the server's certificate must hold, "
                                        "when it is not the host of --url.")
def client_command(url, use_grpc, model, n, seed, model_version, label, ncols, timeout, out, ssl_ca_file,
                   ssl_cert_file, ssl_key_file, ssl_target_name):
    """Render seeds seed..seed+n-1 through a server's generate_png signature into a grid PNG."""
    from nebula_keras3.sampling.grid import make_grid, save_png
    from nebula_keras3.sampling.latents import batch_seeds
    from nebula_keras3.serving.client import ClientError, TlsFiles, decode_pngs, generate_png, generate_png_grpc

    if model_version is not None and label is not None:
        _fail("give --version or --label, not both")
    tls = {"ca": ssl_ca_file, "cert": ssl_cert_file, "key": ssl_key_file, "target_name": ssl_target_name}
    if any(tls.values()) and not use_grpc:
        _fail("--ssl-* options are for --grpc")
    if (ssl_cert_file is None) != (ssl_key_file is None):
        _fail("give --ssl-cert-file and --ssl-key-file together")
    try:
        seeds = batch_seeds(seed, n).tolist()
        if use_grpc:
            tls_files = TlsFiles(**tls) if any(tls.values()) else None
            pngs = generate_png_grpc(url or DEFAULT_GRPC_TARGET, model, seeds, version=model_version, label=label,
                                     timeout=timeout, tls=tls_files)
        else:
            pngs = generate_png(url or DEFAULT_URL, model, seeds, version=model_version, label=label, timeout=timeout)
        images = decode_pngs(pngs)
    except ClientError as e:
        _fail(str(e))
    try:
        path = save_png(make_grid(images, ncols=ncols), out)
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    click.echo(f"wrote {path} ({n} images {images.shape[1]}x{images.shape[2]}, seeds {seed}..{seed + n - 1})")
