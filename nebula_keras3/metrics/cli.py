"""``nebula evaluate``: a thin click command over ``nebula_keras3.metrics.evaluate``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from nebula_keras3.artifacts import CONFIG_FILE
from nebula_keras3.data.split import SPLIT_OF_OLDER_RUNS, split_listing
from nebula_keras3.metrics.evaluate import DEFAULT_HOLDOUT, DEFAULT_NUM, METRICS
from nebula_keras3.training.generator_state import CHECKPOINT_HELP


def _metric_list(ctx, param, value: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in value.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise click.BadParameter(f"choose from {', '.join(METRICS)} (comma-separated), got {value!r}")
    return names


def _run_split(model_path) -> tuple[float, int, str] | None:
    """``(holdout, seed, holdout_split)`` of a run folder trained with ``--holdout``: its own
    held-out split (``TrainConfig.holdout_split``)."""
    if model_path is None:
        return None
    config = Path(model_path) / CONFIG_FILE
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(values, dict) and values.get("holdout"):
        return (float(values["holdout"]), int(values.get("seed", 0)),
                str(values.get("holdout_split", SPLIT_OF_OLDER_RUNS)))
    return None


@click.command("evaluate")
@click.option("--data", required=True, metavar="DIR_OR_NPY",
              help="Real images: a folder (read like training: centre crop, resize) or a uint8 .npy. "
                   "With --nearest: the training images.")
@click.option("--model", "model_path", metavar="RUN_OR_KERAS", help="Generated side: a run folder or .keras file.")
@click.option("--checkpoint", metavar="best|last|FILE", default=None, help=f"With --model, the {CHECKPOINT_HELP}")
@click.option("--onnx", "onnx_path", metavar="FILE", help="Generated side: an exported .onnx generator.")
@click.option("--images", "images_path", metavar="DIR_OR_NPY", help="Generated side: a folder of images or a .npy.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Compare at this size (LANCZOS). Default: the model's size; 64 px when both sides are folders.")
@click.option("-n", "--num", "n", type=click.IntRange(min=2), default=DEFAULT_NUM, show_default=True,
              help="Images per side (a seeded subset of the real folder).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the generated latents, the real subset, SWD and KID subsets.")
@click.option("--metrics", default=",".join(METRICS), show_default=True, callback=_metric_list,
              help="Comma-separated subset of the metrics.")
@click.option("--nearest", "nearest_path", metavar="PNG",
              help="Memorisation check: each generated image's nearest training images (--data), the "
                   "closest cases drawn here beside their 3 nearest, nn_copy_rate in the table and JSON.")
@click.option("--holdout-data", metavar="DIR_OR_NPY",
              help="With --nearest: real photos not in --data that set the copy scale. Default: a seeded "
                   "split of --data (the run's own --holdout split when it had one).")
@click.option("--holdout", "holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help=f"With --nearest and no --holdout-data: the share of --data held out "
                   f"(default: the run's --holdout, else {DEFAULT_HOLDOUT}).")
@click.option("--inception-weights", metavar="FILE",
              help="InceptionV3 (include_top=False) weights file: adds fid_inception/kid_inception. Never downloaded.")
@click.option("--json", "json_path", metavar="FILE", help="Also write the figures as JSON here.")
def evaluate_command(data, model_path, checkpoint, onnx_path, images_path, image_size, n, seed, metrics,
                     nearest_path, holdout_data, holdout, inception_weights, json_path):
    """Score a generator (or generated images) against real images: SWD, FID/KID, precision/recall,
    and with --nearest whether it copies its training images.

    FID/KID/PRDC use a fixed random CNN's features (comparable between runs of this
    tool, NOT with published FID) unless --inception-weights adds the InceptionV3 ones.

    Examples: nebula evaluate --data photos/ --model runs/x -n 1000 --json scores.json

      nebula evaluate --model runs/x --checkpoint best --data photos/ --nearest nearest.png --json out.json
    """
    from nebula_keras3.artifacts import write_json_atomic
    from nebula_keras3.metrics.evaluate import (
        EvaluationError,
        check_image_size,
        evaluate_images,
        folder_pair_size,
        format_table,
        load_all_real_images,
        load_generated_images,
        memorisation,
        take_subset,
    )
    from nebula_keras3.metrics.inception import InceptionWeightsError, check_weights_file
    from nebula_keras3.sampling.grid import save_png

    t0 = time.perf_counter()
    if (holdout_data is not None or holdout is not None) and nearest_path is None:
        raise click.UsageError("--holdout-data and --holdout go with --nearest PNG")
    if holdout_data is not None and holdout is not None:
        raise click.UsageError("give --holdout-data DIR or --holdout FRACTION, not both")
    try:
        if inception_weights is not None:
            check_weights_file(inception_weights)  # before any slow work
        if image_size is None and images_path is not None and Path(images_path).is_dir():
            image_size = folder_pair_size(data)
        if image_size is not None:
            check_image_size(image_size, metrics)
        fake, fake_text, state = load_generated_images(model=model_path, onnx=onnx_path, images=images_path,
                                                       n=n, seed=seed, image_size=image_size, checkpoint=checkpoint)
        size = fake.shape[1]
        check_image_size(size, metrics)
        everything, names, all_text, listing = load_all_real_images(data, size)
        real = take_subset(everything, n, f"{data}", seed)
        real_text = f"{n} of {all_text}"
        result = evaluate_images(real, fake, metrics=metrics, seed=seed, inception_weights=inception_weights)
        nearest = None
        if nearest_path is not None:
            held = None
            if holdout_data is not None:
                held = load_all_real_images(holdout_data, size)[0]
            split = _run_split(model_path) or (DEFAULT_HOLDOUT, seed, "files")
            figures, nearest, picture = memorisation(
                everything, names, fake, held_out=held, holdout=holdout or split[0], split_seed=split[1],
                listing=split_listing(split[2], listing))
            result.update(figures)
    except (EvaluationError, InceptionWeightsError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"real:      {real_text}\ngenerated: {fake_text}")
    if nearest is not None:
        click.echo(f"memorisation scale: {result['nn_held_out']}")
    click.echo(format_table(result))
    if nearest_path is not None:
        try:
            save_png(picture, nearest_path)
        except OSError as e:
            raise click.ClickException(f"cannot write {nearest_path}: {e.strerror or e}") from None
        click.echo(f"-> {nearest_path} (each row: a generated image | its 3 nearest training images in "
                   "random-CNN features | in 64 px pixels; closest cases first)")
    if json_path:
        report = {**result, "real": real_text, "generated": fake_text, "seed": seed}
        if state:
            report["checkpoint"] = state
        if nearest is not None:
            report["nearest"] = nearest
        try:
            write_json_atomic(report, json_path)
        except OSError as e:
            raise click.ClickException(f"cannot write {json_path}: {e.strerror or e}") from None
        click.echo(f"-> {json_path}")
    click.echo(f"({time.perf_counter() - t0:.1f} s)")
