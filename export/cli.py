"""``nebula export RUN_OR_MODEL [--saved-model BASE] [--onnx FILE] ...``"""

from __future__ import annotations

import sys
import time

import click


def _echo_result(result, seconds: float) -> None:
    click.echo("model facts:")
    for k in sorted(result.facts):
        click.echo(f"  {k}: {result.facts[k]}")
    if result.saved_model_dir is not None:
        click.echo(f"SavedModel (version {result.version}): {result.saved_model_dir}")
        click.echo("  signatures: serving_default (z -> images uint8), generate_png (seed -> png_bytes), "
                   "generate_images (seed -> images uint8)")
        beside = result.saved_model_dir / "model.onnx"
        if beside.exists():
            click.echo(f"  ONNX beside it: {beside}")
        click.echo(f"  facts: {result.saved_model_dir / 'assets.extra' / 'nebula_model.json'}")
    if result.onnx_path is not None:
        click.echo(f"ONNX: {result.onnx_path}")
    for b, r in sorted(result.parity.items()):
        click.echo(f"parity ONNX Runtime vs Keras, batch {b}: max |float diff| {r['max_abs_float']:.3g}, "
                   f"max uint8 diff {r['max_uint8']}")
    if result.saved_model_check:
        click.echo(f"SavedModel check (max uint8 diffs): {result.saved_model_check}")
    click.echo(f"exported in {seconds:.1f} s")


@click.command("export")
@click.argument("source", metavar="RUN_OR_MODEL")
@click.option("--saved-model", "saved_model_base", metavar="BASE_DIR",
              help="TF Serving base folder: writes BASE_DIR/<model-name>/<version>/.")
@click.option("--onnx", "onnx_path", metavar="FILE", help="Write the ONNX model here.")
@click.option("--model-name", default="nebula", show_default=True, help="TF Serving model name.")
@click.option("--version", type=click.IntRange(min=1),
              help="SavedModel version (default: the next free integer).")
@click.option("--overwrite", is_flag=True, help="Replace an existing explicit --version.")
@click.option("--onnx-beside/--no-onnx-beside", default=True, show_default=True,
              help="Also write model.onnx beside saved_model.pb.")
@click.option("--opset", type=click.IntRange(min=17), default=None, help="ONNX opset (default 17).")
@click.option("--no-parity", is_flag=True, hidden=True)
@click.option("--result-json", hidden=True)
@click.option("--quiet", is_flag=True, hidden=True)
def export_command(source, saved_model_base, onnx_path, model_name, version, overwrite,
                   onnx_beside, opset, no_parity, result_json, quiet):
    """Export a run's generator for TF Serving (SavedModel) and/or ONNX Runtime.

    RUN_OR_MODEL is a run folder or a .keras file. Give --saved-model, --onnx or both.
    The export runs on the TensorFlow backend (in a subprocess when Keras runs on
    another one) and ends with an ONNX Runtime vs Keras parity check.
    """
    if saved_model_base is None and onnx_path is None:
        raise click.UsageError("give --saved-model BASE_DIR and/or --onnx FILE")
    from nebula_keras3.export.api import ExportError, export_generator

    t0 = time.perf_counter()
    try:
        result = export_generator(
            source,
            saved_model_base=saved_model_base,
            onnx_path=onnx_path,
            model_name=model_name,
            version=version,
            onnx_beside=onnx_beside,
            parity=not no_parity,
            overwrite=overwrite,
            opset=opset,
        )
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    seconds = time.perf_counter() - t0
    if result_json:
        from nebula_keras3.artifacts import write_json_atomic

        write_json_atomic(result.to_json(), result_json)
    if not quiet:
        _echo_result(result, seconds)


def main(argv=None) -> None:
    export_command.main(args=argv, prog_name=f"{sys.executable} -m nebula_keras3.export")


__all__ = ["export_command", "main"]
