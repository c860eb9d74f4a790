"""The plug-in points of the mapping layers: one table per kind of layer, one line per module.

- :data:`CONTENT_MAPPERS`: what maps the inside of a device (a partition, a whole disk, an LV)
  by the content kind that detection gave it (:mod:`parsers.detect`). A content mapper module
  has ``map_volume(volume, builder) -> list[Finding]``, which adds the lines of what the
  volume holds, in the volume's own coordinates placed through ``volume.placement``; it may
  have ``describe(stream, size) -> dict | None``, the facts ``bmap info`` shows.
- :data:`VOLUME_MANAGERS`: what assembles devices of one kind on any of the disks into new
  volumes (LVM: PVs into volume groups and logical volumes). A volume manager module has
  ``map_disks(disks, builder, map_content) -> list[Finding]``: it adds its own lines and hands
  each volume it makes to ``map_content``, which maps what it holds through
  :data:`CONTENT_MAPPERS`.

Modules are imported on first use: ``bmap map`` of an ext4 disk imports neither the LVM code
nor any other filesystem's. The mapper (:mod:`bmap.layers.mapper`) walks these tables and
names no filesystem and no volume manager itself.

Adding a filesystem: a module in this package with ``map_volume``, and one line in
:data:`CONTENT_MAPPERS` naming it and the content kinds it maps.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

if TYPE_CHECKING:
    from bmap.errors import Finding
    from bmap.layers.content import Volume
    from bmap.layers.partitions import Disk
    from bmap.model.blockmap import MapBuilder


class Entry(NamedTuple):
    """One line of a registry: a module, and the content kinds it takes."""

    module: str
    kinds: tuple[str, ...]


#: Content kind (as :func:`parsers.detect.detect` names it) -> the module that maps it.
CONTENT_MAPPERS: tuple[Entry, ...] = (
    Entry("bmap.layers.ext", ("ext2", "ext3", "ext4")),
    Entry("bmap.layers.swap", ("swap",)),
    Entry("bmap.layers.xfs", ("xfs",)),
    Entry("bmap.layers.tsk", ("vfat", "exfat", "ntfs", "iso9660", "hfsplus", "ufs")),
    Entry("bmap.layers.luks", ("crypto_LUKS",)),
)

#: Content kinds that a volume manager assembles across all the disks given.
VOLUME_MANAGERS: tuple[Entry, ...] = (Entry("bmap.layers.lvm", ("LVM2_member",)),)

MapContent = Callable[["Volume"], list["Finding"]]
"""Maps what a volume holds (through :data:`CONTENT_MAPPERS`); its findings are returned."""


class ContentMapper(Protocol):
    """What a module of :data:`CONTENT_MAPPERS` offers."""

    def map_volume(self, volume: Volume, builder: MapBuilder) -> list[Finding]: ...


class VolumeManager(Protocol):
    """What a module of :data:`VOLUME_MANAGERS` offers."""

    def map_disks(
        self, disks: Sequence[Disk], builder: MapBuilder, map_content: MapContent
    ) -> list[Finding]: ...


def _module_for(table: tuple[Entry, ...], kind: str) -> ModuleType | None:
    for entry in table:
        if kind in entry.kinds:
            return importlib.import_module(entry.module)
    return None


def content_mapper(kind: str) -> ContentMapper | None:
    """The module that maps content of ``kind``, or None where bmap maps no such content."""
    return cast("ContentMapper | None", _module_for(CONTENT_MAPPERS, kind))


def describer(kind: str) -> Callable[..., dict[str, Any] | None] | None:
    """``describe(stream, size)`` of the content mapper of ``kind``, where it has one."""
    module = _module_for(CONTENT_MAPPERS, kind)
    return getattr(module, "describe", None) if module is not None else None


def volume_manager(entry: Entry) -> VolumeManager:
    """The module of a line of :data:`VOLUME_MANAGERS`, imported."""
    return cast("VolumeManager", importlib.import_module(entry.module))


def managed_kinds() -> frozenset[str]:
    """Every content kind some volume manager assembles (nothing is imported)."""
    return frozenset(kind for entry in VOLUME_MANAGERS for kind in entry.kinds)
