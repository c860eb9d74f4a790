"""``bmap lookup``: what lies at each queried range of a disk, every object innermost first,
with the offset inside each; answered from a map's DataFrame through :class:`MapIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bmap.errors import MapFormatError
from bmap.store.index import MapIndex

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Answer:
    """The lines over ``[start, end)`` of ``disk``: ``(row of the map, offset inside the
    object or -1)``, innermost first."""

    disk: int
    start: int
    end: int
    hits: list[tuple[int, int]]
    more: int = 0
    """Lines over the range that were left out (past the ``limit`` of :func:`lookup`)."""


def disks_of(frame: pd.DataFrame) -> set[int]:
    """The disk numbers a map has lines for."""
    return set(frame["disk"].unique().tolist())


def lookup(
    frame: pd.DataFrame,
    disk: int,
    ranges: Sequence[tuple[int, int]],
    name: str,
    limit: int | None = None,
) -> list[Answer]:
    """Answer every range of ``disk`` at once; with ``limit``, at most that many lines per
    range, the innermost (a hostile map may stack a million lines over one byte).

    Raises:
        MapFormatError: the map (``name``, for the message) has no such disk.
    """
    disks = disks_of(frame)
    if disk not in disks:
        known = ", ".join(map(str, sorted(disks))) or "none"
        raise MapFormatError(f"{name}: has no disk {disk} (disks: {known})")
    index = MapIndex.from_frame(frame)
    hits = index.overlapping(disk, [r[0] for r in ranges], [r[1] for r in ranges])
    answers = []
    container = frame["type"].isin(["v", "p", "l"]).to_numpy()
    bounds = np.searchsorted(hits.query, np.arange(len(ranges) + 1))
    for qi, (start, end) in enumerate(ranges):
        first, last = int(bounds[qi]), int(bounds[qi + 1])
        rows, offsets = hits.row[first:last], hits.offset[first:last]
        keep = np.ones(len(rows), dtype=bool)
        if limit is not None and len(rows) > limit:
            # The innermost ``limit`` objects, and the innermost ``limit`` disks, partitions
            # and LVs that hold them: the containers are never crowded out.
            is_container = container[rows]
            for group in (is_container, ~is_container):
                keep[np.flatnonzero(group)[limit:]] = False
        pairs = list(zip(rows[keep].tolist(), offsets[keep].tolist()))
        answers.append(Answer(disk, start, end, pairs, int((~keep).sum())))
    return answers


class Rows:
    """The map's columns as arrays, to read hits from by row number (a pandas row lookup
    costs about 100 microseconds; a million hits would take minutes)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.type = frame["type"].to_numpy(dtype=object)
        self.device = frame["device"].to_numpy(dtype=object)
        self.kind = frame["kind"].to_numpy(dtype=object)
        self.path = frame["path"].to_numpy(dtype=object)
        self.start = frame["start"].to_numpy(dtype=np.int64)
        self.end = frame["end"].to_numpy(dtype=np.int64)
        self.inode = frame["inode"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)

    def record(self, row: int, offset: int) -> dict[str, Any]:
        """One hit as JSON: the line's object, its range and the offset inside the object."""
        inode = int(self.inode[row])
        return {
            "type": self.type[row],
            "device": self.device[row],
            "kind": self.kind[row],
            "path": self.path[row],
            "start": int(self.start[row]),
            "end": int(self.end[row]),
            "offset": None if offset < 0 else offset,
            "inode": None if inode < 0 else inode,
        }
