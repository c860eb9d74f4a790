"""``python -m bmap``: the same as the ``bmap`` command."""

from bmap.cli.program import run

run()
