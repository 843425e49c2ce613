"""TF Serving's own metric families, printed as its Prometheus exporter prints them.

Names, labels and units are those of the TF Serving / TensorFlow sources that
define them (``tensorflow_serving/servables/tensorflow/util.cc``,
``batching/batching_session.cc``, ``batching/batching_util.h``,
``tensorflow/cc/saved_model/loader.cc``); the text is
``tensorflow_serving/util/prometheus_exporter.cc``: a ``# TYPE`` line per
family, the metric name with every character outside ``[a-zA-Z0-9_]`` turned
into ``:``, histogram bucket limits as ``absl::StrCat(double)`` prints them,
latencies in microseconds. The families are listed in name order, as the
exporter walks TensorFlow's collection registry.
"""

from __future__ import annotations

import bisect
import re
import threading


def prometheus_name(name: str) -> str:
    """prometheus_exporter.cc GetPrometheusMetricName."""
    new = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + new if re.match(r"[0-9]", new) else new


def runtime_name(runner_kind: str) -> str:
    """The ``runtime`` label of runtime_latency for a runner: TF's "TF1" for the SavedModel session."""
    return "TF1" if runner_kind == "saved_model" else "ONNX"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """monitoring::Buckets::Exponential: ``count`` limits from ``scale``; +Inf is added after them."""
    limits, bound = [], float(scale)
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return limits


def _num(x: float) -> str:
    """absl::StrCat(double): six significant digits (printf %g)."""
    return f"{x:g}"


def _label_value(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"')


class _Family:
    def __init__(self, name: str, kind: str, labels: tuple[str, ...], buckets=None):
        self.name, self.kind, self.labels = name, kind, labels
        self.buckets = buckets
        self.cells: dict[tuple, list] = {}

    def _cell(self, values: tuple):
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = [0] if self.kind == "counter" else [[0] * (len(self.buckets) + 1), 0.0]
        return cell

    def lines(self) -> list[str]:
        prom = prometheus_name(self.name)
        out = [f"# TYPE {prom} {'histogram' if self.kind == 'histogram' else self.kind}"]
        for values, cell in self.cells.items():
            labels = [f'{re.sub("[^a-zA-Z0-9]", "_", k)}="{_label_value(v)}"' for k, v in zip(self.labels, values)]
            if self.kind == "counter":
                out.append(f"{prom}{{{','.join(labels)}}} {cell[0]}")
                continue
            counts, total = cell
            prefix = f"{prom}_bucket{{{','.join(labels)}" + ("," if labels else "")
            cum = 0
            for i, c in enumerate(counts):
                cum += c
                le = _num(self.buckets[i]) if i < len(self.buckets) else "+Inf"
                out.append(f'{prefix}le="{le}"}} {cum}')
            out.append(f"{prom}_sum{{{','.join(labels)}}} {_num(total)}")
            out.append(f"{prom}_count{{{','.join(labels)}}} {cum}")
        return out


class TFMetrics:
    """The TF Serving families ``nebula serve`` records, thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.families: dict[str, _Family] = {}
        # servables/tensorflow/util.cc
        self._add("/tensorflow/serving/request_count", "counter", ("model_name", "status"))
        self._add("/tensorflow/serving/request_latency", "histogram", ("model_name", "API", "entrypoint"),
                  exponential_buckets(10, 1.8, 33))
        self._add("/tensorflow/serving/runtime_latency", "histogram", ("model_name", "API", "runtime"),
                  exponential_buckets(10, 1.8, 33))
        # batching/batching_session.cc and batching/batching_util.h (BatchingSessionTask::Name())
        self._add("/tensorflow/serving/batching_session/queuing_latency", "histogram", ("thread_pool_name",),
                  exponential_buckets(100, 1.2, 52))
        self._add("/tensorflow/serving/batching_session/wrapped_run_count", "counter", ())
        self._add("/tensorflow/serving/batching_session/input_batch_size", "histogram", (),
                  exponential_buckets(1, 2, 14))
        self._add("/tensorflow/serving/batching_session/processed_batch_size", "histogram", (),
                  exponential_buckets(1, 2, 14))
        self._add("/tensorflow/serving/batching_session/padding_size", "histogram", ("execution_batch_size",),
                  exponential_buckets(1, 2, 14))
        # tensorflow/cc/saved_model/loader.cc (status "success" / "fail"; latency a counter of microseconds)
        self._add("/tensorflow/cc/saved_model/load_attempt_count", "counter", ("model_path", "status"))
        self._add("/tensorflow/cc/saved_model/load_latency", "counter", ("model_path",))

    def _add(self, name, kind, labels, buckets=None):
        self.families[name] = _Family(name, kind, labels, buckets)

    def inc(self, name: str, *labels, by: int = 1) -> None:
        with self._lock:
            self.families[name]._cell(tuple(str(v) for v in labels))[0] += int(by)

    def observe(self, name: str, value: float, *labels) -> None:
        fam = self.families[name]
        with self._lock:
            cell = fam._cell(tuple(str(v) for v in labels))
            cell[0][bisect.bisect_right(fam.buckets, value)] += 1  # Histogram::Add: first limit > value
            cell[1] += value

    def render(self) -> str:
        with self._lock:
            lines = []
            for name in sorted(self.families):
                lines.extend(self.families[name].lines())
        return "\n".join(lines) + "\n"
