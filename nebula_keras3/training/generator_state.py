"""The generator of a chosen training state: ``--checkpoint best|last|FILE`` of sample, export, evaluate.

A run folder holds several states of its generator:

* ``final`` (the default): ``generator.keras``, written when training ends;
* ``best``: ``checkpoints/best.npz``, the state with the best held-out score
  (``nebula train --holdout F --eval-every K``);
* ``last``: ``checkpoints/last.npz``, the last finished epoch (also of an unfinished run);
* a checkpoint file's path (a copy of either, taken at another time).

A checkpoint holds the whole training state, so the run's ``config.json`` rebuilds the
GAN it fits; the generator taken from it is the inference one (the EMA copy when the run
keeps one, as ``generator.keras`` is), as a float32 model. The facts returned say which
state was used (``layout.CHECKPOINT``) and its epoch and step.
"""

from __future__ import annotations

import os
from pathlib import Path

from nebula_keras3.artifacts import CONFIG_FILE, ArtifactError, resolve_generator
from nebula_keras3.export import layout

FINAL = "final"
NAMED = ("best", "last")  # checkpoint.BEST_FILE, checkpoint.CHECKPOINT_FILE
CHECKPOINT_HELP = ("training state of the run folder: best (checkpoints/best.npz, the best held-out "
                   "score), last (checkpoints/last.npz) or a checkpoint FILE; default: the final "
                   "generator.keras. The EMA weights when the run keeps them.")


class GeneratorStateError(ValueError):
    """A state that cannot be loaded; the message says why in one line."""


def checkpoint_file(source: str | os.PathLike, checkpoint: str) -> Path:
    """The ``.npz`` that ``checkpoint`` (``best``, ``last`` or a path) names for run folder ``source``."""
    from nebula_keras3.training.checkpoint import BEST_FILE, CHECKPOINT_FILE, checkpoint_path

    run = Path(source)
    if not (run.is_dir() and (run / CONFIG_FILE).is_file()):
        raise GeneratorStateError(
            f"--checkpoint {checkpoint} needs a run folder (with {CONFIG_FILE}), got {source}"
        )
    if checkpoint in NAMED:
        path = checkpoint_path(run, {"best": BEST_FILE, "last": CHECKPOINT_FILE}[checkpoint])
        if not path.is_file():
            how = (" (written by `nebula train --holdout F --eval-every K` when a held-out score improves)"
                   if checkpoint == "best" else "")
            raise GeneratorStateError(f"{run} has no {path.relative_to(run)}{how}")
        return path
    path = Path(checkpoint)
    if not path.is_file():
        raise GeneratorStateError(f"checkpoint {checkpoint} does not exist: give best, last or a .npz file")
    return path


def load_generator_state(source: str | os.PathLike, checkpoint: str | None = None):
    """``(Keras generator, facts)`` of a run folder (or ``.keras`` file) at the chosen state.

    ``checkpoint`` is ``None`` / ``"final"`` (``generator.keras``), ``"best"``, ``"last"``
    or a checkpoint file of the run. The facts are the run's ``generator.json`` (or, for
    a run that has not finished, what its config says) with the state's epoch and step.
    """
    import keras

    import nebula_keras3.models.dcgan, nebula_keras3.models.nebula  # noqa: F401,E401  (registers both families' classes)

    if checkpoint in (None, FINAL):
        try:
            model_path, facts = resolve_generator(source)
        except ArtifactError as e:
            raise GeneratorStateError(str(e)) from None
        try:
            model = keras.saving.load_model(model_path, compile=False)
        except Exception as e:  # noqa: BLE001 - any load failure is one message
            text = str(e).strip()
            first = text.splitlines()[0][:300] if text else type(e).__name__
            raise GeneratorStateError(f"cannot load {model_path}: {first}") from None
        return model, {**facts, layout.CHECKPOINT: FINAL}

    path = checkpoint_file(source, checkpoint)
    from nebula_keras3.training.checkpoint import CheckpointError, load_checkpoint
    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.precision import float32_copy
    from nebula_keras3.training.trainer import build_gan

    run = Path(source)
    try:
        config = TrainConfig.load(run / CONFIG_FILE)
    except (OSError, ValueError, TypeError) as e:
        raise GeneratorStateError(f"cannot read {run / CONFIG_FILE}: {e}") from None
    gan = build_gan(config)
    try:
        header = load_checkpoint(gan, path)
    except CheckpointError as e:
        raise GeneratorStateError(str(e)) from None
    model = float32_copy(gan.export_generator())
    try:
        _, facts = resolve_generator(run)  # the finished run's facts, when there are some
    except ArtifactError:
        facts = {"model": config.model, "preset": config.preset, "seed": config.seed}
    facts = {k: v for k, v in facts.items() if k != "saved_at"}  # that time is generator.keras's
    facts.update({
        layout.LATENT_DIM: config.latent_dim,
        layout.IMAGE_SIZE: config.image_size,
        layout.EPOCH: int(header["epoch"]),
        layout.STEP: int(header["step"]),
        layout.WEIGHTS: "ema" if gan.generator_ema is not None else "raw",
        layout.CHECKPOINT: checkpoint if checkpoint in NAMED else str(path.resolve()),
    })
    return model, facts


def describe_state(facts: dict) -> str:
    """One line for command output: which state, which epoch (``best checkpoint, epoch 7``)."""
    state = facts.get(layout.CHECKPOINT, FINAL)
    what = {FINAL: "final generator", "best": "best checkpoint", "last": "last checkpoint"}.get(
        state, f"checkpoint {state}")
    epoch = facts.get(layout.EPOCH)
    return what + (f", epoch {epoch}" if epoch is not None else "")
