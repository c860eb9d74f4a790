"""bmap: which byte ranges of a disk image belong to which partition, structure and file.

The public API in one place; see the README for a tour.
"""

from __future__ import annotations

import os

# bmap does no linear algebra; OpenBLAS starting one thread per core makes importing numpy
# cost twice as much on small machines. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"  # before the imports below: bmap.mapfile reads it

from bmap.blockmap import BlockMap, MapBuilder
from bmap.errors import BmapError, ExitCode, Finding, Severity
from bmap.images import Image, RangeStream, open_images
from bmap.index import MapIndex
from bmap.layout import Disk, Partition, discover
from bmap.mapfile import read_map, write_map
from bmap.mapper import map_images

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
