"""A task for the batch tests that kills its worker process on one entry (imported by the
Dask workers, which is why it is a module of its own)."""

from __future__ import annotations

import os
from typing import Any

from bmap.fleet.batch import Entry, Options, map_entry


def die_on_zero(entry: Entry, options: Options) -> dict[str, Any]:
    """Maps the entry, except ``zero``: the worker process ends as one killed for its memory
    would, with no row sent back."""
    if entry.name == "zero":
        os._exit(137)
    return map_entry(entry, options)
