"""A content mapper for the registry test: names a FAT volume's boot sector, nothing more."""

from __future__ import annotations

from bmap.errors import Finding
from bmap.layers.content import Volume
from bmap.model.blockmap import MapBuilder


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    obj = builder.add_object("m", volume.device, "fat-boot-sector")
    volume.placement.place(builder, obj, [0], [512], [0])
    return []
