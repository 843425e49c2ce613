"""``python -m nebula_keras3.export ...``: the export command (used as the TF subprocess)."""

from nebula_keras3.export.cli import main

main()
