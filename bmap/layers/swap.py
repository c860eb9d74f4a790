"""Swap areas: the whole device is one structure of its own (``m <device> swap``).

Registered in :data:`bmap.layers.registry.CONTENT_MAPPERS` for the ``swap`` content kind.
"""

from __future__ import annotations

from bmap.errors import Finding
from bmap.layers.content import Volume
from bmap.model.blockmap import MapBuilder


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    """One ``m swap`` object over the whole volume, offsets inside it from 0."""
    obj = builder.add_object("m", volume.device, "swap")
    volume.placement.place(builder, obj, [0], [volume.size], [0])
    return []
