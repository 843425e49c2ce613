"""``nebula sample``: render a grid / individual PNGs / .npy / an interpolation strip.

``--onnx`` renders with ONNX Runtime and imports only numpy, onnxruntime, Pillow
and click; ``--model`` renders with Keras under the current backend. Image seeds
are ``seed, seed+1, ...`` drawn with the portable latent recipe, so the same seed
gives the same images on every path (and in the SavedModel's ``generate_png``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from nebula_keras3.artifacts import atomic_path
from nebula_keras3.training.generator_state import CHECKPOINT_HELP, describe_state

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_writable(path: str, what: str, is_dir: bool = False) -> None:
    """Fail fast (one line) when ``path`` cannot be written."""
    p = Path(path)
    if p.exists():
        if is_dir and not p.is_dir():
            raise click.UsageError(f"{what} {path} exists and is not a folder")
        if not is_dir and p.is_dir():
            raise click.UsageError(f"{what} {path} is a folder, not a file")
        target = p if is_dir else p.parent
    else:
        target = p.parent
    # nearest existing ancestor must be a writable folder
    anc = target.resolve() if str(target) else Path.cwd()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise click.UsageError(f"cannot write {what} {path}: {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise click.UsageError(f"cannot write {what} {path}: {anc} is not writable")


def _write(fn, what: str, path) -> None:
    try:
        fn()
    except OSError as e:
        raise click.ClickException(f"cannot write {what} {path}: {e.strerror or e}") from None


@click.command("sample")
@click.option("--onnx", "onnx_path", metavar="FILE", help="Exported .onnx generator (ONNX Runtime).")
@click.option("--model", "model_path", metavar="RUN_OR_KERAS",
              help="Run folder or .keras file (Keras under the current backend).")
@click.option("-n", "--num", "n", type=int, default=64, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="First image seed (images use seed, seed+1, ...).")
@click.option("-o", "--out", "out", metavar="PNG", help="Write a grid (or the interpolation strip) here.")
@click.option("--ncols", type=click.IntRange(min=1), default=None, help="Grid columns (default: square).")
@click.option("--individual", "individual_dir", metavar="DIR", help="Also write one PNG per image here.")
@click.option("--npy", "npy_path", metavar="FILE", help="Also write the uint8 array [n, S, S, 3] here.")
@click.option("--interpolate", nargs=2, type=int, default=None, metavar="SEED_A SEED_B",
              help="Render a slerp strip between two image seeds instead of a batch.")
@click.option("--steps", type=int, default=8, show_default=True, help="Frames of --interpolate.")
@click.option("--gif", "gif_path", metavar="FILE", help="With --interpolate: also write an animated GIF.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--checkpoint", metavar="best|last|FILE", default=None, help=f"With --model, the {CHECKPOINT_HELP}")
def sample_command(onnx_path, model_path, n, seed, out, ncols, individual_dir, npy_path,
                   interpolate, steps, gif_path, batch_size, checkpoint):
    """Render generator images: a grid, individual PNGs, a .npy, or an interpolation strip/GIF.

    Examples:

      nebula sample --onnx nebula.onnx -n 64 --seed 0 -o grid.png

      nebula sample --model runs/x --interpolate 3 17 --steps 10 -o strip.png --gif strip.gif
    """
    t0 = time.perf_counter()
    if (onnx_path is None) == (model_path is None):
        raise click.UsageError("give exactly one of --onnx FILE or --model RUN_OR_KERAS")
    if checkpoint is not None and model_path is None:
        raise click.UsageError("--checkpoint picks a training state of a --model run folder, not of --onnx")
    if interpolate is None:
        if n <= 0:
            raise click.UsageError(f"-n must be a positive number of images, got {n}")
        if gif_path is not None:
            raise click.UsageError("--gif needs --interpolate SEED_A SEED_B")
        if not (INT64_MIN <= seed and seed + n - 1 <= INT64_MAX):
            raise click.UsageError("seeds must stay within int64")
    else:
        if steps < 2:
            raise click.UsageError(f"--steps must be at least 2, got {steps}")
        if not all(INT64_MIN <= s <= INT64_MAX for s in interpolate):
            raise click.UsageError("seeds must be within int64")
    if not any([out, individual_dir, npy_path, gif_path]):
        raise click.UsageError("nothing to write: give -o PNG, --individual DIR, --npy FILE or --gif FILE")
    for path, what, is_dir in ((out, "grid", False), (individual_dir, "folder", True),
                               (npy_path, "array", False), (gif_path, "GIF", False)):
        if path is not None:
            _check_writable(path, what, is_dir)

    from nebula_keras3.sampling.onnx_sampler import SamplerError

    try:
        if onnx_path is not None:
            from nebula_keras3.sampling.onnx_sampler import OnnxSampler

            sampler = OnnxSampler(onnx_path, batch_size=batch_size)
        else:
            from nebula_keras3.sampling.keras_sampler import KerasSampler

            sampler = KerasSampler(model_path, batch_size=batch_size, checkpoint=checkpoint)
            click.echo(f"{model_path}: {describe_state(sampler.facts)}")

        import numpy as np

        from nebula_keras3.sampling.grid import make_grid, save_individual, save_png
        from nebula_keras3.sampling.latents import batch_seeds

        if interpolate is None:
            seeds = batch_seeds(seed, n)
            images = sampler.images_from_seeds(seeds)
            grid_cols = ncols
        else:
            from nebula_keras3.sampling.interpolate import interpolation_latents, save_gif

            seeds = None
            images = sampler.images_from_latents(
                interpolation_latents(interpolate[0], interpolate[1], steps, sampler.latent_dim)
            )
            grid_cols = ncols or steps  # one row
    except SamplerError as e:
        raise click.ClickException(str(e)) from None

    written = []
    if out is not None:
        _write(lambda: save_png(make_grid(images, ncols=grid_cols), out), "grid", out)
        written.append(out)
    if individual_dir is not None:
        if seeds is not None:
            _write(lambda: save_individual(images, individual_dir, seeds=seeds), "images to", individual_dir)
        else:
            _write(lambda: save_individual(images, individual_dir), "images to", individual_dir)
        written.append(f"{individual_dir}/ ({len(images)} PNGs)")
    if npy_path is not None:
        def _save_npy():
            with atomic_path(npy_path, suffix=".npy") as tmp:
                np.save(tmp, images)

        _write(_save_npy, "array", npy_path)
        written.append(npy_path)
    if gif_path is not None:
        _write(lambda: save_gif(images, gif_path), "GIF", gif_path)
        written.append(gif_path)
    what = (f"{len(images)} images from seeds {seed}..{seed + n - 1}" if interpolate is None
            else f"{steps}-step slerp from seed {interpolate[0]} to {interpolate[1]}")
    click.echo(f"{what}, {sampler.image_size} px, in {time.perf_counter() - t0:.2f} s -> {', '.join(written)}")
