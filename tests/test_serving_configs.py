"""serving/ config files for the real TF Serving: parsed strictly, consistent with the compose file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from nebula_keras3.serving import config_files as cf
from nebula_keras3.serving.options import BatchingOptions
from nebula_keras3.serving.proto_schema import class_of_descriptor

pytestmark = pytest.mark.backend_independent

SERVING = Path(cf.packaged_file("models.config")).parent
_F = descriptor_pb2.FieldDescriptorProto


# --------------------------------------------------------------------------- models.config


def test_models_config_parses_with_tf_serving_proto():
    msc_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    msg = msc_pb2.ModelServerConfig()
    text_format.Parse((SERVING / "models.config").read_text(), msg)  # strict: unknown fields fail
    (cfg,) = msg.model_config_list.config
    assert cfg.name == "nebula"
    assert cfg.base_path == "/models/nebula"
    assert cfg.model_platform == "tensorflow"
    assert cfg.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert cfg.model_version_policy.latest.num_versions == 2
    assert dict(cfg.version_labels) == {"stable": 1, "canary": 2}
    # both labelled versions are among those the policy serves (the two newest, 1 and 2)
    assert sorted(cfg.version_labels.values()) == [1, 2]


def test_own_model_config_descriptor_matches_tf_serving():
    msc_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    ours = cf.parse_text((SERVING / "models.config").read_text(), cf.ModelServerConfig)
    theirs = msc_pb2.ModelServerConfig()
    theirs.ParseFromString(ours.SerializeToString())  # same field numbers and types on the wire
    again = msc_pb2.ModelServerConfig()
    text_format.Parse((SERVING / "models.config").read_text(), again)
    assert theirs == again


def test_load_model_config_file(tmp_path):
    (m,) = cf.load_model_config_file(SERVING / "models.config")
    assert (m.name, str(m.base_path), m.labels) == ("nebula", "/models/nebula", {"stable": 1, "canary": 2})
    assert m.policy.select([1, 2, 3, 5]) == [3, 5]
    p = tmp_path / "m.config"
    p.write_text('model_config_list { config { name: "a" base_path: "rel/a" '
                 'model_version_policy { specific { versions: 3 versions: 1 } } } '
                 'config { name: "b" base_path: "/abs/b" model_version_policy { all {} } } }')
    a, b = cf.load_model_config_file(p)
    assert a.base_path == tmp_path / "rel" / "a"
    assert a.policy.select([1, 2, 3, 4]) == [1, 3]
    assert b.policy.select([4, 1, 2]) == [1, 2, 4]
    rendered = cf.render_model_config([a, b])
    assert [c.name for c in cf.model_configs_from_proto(cf.parse_text(rendered, cf.ModelServerConfig))] == ["a", "b"]


@pytest.mark.parametrize("text,match", [
    ('model_config_list { config { name: "a" base_pth: "/x" } }', "no field named"),
    ('model_config_list { config { name: "a" } }', "no base_path"),
    ('model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }', "twice"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }', "model_platform"),
    ('model_config_list { config { name: "a" base_path: "/x" model_version_policy { specific { } } } }',
     "no versions"),
    ("", "no model_config_list"),
])
def test_model_config_errors(tmp_path, text, match):
    p = tmp_path / "bad.config"
    p.write_text(text)
    with pytest.raises(cf.ConfigError, match=match):
        cf.load_model_config_file(p)


# --------------------------------------------------------------------------- monitoring.config


def _monitoring_class():
    """MonitoringConfig built here, from tensorflow_serving/config/monitoring_config.proto."""
    fd = descriptor_pb2.FileDescriptorProto(name="test_monitoring.proto", package="tensorflow.serving",
                                            syntax="proto3")
    pc = fd.message_type.add(name="PrometheusConfig")
    pc.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    pc.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    mc = fd.message_type.add(name="MonitoringConfig")
    mc.field.add(name="prometheus_config", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                 type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return class_of_descriptor(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def test_monitoring_config_enables_prometheus():
    msg = _monitoring_class()()
    text_format.Parse((SERVING / "monitoring.config").read_text(), msg)
    assert msg.prometheus_config.enable is True
    assert msg.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert cf.load_monitoring_config(SERVING / "monitoring.config") == (True, "/monitoring/prometheus/metrics")


@pytest.mark.parametrize("typo", [
    "prometheus_config { enabel: true }",
    "prometheus_config { enable: yes_please }",
    "prometheus { enable: true }",
    "prometheus_config { enable: true path: /metrics }",
])
def test_monitoring_config_typos_fail(typo):
    with pytest.raises(text_format.ParseError):
        text_format.Parse(typo, _monitoring_class()())
    with pytest.raises(cf.ConfigError):
        cf.parse_text(typo, cf.MonitoringConfig)


def test_batching_parameters_checked_as_tf_serving_does(tmp_path):
    # bundle_factory_util.cc WrapSessionForBatching / GetQueueOptions
    f = tmp_path / "b.config"
    f.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n")
    with pytest.raises(cf.ConfigError, match="Last entry in allowed_batch_sizes must match max_batch_size; "
                                             "last entry was 4; expected 8"):
        cf.load_batching_parameters(f)
    f.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: [2, 4, 8]\npad_variable_length_inputs: true\n"
                 "enable_large_batch_splitting { value: true }\n")
    opts = cf.load_batching_parameters(f)
    assert opts.allowed_batch_sizes == (2, 4, 8) and opts.pad_variable_length_inputs
    assert opts.execution_batch_size == 8  # max_execution_batch_size defaults to max_batch_size
    assert [opts.padded_size(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]


def test_batching_config(tmp_path):
    # start from values the file does not hold, so an ignored file cannot pass
    base = BatchingOptions(max_batch_size=1, batch_timeout_micros=1, max_enqueued_batches=1, num_batch_threads=1)
    opts = cf.load_batching_parameters(SERVING / "batching.config", base)
    assert opts.max_batch_size == 64 and opts.batch_timeout_micros == 2000
    assert opts.max_enqueued_batches == 64 and opts.num_batch_threads == 2
    # 64-image requests are accepted and run as model calls of at most 32 rows
    assert opts.enable_large_batch_splitting and opts.execution_batch_size == 32
    partial = tmp_path / "partial.config"
    partial.write_text("max_batch_size { value: 7 }\nnum_batch_threads { value: 3 }\n")
    opts = cf.load_batching_parameters(partial, base)
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.max_enqueued_batches, opts.num_batch_threads) == (
        7, 1, 1, 3)
    with pytest.raises(cf.ConfigError):
        cf.parse_text("max_batch_size: 32", cf.BatchingParameters)  # must be { value: 32 }


# --------------------------------------------------------------------------- docker-compose.yml


def parse_yaml_subset(text: str):
    """Block mappings, block sequences, flow sequences of scalars, quoted/plain scalars, comments."""
    lines = []
    for raw in text.splitlines():
        s = raw.rstrip()
        if not s.strip() or s.lstrip().startswith("#"):
            continue
        # drop trailing comments outside quotes
        out, q = [], None
        for i, ch in enumerate(s):
            if q:
                q = None if ch == q else q
            elif ch in "\"'":
                q = ch
            elif ch == "#" and (i == 0 or s[i - 1] == " "):
                break
            out.append(ch)
        s = "".join(out).rstrip()
        lines.append((len(s) - len(s.lstrip(" ")), s.strip()))

    def scalar(v: str):
        v = v.strip()
        if v.startswith("[") and v.endswith("]"):
            inner = v[1:-1].strip()
            return [scalar(x) for x in re.findall(r'"[^"]*"|\'[^\']*\'|[^,]+', inner)] if inner else []
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            return v[1:-1]
        return v

    def block(i, indent):
        if lines[i][1].startswith("- "):
            seq = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                seq.append(scalar(lines[i][1][2:]))
                i += 1
            return seq, i
        mapping = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            i += 1
            if rest.strip():
                mapping[key.strip()] = scalar(rest)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key.strip()], i = block(i, lines[i][0])
            else:
                mapping[key.strip()] = None
        return mapping, i

    doc, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed YAML from line {end}: {lines[end]}"
    return doc


def test_compose_file_matches_configs():
    compose = parse_yaml_subset((SERVING / "docker-compose.yml").read_text())
    (svc,) = compose["services"].values()
    assert svc["image"].startswith("tensorflow/serving:")
    assert svc["entrypoint"] == ["tensorflow_model_server"]
    flags = dict(a.lstrip("-").split("=", 1) for a in svc["command"])
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert {p.rsplit(":", 2)[-2] + ":" + p.rsplit(":", 1)[-1] for p in svc["ports"]} == {"8500:8500", "8501:8501"}
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    assert flags["enable_batching"] == "true"
    mounts = {}
    for v in svc["volumes"]:
        if v.endswith((":ro", ":rw")):
            v = v[:-3]
        src, dst = v.rsplit(":", 1)  # the source may hold ${VAR:-default}
        mounts[dst] = src
    # every config flag points at a mounted copy of the file in serving/
    for flag, name in (("model_config_file", "models.config"), ("monitoring_config_file", "monitoring.config"),
                       ("batching_parameters_file", "batching.config")):
        assert mounts[flags[flag]] == f"./{name}", (flag, mounts)
        assert (SERVING / name).is_file()
    # models.config's base_path lies in the mounted export base
    (m,) = cf.load_model_config_file(SERVING / "models.config")
    model_mounts = [dst for dst, src in mounts.items() if not src.startswith("./")]
    assert any(str(m.base_path).startswith(dst.rstrip("/") + "/") for dst in model_mounts), model_mounts
    # Prometheus on the REST port at the path monitoring.config names
    assert cf.load_monitoring_config(SERVING / flags["monitoring_config_file"].split("/")[-1])[1] == \
        "/monitoring/prometheus/metrics"
    assert flags["allow_version_labels_for_unavailable_models"] == "true"  # labels in models.config at startup


def test_yaml_subset_parser():
    doc = parse_yaml_subset('a:\n  b: "x:y"  # c\n  c: [1, "two"]\n  d:\n    - e\n    - "f g"\n')
    assert doc == {"a": {"b": "x:y", "c": ["1", "two"], "d": ["e", "f g"]}}
