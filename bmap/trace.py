"""Trace replay: name the objects behind every request of an I/O log.

The logs are parsed into request columns by :mod:`bmap.tracelogs` (nbdkit's log filter,
QEMU block trace events, blkparse, CSV). Each request is split over the objects it touches;
each piece is named by the innermost object there (a file before its directory, per-file
metadata before filesystem metadata, then the LV, the partition, the disk), with the byte range
inside that object. Consecutive pieces of the same operation on the same object make one
record, as virt-bmap's logger did.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bmap import textcols
from bmap.index import MapIndex
from bmap.render import object_name
from bmap.tracelogs import (
    OPS,
    PARSERS,
    Columns,
    NbdkitParser,
    Request,
    TraceParser,
    detect_format,
    follow_lines,
    parse,
)

Int = npt.NDArray[np.int64]

__all__ = [
    "OPS",
    "PARSERS",
    "Annotator",
    "Columns",
    "NbdkitParser",
    "Record",
    "RecordBatch",
    "Request",
    "Tiling",
    "TraceParser",
    "detect_format",
    "follow_lines",
    "innermost_tiling",
    "parse",
]

# --------------------------------------------------------------------------------------------
# Annotation


@dataclass
class Tiling:
    """The disk cut into runs, each named by its innermost line (-1: no line there)."""

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]


def innermost_tiling(frame: Any, disk: int) -> Tiling:
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


class Annotator:
    """Names the pieces of requests against one map (a DataFrame from ``read_map``)."""

    def __init__(self, frame: Any, disk: int = 1) -> None:
        self.frame = frame
        self.disk = disk
        self.tiling = innermost_tiling(frame, disk)
        fo = frame["file_offset"]
        self.file_offset = fo.astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
        self.line_start = frame["start"].to_numpy(dtype=np.int64)
        keys = frame["type"] + "\0" + frame["device"] + "\0" + frame["kind"] + "\0" + frame["path"]
        codes, uniques = _factorize(keys.tolist())
        self.object_of = codes
        self.object_keys = uniques
        self.type_code = (
            frame["type"].map({t: i for i, t in enumerate("vpldfmu")}).to_numpy(dtype=np.int64)
        )
        self._columns = list(
            zip(
                frame["type"].tolist(),
                frame["device"].tolist(),
                frame["kind"].tolist(),
                frame["path"].tolist(),
            )
        )

    def records(self, requests: Sequence[Request]) -> Iterator[Record]:
        """Coalesced records, one object each (convenient; :meth:`annotate` is the fast way)."""
        if not requests:
            return
        yield from self.annotate(Columns.of(requests)).records()

    def annotate(self, requests: Columns) -> RecordBatch:
        """Coalesced records of a whole batch of requests, as columns.

        Each request is cut at the tiling's boundaries (one ``searchsorted`` pair for all of
        them); consecutive pieces with the same operation, status and object form a record.
        """
        t = self.tiling
        times, offs, lens = requests.time, requests.offset, requests.length
        # A request reaching past 2**63 is cut there (no disk is that large) rather than let
        # its end wrap around.
        length = np.maximum(lens, 1)
        top_end = np.iinfo(np.int64).max
        ends = np.where(offs > top_end - length, top_end, offs + length)
        # The tiling with an empty run before and after it covers every offset.
        top = np.iinfo(np.int64).max
        first = int(t.start[0]) if len(t.start) else 0
        last = int(t.end[-1]) if len(t.end) else 0
        tile_start = np.concatenate(([0], t.start, [last]))
        tile_end = np.concatenate(([first], t.end, [top]))
        tile_row = np.concatenate(([-1], t.row, [-1]))
        lo = np.searchsorted(tile_end, offs, side="right")
        hi = np.searchsorted(tile_start, ends, side="left")
        count = np.maximum(hi - lo, 1)
        req = np.repeat(np.arange(len(offs)), count)
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        k = np.minimum(np.repeat(lo, count) + within, len(tile_row) - 1)
        p_start = np.maximum(tile_start[k], offs[req])
        p_end = np.minimum(tile_end[k], ends[req])
        row = tile_row[k]
        safe = np.maximum(row, 0)
        obj = np.where(row >= 0, self.object_of[safe], -1)
        fo = np.where(row >= 0, self.file_offset[safe], -1)
        # Disks, partitions, LVs, files and directories have offsets of their own; unused
        # space has none, and is given in disk offsets without a note.
        inside = fo >= 0
        needs_offset = np.isin(self.type_code[safe], [0, 1, 2, 3, 4]) & (row >= 0)
        in_start = np.where(inside, fo + p_start - self.line_start[safe], p_start)
        in_end = in_start + (p_end - p_start)
        op_code, op_names = requests.op, list(OPS)
        status_code, status_names = requests.status, requests.status_names
        key_op = op_code[req]
        key_status = status_code[req]
        new = np.ones(len(req), dtype=bool)
        new[1:] = (
            (key_op[1:] != key_op[:-1])
            | (key_status[1:] != key_status[:-1])
            | (obj[1:] != obj[:-1])
        )
        group_start = np.flatnonzero(new)
        new_request = np.ones(len(req), dtype=bool)
        new_request[1:] = req[1:] != req[:-1]
        new_request |= new
        joins = np.zeros(len(req), dtype=bool)
        joins[1:] = ~new[1:] & (in_start[1:] == in_end[:-1])
        disk_joins = np.zeros(len(req), dtype=bool)
        disk_joins[1:] = ~new[1:] & (p_start[1:] == p_end[:-1])
        heads = np.flatnonzero(~joins)
        disk_heads = np.flatnonzero(~disk_joins)
        first_req = req[group_start]
        return RecordBatch(
            disk=self.disk,
            time=times[first_req],
            op=op_code[first_req],
            op_names=op_names,
            status=status_code[first_req],
            status_names=status_names,
            row=row[group_start],
            bytes=np.add.reduceat(p_end - p_start, group_start),
            requests=np.add.reduceat(new_request.astype(np.int64), group_start),
            in_object=np.logical_and.reduceat(inside | ~needs_offset, group_start),
            range_first=np.append(np.searchsorted(heads, group_start), len(heads)),
            range_start=in_start[heads],
            range_end=in_end[np.append(heads[1:], len(req)) - 1],
            disk_first=np.append(np.searchsorted(disk_heads, group_start), len(disk_heads)),
            disk_start=p_start[disk_heads],
            disk_end=p_end[np.append(disk_heads[1:], len(req)) - 1],
        )

    NOTHING = "(nothing in the map)"

    def name(self, row: int) -> str:
        """A line's object as the trace names it (``f /dev/sda1 /etc/fstab``); -1: nothing."""
        return self.NOTHING if row < 0 else object_name(*self._columns[row])

    @functools.cached_property
    def name_table(self) -> textcols.Pieces:
        """Every line's :meth:`name`, UTF-8, in one blob: entry ``row + 1`` is line ``row``,
        entry 0 is "nothing in the map"."""
        names = [self.NOTHING] + [object_name(*c) for c in self._columns]
        encoded = [n.encode("utf-8", "surrogateescape") for n in names]
        length = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return textcols.Pieces(
            np.frombuffer(b"".join(encoded), dtype=np.uint8), np.cumsum(length) - length, length
        )

    def columns_of_lines(self) -> list[tuple[str, str, str, str]]:
        """``(type, device, kind, path)`` of every line of the map, in order."""
        return self._columns

    def describe(self, row: int) -> tuple[str, str, str, str]:
        """``(type, device, kind, path)`` of a line of the map (empty strings for -1)."""
        if row < 0:
            return ("", "", "", "")
        return self._columns[row]


def _factorize(values: list[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    seen: dict[str, int] = {}
    codes = np.fromiter(
        (seen.setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values)
    )
    return codes, list(seen)


# --------------------------------------------------------------------------------------------
# Human text, column by column

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_TEXT_CHUNK = 16384
"""Records formatted at once: the text assembler holds one index per output byte."""


def human_sizes(values: npt.ArrayLike) -> list[str]:
    """``512 B``, ``1.0 MiB``, ... (as :func:`bmap.render.human_size`) for a whole column."""
    v = np.asarray(values, dtype=np.int64)
    unit = np.minimum(
        np.searchsorted(1024 ** np.arange(1, 6, dtype=np.float64), np.abs(v), side="right"),
        len(_SIZE_UNITS) - 1,
    )
    scaled = v / (1024.0**unit)
    return [
        f"{n} B" if u == 0 else f"{x:.1f} {_SIZE_UNITS[u]}"
        for n, u, x in zip(v.tolist(), unit.tolist(), scaled.tolist())
    ]


def time_pieces(times: npt.ArrayLike) -> textcols.Pieces:
    """A record's time as text: the UTC wall clock ``HH:MM:SS.uuuuuu`` for seconds since the
    epoch, ``S.uuuuuu`` for the relative seconds of blkparse and QEMU, ``-`` where unknown."""
    t = np.asarray(times, dtype=np.float64)
    known = np.isfinite(t)
    micros = np.where(known, np.round(np.where(known, t, 0.0) * 1e6), 0).astype(np.int64)
    clock = np.where(known & (t > 1e9), micros % 86_400_000_000, 0)
    hour, rest = np.divmod(clock, 3_600_000_000)
    minute, rest = np.divmod(rest, 60_000_000)
    second, frac = np.divmod(rest, 1_000_000)
    m = np.empty((len(t), 15), dtype=np.uint8)
    zero = ord("0")
    for col, (value, div) in enumerate(
        [(hour, 10), (hour, 1), (None, ord(":")), (minute, 10), (minute, 1), (None, ord(":"))]
        + [(second, 10), (second, 1), (None, ord("."))]
        + [(frac, 10**k) for k in range(5, -1, -1)]
    ):
        m[:, col] = div if value is None else (value // div) % 10 + zero
    wall = textcols.fixed(m)
    magnitude = np.abs(micros)
    frac6 = np.empty((len(t), 7), dtype=np.uint8)
    frac6[:, 0] = ord(".")
    for k in range(6):
        frac6[:, 1 + k] = (magnitude % 1_000_000) // 10 ** (5 - k) % 10 + zero
    relative_text, offsets = textcols.assemble(
        [
            textcols.lookup((micros < 0).astype(np.int64), [b"", b"-"]),
            textcols.decimal(magnitude // 1_000_000),
            textcols.fixed(frac6),
        ],
        len(t),
    )
    relative = textcols.rows_of(relative_text, offsets, np.arange(len(t)), np.arange(1, len(t) + 1))
    chosen = textcols.choose(t > 1e9, wall, relative)
    return textcols.choose(known, chosen, textcols.literal(b"-", len(t)))


def time_text(value: float | None) -> str:
    """:func:`time_pieces` of one value."""
    pieces = time_pieces([np.nan if value is None else value])
    return textcols.assemble([pieces])[0].decode()


def _ranges_pieces(
    first: Int, starts: Int, ends: Int, in_object: npt.NDArray[np.bool_]
) -> textcols.Pieces:
    """Each record's ranges, ``a-b,c-d``: at most four, then ``,... (N ranges)``; prefixed
    ``disk `` where the ranges are disk offsets."""
    records = len(first) - 1
    count = np.diff(first)
    shown = np.minimum(count, 4)
    owner = np.repeat(np.arange(records), count)
    place = np.arange(len(starts)) - first[owner]
    keep = place < 4
    last = place[keep] == shown[owner[keep]] - 1
    text, offsets = textcols.assemble(
        [
            textcols.hexadecimal(starts[keep]),
            b"-",
            textcols.hexadecimal(ends[keep]),
            textcols.lookup(last.astype(np.int64), [b",", b""]),
        ]
    )
    kept_first = np.concatenate(([0], np.cumsum(shown)))
    ranges = textcols.rows_of(text, offsets, kept_first[:-1], kept_first[1:])
    many = count > 4
    more_text, more_offsets = textcols.assemble(
        [b",... (", textcols.decimal(count), b" ranges)"], records
    )
    more = textcols.choose(
        many,
        textcols.rows_of(more_text, more_offsets, np.arange(records), np.arange(1, records + 1)),
        textcols.literal(b"", records),
    )
    prefix = textcols.lookup((~in_object).astype(np.int64), [b"", b"disk "])
    joined, joined_offsets = textcols.assemble([prefix, ranges, more], records)
    return textcols.rows_of(joined, joined_offsets, np.arange(records), np.arange(1, records + 1))


def text_records(batch: RecordBatch, annotator: Annotator) -> Iterator[bytes]:
    """The human text of a batch of records, a chunk of lines at a time:
    ``TIME OP OBJECT  RANGES (SIZE)[  FAILED:E]``."""
    table = annotator.name_table
    for lo in range(0, len(batch), _TEXT_CHUNK):
        hi = min(lo + _TEXT_CHUNK, len(batch))
        n = hi - lo
        entry = batch.row[lo:hi] + 1
        names = textcols.Pieces(table.blob, table.start[entry], table.length[entry])
        sizes, which_size = np.unique(batch.bytes[lo:hi], return_inverse=True)
        size_text = [f" ({s})".encode() for s in human_sizes(sizes)]
        status = [b"" if s == "ok" else f"  {s.upper()}".encode() for s in batch.status_names]
        r0, r1 = batch.range_first[lo], batch.range_first[hi]
        ranges = _ranges_pieces(
            batch.range_first[lo : hi + 1] - r0,
            batch.range_start[r0:r1],
            batch.range_end[r0:r1],
            batch.in_object[lo:hi],
        )
        text, _ = textcols.assemble(
            [
                time_pieces(batch.time[lo:hi]),
                textcols.lookup(batch.op[lo:hi], [f" {op} ".encode() for op in batch.op_names]),
                names,
                b"  ",
                ranges,
                textcols.lookup(which_size.reshape(-1), size_text),
                textcols.lookup(batch.status[lo:hi], status),
                b"\n",
            ],
            n,
        )
        yield text
