"""The form each layer computes in exported graphs (SavedModel, ONNX).

A layer class with several exact forms (``implementation``) names the one exported graphs run
fastest in as its class attribute ``export_form`` (measured with bench/sample_bench.py; the
figures are in docs/RESULTS.md, "Sampling throughput"). ``nebula export`` traces the generator inside
``export_forms(generator)``; outside it -- training, and the parity checks' Keras reference --
every layer keeps its own ``implementation``, so the checks compare the exported form against
the one the model trained in.
"""

from __future__ import annotations

import contextlib


def _layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


@contextlib.contextmanager
def export_forms(model):
    """Within the block, every layer of ``model`` that declares ``export_form`` computes it."""
    changed = [(layer, layer.implementation) for layer in _layers(model) if getattr(layer, "export_form", None)]
    try:
        for layer, _ in changed:
            layer.implementation = layer.export_form
        yield
    finally:
        for layer, implementation in changed:
            layer.implementation = implementation
