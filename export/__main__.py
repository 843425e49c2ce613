"""``python -m nebula_keras3.export ...``: the ``nebula export`` command."""

from nebula_keras3.export.cli import main

main()
