"""An int8 (static QDQ) variant of the exported ONNX generator, and its check against Keras.

``nebula export --onnx-int8 FILE`` writes it beside the float model (which stays the default
export). Recipe:

1. ``quant_pre_process`` on the float model (shape inference, ORT basic graph optimisation).
2. Calibration on the generator's own activations: latents drawn with the portable seed recipe
   (:mod:`nebula_keras3.sampling.latents`) from ``CALIBRATION_SEEDS``, min-max ranges; no
   images or data set are needed.
3. ``quantize_static`` in QDQ format, weights int8 per output channel, activations ``ACTIVATIONS``
   (uint8: ONNX Runtime's x86 int8 convolutions run u8 x s8 on VNNI), only Conv (``OP_TYPES``):
   DepthToSpace, Sigmoid, Mul and the uint8 post-processing stay float. The last convolution
   before the output (``to_rgb`` + tanh) stays float too: it holds a small share of the time
   and most of the visible error. So does the latent's MatMul (the stem): well under 1% of the
   work, and int8 there alone moved a trained nebula128's worst pixel by 26 levels.

The check (:func:`int8_check`) renders the same seeded latents with Keras and the int8 model:
per-pixel error within ``MAX_MEAN_UINT8`` (mean) and ``MAX_UINT8`` (worst pixel) uint8 levels,
and the sliced Wasserstein distance between the two sets below the distance between two Keras
sets drawn from different seeds (quantisation must move the image distribution less than a
fresh draw of latents does).

A trained generator's activations have wider ranges than fresh weights', and with every conv
int8 its images miss those limits (docs/RESULTS.md, "int8 on trained generators"), most of the
error coming from the convs nearest the output. :func:`quantize_checked` (what
``nebula export --onnx-int8`` runs) therefore quantizes, checks, and while the check fails keeps
one more node in float, nearest the output first (:func:`quantizable_nodes`); the nodes left
float are in the report and the model's ``quantization`` metadata. Imports onnx and
onnxruntime; never TensorFlow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from nebula_keras3.export import layout
from nebula_keras3.sampling.latents import latents_from_seeds
from nebula_keras3.sampling.onnx_sampler import cpu_session

OP_TYPES = ("Conv",)  # the latent's MatMul stays float (module docstring)
ACTIVATIONS = ("uint8", "int8")
DEFAULT_ACTIVATIONS = "uint8"
CALIBRATION_SEEDS = range(1_000_000, 1_000_256)  # never the check's seeds below
CALIBRATION_BATCH = 32
CHECK_SEEDS = range(0, 64)
CHECK_OTHER_SEEDS = range(2_000_000, 2_000_064)
MAX_MEAN_UINT8 = 1.5
MAX_UINT8 = 24
METADATA_KEY = "quantization"


class QuantizeError(RuntimeError):
    """Quantisation failed or its result is outside tolerance (message says why)."""


def _last_conv(model) -> list[str]:
    """The Conv nodes the output reaches without passing another Conv (the to-RGB conv)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, found, stack = set(), [], [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            found.append(node.name)
            continue
        stack.extend(i for i in node.input if i)
    return sorted(found)


LAYOUT_OPS = ("Transpose", "Reshape", "Slice", "Identity")


def fold_channel_affine(model) -> int:
    """Fold per-channel ``Mul``/``Add`` constants (inference BatchNorm) into the Conv before them.

    The nebula generator's BatchNorm follows its upsampling conv through layout ops only
    (NHWC transposes, the depth-to-space reshapes, the crop): ``Conv -> Transpose/Reshape/Slice
    ... -> Mul(c[C]) -> Add(b[C])``, which no ONNX Runtime fusion sees through. Which conv
    channel lands in which output channel is found by running that layout chain on a probe
    whose every value is its channel index; the scale and shift then go into the conv's weight
    and bias, and the Mul/Add become Identity (dropped by the graph optimiser). Exact up to
    float rounding. Edits ``model`` in place; returns the number of nodes folded.
    """
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    uses = {name: len(c) for name, c in consumers.items()}
    folded = 0
    convs = [n for n in g.node if n.op_type == "Conv"]
    shapes = _output_shapes(model, [c.output[0] for c in convs])
    for conv in convs:
        if conv.input[1] not in inits or uses.get(conv.input[1], 0) != 1:
            continue
        if len(conv.input) > 2 and (conv.input[2] not in inits or uses.get(conv.input[2], 0) != 1):
            continue
        chain, affine, name = [], [], conv.output[0]
        while len(consumers.get(name, ())) == 1 and name not in {o.name for o in g.output}:
            node = consumers[name][0]
            if node.op_type in LAYOUT_OPS and all(i in inits for i in node.input[1:]):
                if affine:
                    break
                chain.append(node)
            elif node.op_type in ("Mul", "Add") and len(node.input) == 2:
                const = [i for i in node.input if i in inits]
                if len(const) != 1 or uses.get(const[0], 0) != 1:
                    break
                value = numpy_helper.to_array(inits[const[0]])
                if value.ndim != 1:
                    break
                affine.append((node, value))
            else:
                break
            name = node.output[0]
        if not affine:
            continue
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
        k = weight.shape[0]
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32) if len(conv.input) > 2
                else np.zeros(k, np.float32))
        channel, out_channels = _channel_map(chain, inits, shapes[conv.output[0]], conv, model)
        if channel is None or any(len(v) != out_channels for _, v in affine):
            continue
        for node, value in affine:
            v = value.astype(np.float32)[channel]
            if node.op_type == "Mul":
                weight = weight * v.reshape(-1, *([1] * (weight.ndim - 1)))
                bias = bias * v
            else:
                bias = bias + v
            x = next(i for i in node.input if i not in inits)
            node.op_type = "Identity"
            del node.input[:]
            node.input.append(x)
            folded += 1
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), conv.input[1]))
        if len(conv.input) > 2:
            inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias, conv.input[2]))
        else:
            bname = conv.name + "/folded_bias"
            g.initializer.append(numpy_helper.from_array(bias, bname))
            conv.input.append(bname)
    if folded:
        used = {i for n in g.node for i in n.input}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        onnx.checker.check_model(model)
    return folded


def _channel_map(chain, inits, shape, conv, model):
    """``(channel, C)``: for conv output channel ``j`` the channel of the chain's output (of C)
    it lands in; ``(None, 0)`` when that is not one channel per ``j``."""
    import onnx
    from onnx import helper

    if len(shape) != 4:
        return None, 0
    k = shape[1]
    probe = np.broadcast_to(np.arange(k, dtype=np.float32)[None, :, None, None], shape).copy()
    names = {i for n in chain for i in n.input[1:]}
    graph = helper.make_graph(
        [n for n in chain] or [helper.make_node("Identity", [conv.output[0]], ["probe_out"])],
        "probe",
        [helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(chain[-1].output[0] if chain else "probe_out",
                                       onnx.TensorProto.FLOAT, None)],
        [inits[n] for n in names],
    )
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    sess = cpu_session(sub.SerializeToString())
    (out,) = sess.run(None, {conv.output[0]: probe})
    out = out.reshape(-1, out.shape[-1]).astype(np.int64)  # [positions, C]
    channel = np.full(k, -1, np.int64)
    for c in range(out.shape[1]):
        src = np.unique(out[:, c])
        if np.any((channel[src] != -1) & (channel[src] != c)):
            return None, 0
        channel[src] = c
    if np.any(channel < 0):  # a conv channel that reaches no output: leave the graph alone
        return None, 0
    return channel, out.shape[1]


def _output_shapes(model, names) -> dict:
    """``{tensor name: shape}`` at batch 1, by running the model with those tensors as outputs."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    z = m.graph.input[0]
    d = int(z.type.tensor_type.shape.dim[1].dim_value)
    sess = cpu_session(m.SerializeToString(), optimize=False)
    outs = sess.run(list(names), {z.name: np.zeros((1, d), np.float32)}) if names else []
    return {n: o.shape for n, o in zip(names, outs)}


def _seed_reader(input_name: str, latent_dim: int, seeds, batch: int):
    """An onnxruntime CalibrationDataReader over seeded latents."""
    from onnxruntime.quantization import CalibrationDataReader

    seeds = np.asarray(list(seeds), np.int64)
    batches = [{input_name: latents_from_seeds(seeds[i:i + batch], latent_dim)}
               for i in range(0, len(seeds), batch)]

    class SeedReader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            self.i += 1
            return batches[self.i - 1] if self.i <= len(batches) else None

        def rewind(self):
            self.i = 0

    return SeedReader()


def _load(float_bytes: bytes):
    import onnx

    try:
        return onnx.load_from_string(float_bytes)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise QuantizeError(f"not an ONNX model: {type(e).__name__}: {e}") from None


def quantizable_nodes(float_bytes: bytes) -> list[str]:
    """The nodes :func:`quantize_int8` makes int8 by default (the convs, ``OP_TYPES``, but the
    last), nearest the output first (reverse graph order): the order in which
    :func:`quantize_checked` keeps them float."""
    model = _load(float_bytes)
    last = set(_last_conv(model))
    return [n.name for n in reversed(model.graph.node) if n.op_type in OP_TYPES and n.name not in last]


def quantize_int8(float_bytes: bytes, *, activations: str = DEFAULT_ACTIVATIONS,
                  keep_last_conv_float: bool = True, fold: bool = True,
                  calibration_seeds=CALIBRATION_SEEDS, float_nodes=()) -> bytes:
    """The int8 QDQ model (serialized) for an exported float ONNX generator (serialized).

    ``float_nodes``: names of further Conv nodes to leave in float (see :func:`quantizable_nodes`).
    Same interface and metadata as the float model, plus ``metadata_props[quantization]``.
    """
    _check_activations(activations)  # before the (slower) preparation
    return _Prepared(float_bytes, fold).quantize(
        activations=activations, keep_last_conv_float=keep_last_conv_float,
        calibration_seeds=calibration_seeds, float_nodes=float_nodes)


def _check_activations(activations: str) -> None:
    if activations not in ACTIVATIONS:
        raise QuantizeError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")


class _Prepared:
    """A float model made ready once (channel affines folded, then step 1, ``quant_pre_process``),
    so that quantizing it with different nodes left float repeats only steps 2 and 3."""

    def __init__(self, float_bytes: bytes, fold: bool = True):
        from onnxruntime.quantization import quant_pre_process

        model = _load(float_bytes)
        if len(model.graph.input) != 1:
            raise QuantizeError(f"expected one latent input, the model has {len(model.graph.input)}")
        z = model.graph.input[0]
        dims = z.type.tensor_type.shape.dim
        if len(dims) != 2 or not dims[1].dim_value:
            raise QuantizeError(f"input {z.name!r} is not [N, latent]")
        self.model, self.input_name, self.latent_dim = model, z.name, int(dims[1].dim_value)
        self.last_conv = _last_conv(model)
        self.nodes = {n.name for n in model.graph.node if n.op_type in OP_TYPES}
        self.folded = fold_channel_affine(model) if fold else 0  # in place
        with tempfile.TemporaryDirectory(prefix="nebula-int8-") as tmp:
            src, pre = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
            src.write_bytes(model.SerializeToString())
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception as e:  # noqa: BLE001 - one message whatever ORT raises
                raise QuantizeError(f"int8 quantisation failed: {type(e).__name__}: {e}") from None
            self.pre_bytes = pre.read_bytes()

    def quantize(self, *, activations: str = DEFAULT_ACTIVATIONS, keep_last_conv_float: bool = True,
                 calibration_seeds=CALIBRATION_SEEDS, float_nodes=()) -> bytes:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        _check_activations(activations)
        unknown = sorted(set(float_nodes) - self.nodes)
        if unknown:
            raise QuantizeError(f"float_nodes names no {'/'.join(OP_TYPES)} node of the model: {unknown}")
        exclude = list(self.last_conv) if keep_last_conv_float else []
        exclude = exclude + [c for c in float_nodes if c not in exclude]
        reader = _seed_reader(self.input_name, self.latent_dim, calibration_seeds, CALIBRATION_BATCH)
        act = QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8
        with tempfile.TemporaryDirectory(prefix="nebula-int8-") as tmp:
            pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
            pre.write_bytes(self.pre_bytes)
            try:
                quantize_static(
                    str(pre), str(out), reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(OP_TYPES),
                    nodes_to_exclude=exclude,
                    per_channel=True,
                    activation_type=act,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            except Exception as e:  # noqa: BLE001 - one message whatever ORT raises
                raise QuantizeError(f"int8 quantisation failed: {type(e).__name__}: {e}") from None
            q = onnx.load(str(out))
        del q.metadata_props[:]
        for p in self.model.metadata_props:
            q.metadata_props.add(key=p.key, value=p.value)
        a = "u8" if activations == "uint8" else "s8"
        q.metadata_props.add(key=METADATA_KEY,
                             value=f"int8 QDQ {a}s8 per-channel, {'/'.join(OP_TYPES)}, {self.folded} affine ops "
                                   f"folded, float: {','.join(exclude) or '-'}")
        q.producer_name = self.model.producer_name
        return q.SerializeToString()


def _render(sess, seeds, latent_dim: int) -> np.ndarray:
    z = latents_from_seeds(np.asarray(list(seeds), np.int64), latent_dim)
    return sess.run([layout.IMAGES], {layout.Z: z})[0]


def int8_check(keras_images, int8_bytes: bytes, latent_dim: int) -> dict:
    """Compare the int8 model with the Keras generator's uint8 images.

    Args:
        keras_images: a callable ``seeds -> uint8 [n, S, S, 3]`` (the Keras reference).
        int8_bytes: the serialized int8 model.
        latent_dim: latent size.

    Returns ``{"mean_uint8", "max_uint8", "swd", "swd_keras_other_seeds"}``; raises
    QuantizeError when a limit (module docstring) is exceeded.
    """
    report, failed = _compare(_references(keras_images), int8_bytes, latent_dim)
    if failed:
        raise QuantizeError("int8 ONNX vs Keras check failed: " + "; ".join(failed) + f" ({report})")
    return report


def quantize_checked(float_bytes: bytes, keras_images, latent_dim: int, *,
                     activations: str = DEFAULT_ACTIVATIONS) -> tuple[bytes, dict]:
    """``(int8 model, check report)``: the model with the fewest nodes left float that passes
    :func:`int8_check`'s limits, trying every node int8 first and then keeping one more in
    float per try, in :func:`quantizable_nodes` order. The report adds ``float_nodes`` (those
    kept float beside the last conv). Raises QuantizeError when even all of them in float fail.
    """
    refs = _references(keras_images)
    order = quantizable_nodes(float_bytes)
    prepared = _Prepared(float_bytes)
    for n in range(len(order) + 1):
        q = prepared.quantize(activations=activations, float_nodes=order[:n])
        report, failed = _compare(refs, q, latent_dim)
        report["float_nodes"] = order[:n]
        if not failed:
            return q, report
    raise QuantizeError("int8 ONNX vs Keras check failed even with every conv in float: "
                        + "; ".join(failed) + f" ({report})")


def _references(keras_images) -> tuple[np.ndarray, np.ndarray]:
    """Keras' uint8 images for the check's seeds and for other seeds."""
    return (np.asarray(keras_images(np.asarray(list(CHECK_SEEDS), np.int64))),
            np.asarray(keras_images(np.asarray(list(CHECK_OTHER_SEEDS), np.int64))))


def _compare(refs, int8_bytes: bytes, latent_dim: int) -> tuple[dict, list[str]]:
    """``(report, failed limits)`` of the int8 model against the Keras references."""
    from nebula_keras3.metrics.swd import sliced_wasserstein_distance

    ref, other = refs
    got = _render(cpu_session(int8_bytes), CHECK_SEEDS, latent_dim)
    if got.dtype != np.uint8 or got.shape != ref.shape:
        raise QuantizeError(f"int8 model output {got.dtype}{list(got.shape)} != uint8{list(ref.shape)}")
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    report = {
        "mean_uint8": float(diff.mean()),
        "max_uint8": int(diff.max()),
        "swd": float(sliced_wasserstein_distance(ref, got)["swd"]),
        "swd_keras_other_seeds": float(sliced_wasserstein_distance(ref, other)["swd"]),
    }
    failed = []
    if report["mean_uint8"] > MAX_MEAN_UINT8:
        failed.append(f"mean uint8 diff {report['mean_uint8']:.3g} > {MAX_MEAN_UINT8}")
    if report["max_uint8"] > MAX_UINT8:
        failed.append(f"max uint8 diff {report['max_uint8']} > {MAX_UINT8}")
    if not report["swd"] < report["swd_keras_other_seeds"]:
        failed.append(f"SWD int8 vs Keras {report['swd']:.3g} >= SWD between two Keras seed sets "
                      f"{report['swd_keras_other_seeds']:.3g}")
    return report, failed
