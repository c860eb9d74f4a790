""" "What is at this offset?": an index over a map, answered innermost first, many at once.

Each disk has its own index. The lines of a map nest (disk, partition, file) and may repeat a
range (hard links), so no
single sorted array answers a query. The index peels the lines into *layers* in which no two
lines overlap: each pass over the lines, in start order, keeps every line that starts after
all earlier lines of the pass have ended, and leaves the rest for the next pass. The passes
run vectorised, and a real map needs a handful (its nesting depth). In a layer the starts and
the ends are both sorted, so the lines that overlap a query are one contiguous run found with
two ``searchsorted`` calls. Hits are then ordered smallest range first: the innermost object
comes first, its containers after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bmap.model.blockmap import CONTAINER_RANK, NO_OFFSET, TYPE_CODE, BlockMap
from bmap.model.intervals import ragged_ranges

if TYPE_CHECKING:
    import pandas as pd

#: Passes beyond this go to one last layer that is scanned line by line (only a hostile map,
#: with lines nested thousands deep, gets there).
_MAX_LAYERS = 64

Layer = tuple["npt.NDArray[np.int64]", "npt.NDArray[np.int64]", "npt.NDArray[np.int64]"]
"""``(starts, ends, rows)`` of lines that do not overlap, both columns sorted."""


@dataclass(frozen=True)
class Hits:
    """The answer to a batch of queries: one entry per (query, line) pair, innermost first.

    Attributes:
        query: index of the query in the batch, ascending.
        row: the line of the map (row of its DataFrame, or position in a BlockMap).
        offset: where the query's first byte inside this line's range falls in the object:
            ``file_offset + max(query start, line start) - line start`` where the line's
            offset inside its object is known, else -1.
    """

    query: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.query)


class MapIndex:
    """Index over the lines of a map.

    Build it with :meth:`from_blockmap` or :meth:`from_frame` (what :func:`bmap.read_map`
    returns); ask with :meth:`lookup` (points) or :meth:`overlapping` (ranges).
    """

    def __init__(
        self,
        disk: npt.ArrayLike,
        start: npt.ArrayLike,
        end: npt.ArrayLike,
        type_code: npt.ArrayLike,
        file_offset: npt.ArrayLike | None = None,
    ) -> None:
        self.disk = np.asarray(disk, dtype=np.int64)
        self.start = np.asarray(start, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)
        self.type_code = np.asarray(type_code, dtype=np.int64)
        n = len(self.start)
        self.file_offset = (
            np.full(n, -1, dtype=np.int64)
            if file_offset is None
            else np.asarray(file_offset, dtype=np.int64)
        )
        # One set of layers per disk: offsets take all 63 bits, so the disk cannot share one
        # key with them (packed above 2**50 once, a query at 1 PiB aliased offset 0).
        self.by_disk: dict[int, tuple[list[Layer], npt.NDArray[np.int64]]] = {}
        order = np.argsort(self.disk, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(self.disk[order])) + 1) if n else []:
            self.by_disk[int(self.disk[rows[0]])] = self._build(rows)

    @classmethod
    def from_blockmap(cls, bmap: BlockMap) -> MapIndex:
        return cls(bmap.disk, bmap.start, bmap.end, bmap.type_code, bmap.file_offset)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> MapIndex:
        """From a DataFrame with the documented columns (rows are answered by position)."""
        codes = frame["type"].map(TYPE_CODE).to_numpy(dtype=np.int64)
        fo = frame["file_offset"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
        return cls(frame["disk"], frame["start"], frame["end"], codes, fo)

    def _build(self, rows: npt.NDArray[np.int64]) -> tuple[list[Layer], npt.NDArray[np.int64]]:
        """The layers of the lines ``rows`` (all on one disk), and the rest past the last."""
        remaining = rows[np.lexsort((-self.end[rows], self.start[rows]))]
        layers: list[Layer] = []
        while len(remaining) and len(layers) < _MAX_LAYERS:
            s = self.start[remaining]
            e = self.end[remaining]
            ended_before = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(e)[:-1]))
            keep = s >= ended_before
            kept = remaining[keep]
            layers.append((self.start[kept], self.end[kept], kept))
            remaining = remaining[~keep]
        return layers, remaining

    def __len__(self) -> int:
        return len(self.start)

    def overlapping(self, disk: npt.ArrayLike, start: npt.ArrayLike, end: npt.ArrayLike) -> Hits:
        """Every line that overlaps each query range ``[start, end)`` on ``disk``.

        All three arguments broadcast; the answer is ordered by query, then innermost first
        (smallest range, then the contents before their container).
        """
        d, s, e = np.broadcast_arrays(
            np.asarray(disk, dtype=np.int64),
            np.asarray(start, dtype=np.int64),
            np.asarray(end, dtype=np.int64),
        )
        d, s, e = d.ravel(), s.ravel(), e.ravel()
        e = np.maximum(e, np.minimum(s, np.iinfo(np.int64).max - 1) + 1)
        queries: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for disk_number in np.unique(d).tolist():
            found = self.by_disk.get(disk_number)
            if found is None:
                continue
            layers, rest = found
            asked = np.flatnonzero(d == disk_number)
            qs, qe = s[asked], e[asked]
            for layer_start, layer_end, layer_rows in layers:
                lo = np.searchsorted(layer_end, qs, side="right")
                hi = np.searchsorted(layer_start, qe, side="left")
                count = np.maximum(hi - lo, 0)
                if not count.any():
                    continue
                queries.append(np.repeat(asked, count))
                rows.append(layer_rows[ragged_ranges(lo, count)])
            if len(rest):
                rs, re_ = self.start[rest], self.end[rest]
                for i, query in enumerate(asked.tolist()):
                    hit = rest[(rs < qe[i]) & (re_ > qs[i])]
                    queries.append(np.full(len(hit), query, dtype=np.int64))
                    rows.append(hit)
        if not queries:
            empty = np.zeros(0, dtype=np.int64)
            return Hits(empty, empty, empty)
        q = np.concatenate(queries)
        r = np.concatenate(rows)
        length = self.end[r] - self.start[r]
        order = np.lexsort((r, -CONTAINER_RANK[self.type_code[r]], length, q))
        q, r = q[order], r[order]
        fo = self.file_offset[r]
        offset = np.where(fo >= 0, fo + np.maximum(s[q], self.start[r]) - self.start[r], NO_OFFSET)
        return Hits(q, r, offset)

    def lookup(self, disk: npt.ArrayLike, offset: npt.ArrayLike) -> Hits:
        """Every line that holds the byte at ``offset`` of ``disk``, innermost first."""
        off = np.asarray(offset, dtype=np.int64)
        return self.overlapping(disk, off, off + 1)

    def innermost(self, disk: npt.ArrayLike, offset: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """For each query byte, the row of its innermost line, or -1 where nothing is."""
        off = np.atleast_1d(np.asarray(offset, dtype=np.int64))
        hits = self.lookup(disk, off)
        result = np.full(len(off), -1, dtype=np.int64)
        if len(hits):
            first = np.concatenate(([True], hits.query[1:] != hits.query[:-1]))
            result[hits.query[first]] = hits.row[first]
        return result
