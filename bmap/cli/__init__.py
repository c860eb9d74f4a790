"""The ``bmap`` command: click commands (:mod:`~bmap.cli.commands`), rendering for the terminal
(:mod:`~bmap.cli.render`), and the process set-up only the program does
(:mod:`~bmap.cli.program`).

Importing this package loads nothing but the program's entry point: :func:`run` sets the
process up before numpy and the commands are imported. ``main``, ``parse_size`` and
``parse_query`` come from :mod:`bmap.cli.commands` on first use.
"""

from __future__ import annotations

from typing import Any

from bmap.cli.program import run

__all__ = ["main", "parse_query", "parse_size", "run"]


def __getattr__(name: str) -> Any:
    if name in ("main", "parse_query", "parse_size"):
        from bmap.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'bmap.cli' has no attribute {name!r}")
