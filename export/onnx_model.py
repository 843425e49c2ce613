"""The generator as an ONNX model via tf2onnx (TensorFlow backend only).

Interface: the ``serving_default`` signature of :mod:`nebula_keras3.export.layout`
(float32 latents in, uint8 images out), dynamic batch, no random ops; the model
facts are stored in ``metadata_props`` (:func:`layout.onnx_metadata`). A float variant (an extra ``images_float`` output) is converted in the
same pass and used only by the parity check, to report the error before rounding.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nebula_keras3.export import layout
from nebula_keras3.export.saved_model import to_uint8_tf
from nebula_keras3.sampling.onnx_sampler import cpu_session

DEFAULT_OPSET = 17
INPUT_NAME = layout.Z
OUTPUT_NAME = layout.IMAGES
FLOAT_OUTPUT_NAME = OUTPUT_NAME + "_float"
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


class ParityError(RuntimeError):
    """ONNX Runtime disagrees with the Keras generator beyond tolerance."""


def _prune(graph) -> None:
    """Drop nodes whose outputs reach no graph output."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            # subgraph inputs (If/Loop bodies) may reference outer names
            for attr in node.attribute:
                for g in [attr.g] + list(attr.graphs):
                    for n in g.node:
                        needed.update(i for i in n.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def convert(generator, latent_dim: int, facts: dict, opset: int = DEFAULT_OPSET):
    """Return ``(model, float_model)`` ONNX protos: the uint8 model and the parity variant."""
    import onnx
    import tf2onnx

    spec = [tf.TensorSpec([None, int(latent_dim)], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=spec)
    def both(z):
        x = generator(z, training=False)
        return {OUTPUT_NAME: to_uint8_tf(x), FLOAT_OUTPUT_NAME: tf.identity(x)}

    dual, _ = tf2onnx.convert.from_function(both, input_signature=spec, opset=int(opset))
    in_names = [i.name for i in dual.graph.input]
    out_names = [o.name for o in dual.graph.output]
    if in_names != [INPUT_NAME] or sorted(out_names) != sorted([OUTPUT_NAME, FLOAT_OUTPUT_NAME]):
        raise RuntimeError(f"unexpected ONNX interface from tf2onnx: inputs {in_names}, outputs {out_names}")
    ops = {n.op_type for n in dual.graph.node}
    if ops & RANDOM_OPS:
        raise RuntimeError(f"ONNX graph holds random ops {sorted(ops & RANDOM_OPS)}")
    dual.producer_name = "nebula-keras3 (tf2onnx)"
    props = layout.onnx_metadata(facts)
    for m in (dual,):
        del m.metadata_props[:]
        for k, v in props.items():
            m.metadata_props.add(key=k, value=v)

    final = onnx.ModelProto()
    final.CopyFrom(dual)
    outs = [o for o in final.graph.output if o.name == OUTPUT_NAME]
    del final.graph.output[:]
    final.graph.output.extend(outs)
    _prune(final.graph)
    onnx.checker.check_model(final)
    return final, dual


def parity_check(generator, model_bytes: bytes, float_model_bytes: bytes, latent_dim: int,
                 batch_sizes=(1, 7), float_tol: float = 1e-3) -> dict:
    """ONNX Runtime vs the Keras generator on fresh random latents.

    Returns ``{batch: {"max_abs_float": f, "max_uint8": u}}``; raises ParityError when
    a uint8 pixel differs by more than 1 or the float output by more than ``float_tol``.
    """
    from nebula_keras3.sampling.grid import to_uint8

    rng = np.random.default_rng()
    sess = cpu_session(model_bytes)
    fsess = cpu_session(float_model_bytes)
    report = {}
    for b in batch_sizes:
        z = rng.standard_normal((b, int(latent_dim))).astype(np.float32)
        ref = generator(tf.constant(z), training=False).numpy().astype(np.float32)
        ref_u8 = to_uint8(ref)
        (u8,) = sess.run([OUTPUT_NAME], {INPUT_NAME: z})
        f, u8_dual = fsess.run([FLOAT_OUTPUT_NAME, OUTPUT_NAME], {INPUT_NAME: z})
        if u8.dtype != np.uint8 or u8.shape != ref_u8.shape:
            raise ParityError(f"ONNX output {u8.dtype}{list(u8.shape)} != expected uint8{list(ref_u8.shape)}")
        report[int(b)] = {
            "max_abs_float": float(np.max(np.abs(f - ref))),
            "max_uint8": int(np.max(np.abs(u8.astype(np.int16) - ref_u8.astype(np.int16)))),
        }
        if not np.array_equal(u8, u8_dual):
            raise ParityError("the written ONNX model and its float variant disagree")
    worst_u8 = max(r["max_uint8"] for r in report.values())
    worst_f = max(r["max_abs_float"] for r in report.values())
    if worst_u8 > 1 or worst_f > float_tol:
        raise ParityError(
            f"ONNX Runtime vs Keras parity failed: max uint8 diff {worst_u8} (limit 1), "
            f"max float diff {worst_f:.3g} (limit {float_tol:g}); per batch: {report}"
        )
    return report
