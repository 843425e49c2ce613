"""``nebula evaluate``: a thin click command over ``nebula_keras3.metrics.evaluate``."""

from __future__ import annotations

import time

import click

from nebula_keras3.metrics.evaluate import DEFAULT_NUM, METRICS


def _metric_list(ctx, param, value: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in value.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise click.BadParameter(f"choose from {', '.join(METRICS)} (comma-separated), got {value!r}")
    return names


@click.command("evaluate")
@click.option("--data", required=True, metavar="DIR_OR_NPY",
              help="Real images: a folder (read like training: centre crop, resize) or a uint8 .npy.")
@click.option("--model", "model_path", metavar="RUN_OR_KERAS", help="Generated side: a run folder or .keras file.")
@click.option("--onnx", "onnx_path", metavar="FILE", help="Generated side: an exported .onnx generator.")
@click.option("--images", "images_path", metavar="DIR_OR_NPY", help="Generated side: a folder of images or a .npy.")
@click.option("-n", "--num", "n", type=click.IntRange(min=2), default=DEFAULT_NUM, show_default=True,
              help="Images per side (a seeded subset of the real folder).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the generated latents, the real subset, SWD and KID subsets.")
@click.option("--metrics", default=",".join(METRICS), show_default=True, callback=_metric_list,
              help="Comma-separated subset of the metrics.")
@click.option("--inception-weights", metavar="FILE",
              help="InceptionV3 (include_top=False) weights file: adds fid_inception/kid_inception. Never downloaded.")
@click.option("--json", "json_path", metavar="FILE", help="Also write the figures as JSON here.")
def evaluate_command(data, model_path, onnx_path, images_path, n, seed, metrics, inception_weights, json_path):
    """Score a generator (or generated images) against real images: SWD, FID/KID, precision/recall.

    FID/KID/PRDC use a fixed random CNN's features (comparable between runs of this
    tool, NOT with published FID) unless --inception-weights adds the InceptionV3 ones.

    Example: nebula evaluate --data photos/ --model runs/x -n 1000 --json scores.json
    """
    from nebula_keras3.artifacts import write_json_atomic
    from nebula_keras3.metrics.evaluate import (
        EvaluationError,
        evaluate_images,
        format_table,
        load_generated_images,
        load_real_images,
    )
    from nebula_keras3.metrics.inception import InceptionWeightsError, check_weights_file

    t0 = time.perf_counter()
    try:
        if inception_weights is not None:
            check_weights_file(inception_weights)  # before any slow work
        fake, fake_text = load_generated_images(model=model_path, onnx=onnx_path, images=images_path, n=n, seed=seed)
        real, real_text = load_real_images(data, fake.shape[1], n=n, seed=seed)
        result = evaluate_images(real, fake, metrics=metrics, seed=seed, inception_weights=inception_weights)
    except (EvaluationError, InceptionWeightsError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"real:      {real_text}\ngenerated: {fake_text}")
    click.echo(format_table(result))
    if json_path:
        try:
            write_json_atomic({**result, "real": real_text, "generated": fake_text, "seed": seed}, json_path)
        except OSError as e:
            raise click.ClickException(f"cannot write {json_path}: {e.strerror or e}") from None
        click.echo(f"-> {json_path}")
    click.echo(f"({time.perf_counter() - t0:.1f} s)")
