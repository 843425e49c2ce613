"""The export contract: what an exported version folder holds and what its signatures are.

Every module that writes or reads an export (the SavedModel builder, the ONNX
exporter, the serving registry and runners, the ONNX sampler, the client, the
test helpers) takes these names from here. Standard library only, so the ONNX
sampler and the server import it without TensorFlow or Keras.

Layout under a TF Serving base folder::

    BASE/<model_name>/<version>/saved_model.pb
                               variables/
                               model.onnx                       (ONNX beside the SavedModel)
                               assets.extra/nebula_model.json   (model facts)

A version is a folder whose name is a non-negative integer (TF Serving's rule);
a folder being written has a dot-name (``.tmp-<version>-...``), which is not an
integer, so no server ever picks up half a version.

Signatures (``saved_model_cli show --all`` view; ``S`` = image size, ``D`` = latent size):

* ``serving_default``: ``z`` float32 ``[-1, D]``  -> ``images`` uint8 ``[-1, S, S, 3]``
* ``generate_png``:    ``seed`` int64 ``[-1]``    -> ``png_bytes`` string ``[-1]`` (one PNG per seed)
* ``generate_images``: ``seed`` int64 ``[-1]``    -> ``images`` uint8 ``[-1, S, S, 3]``

The ONNX model has the ``serving_default`` interface (input ``z``, output ``images``);
the other two signatures draw latents from seeds with
:func:`nebula_keras3.sampling.latents.latents_from_seeds` first.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- files

SAVED_MODEL_FILE = "saved_model.pb"
ONNX_FILE = "model.onnx"
FACTS_FILE = Path("assets.extra") / "nebula_model.json"
# ONNX metadata_props key holding all facts as one JSON object
ONNX_FACTS_KEY = "nebula_model"
# the model folder name under a base folder when none is given (TF Serving model name)
DEFAULT_MODEL_NAME = "nebula"

# --------------------------------------------------------------------------- signatures

Z = "z"
IMAGES = "images"
SEED = "seed"
PNG_BYTES = "png_bytes"

SERVING_DEFAULT = "serving_default"
GENERATE_PNG = "generate_png"
GENERATE_IMAGES = "generate_images"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: numpy-style dtype name and shape (-1 = any size)."""

    dtype: str  # "float32", "int64", "uint8", "string"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def signatures(latent_dim: int, image_size: int) -> dict[str, Signature]:
    """The export's three signatures for a generator of this latent and image size."""
    d, s = int(latent_dim), int(image_size)
    images = TensorSpec("uint8", (-1, s, s, 3))
    seed = TensorSpec("int64", (-1,))
    return {
        SERVING_DEFAULT: Signature({Z: TensorSpec("float32", (-1, d))}, {IMAGES: images}),
        GENERATE_PNG: Signature({SEED: seed}, {PNG_BYTES: TensorSpec("string", (-1,))}),
        GENERATE_IMAGES: Signature({SEED: seed}, {IMAGES: images}),
    }


SIGNATURE_NAMES = tuple(signatures(1, 1))


def tf_tensor_names(signature: str) -> tuple[dict[str, str], dict[str, str]]:
    """The graph tensor names ``tf.saved_model.save`` gives a signature's inputs and outputs.

    Inputs are ``<signature>_<input>:0``; outputs come from one ``StatefulPartitionedCall``
    per signature, numbered in the sorted order of the signature names (``""``, ``_1``,
    ``_2``). An ONNX-only version folder reports these, so its metadata reads like the
    SavedModel's.
    """
    sig = signatures(1, 1)[signature]
    i = sorted(SIGNATURE_NAMES).index(signature)
    call = "StatefulPartitionedCall" + (f"_{i}" if i else "") + ":0"
    return ({k: f"{signature}_{k}:0" for k in sig.inputs}, {k: call for k in sig.outputs})


# --------------------------------------------------------------------------- facts

# Keys of the model facts (``FACTS_FILE``, the ONNX metadata, ``generator.json``) that code
# reads; the facts hold more (versions, backend, time of export), for people.
LATENT_DIM = "latent_dim"
IMAGE_SIZE = "image_size"
EPOCH = "epoch"  # finished training epochs of the exported state
STEP = "step"
WEIGHTS = "weights"  # "ema" or "raw"
# Which training state was exported: "final" (the run's generator.keras), "best" / "last"
# (checkpoints/best.npz / last.npz) or the path of another checkpoint file.
CHECKPOINT = "checkpoint"


def write_facts(version_dir: str | os.PathLike, facts: dict) -> Path:
    """Write the model facts file of a version folder (atomically)."""
    from nebula_keras3.artifacts import write_json_atomic

    return write_json_atomic(facts, Path(version_dir) / FACTS_FILE)


def read_facts(version_dir: str | os.PathLike) -> dict:
    """The model facts of a version folder; ``{}`` when the file is missing or unreadable."""
    try:
        facts = json.loads((Path(version_dir) / FACTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


def onnx_facts(metadata: dict[str, str]) -> dict:
    """The facts stored in an ONNX model's ``metadata_props`` (see :func:`onnx_metadata`)."""
    try:
        facts = json.loads(metadata[ONNX_FACTS_KEY]) if ONNX_FACTS_KEY in metadata else dict(metadata)
    except ValueError:
        return dict(metadata)
    return facts if isinstance(facts, dict) else dict(metadata)


def onnx_metadata(facts: dict) -> dict[str, str]:
    """``metadata_props`` of the ONNX model: all facts as JSON, plus one entry per fact."""
    props = {ONNX_FACTS_KEY: json.dumps(facts, sort_keys=True)}
    for k, v in facts.items():
        props[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return props


# --------------------------------------------------------------------------- versions


def is_version_name(name: str) -> bool:
    """TF Serving's rule: a version folder's name is a non-negative int64."""
    return name.isdigit() and int(name) < 2**63


def is_version_dir(path: str | os.PathLike) -> bool:
    """A version folder holds a SavedModel or an ONNX model."""
    path = Path(path)
    return (path / SAVED_MODEL_FILE).is_file() or (path / ONNX_FILE).is_file()


def version_dirs(model_dir: str | os.PathLike, *, complete: bool = False, strict: bool = False) -> dict[int, Path]:
    """``{version: folder}`` of the integer-named folders under ``BASE/<name>``.

    With ``complete=True`` only folders holding a model count (what a server may load). A folder
    that cannot be listed has no versions, or raises OSError with ``strict=True``.
    """
    out = {}
    try:
        for p in Path(model_dir).iterdir():
            if is_version_name(p.name) and p.is_dir() and (not complete or is_version_dir(p)):
                out[int(p.name)] = p
    except OSError:
        if strict:
            raise
    return dict(sorted(out.items()))


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer version folders under ``BASE/<name>``, ascending."""
    return list(version_dirs(model_dir))


def next_version(model_dir: str | os.PathLike) -> int:
    """The next free version: one more than the largest existing, 1 when none."""
    versions = existing_versions(model_dir)
    return (versions[-1] + 1) if versions else 1


def model_dir(base: str | os.PathLike, name: str) -> Path:
    """``base`` if it holds version folders (TF Serving's base path), else ``base/<name>`` (an export base)."""
    base = Path(base)
    if version_dirs(base):
        return base
    return base / name if (base / name).is_dir() else base


def staging_dir(model_dir: str | os.PathLike, version: int, kind: str = "tmp") -> Path:
    """A hidden (non-integer) folder beside the versions, to write or retire ``version`` in."""
    return Path(model_dir) / f".{kind}-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
