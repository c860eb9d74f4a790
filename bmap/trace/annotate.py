"""Trace replay: name the objects behind every request of an I/O log.

The logs are parsed into request columns by :mod:`bmap.trace.logs` (nbdkit's log filter,
QEMU block trace events, blkparse, CSV). Each request is split over the objects it touches;
each piece is named by the innermost object there (a file before its directory, per-file
metadata before filesystem metadata, then the LV, the partition, the disk), with the byte range
inside that object. Consecutive pieces of the same operation on the same object make one
record, as virt-bmap's logger did.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bmap.model import textcols
from bmap.model.blockmap import NO_OFFSET, TYPE_CODE
from bmap.model.escape import printable
from bmap.model.ids import id_pieces, object_name
from bmap.model.intervals import ragged_positions
from bmap.store.index import MapIndex
from bmap.trace.requests import OPS, Columns, Request

if TYPE_CHECKING:
    import pandas as pd

Int = npt.NDArray[np.int64]

#: Types whose objects have contents of their own, so that a piece of them has an offset
#: inside them (unused space has none, and is given in disk offsets without a note).
_HAS_CONTENTS = np.array([TYPE_CODE[t] for t in "vpldf"], dtype=np.int64)

# --------------------------------------------------------------------------------------------
# Annotation


@dataclass
class Tiling:
    """The disk cut into runs, each named by its innermost line (-1: no line there)."""

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]


def innermost_tiling(frame: pd.DataFrame, disk: int) -> Tiling:
    """Cut ``disk`` at every line boundary and name each piece by its innermost line."""
    sel = frame[frame["disk"] == disk]
    bounds = np.unique(np.concatenate((sel["start"].to_numpy(), sel["end"].to_numpy())))
    if len(bounds) < 2:
        z = np.zeros(0, dtype=np.int64)
        return Tiling(z, z, z)
    starts, ends = bounds[:-1], bounds[1:]
    index = MapIndex.from_frame(frame)
    rows = index.innermost(disk, starts)
    # Neighbouring pieces with the same line are one run.
    new = np.concatenate(([True], (rows[1:] != rows[:-1]) | (starts[1:] != ends[:-1])))
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:], [len(starts)])) - 1
    return Tiling(starts[first], ends[last], rows[first])


@dataclass
class Record:
    """Consecutive pieces of one operation on one object."""

    time: float | None
    op: str
    status: str
    disk: int
    row: int
    """A line of the map naming the object (-1: nothing in the map)."""
    ranges: list[list[int]] = field(default_factory=list)
    """``[start, end)`` inside the object (or on the disk where the map has no offsets)."""
    disk_ranges: list[list[int]] = field(default_factory=list)
    bytes: int = 0
    requests: int = 0
    in_object: bool = True


@dataclass
class RequestPieces:
    """Requests cut where the map's objects change: one row per piece, in request order."""

    time: npt.NDArray[np.float64]
    """The time of the piece's request."""
    op: Int
    status: Int
    request_start: npt.NDArray[np.bool_]
    """The first piece of its request."""
    row: Int
    """The map line naming the piece's object (-1: nothing in the map)."""
    obj: Int
    offset_known: npt.NDArray[np.bool_]
    """The range inside the object is known (or the object has no contents of its own)."""
    disk_start: Int
    disk_end: Int
    start: Int
    """Where the piece starts inside its object (on the disk where that is not known)."""
    end: Int

    def __len__(self) -> int:
        return len(self.row)

    def take(self, which: slice) -> RequestPieces:
        return RequestPieces(*(getattr(self, f.name)[which] for f in fields(self)))

    @classmethod
    def concat(cls, a: RequestPieces, b: RequestPieces) -> RequestPieces:
        return cls(*(np.concatenate((getattr(a, f.name), getattr(b, f.name))) for f in fields(a)))


@dataclass
class RecordBatch:
    """Records of one batch of requests, as columns (``range_first[i]:range_first[i + 1]``
    indexes record i's ranges)."""

    disk: int
    time: npt.NDArray[np.float64]
    op: npt.NDArray[np.int64]
    op_names: list[str]
    status: npt.NDArray[np.int64]
    status_names: list[str]
    row: npt.NDArray[np.int64]
    bytes: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]
    in_object: npt.NDArray[np.bool_]
    range_first: npt.NDArray[np.int64]
    range_start: npt.NDArray[np.int64]
    range_end: npt.NDArray[np.int64]
    disk_first: npt.NDArray[np.int64]
    disk_start: npt.NDArray[np.int64]
    disk_end: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls, disk: int, op_names: list[str], status_names: list[str]) -> RecordBatch:
        z = np.zeros(0, dtype=np.int64)
        one = np.zeros(1, dtype=np.int64)
        return cls(
            disk=disk,
            time=np.zeros(0),
            op=z,
            op_names=op_names,
            status=z,
            status_names=status_names,
            row=z,
            bytes=z,
            requests=z,
            in_object=np.zeros(0, dtype=bool),
            range_first=one,
            range_start=z,
            range_end=z,
            disk_first=one,
            disk_start=z,
            disk_end=z,
        )

    def chunks(self, size: int) -> Iterator[RecordBatch]:
        """The records ``size`` at a time, each part a batch of its own (its ranges'
        indexes start again at 0): what the formatters work on at once."""
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            r0, r1 = int(self.range_first[lo]), int(self.range_first[hi])
            d0, d1 = int(self.disk_first[lo]), int(self.disk_first[hi])
            yield RecordBatch(
                disk=self.disk,
                time=self.time[lo:hi],
                op=self.op[lo:hi],
                op_names=self.op_names,
                status=self.status[lo:hi],
                status_names=self.status_names,
                row=self.row[lo:hi],
                bytes=self.bytes[lo:hi],
                requests=self.requests[lo:hi],
                in_object=self.in_object[lo:hi],
                range_first=self.range_first[lo : hi + 1] - r0,
                range_start=self.range_start[r0:r1],
                range_end=self.range_end[r0:r1],
                disk_first=self.disk_first[lo : hi + 1] - d0,
                disk_start=self.disk_start[d0:d1],
                disk_end=self.disk_end[d0:d1],
            )

    def records(self) -> Iterator[Record]:
        rs, re_, rf = self.range_start.tolist(), self.range_end.tolist(), self.range_first.tolist()
        ds, de, df = self.disk_start.tolist(), self.disk_end.tolist(), self.disk_first.tolist()
        times = self.time.tolist()
        for i, (op, status, row, nbytes, nreq, inside) in enumerate(
            zip(
                self.op.tolist(),
                self.status.tolist(),
                self.row.tolist(),
                self.bytes.tolist(),
                self.requests.tolist(),
                self.in_object.tolist(),
            )
        ):
            yield Record(
                None if times[i] != times[i] else times[i],
                self.op_names[op],
                self.status_names[status],
                self.disk,
                row,
                [[rs[j], re_[j]] for j in range(rf[i], rf[i + 1])],
                [[ds[j], de[j]] for j in range(df[i], df[i + 1])],
                nbytes,
                nreq,
                inside,
            )


class AnnotationTables:
    """What cutting requests into pieces and grouping them into records needs of a map: the
    innermost tiling of one disk and, per map line, its offset inside its object, its start,
    object number and type. Plain arrays (about 80 bytes a line), so that a worker process
    can be handed them (:class:`NbdkitLogJob`)."""

    def __init__(
        self,
        disk: int,
        tiling: Tiling,
        file_offset: Int,
        line_start: Int,
        object_of: Int,
        type_code: Int,
    ) -> None:
        self.disk = disk
        self.tiling = tiling
        self.file_offset = file_offset
        self.line_start = line_start
        self.object_of = object_of
        self.type_code = type_code

    def tables(self) -> AnnotationTables:
        return AnnotationTables(
            self.disk,
            self.tiling,
            self.file_offset,
            self.line_start,
            self.object_of,
            self.type_code,
        )

    def pieces(self, requests: Columns, status: Int) -> RequestPieces:
        """Each request cut at the tiling's boundaries (one ``searchsorted`` pair for all of
        them), each piece named by the line there. ``status`` are the requests' status
        codes in the caller's list of names."""
        t = self.tiling
        times, offs, lens = requests.time, requests.offset, requests.length
        # A request reaching past 2**63 is cut there (no disk is that large) rather than let
        # its end wrap around.
        length = np.maximum(lens, 1)
        top = np.iinfo(np.int64).max
        ends = np.where(offs > top - length, top, offs + length)
        # The tiling with an empty run before and after it covers every offset.
        first = int(t.start[0]) if len(t.start) else 0
        last = int(t.end[-1]) if len(t.end) else 0
        tile_start = np.concatenate(([0], t.start, [last]))
        tile_end = np.concatenate(([first], t.end, [top]))
        tile_row = np.concatenate(([-1], t.row, [-1]))
        lo = np.searchsorted(tile_end, offs, side="right")
        hi = np.searchsorted(tile_start, ends, side="left")
        count = np.maximum(hi - lo, 1)
        req = np.repeat(np.arange(len(offs)), count)
        within = ragged_positions(count)
        k = np.minimum(np.repeat(lo, count) + within, len(tile_row) - 1)
        p_start = np.maximum(tile_start[k], offs[req])
        p_end = np.minimum(tile_end[k], ends[req])
        row = tile_row[k]
        safe = np.maximum(row, 0)
        fo = np.where(row >= 0, self.file_offset[safe], NO_OFFSET)
        inside = fo >= 0
        needs_offset = np.isin(self.type_code[safe], _HAS_CONTENTS) & (row >= 0)
        in_start = np.where(inside, fo + p_start - self.line_start[safe], p_start)
        return RequestPieces(
            time=times[req],
            op=requests.op[req],
            status=np.asarray(status)[req],
            request_start=within == 0,
            row=row,
            obj=np.where(row >= 0, self.object_of[safe], -1),
            offset_known=inside | ~needs_offset,
            disk_start=p_start,
            disk_end=p_end,
            start=in_start,
            end=in_start + (p_end - p_start),
        )

    def group(
        self, pieces: RequestPieces, status_names: list[str], hold_last: bool
    ) -> tuple[RecordBatch, RequestPieces]:
        """Consecutive pieces with the same operation, status and object make a record.
        With ``hold_last`` the last record's pieces are not made a record but returned, to
        go in front of the next batch's pieces (which may continue it)."""
        n = len(pieces)
        new = np.ones(n, dtype=bool)
        new[1:] = (
            (pieces.op[1:] != pieces.op[:-1])
            | (pieces.status[1:] != pieces.status[:-1])
            | (pieces.obj[1:] != pieces.obj[:-1])
        )
        group_start = np.flatnonzero(new)
        held = pieces.take(slice(n, n))
        if hold_last and len(group_start):
            cut = int(group_start[-1])
            held = pieces.take(slice(cut, n))
            pieces = pieces.take(slice(0, cut))
            new, group_start, n = new[:cut], group_start[:-1], cut
        if not n:
            return RecordBatch.empty(self.disk, list(OPS), status_names), held
        p = pieces
        new_request = p.request_start | new
        joins = np.zeros(n, dtype=bool)
        joins[1:] = ~new[1:] & (p.start[1:] == p.end[:-1])
        disk_joins = np.zeros(n, dtype=bool)
        disk_joins[1:] = ~new[1:] & (p.disk_start[1:] == p.disk_end[:-1])
        heads = np.flatnonzero(~joins)
        disk_heads = np.flatnonzero(~disk_joins)
        batch = RecordBatch(
            disk=self.disk,
            time=p.time[group_start],
            op=p.op[group_start],
            op_names=list(OPS),
            status=p.status[group_start],
            status_names=status_names,
            row=p.row[group_start],
            bytes=np.add.reduceat(p.disk_end - p.disk_start, group_start),
            requests=np.add.reduceat(new_request.astype(np.int64), group_start),
            in_object=np.logical_and.reduceat(p.offset_known, group_start),
            range_first=np.append(np.searchsorted(heads, group_start), len(heads)),
            range_start=p.start[heads],
            range_end=p.end[np.append(heads[1:], n) - 1],
            disk_first=np.append(np.searchsorted(disk_heads, group_start), len(disk_heads)),
            disk_start=p.disk_start[disk_heads],
            disk_end=p.disk_end[np.append(disk_heads[1:], n) - 1],
        )
        return batch, held


class Annotator(AnnotationTables):
    """Names the pieces of requests against one map (a DataFrame from ``read_map``)."""

    def __init__(self, frame: pd.DataFrame, disk: int = 1) -> None:
        import pandas as pd

        fo = frame["file_offset"]
        self._type = frame["type"].to_numpy(dtype=object)
        self._device = frame["device"].to_numpy(dtype=object)
        self._kind = frame["kind"].to_numpy(dtype=object)
        self._path = frame["path"].to_numpy(dtype=object)
        # One number per object: lines of the same (type, device, kind, path) share it.
        keys = self._type + "\0" + self._device + "\0" + self._kind + "\0" + self._path
        super().__init__(
            disk,
            innermost_tiling(frame, disk),
            np.asarray(fo.astype("Int64").fillna(NO_OFFSET).to_numpy(np.int64), dtype=np.int64),
            frame["start"].to_numpy(dtype=np.int64),
            pd.factorize(keys)[0].astype(np.int64),
            np.asarray(frame["type"].map(TYPE_CODE).to_numpy(np.int64), dtype=np.int64),
        )

    def records(self, requests: Sequence[Request]) -> Iterator[Record]:
        """Coalesced records, one object each (convenient; :meth:`annotate` is the fast way)."""
        if not requests:
            return
        yield from self.annotate(Columns.of(requests)).records()

    def annotate(self, requests: Columns) -> RecordBatch:
        """Coalesced records of a whole batch of requests, as columns (a batch on its own:
        :class:`RecordStream` coalesces across batches)."""
        names = list(requests.status_names)
        batch, _ = self.group(self.pieces(requests, requests.status), names, hold_last=False)
        return batch

    NOTHING = "(nothing in the map)"

    def name(self, row: int) -> str:
        """A line's object as the trace names it (``f /dev/sda1 /etc/fstab``); -1: nothing."""
        return self.NOTHING if row < 0 else object_name(*self.describe(row))

    @functools.cached_property
    def name_table(self) -> textcols.Pieces:
        """Every line's :meth:`name`, UTF-8, in one blob: entry ``row + 1`` is line ``row``,
        entry 0 is "nothing in the map" (the text map's IDs: :func:`bmap.model.ids.id_pieces`)."""
        lines = id_pieces(
            self._type.tolist(), self._device.tolist(), self._kind.tolist(), self._path.tolist()
        )
        blob = lines.blob
        if len(blob) > 1 and bool(
            ((blob[:-1] == 0xC2) & (blob[1:] >= 0x80) & (blob[1:] <= 0x9F)).any()
        ):
            # A C1 control character (U+0080..U+009F) is not escaped in the map's IDs, and some
            # terminals act on it: the text output shows it as \xNN (rare: the slow way).
            lines = textcols.table(
                [
                    printable(object_name(*row)).encode("utf-8", "surrogateescape")
                    for row in self.columns_of_lines()
                ]
            )
        nothing = (self.NOTHING + "\n").encode()
        return textcols.Pieces(
            np.concatenate((np.frombuffer(nothing, dtype=np.uint8), lines.blob)),
            np.concatenate(([0], lines.start + len(nothing))),
            np.concatenate(([len(nothing) - 1], lines.length)),
        )

    def columns_of_lines(self) -> list[tuple[str, str, str, str]]:
        """``(type, device, kind, path)`` of every line of the map, in order."""
        return list(
            zip(
                self._type.tolist(), self._device.tolist(), self._kind.tolist(), self._path.tolist()
            )
        )

    def describe(self, row: int) -> tuple[str, str, str, str]:
        """``(type, device, kind, path)`` of a line of the map (empty strings for -1)."""
        if row < 0:
            return ("", "", "", "")
        return (self._type[row], self._device[row], self._kind[row], self._path[row])


class RecordStream:
    """Records of a stream of request batches, coalesced across the batches: the last
    record of a batch is held back until the next batch shows whether it goes on (a file read
    in 64 KiB requests is one record, wherever the log's blocks were cut).
    :meth:`flush` hands out the held record (at the end, or at once for live output)."""

    def __init__(self, annotator: AnnotationTables) -> None:
        self.annotator = annotator
        self.status_names: list[str] = ["ok"]
        self._codes: dict[str, int] = {"ok": 0}
        self._held: RequestPieces | None = None

    def add(self, requests: Columns) -> RecordBatch:
        """The records completed by ``requests`` (in order)."""
        remap = np.array(
            [self._code(name) for name in requests.status_names] or [0], dtype=np.int64
        )
        pieces = self.annotator.pieces(requests, remap[requests.status])
        if self._held is not None and len(self._held):
            pieces = RequestPieces.concat(self._held, pieces)
        batch, self._held = self.annotator.group(pieces, list(self.status_names), True)
        return batch

    def flush(self) -> RecordBatch:
        """The record held back, if any."""
        held, self._held = self._held, None
        if held is None or not len(held):
            return RecordBatch.empty(self.annotator.disk, list(OPS), list(self.status_names))
        batch, _ = self.annotator.group(held, list(self.status_names), False)
        return batch

    def _code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self.status_names)
            self.status_names.append(name)
        return code
