"""``bmap lookup``: what lies at each queried range of a disk, every object innermost first,
with the offset inside each; answered from a map's DataFrame through :class:`MapIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


def disks_of(frame: pd.DataFrame) -> set[int]:
    """The disk numbers a map has lines for."""
    return set(frame["disk"].unique().tolist())


def lookup(
    frame: pd.DataFrame, disk: int, ranges: Sequence[tuple[int, int]], name: str
) -> list[Answer]:
    """Answer every range of ``disk`` at once.

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
    for qi, (start, end) in enumerate(ranges):
        sel = hits.query == qi
        rows = hits.row[sel].tolist()
        offsets = hits.offset[sel].tolist()
        answers.append(Answer(disk, start, end, list(zip(rows, offsets))))
    return answers


def hit_record(row: Any, offset: int) -> dict[str, Any]:
    """One hit as JSON: the line's object, its range and the offset inside the object."""
    import pandas as pd

    inode = row["inode"]
    return {
        "type": row["type"],
        "device": row["device"],
        "kind": row["kind"],
        "path": row["path"],
        "start": int(row["start"]),
        "end": int(row["end"]),
        "offset": None if offset < 0 else offset,
        "inode": None if pd.isna(inode) else int(inode),
    }
