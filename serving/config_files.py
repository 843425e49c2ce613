"""TF Serving's text-format config files, read without TensorFlow.

``nebula serve --model-config-file`` accepts the same ``ModelServerConfig`` file
that ``tensorflow_model_server --model_config_file`` does (``serving/models.config``),
and the tests check ``serving/monitoring.config`` and ``serving/batching.config``
the way TF Serving would read them: strictly, so a misspelt field is an error.

TensorFlow Serving's own Python protos (``tensorflow-serving-api``) are a heavy,
optional dependency that has no monitoring or batching protos at all, so this
module declares the messages it needs (with :mod:`proto_schema`), field for field
as in ``tensorflow_serving/config/{model_server_config,
file_system_storage_path_source,monitoring_config,ssl_config}.proto`` and
``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``
(``BatchingParameters``), and parses with ``google.protobuf.text_format``.
Fields of those protos that the embedded server cannot honour (``logging_config``,
``custom_model_config``) are left out on purpose: a file using them is refused
with a clear message instead of being half-obeyed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from nebula_keras3.serving.options import DEFAULT_PROMETHEUS_PATH, BatchingOptions
from nebula_keras3.serving.proto_schema import (
    FIELD,
    REPEATED,
    add_field,
    add_map_field,
    add_message_field,
    add_wrappers,
    build_pool,
    message_class,
    new_file,
)


class ConfigError(ValueError):
    """A config file that cannot be used (message says which file and why)."""


def _build_pool():
    wrappers = add_wrappers("nebula_serving/wrappers.proto", "Int64Value", "StringValue", "BoolValue")

    fd = new_file("nebula_serving/tf_serving_configs.proto", "tensorflow.serving", [wrappers.name])
    # file_system_storage_path_source.proto: FileSystemStoragePathSourceConfig.ServableVersionPolicy
    fs = fd.message_type.add(name="FileSystemStoragePathSourceConfig")
    pol = fs.nested_type.add(name="ServableVersionPolicy")
    latest = pol.nested_type.add(name="Latest")
    add_field(latest, "num_versions", 1, FIELD.TYPE_UINT32)
    pol.nested_type.add(name="All")
    specific = pol.nested_type.add(name="Specific")
    add_field(specific, "versions", 1, FIELD.TYPE_INT64, label=REPEATED)
    pol.oneof_decl.add(name="policy_choice")
    prefix = ".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
    add_message_field(pol, "latest", 100, prefix + ".Latest", oneof=0)
    add_message_field(pol, "all", 101, prefix + ".All", oneof=0)
    add_message_field(pol, "specific", 102, prefix + ".Specific", oneof=0)

    # model_server_config.proto
    enum = fd.enum_type.add(name="ModelType")
    for i, n in enumerate(("MODEL_TYPE_UNSPECIFIED", "TENSORFLOW", "OTHER")):
        enum.value.add(name=n, number=i)
    mc = fd.message_type.add(name="ModelConfig")
    add_field(mc, "name", 1, FIELD.TYPE_STRING)
    add_field(mc, "base_path", 2, FIELD.TYPE_STRING)
    add_field(mc, "model_type", 3, FIELD.TYPE_ENUM, type_name=".tensorflow.serving.ModelType")
    add_field(mc, "model_platform", 4, FIELD.TYPE_STRING)
    add_message_field(mc, "model_version_policy", 7, prefix)
    add_map_field(mc, "version_labels", 8, FIELD.TYPE_STRING, FIELD.TYPE_INT64, scope=".tensorflow.serving.ModelConfig")
    mcl = fd.message_type.add(name="ModelConfigList")
    add_message_field(mcl, "config", 1, ".tensorflow.serving.ModelConfig", repeated=True)
    msc = fd.message_type.add(name="ModelServerConfig")
    msc.oneof_decl.add(name="config")
    add_message_field(msc, "model_config_list", 1, ".tensorflow.serving.ModelConfigList", oneof=0)

    # monitoring_config.proto
    pc = fd.message_type.add(name="PrometheusConfig")
    add_field(pc, "enable", 1, FIELD.TYPE_BOOL)
    add_field(pc, "path", 2, FIELD.TYPE_STRING)
    mon = fd.message_type.add(name="MonitoringConfig")
    add_message_field(mon, "prometheus_config", 1, ".tensorflow.serving.PrometheusConfig")

    # ssl_config.proto (PEM texts, not file names)
    ssl = fd.message_type.add(name="SSLConfig")
    for i, name in enumerate(("server_key", "server_cert", "custom_ca"), start=1):
        add_field(ssl, name, i, FIELD.TYPE_STRING)
    add_field(ssl, "client_verify", 4, FIELD.TYPE_BOOL)

    # session_bundle_config.proto: BatchingParameters
    bp = fd.message_type.add(name="BatchingParameters")
    i64 = ".google.protobuf.Int64Value"
    for number, name in ((1, "max_batch_size"), (2, "batch_timeout_micros"), (3, "max_enqueued_batches"),
                         (4, "num_batch_threads")):
        add_message_field(bp, name, number, i64)
    add_message_field(bp, "thread_pool_name", 5, ".google.protobuf.StringValue")
    add_field(bp, "allowed_batch_sizes", 6, FIELD.TYPE_INT64, label=REPEATED)
    add_field(bp, "pad_variable_length_inputs", 7, FIELD.TYPE_BOOL)
    add_message_field(bp, "enable_large_batch_splitting", 8, ".google.protobuf.BoolValue")
    add_message_field(bp, "max_execution_batch_size", 9, i64)
    return build_pool(wrappers, fd)


_POOL = _build_pool()
ModelServerConfig = message_class(_POOL, "tensorflow.serving.ModelServerConfig")
MonitoringConfig = message_class(_POOL, "tensorflow.serving.MonitoringConfig")
BatchingParameters = message_class(_POOL, "tensorflow.serving.BatchingParameters")
SSLConfig = message_class(_POOL, "tensorflow.serving.SSLConfig")


def parse_text(text: str, cls, source: str = "<text>"):
    msg = cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: invalid {cls.DESCRIPTOR.name} text proto: {e}") from None
    return msg


def _read(path) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------- model configs


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: ``latest`` (N newest), ``all`` or ``specific``."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among those found on disk."""
        available = sorted(set(available))
        if self.kind == "all":
            return available
        if self.kind == "specific":
            return [v for v in available if v in set(self.versions)]
        return available[-max(1, self.num_versions):] if available else []

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ",".join(map(str, self.versions))
        return "all"


@dataclass
class ModelSpecConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"


def model_configs_from_proto(msg, source: str = "<config>", relative_to=None, *,
                             allow_empty: bool = False) -> list[ModelSpecConfig]:
    """ModelSpecConfigs of a ModelServerConfig message (a config file's, or a ReloadConfigRequest's)."""
    if not msg.HasField("model_config_list"):
        raise ConfigError(f"{source}: no model_config_list")
    out: list[ModelSpecConfig] = []
    seen = set()
    for c in msg.model_config_list.config:
        if not c.name:
            raise ConfigError(f"{source}: a model config has no name")
        if c.name in seen:
            raise ConfigError(f"{source}: model {c.name!r} is configured twice")
        seen.add(c.name)
        if not c.base_path:
            raise ConfigError(f"{source}: model {c.name!r} has no base_path")
        if c.model_platform and c.model_platform != "tensorflow":
            raise ConfigError(
                f"{source}: model {c.name!r} has model_platform {c.model_platform!r}; only 'tensorflow'"
            )
        base = Path(c.base_path)
        if relative_to is not None and not base.is_absolute():
            base = Path(relative_to) / base
        policy = VersionPolicy()
        if c.HasField("model_version_policy"):
            which = c.model_version_policy.WhichOneof("policy_choice")
            if which == "latest":
                policy = VersionPolicy("latest", num_versions=max(1, c.model_version_policy.latest.num_versions))
            elif which == "all":
                policy = VersionPolicy("all")
            elif which == "specific":
                vs = tuple(sorted(set(c.model_version_policy.specific.versions)))
                if not vs:
                    raise ConfigError(f"{source}: model {c.name!r}: specific version policy lists no versions")
                policy = VersionPolicy("specific", versions=vs)
        labels = {}
        for k, v in c.version_labels.items():
            if not k:
                raise ConfigError(f"{source}: model {c.name!r} has an empty version label")
            labels[k] = int(v)
        out.append(ModelSpecConfig(c.name, base, policy, labels, c.model_platform or "tensorflow"))
    if not out and not allow_empty:
        raise ConfigError(f"{source}: model_config_list has no config")
    return out


def load_model_config_file(path) -> list[ModelSpecConfig]:
    """Models, version policies and labels of a ModelServerConfig text file.

    A relative ``base_path`` is taken relative to the file's folder (TF Serving
    would take it relative to its working directory; absolute paths behave alike).
    """
    msg = parse_text(_read(path), ModelServerConfig, str(path))
    return model_configs_from_proto(msg, str(path), relative_to=Path(path).resolve().parent)


def render_model_config(models: list[ModelSpecConfig]) -> str:
    """ModelServerConfig text for ``models`` (used by tests and ``serve --print-config``)."""
    msg = ModelServerConfig()
    for m in models:
        c = msg.model_config_list.config.add(name=m.name, base_path=str(m.base_path), model_platform=m.platform)
        if m.policy.kind == "latest":
            c.model_version_policy.latest.num_versions = m.policy.num_versions
        elif m.policy.kind == "all":
            c.model_version_policy.all.SetInParent()
        else:
            c.model_version_policy.specific.versions.extend(m.policy.versions)
        for k, v in m.labels.items():
            c.version_labels[k] = v
    return text_format.MessageToString(msg)


# --------------------------------------------------------------------------- monitoring / batching / TLS


def load_monitoring_config(path) -> tuple[bool, str]:
    """``(enabled, path)`` of Prometheus metrics from a MonitoringConfig text file."""
    msg = parse_text(_read(path), MonitoringConfig, str(path))
    pc = msg.prometheus_config
    p = pc.path or DEFAULT_PROMETHEUS_PATH
    if not p.startswith("/"):
        raise ConfigError(f"{path}: prometheus_config.path must start with '/', got {p!r}")
    return bool(pc.enable), p


def load_batching_parameters(path, base: BatchingOptions | None = None) -> BatchingOptions:
    """BatchingOptions from a TF Serving ``--batching_parameters_file``, checked as TF checks it."""
    msg = parse_text(_read(path), BatchingParameters, str(path))
    base = base or BatchingOptions()
    vals = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                 "max_execution_batch_size"):
        if msg.HasField(name):
            v = int(getattr(msg, name).value)
            if v < (0 if name == "batch_timeout_micros" else 1):
                raise ConfigError(f"{path}: {name} must be positive, got {v}")
            vals[name] = v
    splitting = msg.HasField("enable_large_batch_splitting") and msg.enable_large_batch_splitting.value
    vals["enable_large_batch_splitting"] = bool(splitting)
    if splitting and "max_execution_batch_size" not in vals:
        vals["max_execution_batch_size"] = vals.get("max_batch_size", base.max_batch_size)
    vals["allowed_batch_sizes"] = tuple(int(v) for v in msg.allowed_batch_sizes)
    vals["pad_variable_length_inputs"] = bool(msg.pad_variable_length_inputs)
    opts = BatchingOptions(**{**base.__dict__, **vals})
    allowed = opts.allowed_batch_sizes
    if allowed:
        # bundle_factory_util.cc WrapSessionForBatching
        if allowed[-1] != opts.max_batch_size:
            raise ConfigError(
                f"{path}: Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{allowed[-1]}; expected {opts.max_batch_size}")
        if any(b <= a for a, b in zip(allowed, allowed[1:])) or allowed[0] < 1:
            raise ConfigError(f"{path}: allowed_batch_sizes entries must be monotonically increasing")
    if splitting and opts.max_execution_batch_size > opts.max_batch_size:
        raise ConfigError(
            f"{path}: max_execution_batch_size ({opts.max_execution_batch_size}) must not exceed "
            f"max_batch_size ({opts.max_batch_size})")
    return opts


@dataclass(frozen=True)
class SSLSettings:
    """SSLConfig (ssl_config.proto): PEM texts of the server key, its certificate and the CA of clients."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def load_ssl_config(path) -> SSLSettings:
    """TF Serving's ``--ssl_config_file``: an SSLConfig text proto holding the PEM texts themselves."""
    msg = parse_text(_read(path), SSLConfig, str(path))
    if not msg.server_key or not msg.server_cert:
        raise ConfigError(f"{path}: SSLConfig needs server_key and server_cert (PEM text)")
    for name in ("server_key", "server_cert", "custom_ca"):
        value = getattr(msg, name)
        if value and "-----BEGIN " not in value:
            raise ConfigError(f"{path}: {name} must hold PEM text (-----BEGIN ...), not a file name")
    return SSLSettings(msg.server_key, msg.server_cert, msg.custom_ca, bool(msg.client_verify))


def packaged_file(name: str) -> Path:
    """Path of a config file shipped in this package (models.config, monitoring.config, ...)."""
    return Path(os.path.dirname(os.path.abspath(__file__))) / name
