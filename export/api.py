"""Export a trained generator for serving: TF Serving SavedModel and/or ONNX.

    from nebula_keras3.export.api import export_generator
    result = export_generator("runs/x", saved_model_base="models", onnx_path="x.onnx")

The options are the fields of :class:`ExportRequest` (``nebula export`` builds one too).

Export always runs on the Keras TensorFlow backend. When the caller's backend is
JAX or PyTorch, the same request runs in a TensorFlow-backend worker process
(:mod:`nebula_keras3.export.worker`: an :class:`ExportRequest` as JSON in, an
:class:`ExportResult` or the error's type and message as JSON out); an error
raised there is raised here again with the same type and message.

The version folder written under ``saved_model_base`` is described in
:mod:`nebula_keras3.export.layout`. Every file and version folder is written
beside its destination and renamed into place, so a reader never sees a
half-written model and re-exporting never corrupts an existing version.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nebula_keras3.artifacts import write_bytes_atomic
from nebula_keras3.export import layout
from nebula_keras3.export.layout import existing_versions, next_version  # noqa: F401  (part of this API)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExportError(RuntimeError):
    """Export failed; the message says why (one line, no traceback needed)."""


@dataclass
class ExportResult:
    saved_model_dir: Path | None
    onnx_path: Path | None
    version: int | None
    facts: dict
    # {batch_size: {"max_abs_float": float, "max_uint8": int}}; empty when parity=False
    parity: dict = field(default_factory=dict)
    # checks run on the written SavedModel (signatures, in-graph latents vs ONNX)
    saved_model_check: dict = field(default_factory=dict)
    # int8 model (export/quantize.py) and its check vs Keras; None / empty when not asked for
    onnx_int8_path: Path | None = None
    int8_check: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["saved_model_dir"] = None if self.saved_model_dir is None else str(self.saved_model_dir)
        d["onnx_path"] = None if self.onnx_path is None else str(self.onnx_path)
        d["onnx_int8_path"] = None if self.onnx_int8_path is None else str(self.onnx_int8_path)
        d["parity"] = {str(k): v for k, v in self.parity.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ExportResult":
        return cls(
            saved_model_dir=None if d.get("saved_model_dir") is None else Path(d["saved_model_dir"]),
            onnx_path=None if d.get("onnx_path") is None else Path(d["onnx_path"]),
            version=d.get("version"),
            facts=d.get("facts", {}),
            parity={int(k): v for k, v in d.get("parity", {}).items()},
            saved_model_check=d.get("saved_model_check", {}),
            onnx_int8_path=None if d.get("onnx_int8_path") is None else Path(d["onnx_int8_path"]),
            int8_check=d.get("int8_check", {}),
        )


@dataclass
class ExportRequest:
    """What to export and where: the options of :func:`export_generator` and ``nebula export``,
    spelled once (the worker process receives one as JSON).

    Attributes:
        source: run folder (with generator.keras) or a ``.keras`` file.
        saved_model_base: TF Serving base folder; writes ``BASE/<model_name>/<version>/``.
        onnx_path: also (or only) write the ONNX model here.
        model_name: TF Serving model name (folder under the base).
        version: explicit version; default the next free integer (1 when none).
        onnx_beside: with a SavedModel, also write the ONNX model into the version folder.
        parity: end with the ONNX Runtime vs Keras check (batch 1 and 7); ParityError
            (an ExportError) when a uint8 pixel differs by more than 1.
        overwrite: replace an existing explicit ``version`` (refused otherwise).
        opset: ONNX opset (default 17).
        checkpoint: the training state of a run folder: ``None`` (its final generator.keras),
            ``"best"``, ``"last"`` or a checkpoint file (``training.generator_state``).
    """

    source: str
    saved_model_base: str | None = None
    onnx_path: str | None = None
    model_name: str = layout.DEFAULT_MODEL_NAME
    version: int | None = None
    onnx_beside: bool = True
    parity: bool = True
    overwrite: bool = False
    opset: int | None = None
    checkpoint: str | None = None
    onnx_int8_path: str | None = None

    def __post_init__(self):
        for f in ("source", "saved_model_base", "onnx_path", "checkpoint", "onnx_int8_path"):  # paths travel as text
            value = getattr(self, f)
            if isinstance(value, os.PathLike):
                setattr(self, f, os.fspath(value))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ExportRequest":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"unknown export request fields {unknown}")
        return cls(**d)


# --------------------------------------------------------------------------- helpers


def current_backend() -> str:
    """The caller's Keras backend, without importing Keras when it is not loaded yet."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return keras.backend.backend()
        except Exception:  # pragma: no cover - half-imported keras
            pass
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        return json.loads(Path(home, "keras.json").read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def _validate(request: ExportRequest) -> None:
    r = request
    if r.saved_model_base is None and r.onnx_path is None and r.onnx_int8_path is None:
        raise ExportError("nothing to export: give a SavedModel base folder and/or an ONNX path")
    if not _NAME_RE.match(str(r.model_name)):
        raise ExportError(f"invalid model name {r.model_name!r}: use letters, digits, '.', '_', '-'")
    if r.version is not None and (not isinstance(r.version, int) or isinstance(r.version, bool) or r.version < 1):
        raise ExportError(f"version must be a positive integer, got {r.version!r}")
    if not Path(r.source).exists():
        raise ExportError(f"{r.source} does not exist")
    for path in (r.onnx_path, r.onnx_int8_path):
        if path is not None and Path(path).is_dir():
            raise ExportError(f"ONNX path {path} is a folder; give a file name such as {layout.ONNX_FILE}")
    if r.onnx_int8_path is not None and r.onnx_path is not None and Path(r.onnx_int8_path) == Path(r.onnx_path):
        raise ExportError(f"the int8 ONNX path is the float one ({r.onnx_path}); give another file name")
    for target, what in ((r.onnx_path, "ONNX file"), (r.onnx_int8_path, "ONNX file"),
                         (r.saved_model_base, "SavedModel base folder")):
        if target is not None:
            _check_writable(Path(target), what)
    if r.checkpoint is not None:
        from nebula_keras3.training.generator_state import FINAL, GeneratorStateError, checkpoint_file

        if r.checkpoint != FINAL:
            try:
                checkpoint_file(r.source, r.checkpoint)  # before the worker starts
            except GeneratorStateError as e:
                raise ExportError(str(e)) from None


def _check_writable(path: Path, what: str) -> None:
    """Fail before any work when ``path`` could not be created (nearest existing ancestor)."""
    anc = Path(os.path.abspath(path)) if what.endswith("folder") else Path(os.path.abspath(path)).parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ExportError(f"cannot write {what} {path}: {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {what} {path}: {anc} is not writable")


def _exists_message(path) -> str:
    return (f"{path} already exists: choose another --version, omit it for the next free one, "
            "or pass --overwrite")


# --------------------------------------------------------------------------- API


def export_generator(source, **options) -> ExportResult:
    """Export the generator of a run folder or ``.keras`` file.

    ``source`` is an :class:`ExportRequest`, or the request's ``source`` with its other
    fields as keyword arguments::

        export_generator("runs/x", saved_model_base="models", checkpoint="best")

    Raises:
        ExportError: with a one-line reason.
    """
    if isinstance(source, ExportRequest):
        if options:
            raise TypeError("give an ExportRequest or keyword options, not both")
        request = source
    else:
        request = ExportRequest(source, **options)
    _validate(request)
    if request.saved_model_base is not None and request.version is not None and not request.overwrite:
        existing = Path(request.saved_model_base) / request.model_name / str(request.version)
        if existing.exists():
            raise ExportError(_exists_message(existing))
    if current_backend() == "tensorflow":
        return export_in_process(request)
    from nebula_keras3.export import worker

    return worker.run(request)


def _model_facts(model, file_facts: dict, source) -> dict:
    import keras

    import nebula_keras3

    latent_dim = int(model.inputs[0].shape[-1])
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 4 or out_shape[1] != out_shape[2] or out_shape[3] != 3:
        raise ExportError(f"{source}: generator output shape {out_shape} is not [B, S, S, 3]")
    image_size = int(out_shape[1])
    for key, actual in ((layout.LATENT_DIM, latent_dim), (layout.IMAGE_SIZE, image_size)):
        stated = file_facts.get(key)
        if stated is not None and int(stated) != actual:
            raise ExportError(f"{source}: facts say {key}={stated} but the model has {actual}")
    facts = {
        "backend": None,
        layout.EPOCH: None,
        layout.STEP: None,
        "preset": None,
        "model": "dcgan" if type(model).__name__ == "DCGANGenerator" else type(model).__name__,
    }
    facts.update(file_facts)
    facts.update({
        layout.LATENT_DIM: latent_dim,
        layout.IMAGE_SIZE: image_size,
        "keras_version": keras.__version__,
        "nebula_keras3_version": nebula_keras3.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "source": str(Path(source).resolve()),
    })
    return facts


def load_generator(source, checkpoint: str | None = None):
    """``(keras model, file facts)`` for a run folder or .keras file at a training state
    (``checkpoint``, see :class:`ExportRequest`)."""
    from nebula_keras3.training.generator_state import GeneratorStateError, load_generator_state

    try:
        return load_generator_state(source, checkpoint)
    except GeneratorStateError as e:
        raise ExportError(str(e)) from None


def export_in_process(request: ExportRequest) -> ExportResult:
    """Run an export request in this process (Keras must run on the TensorFlow backend)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"in-process export needs the TensorFlow backend, Keras runs on {keras.backend.backend()}"
        )
    import onnx  # noqa: F401

    from nebula_keras3.export import onnx_model
    from nebula_keras3.models.export_forms import export_forms

    r = request
    model, file_facts = load_generator(r.source, r.checkpoint)
    facts = _model_facts(model, file_facts, r.source)
    latent_dim = facts[layout.LATENT_DIM]
    opset = onnx_model.DEFAULT_OPSET if r.opset is None else int(r.opset)
    if opset < 17:
        raise ExportError(f"ONNX opset must be >= 17, got {opset}")
    facts["onnx_opset"] = opset

    model_dir = None
    version = r.version
    if r.saved_model_base is not None:
        model_dir = Path(r.saved_model_base) / r.model_name
        explicit_version = version is not None
        if version is None:
            version = next_version(model_dir)
        elif (model_dir / str(version)).exists() and not r.overwrite:
            raise ExportError(_exists_message(model_dir / str(version)))

    # ONNX first: conversion and parity must pass before anything is written.
    int8_path = r.onnx_int8_path
    need_onnx = r.onnx_path is not None or int8_path is not None or (model_dir is not None and r.onnx_beside)
    onnx_bytes = None
    report: dict = {}
    if need_onnx or r.parity:
        try:
            with export_forms(model):
                final, dual = onnx_model.convert(model, latent_dim, facts, opset=opset)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"ONNX conversion failed: {type(e).__name__}: {e}") from None
        onnx_bytes = final.SerializeToString()
        if r.parity:
            try:
                report = onnx_model.parity_check(model, onnx_bytes, dual.SerializeToString(), latent_dim)
            except onnx_model.ParityError as e:
                raise ExportError(str(e)) from None
    int8_bytes, int8_report = _int8(model, onnx_bytes, latent_dim, r.parity) if int8_path else (None, {})

    saved_dir = None
    sm_check: dict = {}
    if model_dir is not None:
        saved_dir, version, sm_check = _write_version(
            model, facts, model_dir, version, r.overwrite, explicit_version,
            onnx_bytes if r.onnx_beside else None, check=r.parity,
        )

    written_onnx = None
    if r.onnx_path is not None:
        try:
            written_onnx = write_bytes_atomic(onnx_bytes, r.onnx_path)
        except OSError as e:
            raise ExportError(f"cannot write {r.onnx_path}: {e.strerror or e}") from None

    written_int8 = None
    if int8_path is not None:
        try:
            written_int8 = write_bytes_atomic(int8_bytes, int8_path)
        except OSError as e:
            raise ExportError(f"cannot write {int8_path}: {e.strerror or e}") from None

    return ExportResult(
        saved_model_dir=saved_dir,
        onnx_path=written_onnx,
        version=version,
        facts=facts,
        parity=report,
        saved_model_check=sm_check,
        onnx_int8_path=written_int8,
        int8_check=int8_report,
    )


def _int8(model, onnx_bytes: bytes, latent_dim: int, check: bool):
    """``(int8 model bytes, check report)`` for the float ONNX model (see export/quantize.py)."""
    import tensorflow as tf

    from nebula_keras3.export import quantize
    from nebula_keras3.sampling.grid import to_uint8
    from nebula_keras3.sampling.latents import latents_from_seeds

    def keras_images(seeds):
        z = tf.constant(latents_from_seeds(seeds, latent_dim))
        return to_uint8(model(z, training=False).numpy())

    try:
        if not check:
            return quantize.quantize_int8(onnx_bytes), {}
        return quantize.quantize_checked(onnx_bytes, keras_images, latent_dim)
    except quantize.QuantizeError as e:
        raise ExportError(str(e)) from None


def _write_version(model, facts, model_dir: Path, version: int, overwrite: bool, explicit: bool,
                   onnx_bytes: bytes | None, check: bool):
    """Write BASE/<name>/<version> via a hidden temp folder and a rename."""
    from nebula_keras3.export import saved_model as sm
    from nebula_keras3.models.export_forms import export_forms

    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {model_dir}: {e.strerror or e}") from None
    # A dot-name is not an integer, so TF Serving never picks up a partial version.
    tmp = layout.staging_dir(model_dir, version)
    try:
        try:
            with export_forms(model):
                sm.write_saved_model(model, facts[layout.LATENT_DIM], facts[layout.IMAGE_SIZE], tmp)
            layout.write_facts(tmp, facts)
            if onnx_bytes is not None:
                write_bytes_atomic(onnx_bytes, tmp / layout.ONNX_FILE)
        except OSError as e:
            raise ExportError(f"cannot write the SavedModel under {model_dir}: {e.strerror or e}") from None
        sm.check_native_ops(tmp)
        sm_check = verify_saved_model(tmp, model, facts, onnx_bytes) if check else {}
        final = _install(tmp, model_dir, version, overwrite, explicit)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, int(final.name), sm_check


def _install(tmp: Path, model_dir: Path, version: int, overwrite: bool, explicit: bool) -> Path:
    """Rename ``tmp`` to ``model_dir/<version>``; never leaves a broken version behind."""
    for _ in range(100):
        final = model_dir / str(version)
        if final.exists():
            if overwrite and explicit:
                old = layout.staging_dir(model_dir, version, "old")
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
                return final
            if explicit:
                raise ExportError(_exists_message(final))
            version = max(version, next_version(model_dir))  # raced with another export
            continue
        try:
            os.rename(tmp, final)  # fails if another writer created a non-empty `final`
            return final
        except OSError:
            continue
    raise ExportError(f"could not install a new version under {model_dir}")


def verify_saved_model(path, model, facts: dict, onnx_bytes: bytes | None) -> dict:
    """Reload the written SavedModel and check its signatures against Keras (and ONNX)."""
    import numpy as np
    import tensorflow as tf

    from nebula_keras3.sampling.grid import to_uint8
    from nebula_keras3.sampling.latents import latents_from_seeds

    loaded = tf.saved_model.load(str(path))
    d, s = facts[layout.LATENT_DIM], facts[layout.IMAGE_SIZE]
    L = layout
    z = np.random.default_rng().standard_normal((7, d)).astype(np.float32)
    ref = to_uint8(model(tf.constant(z), training=False).numpy())
    got = loaded.signatures[L.SERVING_DEFAULT](**{L.Z: tf.constant(z)})[L.IMAGES].numpy()
    if got.dtype != np.uint8 or got.shape != (7, s, s, 3):
        raise ExportError(f"SavedModel {L.SERVING_DEFAULT} returned {got.dtype}{list(got.shape)}")
    serve_diff = int(np.abs(got.astype(np.int16) - ref).max())
    seeds = np.array([0, 1, 12345], dtype=np.int64)
    pngs = loaded.signatures[L.GENERATE_PNG](**{L.SEED: tf.constant(seeds)})[L.PNG_BYTES].numpy()
    imgs = np.stack([tf.io.decode_png(p, channels=3).numpy() for p in pngs])
    ref_seed = to_uint8(model(tf.constant(latents_from_seeds(seeds, d)), training=False).numpy())
    png_diff = int(np.abs(imgs.astype(np.int16) - ref_seed).max())
    out = {f"{L.SERVING_DEFAULT}_max_uint8": serve_diff, f"{L.GENERATE_PNG}_max_uint8": png_diff}
    if onnx_bytes is not None:
        from nebula_keras3.sampling.onnx_sampler import cpu_session

        (o,) = cpu_session(onnx_bytes).run([L.IMAGES], {L.Z: latents_from_seeds(seeds, d)})
        out[f"{L.GENERATE_PNG}_vs_onnx_max_uint8"] = int(np.abs(imgs.astype(np.int16) - o).max())
    if max(out.values()) > 1:
        raise ExportError(f"SavedModel check failed (max uint8 diffs {out})")
    return out
