"""``nebula train``: a thin click command over ``nebula_keras3.training.trainer``."""

from __future__ import annotations

import sys

import click

from nebula_keras3.training.config import (
    ADA_DEFAULT_POLICY,
    DISCRIMINATORS,
    G_ACTIVATIONS,
    LOSSES,
    MODELS,
    PRESETS,
    SUPPORTED_SIZES,
    UPSAMPLE_MODES,
    TrainConfig,
)
from nebula_keras3.training.distribute import MODES as DISTRIBUTE_MODES
from nebula_keras3.training.precision import CHOICES as PRECISION_CHOICES


def preset_defaults(name: str) -> str:
    """What each preset sets ``name`` to, for --help: "64" or "dcgan64: 64, demo: 32, ..."."""
    values = {p: getattr(TrainConfig.from_preset(p), name) for p in PRESETS}

    def show(v):
        if v is None:
            return "unset"
        return "off" if v == "" or v is False else ("on" if v is True else str(v))

    if len({show(v) for v in values.values()}) == 1:
        return f"default: {show(next(iter(values.values())))}"
    return "presets: " + ", ".join(f"{p} {show(v)}" for p, v in values.items())


def _opt(flag, name, type_, text, **kw):
    return click.option(flag, name, type=type_, default=None, help=f"{text} ({preset_defaults(name)}).", **kw)


# Options that shape a new run; each maps to a TrainConfig field. None = the preset's value.
RUN_OPTIONS = [
    click.option("--preset", type=click.Choice(list(PRESETS)), default="nebula64", show_default=True,
                 help="Starting configuration; the options below override it."),
    click.option("--data", type=click.Path(file_okay=False), default=None,
                 help="Folder of training images (any format/mode). Default: built-in procedural nebulae."),
    _opt("--image-size", "image_size", click.Choice([str(s) for s in SUPPORTED_SIZES]), "Training resolution in pixels"),
    _opt("--epochs", "epochs", click.IntRange(min=1), "Total epochs"),
    _opt("--batch-size", "batch_size", click.IntRange(min=1), "Batch size"),
    _opt("--latent-dim", "latent_dim", click.IntRange(min=1), "Latent size"),
    _opt("--model", "model", click.Choice(MODELS), "Generator family"),
    _opt("--ngf", "ngf", click.IntRange(min=1), "Generator width"),
    _opt("--upsample", "upsample", click.Choice(UPSAMPLE_MODES), "Nebula generator's x2 upsampling"),
    _opt("--g-activation", "g_activation", click.Choice(G_ACTIVATIONS), "Nebula generator's activation"),
    click.option("--sle/--no-sle", default=None,
                 help=f"Nebula generator's skip-layer excitation ({preset_defaults('sle')})."),
    click.option("--rgb-skip", "rgb_skip", type=click.IntRange(min=0), is_flag=False, flag_value=1, default=None,
                 metavar="[LEVELS]",
                 help="Nebula generator: draw the image at 1/2^LEVELS of the size (alone: 1 level, half size) "
                      "and let each stage above add a correction to its bilinear upscale, so --init-from a "
                      "run half this size with LEVELS - 1 starts at its images; 0 = off "
                      f"({preset_defaults('rgb_skip')})."),
    _opt("--discriminator", "discriminator", click.Choice(DISCRIMINATORS), "Discriminator architecture"),
    _opt("--ndf", "ndf", click.IntRange(min=1), "Discriminator width"),
    _opt("--d-coarse-size", "d_coarse_size", click.IntRange(min=0),
         "Multi-scale D (dcgan): a second stack judges the image average-pooled to this side in px, "
         "for layout and colour; 0 = off"),
    _opt("--d-coarse-ndf", "d_coarse_ndf", click.IntRange(min=1), "That stack's first-stage width"),
    click.option("--spectral-norm/--no-spectral-norm", default=None,
                 help=f"Spectral normalisation of D's layers ({preset_defaults('spectral_norm')})."),
    _opt("--loss", "loss", click.Choice(LOSSES), "Adversarial loss"),
    _opt("--diffaugment", "diffaugment", str,
         "DiffAugment policy: comma-separated color, translation, cutout; '' = off"),
    _opt("--r1-gamma", "r1_gamma", click.FloatRange(min=0), "R1 penalty weight on reals, 0 = off"),
    _opt("--r1-every", "r1_every", click.IntRange(min=1), "Lazy R1: apply every k-th step"),
    _opt("--ema-decay", "ema_decay", click.FloatRange(min=0, max=1, max_open=True),
         "EMA of the generator's weights, 0 = off"),
    _opt("--ada-target", "ada_target", click.FloatRange(min=0, max=1),
         "Adaptive augmentation (StyleGAN2-ADA; 0.6 is its choice): steer the probability of each "
         f"DiffAugment op (the --diffaugment policy, or {ADA_DEFAULT_POLICY} when that is off) "
         "so that E[sign(D(real))] stays at this target; 0 = off"),
    _opt("--ada-kimg", "ada_kimg", click.FloatRange(min=0, min_open=True),
         "Adaptive augmentation's speed: thousands of images for p to go from 0 to 1"),
    _opt("--lr", "learning_rate", float, "Adam learning rate, both nets"),
    _opt("--d-lr", "d_learning_rate", float, "D's learning rate, overrides --lr"),
    _opt("--g-lr", "g_learning_rate", float, "G's learning rate, overrides --lr"),
    _opt("--beta1", "beta_1", float, "Adam beta_1, both nets"),
    _opt("--beta2", "beta_2", float, "Adam beta_2, both nets"),
    _opt("--seed", "seed", int, "Seed for weights, latents and data order"),
    click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
                 help="Cap the steps of each epoch (quick runs)."),
    click.option("--augment/--no-augment", default=None, help="Random flips and 90-degree rotations (on)."),
    click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="Keep this fraction of the images out of training (seeded split; 0: none)."),
    click.option("--eval-every", type=click.IntRange(min=0), default=None, metavar="K",
                 help="Every K epochs, score against the held-out images (epochs.csv, checkpoints/best.npz)."),
    click.option("--mixed-precision", type=click.Choice(list(PRECISION_CHOICES)), default=None,
                 help="16-bit compute, float32 weights (fp16 adds loss scaling); auto: bf16 where it "
                      "measured faster and no worse (TensorFlow on a CPU with native bf16), else none."),
    click.option("--init-from", type=click.Path(exists=True), default=None, metavar="RUN",
                 help="Start from the weights of another run (its folder: the last checkpoint; or a file in its "
                      "checkpoints/): every layer both models share, e.g. nebula64's into nebula128; "
                      "the others start fresh."),
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
    SIGTERM stops the run after the epoch in flight and its checkpoint (exit status 143;
    --resume continues it); a second SIGTERM stops it at once.
    """
    import keras

    from nebula_keras3.training import trainer
    from nebula_keras3.training.checkpoint import CheckpointError
    from nebula_keras3.training.distribute import DistributeError, setup_distribution
    from nebula_keras3.training.stop_signal import STOPPED_EXIT_CODE

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
    if result.stopped_by:  # trainer said where it stopped and how to go on
        sys.exit(STOPPED_EXIT_CODE)
    speed = f", {result.images_per_second:.1f} img/s" if result.images_per_second else ""
    click.echo(
        f"done: {result.epochs_done} epochs, {result.steps_done} steps in {result.seconds:.0f} s{speed}\n"
        f"generator: {result.generator_path}\nsamples:   {result.run_dir / 'samples'}"
    )
