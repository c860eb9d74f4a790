"""What a device holds: its content detected by signature, and the volume a content mapper
maps.

A :class:`Volume` is a device whose inside can be mapped: a partition, a whole disk without a
partition table, a logical volume. It carries what a content mapper needs and nothing of where
it came from: the stream that reads it, the :class:`~bmap.layers.placement.Placement` that puts
its bytes on the disks, and the content detection found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bmap.images import RangeStream
from bmap.layers.placement import Placement
from bmap.layers.registry import describer
from parsers.detect import detect
from parsers.probe import Content


@dataclass(frozen=True)
class Volume:
    """A device to map the inside of, in its own coordinates."""

    device: str
    """Its name in the map: ``/dev/sda1``, ``/dev/sdb``, ``/dev/vg/lv``."""
    disk: int
    """The disk that findings about it name (for an LV, the disk its VG's metadata was read on)."""
    offset: int | None
    """Where it starts on that disk when it lies there in one piece (findings), else None."""
    stream: RangeStream
    """Reads its bytes: position 0 is its first byte."""
    placement: Placement
    """Where its bytes lie on the disks."""
    content: Content | None
    """What detection found in it (None: nothing was looked for, as in an extended partition)."""

    @property
    def size(self) -> int:
        return self.stream.size


def detect_content(stream: RangeStream, size: int) -> Content:
    """What a device holds, by signature; a filesystem whose primary superblock is damaged is
    still recognised by a backup copy (the mapper says which it used)."""
    return detect(stream, size, rescue=True)


def describe_content(
    stream: RangeStream, size: int, content: Content | None
) -> dict[str, Any] | None:
    """What the content's own superblock says (for ``bmap info``), where its content mapper
    describes it; None otherwise."""
    if content is None:
        return None
    describe = describer(content.kind)
    return describe(stream, size) if describe is not None else None
