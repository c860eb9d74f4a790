"""bmap: which byte ranges of a disk image belong to which partition, structure and file.

The public API in one place; see the README for a tour.
"""

from __future__ import annotations

import os

# bmap does no linear algebra; OpenBLAS starting one thread per core makes importing numpy
# cost twice as much on small machines. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"  # before the imports below: bmap.mapfile reads it

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bmap.blockmap import BlockMap, MapBuilder
    from bmap.errors import BmapError, ExitCode, Finding, Severity
    from bmap.images import Image, RangeStream, open_images
    from bmap.index import MapIndex
    from bmap.layout import Disk, Partition, discover
    from bmap.mapfile import read_map, write_map
    from bmap.mapper import map_images

#: Where each public name lives. They are imported on first use (PEP 562): the ``bmap``
#: program imports only what its command needs, which is most of its start-up time.
_PUBLIC = {
    "BlockMap": "bmap.blockmap",
    "MapBuilder": "bmap.blockmap",
    "BmapError": "bmap.errors",
    "ExitCode": "bmap.errors",
    "Finding": "bmap.errors",
    "Severity": "bmap.errors",
    "Image": "bmap.images",
    "RangeStream": "bmap.images",
    "open_images": "bmap.images",
    "MapIndex": "bmap.index",
    "Disk": "bmap.layout",
    "Partition": "bmap.layout",
    "discover": "bmap.layout",
    "read_map": "bmap.mapfile",
    "write_map": "bmap.mapfile",
    "map_images": "bmap.mapper",
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
