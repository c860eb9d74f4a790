"""bmap: which byte ranges of a disk image belong to which partition, structure and file.

The public API in one place; see the README for a tour and docs/architecture.md for the
packages behind it. Importing bmap changes nothing of the process (the ``bmap`` program sets
its own process up: :mod:`bmap.cli.program`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bmap.errors import BmapError, ExitCode, Finding, Severity
    from bmap.images import Image, RangeStream, open_images
    from bmap.layers.mapper import map_images
    from bmap.layers.partitions import Disk, Partition, discover
    from bmap.model.blockmap import BlockMap, MapBuilder
    from bmap.store.index import MapIndex
    from bmap.store.mapfile import read_map, write_map

#: Where each public name lives. They are imported on first use (PEP 562): the ``bmap``
#: program imports only what its command needs, which is most of its start-up time.
_PUBLIC = {
    "BlockMap": "bmap.model.blockmap",
    "MapBuilder": "bmap.model.blockmap",
    "BmapError": "bmap.errors",
    "ExitCode": "bmap.errors",
    "Finding": "bmap.errors",
    "Severity": "bmap.errors",
    "Image": "bmap.images",
    "RangeStream": "bmap.images",
    "open_images": "bmap.images",
    "MapIndex": "bmap.store.index",
    "Disk": "bmap.layers.partitions",
    "Partition": "bmap.layers.partitions",
    "discover": "bmap.layers.partitions",
    "read_map": "bmap.store.mapfile",
    "write_map": "bmap.store.mapfile",
    "map_images": "bmap.layers.mapper",
}

__all__ = [
    "BlockMap",
    "BmapError",
    "Disk",
    "ExitCode",
    "Finding",
    "Image",
    "MapBuilder",
    "MapIndex",
    "Partition",
    "RangeStream",
    "Severity",
    "__version__",
    "discover",
    "map_images",
    "open_images",
    "read_map",
    "write_map",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'bmap' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
