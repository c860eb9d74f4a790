"""From a device's own coordinates to disk coordinates: the one translation step.

A layer (a filesystem, a logical volume) reports extents in bytes of its own device. A
:class:`Placement` says where each piece of that device lies on which disk: one segment for a
partition, one per contiguous physical range for an LV, one per chunk for a striped LV. An
extent that crosses a segment boundary is split there, and every piece keeps its offset inside
the object.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bmap.model.blockmap import NO_OFFSET, MapBuilder
from bmap.model.intervals import ragged_ranges


@dataclass(frozen=True)
class Segment:
    """Device bytes ``[dev_start, dev_end)`` lie on ``disk`` from ``disk_start`` on."""

    dev_start: int
    dev_end: int
    disk: int
    disk_start: int


class Placement:
    """Where a device's bytes lie on the disks, as sorted, non-overlapping segments."""

    def __init__(self, segments: list[Segment]) -> None:
        segs = sorted(segments, key=lambda s: s.dev_start)
        for a, b in itertools.pairwise(segs):
            if b.dev_start < a.dev_end:
                raise ValueError(f"segments overlap at device byte {b.dev_start:#x}")
        self.segments = segs
        self.dev_start = np.asarray([s.dev_start for s in segs], dtype=np.int64)
        self.dev_end = np.asarray([s.dev_end for s in segs], dtype=np.int64)
        self.disk = np.asarray([s.disk for s in segs], dtype=np.int64)
        self.shift = np.asarray([s.disk_start - s.dev_start for s in segs], dtype=np.int64)

    @classmethod
    def contiguous(cls, disk: int, offset: int, size: int) -> Placement:
        """A partition (or a whole disk): one range at ``offset`` of ``disk``."""
        return cls([Segment(0, size, disk, offset)])

    def place(
        self,
        builder: MapBuilder,
        obj: int | npt.ArrayLike,
        starts: npt.ArrayLike,
        ends: npt.ArrayLike,
        file_offsets: npt.ArrayLike | None = None,
    ) -> None:
        """Add device extents to ``builder`` in disk coordinates.

        Pieces outside every segment (past the end of a truncated device) are dropped: the
        layer that produced them reports that damage itself.
        """
        s = np.asarray(starts, dtype=np.int64)
        e = np.asarray(ends, dtype=np.int64)
        o = np.broadcast_to(np.asarray(obj, dtype=np.int64), s.shape)
        fo = (
            np.full(s.shape, NO_OFFSET, dtype=np.int64)
            if file_offsets is None
            else np.broadcast_to(np.asarray(file_offsets, dtype=np.int64), s.shape)
        )
        if len(s) == 0:
            return
        if len(self.segments) == 1:
            # A partition or a whole disk: clip to the device, shift, done.
            lo, hi = int(self.dev_start[0]), int(self.dev_end[0])
            piece_start = np.maximum(s, lo)
            piece_end = np.minimum(e, hi)
            if file_offsets is not None:
                fo = np.where(fo >= 0, fo + piece_start - s, NO_OFFSET)
            shift = int(self.shift[0])
            builder.add_extents(o, int(self.disk[0]), piece_start + shift, piece_end + shift, fo)
            return
        first = np.searchsorted(self.dev_end, s, side="right")
        last = np.searchsorted(self.dev_start, e, side="left") - 1
        count = np.maximum(last - first + 1, 0)
        idx = np.repeat(np.arange(len(s)), count)
        seg = ragged_ranges(first, count)
        piece_start = np.maximum(s[idx], self.dev_start[seg])
        piece_end = np.minimum(e[idx], self.dev_end[seg])
        piece_fo = np.where(fo[idx] >= 0, fo[idx] + piece_start - s[idx], NO_OFFSET)
        seg_shift = self.shift[seg]
        for disk in np.flatnonzero(np.bincount(self.disk[seg])).tolist():
            sel = self.disk[seg] == disk
            builder.add_extents(
                o[idx][sel],
                disk,
                piece_start[sel] + seg_shift[sel],
                piece_end[sel] + seg_shift[sel],
                piece_fo[sel],
            )
