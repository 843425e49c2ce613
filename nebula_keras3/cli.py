"""The ``nebula`` command line: thin click commands over the Python API.

Commands are imported only when invoked, so ``nebula sample --onnx`` never
imports Keras, TensorFlow, JAX or torch.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "train": "nebula_keras3.training.cli:train_command",
    "sample": "nebula_keras3.sampling.cli:sample_command",
    "export": "nebula_keras3.export.cli:export_command",
    "serve": "nebula_keras3.serving.cli:serve_command",
    "client": "nebula_keras3.serving.cli:client_command",
    "evaluate": "nebula_keras3.metrics.cli:evaluate_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nebula-keras3")
def main():
    """Train nebula-image GANs on TensorFlow, JAX or PyTorch (KERAS_BACKEND), export, serve."""
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The package's own warnings (skipped images, ...) as one ``warning: ...`` line, without
    Python's file, line number and source line; every other warning as Python shows it."""
    own = category.__module__.startswith("nebula_keras3")
    text = f"warning: {message}\n" if own else warnings.formatwarning(message, category, filename, lineno, line)
    try:
        (file or sys.stderr).write(text)
    except OSError:  # stderr gone: as Python's own showwarning, drop it
        pass


if __name__ == "__main__":
    main()
