"""``nebula train``: a thin click command over ``nebula_keras3.training.trainer``."""

from __future__ import annotations

import click

from nebula_keras3.training.config import PRESETS
from nebula_keras3.training.distribute import MODES as DISTRIBUTE_MODES
from nebula_keras3.training.precision import POLICIES as PRECISION_POLICIES

# Options that shape a new run; each maps to a TrainConfig field. None = preset's value.
RUN_OPTIONS = [
    click.option("--preset", type=click.Choice(sorted(PRESETS)), default="dcgan64", show_default=True,
                 help="Starting configuration; the options below override it."),
    click.option("--data", type=click.Path(file_okay=False), default=None,
                 help="Folder of training images (any format/mode). Default: built-in procedural nebulae."),
    click.option("--image-size", type=click.Choice(["32", "64", "128", "256"]), default=None,
                 help="Training resolution in pixels (preset: 64)."),
    click.option("--epochs", type=click.IntRange(min=1), default=None, help="Total epochs (preset: 25)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (preset: 32)."),
    click.option("--latent-dim", type=click.IntRange(min=1), default=None, help="Latent size (preset: 100)."),
    click.option("--ngf", type=click.IntRange(min=1), default=None, help="Generator width (preset: 64)."),
    click.option("--ndf", type=click.IntRange(min=1), default=None, help="Discriminator width (preset: 64)."),
    click.option("--lr", "learning_rate", type=float, default=None, help="Adam learning rate, both nets (2e-4)."),
    click.option("--seed", type=int, default=None, help="Seed for weights, latents and data order (0)."),
    click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
                 help="Cap the steps of each epoch (quick runs)."),
    click.option("--augment/--no-augment", default=None, help="Random flips and 90-degree rotations (on)."),
    click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="Keep this fraction of the images out of training (seeded split; 0: none)."),
    click.option("--eval-every", type=click.IntRange(min=0), default=None, metavar="K",
                 help="Every K epochs, score against the held-out images (epochs.csv, checkpoints/best.npz)."),
    click.option("--mixed-precision", type=click.Choice(list(PRECISION_POLICIES)), default=None,
                 help="16-bit compute, float32 weights (fp16 adds loss scaling); default: none."),
    click.option("--jit-compile/--no-jit-compile", default=None,
                 help="Force XLA/jit on or off (default: Keras' choice per backend)."),
    click.option("--deterministic/--no-deterministic", default=None,
                 help="Deterministic GPU kernels (slower; CPU runs are deterministic already)."),
]


def run_options(func):
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


@click.command("train")
@run_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder to create (default: runs/<preset>-<backend>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this folder from its last checkpoint (only --epochs may change).")
@click.option("--allow-data-change", is_flag=True,
              help="With --resume: continue even though the training images changed.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--distribute", type=click.Choice(DISTRIBUTE_MODES), default="none", show_default=True,
              help="data-parallel: split each batch over all devices (JAX; keras.distribution.DataParallel).")
@click.option("--coordinator-address", default=None,
              help="Multi-host data-parallel: host:port of process 0 (or KERAS_DISTRIBUTION_JOB_ADDRESSES).")
@click.option("--num-processes", type=click.IntRange(min=1), default=None,
              help="Multi-host data-parallel: number of processes (or KERAS_DISTRIBUTION_NUM_PROCESSES).")
@click.option("--process-id", type=click.IntRange(min=0), default=None,
              help="Multi-host data-parallel: this process, 0..N-1 (or KERAS_DISTRIBUTION_PROCESS_ID).")
def train_command(out, resume_dir, allow_data_change, quiet, distribute, coordinator_address, num_processes,
                  process_id, **options):
    """Train a GAN on KERAS_BACKEND (tensorflow, jax or torch) and write a run folder.

    The run folder gets config.json, a checkpoint every epoch (checkpoints/last.npz),
    samples/epoch_NNN.png, losses.csv, epochs.csv, losses.png and generator.keras.
    """
    import keras

    from nebula_keras3.training import trainer
    from nebula_keras3.training.checkpoint import CheckpointError
    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.distribute import DistributeError, setup_distribution

    cluster = {"coordinator_address": coordinator_address, "num_processes": num_processes,
               "process_id": process_id}
    if distribute == "none" and any(v is not None for v in cluster.values()):
        raise click.UsageError("--coordinator-address/--num-processes/--process-id need --distribute data-parallel")
    try:
        if distribute != "none":  # before any model is built
            click.echo(setup_distribution(distribute, **cluster))
    except DistributeError as e:
        raise click.ClickException(str(e)) from None

    preset = options.pop("preset")
    if options["image_size"] is not None:
        options["image_size"] = int(options["image_size"])
    try:
        if resume_dir:
            changed = [k for k, v in options.items() if v is not None and k != "epochs"]
            if changed or out:
                names = ", ".join("--" + k.replace("_", "-") for k in changed + (["out"] if out else []))
                raise click.UsageError(f"--resume continues a run as configured; drop {names}")
            result = trainer.resume(resume_dir, epochs=options["epochs"], allow_data_change=allow_data_change,
                                    progress=not quiet, echo=click.echo)
        else:
            config = TrainConfig.from_preset(preset, **options)
            out = out or f"runs/{preset}-{keras.backend.backend()}"
            result = trainer.train(config, out, progress=not quiet, echo=click.echo)
    except (trainer.RunError, trainer.TrainingDiverged, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    speed = f", {result.images_per_second:.1f} img/s" if result.images_per_second else ""
    click.echo(
        f"done: {result.epochs_done} epochs, {result.steps_done} steps in {result.seconds:.0f} s{speed}\n"
        f"generator: {result.generator_path}\nsamples:   {result.run_dir / 'samples'}"
    )
