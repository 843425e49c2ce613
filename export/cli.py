"""``nebula export RUN_OR_MODEL [--saved-model BASE] [--onnx FILE] ...``: a thin command over
:func:`nebula_keras3.export.api.export_generator`, for people (the API never calls it)."""

from __future__ import annotations

import sys
import time

import click

from nebula_keras3.export import layout
from nebula_keras3.training.generator_state import CHECKPOINT_HELP, describe_state


def _echo_result(result, seconds: float) -> None:
    click.echo(f"exported the {describe_state(result.facts)} of {result.facts.get('source')}")
    click.echo("model facts:")
    for k in sorted(result.facts):
        click.echo(f"  {k}: {result.facts[k]}")
    if result.saved_model_dir is not None:
        click.echo(f"SavedModel (version {result.version}): {result.saved_model_dir}")
        specs = layout.signatures(result.facts[layout.LATENT_DIM], result.facts[layout.IMAGE_SIZE])
        click.echo("  signatures: " + ", ".join(
            f"{name} ({', '.join(sig.inputs)} -> {', '.join(f'{k} {t.dtype}' for k, t in sig.outputs.items())})"
            for name, sig in specs.items()))
        beside = result.saved_model_dir / layout.ONNX_FILE
        if beside.exists():
            click.echo(f"  ONNX beside it: {beside}")
        click.echo(f"  facts: {result.saved_model_dir / layout.FACTS_FILE}")
    if result.onnx_path is not None:
        click.echo(f"ONNX: {result.onnx_path}")
    if result.onnx_int8_path is not None:
        click.echo(f"ONNX int8: {result.onnx_int8_path}")
    for b, r in sorted(result.parity.items()):
        click.echo(f"parity ONNX Runtime vs Keras, batch {b}: max |float diff| {r['max_abs_float']:.3g}, "
                   f"max uint8 diff {r['max_uint8']}")
    if result.int8_check:
        r = result.int8_check
        click.echo(f"int8 ONNX vs Keras: mean uint8 diff {r['mean_uint8']:.3g}, max {r['max_uint8']}, "
                   f"SWD {r['swd']:.3g} (two Keras seed sets: {r['swd_keras_other_seeds']:.3g}); "
                   f"nodes kept float beside the last conv: {', '.join(r.get('float_nodes', [])) or 'none'}")
    if result.saved_model_check:
        click.echo(f"SavedModel check (max uint8 diffs): {result.saved_model_check}")
    click.echo(f"exported in {seconds:.1f} s")


@click.command("export")
@click.argument("source", metavar="RUN_OR_MODEL")
@click.option("--saved-model", "saved_model_base", metavar="BASE_DIR",
              help="TF Serving base folder: writes BASE_DIR/<model-name>/<version>/.")
@click.option("--onnx", "onnx_path", metavar="FILE", help="Write the ONNX model here.")
@click.option("--model-name", default=layout.DEFAULT_MODEL_NAME, show_default=True, help="TF Serving model name.")
@click.option("--version", type=click.IntRange(min=1),
              help="SavedModel version (default: the next free integer).")
@click.option("--overwrite", is_flag=True, help="Replace an existing explicit --version.")
@click.option("--onnx-beside/--no-onnx-beside", default=True, show_default=True,
              help="Also write the ONNX model into the SavedModel version folder.")
@click.option("--opset", type=click.IntRange(min=17), default=None, help="ONNX opset (default 17).")
@click.option("--checkpoint", metavar="best|last|FILE", default=None, help=f"The {CHECKPOINT_HELP}")
@click.option("--onnx-int8", "onnx_int8_path", metavar="FILE",
              help="Also write an int8 (static QDQ) ONNX model here, checked against Keras.")
def export_command(**options):
    """Export a run's generator for TF Serving (SavedModel) and/or ONNX Runtime.

    RUN_OR_MODEL is a run folder or a .keras file. Give --saved-model, --onnx or both.
    The export runs on the TensorFlow backend (in a subprocess when Keras runs on
    another one) and ends with an ONNX Runtime vs Keras parity check.
    """
    # The options are named as ExportRequest's fields: one spelling, no forwarding list.
    if options["saved_model_base"] is None and options["onnx_path"] is None and options["onnx_int8_path"] is None:
        raise click.UsageError("give --saved-model BASE_DIR and/or --onnx FILE (or --onnx-int8 FILE)")
    from nebula_keras3.export.api import ExportError, ExportRequest, export_generator

    t0 = time.perf_counter()
    try:
        result = export_generator(ExportRequest(**options))
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    _echo_result(result, time.perf_counter() - t0)


def main(argv=None) -> None:
    export_command.main(args=argv, prog_name=f"{sys.executable} -m nebula_keras3.export")


__all__ = ["export_command", "main"]
