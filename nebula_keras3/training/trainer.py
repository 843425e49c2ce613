"""Train or resume a run: the Python API under ``nebula train``."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from nebula_keras3.artifacts import (
    CONFIG_FILE,
    DATA_FILE,
    FACTS_FILE,
    GENERATOR_FILE,
    atomic_path,
    remove_stale_temp_files,
    write_json_atomic,
)
from nebula_keras3.models import DCGANDiscriminator, DCGANGenerator, NebulaGenerator, ResNetDiscriminator
from nebula_keras3.training.checkpoint import checkpoint_path, load_checkpoint
from nebula_keras3.training.compile_cache import enable_jax_compile_cache
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.holdout_scoring import EVAL_COLUMNS, HoldoutEvaluation
from nebula_keras3.training.distribute import check_global_batch, data_shard
from nebula_keras3.training.gan import GAN, reference_adam
from nebula_keras3.training import precision
from nebula_keras3.training.precision import dtype_policy, float32_copy, wrap_optimizer
from nebula_keras3.training.monitor import (
    EpochCheckpoint,
    EpochLine,
    EpochsCsv,
    EpochSummary,
    LossesCsv,
    LossPlot,
    SampleGrids,
    StopOnNonFinite,
)
from nebula_keras3.training.run_folder import EPOCHS_CSV, RunError, read_table, repair, sample_grid_path
from nebula_keras3.training.stop_signal import StopOnSignal
from nebula_keras3.training.tensorboard import TensorBoardLogger
from nebula_keras3.training.warm_start import check_source, held_out_note, warm_start


class TrainingDiverged(RuntimeError):
    """Losses became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    steps_done: int
    generator_path: Path | None  # None when a stop signal ended the run before its last epoch
    seconds: float
    images_per_second: float | None  # mean over this invocation's epochs after the first
    data: str
    stopped_by: str | None = None  # a signal's name: the run stopped after epochs_done, before its last epoch


def build_models(config: TrainConfig) -> tuple[keras.Model, keras.Model]:
    """The generator and discriminator a config names (seeded from config.seed)."""
    if config.model == "nebula":
        generator = NebulaGenerator(config.image_size, config.latent_dim, config.ngf, upsample=config.upsample,
                                    activation=config.g_activation, sle=config.sle, rgb_skip=config.rgb_skip,
                                    seed=config.seed)
    else:
        generator = DCGANGenerator(config.image_size, config.latent_dim, config.ngf, seed=config.seed)
    if config.discriminator == "resnet":
        discriminator = ResNetDiscriminator(config.image_size, config.ndf, spectral_norm=config.spectral_norm,
                                            seed=config.seed + 1)
    else:
        discriminator = DCGANDiscriminator(config.image_size, config.ndf, spectral_norm=config.spectral_norm,
                                           seed=config.seed + 1, coarse_size=config.d_coarse_size,
                                           coarse_ndf=config.d_coarse_ndf)
    return generator, discriminator


def build_gan(config: TrainConfig) -> GAN:
    """Generator, discriminator and GAN for a config, compiled with two Adams (torch's eps)."""
    mode = precision.resolve(config.mixed_precision)  # "auto" -> bf16 or none, once
    with dtype_policy(mode):  # bf16/fp16 compute, float32 variables
        generator, discriminator = build_models(config)
    gan = GAN(generator, discriminator, seed=config.seed, loss=config.loss, augment=config.diffaugment,
              r1_gamma=config.r1_gamma, r1_every=config.r1_every, ema_decay=config.ema_decay,
              ada_target=config.ada_target, ada_kimg=config.ada_kimg)

    def adam(lr, name):  # fp16: inside a LossScaleOptimizer
        return wrap_optimizer(reference_adam(lr, config.beta_1, config.beta_2, name=name), mode)

    gan.compile(d_optimizer=adam(config.d_lr, "d_adam"), g_optimizer=adam(config.g_lr, "g_adam"),
                jit_compile=config.jit_compile)
    return gan


class _FirstBatches(keras.utils.PyDataset):
    """At most ``limit`` batches of each epoch (for ``steps_per_epoch``)."""

    def __init__(self, batches, limit):
        super().__init__()
        self.batches, self.limit = batches, limit

    def __len__(self):
        return min(len(self.batches), self.limit)

    def __getitem__(self, i):
        return self.batches[i]

    def on_epoch_end(self):
        self.batches.on_epoch_end()

    def set_epoch(self, epoch):
        self.batches.set_epoch(epoch)


class _DataEpoch(keras.callbacks.Callback):
    """Pins the data order to fit's epoch index.

    Keras also calls ``PyDataset.on_epoch_end`` when it resets its iterator, so
    counting those calls drifts; a resumed run must see exactly the batches an
    uninterrupted run sees at the same epoch.
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


@contextlib.contextmanager
def _tensorflow_left_unimported():
    """Keep Keras' ``save`` from importing TensorFlow under JAX/torch (~6 s and CUDA warnings).

    Keras' serializer asks its lazy ``tensorflow`` module whether TF is *available* (which
    imports it) only to test ``isinstance(obj, tf.TensorShape / tf.DType / tf.TypeSpec)``;
    while TensorFlow is not imported no object can be one, so the answer "unavailable" is
    exact. Nothing changes once TensorFlow is imported (the TensorFlow backend).
    """
    try:
        from keras.src.utils.module_utils import tensorflow as lazy_tf
    except ImportError:  # pragma: no cover - a Keras without the lazy module
        lazy_tf = None
    if lazy_tf is None or "tensorflow" in sys.modules or getattr(lazy_tf, "_available", True) is not None:
        yield
        return
    lazy_tf._available = False
    try:
        yield
    finally:
        if "tensorflow" not in sys.modules:
            lazy_tf._available = None


def save_generator(gan: GAN, config: TrainConfig, run_dir: Path, epochs_done: int, data: str) -> Path:
    """Write ``generator.keras`` and ``generator.json`` (the model facts) atomically."""
    path = run_dir / GENERATOR_FILE
    with atomic_path(path, suffix=".keras") as tmp, _tensorflow_left_unimported():
        float32_copy(gan.export_generator()).save(tmp)  # EMA weights if kept; no 16-bit policy
    write_json_atomic(
        {
            "model": config.model,
            "weights": "ema" if gan.generator_ema is not None else "raw",
            "preset": config.preset,
            "latent_dim": config.latent_dim,
            "image_size": config.image_size,
            "backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "epoch": epochs_done,
            "step": gan.steps_done,
            "seed": config.seed,
            "data": data,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        run_dir / FACTS_FILE,
    )
    return path


def train(config: TrainConfig, run_dir: str | Path, *, progress: bool = True, echo=print) -> TrainResult:
    """Start a new run in ``run_dir`` (which must not hold another run)."""
    config.validate()
    run_dir = Path(run_dir)
    if checkpoint_path(run_dir).exists() or (run_dir / CONFIG_FILE).exists():
        raise RunError(
            f"{run_dir} already holds a run; continue it with `nebula train --resume {run_dir}` "
            "or choose another --out"
        )
    if config.init_from:  # before anything is written: a bad source loses nothing
        check_source(config.init_from, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run_dir)  # a start killed before it wrote config.json
    if config.mixed_precision == precision.AUTO:  # decided once; config.json keeps it for resumes
        config = dataclasses.replace(config, mixed_precision=precision.resolve(precision.AUTO))
        echo(f"mixed precision auto: {config.mixed_precision}")
    write_json_atomic(config.to_dict(), run_dir / CONFIG_FILE)
    return _run(config, run_dir, resume=False, progress=progress, echo=echo)


def resume(run_dir: str | Path, *, epochs: int | None = None, allow_data_change: bool = False,
           progress: bool = True, echo=print) -> TrainResult:
    """Continue a run from its last checkpoint (optionally to a new total of ``epochs``).

    Refuses (RunError) when the training images differ from the ones the run started on,
    unless ``allow_data_change``. Temp files left by a killed write are removed first.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    stale = remove_stale_temp_files(run_dir)
    if stale:
        echo(f"removed {len(stale)} temp file(s) left by an interrupted write: "
             + ", ".join(str(p.relative_to(run_dir)) for p in stale[:3]))
    config = TrainConfig.load(run_dir / CONFIG_FILE)
    if epochs is not None:
        config.epochs = epochs
        config.validate()
        write_json_atomic(config.to_dict(), run_dir / CONFIG_FILE)
    return _run(config, run_dir, resume=True, progress=progress, echo=echo, allow_data_change=allow_data_change)


def check_data(run_dir: Path, fingerprint: dict, *, resume: bool, allow_change: bool = False, echo=print) -> None:
    """Record the data fingerprint of a new run; on resume, refuse changed data unless allowed."""
    path = run_dir / DATA_FILE
    stored = None
    if resume and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = None
    if stored is not None and stored != fingerprint:
        change = (f"{stored.get('image_count')} images (sha256 {str(stored.get('sha256'))[:12]}) when the run started, "
                  f"{fingerprint['image_count']} images (sha256 {fingerprint['sha256'][:12]}) now")
        if not allow_change:
            raise RunError(f"the training data of {run_dir} changed: {change}; "
                           "pass --allow-data-change to continue on the new data")
        echo(f"warning: continuing on changed training data: {change}")
    if stored != fingerprint:
        write_json_atomic(fingerprint, path)


def _run(config: TrainConfig, run_dir: Path, *, resume: bool, progress: bool, echo,
         allow_data_change: bool = False) -> TrainResult:
    from nebula_keras3.data import ImageBatches, data_fingerprint, load_training_images

    check_global_batch(config.batch_size)  # under --distribute: the batch splits over the devices
    t0 = time.perf_counter()
    enable_jax_compile_cache()  # JAX: compiled programs are reused across runs and resumes
    if config.deterministic:
        from nebula_keras3.training.determinism import enable_deterministic_ops

        echo(f"deterministic kernels: {enable_deterministic_ops()}")
    # Every random draw is seeded explicitly (initialisers, latent SeedGenerator, data order
    # from (seed, epoch)); seed Python's and numpy's global RNGs too for user callbacks.
    # (keras.utils.set_random_seed would import TensorFlow under the jax/torch backends.)
    random.seed(config.seed)
    np.random.seed(config.seed)
    images, data_description, listing = load_training_images(
        config.data, config.image_size, num_procedural=config.num_procedural, seed=config.seed,
        progress=progress,
    )
    check_data(run_dir, data_fingerprint(images), resume=resume, allow_change=allow_data_change, echo=echo)
    held_out = None
    if config.holdout:
        from nebula_keras3.data.split import split_holdout, split_listing

        images, held_out = split_holdout(images, config.holdout, config.seed,
                                         listing=split_listing(config.holdout_split, listing))
        data_description += f" ({len(held_out)} held out)"
    gan = build_gan(config)
    start_epoch = start_step = 0
    if resume and checkpoint_path(run_dir).exists():
        header = load_checkpoint(gan, checkpoint_path(run_dir))
        start_epoch, start_step = header["epoch"], header["step"]
        echo(f"resuming {run_dir} at epoch {start_epoch + 1} (step {header['step']})")
    elif resume:
        echo(f"{run_dir} has no checkpoint yet: starting it from epoch 1")
    if start_epoch == 0 and config.init_from:
        echo(warm_start(gan, config.init_from, config.image_size).describe())
        note = held_out_note(config.init_from, config,
                             skips_files=listing is not None and listing[1] > len(listing[0]))
        if note:
            echo(note)
    # Every file back to the checkpoint (the resume contract: training/run_folder.py).
    extra_columns = EVAL_COLUMNS if config.eval_every else ()
    repair(run_dir, epoch=start_epoch, step=start_step, echo=echo,
           blank_columns=lambda e: set(EVAL_COLUMNS) if not config.eval_every or e % config.eval_every else set(),
           best_key=EVAL_COLUMNS[0] if config.eval_every else None)

    batches = ImageBatches(
        images, config.batch_size, seed=config.seed, augment=config.augment, start_epoch=start_epoch,
        shard=data_shard(),  # multi-host: this process's slice of each global batch
    )
    if config.steps_per_epoch is not None:
        batches = _FirstBatches(batches, config.steps_per_epoch)
    # In this order (Keras calls callbacks in list order, each epoch's logs dict shared):
    # the non-finite check marks a diverged epoch first; scoring adds its figures and
    # EpochSummary the epoch means to the logs the writers read; the checkpoint comes last,
    # after every file of its epoch (the resume contract); a stop signal ends fit after that.
    stop = StopOnNonFinite()
    stop_signal = StopOnSignal()
    summary = EpochSummary(config.batch_size)
    checkpoint = EpochCheckpoint(run_dir)
    callbacks = [_DataEpoch(batches), stop]
    if config.eval_every:
        previous_rows = read_table(run_dir / EPOCHS_CSV)[1]
        callbacks.append(HoldoutEvaluation(run_dir, held_out, config.eval_every, train_images=images,
                                           previous_rows=previous_rows, seed=config.seed, echo=echo))
    tensorboard = TensorBoardLogger(run_dir, extra_columns, lambda e: sample_grid_path(run_dir, e))
    callbacks += [
        summary,
        SampleGrids(run_dir, config.sample_count),
        LossesCsv(run_dir),
        EpochsCsv(run_dir, extra_columns),
        LossPlot(run_dir, extra_columns),
        tensorboard,
        checkpoint,
        EpochLine(echo),
        stop_signal,
    ]
    if start_epoch < config.epochs:
        echo(
            f"training {config.model} {config.image_size}px on {data_description} with "
            f"{keras.backend.backend()}: epochs {start_epoch + 1}..{config.epochs}, "
            f"{len(batches)} steps of {config.batch_size} per epoch"
        )
        try:
            with stop_signal:  # SIGTERM: stop after the epoch in flight (training/stop_signal.py)
                gan.fit(
                    batches,
                    epochs=config.epochs,
                    initial_epoch=start_epoch,
                    callbacks=callbacks,
                    shuffle=False,  # ImageBatches shuffles per (seed, epoch); Keras would reorder batches at random
                    verbose=1 if progress and sys.stdout.isatty() else 0,  # our own line per epoch otherwise
                )
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise RunError(f"no space left on the device writing {e.filename or run_dir}: free some space, "
                           f"then continue with `nebula train --resume {run_dir}`") from e
        finally:
            tensorboard.close()  # fit skips on_train_end when a callback raises
    epochs_done = checkpoint.epochs_done or start_epoch
    if stop.diverged is not None:
        epoch, step, values = stop.diverged
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}, step {step} ({shown}); "
            + (f"the last good checkpoint (epoch {epochs_done}) is kept in {checkpoint_path(run_dir)}"
               if epochs_done else "no epoch finished, so there is no checkpoint")
            + ". Try a lower --lr or another --seed."
        )
    stopped_by = None
    if stop_signal.received is not None and epochs_done < config.epochs:  # fit ended at the signal
        stopped_by = stop_signal.received  # not finished: generator.keras is written at the last epoch
        generator_path = None
        echo(f"{stopped_by}: stopped after epoch {epochs_done} of {config.epochs} and its checkpoint; "
             f"continue with `nebula train --resume {run_dir}`")
    else:
        generator_path = save_generator(gan, config, run_dir, epochs_done, data_description)
    new_rates = [ips for epoch, ips in summary.rates if epoch > start_epoch + 1]
    ips = sum(new_rates) / len(new_rates) if new_rates else None
    return TrainResult(
        run_dir=run_dir,
        epochs_done=epochs_done,
        steps_done=gan.steps_done,
        generator_path=generator_path,
        seconds=time.perf_counter() - t0,
        images_per_second=ips,
        data=data_description,
        stopped_by=stopped_by,
    )


__all__ = ["TrainConfig", "TrainResult", "RunError", "TrainingDiverged", "build_gan", "train", "resume",
           "build_models"]
