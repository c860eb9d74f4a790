"""Trace records out: human text, CSV, JSON lines, or per-object totals (``--summary``).

Records come as :class:`~bmap.trace.annotate.RecordBatch` columns and leave as bytes made
column by column (:mod:`bmap.model.textcols`); the per-object fields (names, CSV-quoted and
JSON-encoded columns) are made once per map line, not once per record.

Columns of the record formats (stable, for the reports):
``time, op, status, disk, type, device, kind, path, ranges, disk_ranges, bytes, requests``;
``time`` is seconds since the epoch (or since the trace began, for blkparse and QEMU) with six
decimals, empty / null where the log has none; in CSV ``ranges`` and ``disk_ranges`` are
space-separated ``start-end`` pairs in hex, in JSON lists of ``[start, end]`` in decimal.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from bmap.model import textcols
from bmap.model.units import human_size
from bmap.store.csvmap import csv_field
from bmap.trace.annotate import Annotator, RecordBatch, RecordStream
from bmap.trace.logjob import NbdkitLogJob
from bmap.trace.requests import Columns, Request

RECORD_COLUMNS = [
    "time",
    "op",
    "status",
    "disk",
    "type",
    "device",
    "kind",
    "path",
    "ranges",
    "disk_ranges",
    "bytes",
    "requests",
]
SUMMARY_COLUMNS = [
    "order",
    "first",
    "type",
    "device",
    "kind",
    "path",
    "bytes_read",
    "bytes_written",
    "bytes_other",
    "requests",
    "failed",
]
FREE_KINDS = ("unallocated", "unpartitioned", "free-extents")
_CHUNK = 8192
"""Records formatted at once: the text assembler holds one index per output byte."""

Int = npt.NDArray[np.int64]


class TraceWriter:
    """Writes the records of one trace to a binary stream in ``fmt`` (text, csv, jsonl), or
    keeps per-object totals and writes them at :meth:`close` (``summary``).

    Consecutive requests to one object make one record across batches; a record is written
    once the next batch shows it is complete, or at once with ``live`` (``--follow``,
    ``serve``: the reader is watching)."""

    def __init__(
        self,
        annotator: Annotator,
        fmt: str,
        summary: bool,
        out: IO[bytes],
        live: bool = False,
        header: bool = True,
    ) -> None:
        if fmt not in ("text", "csv", "jsonl"):
            raise ValueError(f"unknown trace output format {fmt!r}")
        self.annotator = annotator
        self.fmt = fmt
        self.summary = summary
        self.out = out
        self.disk_offsets_only = False
        """Some records' ranges are disk offsets: the map has no offsets inside objects."""
        self._totals = _Totals()
        self._stream = RecordStream(annotator)
        self.live = live
        if fmt == "csv" and not summary and header:
            self.out.write((",".join(RECORD_COLUMNS) + "\n").encode())

    def requests(self, requests: Sequence[Request]) -> None:
        if requests:
            self.columns(Columns.of(requests))

    def columns(self, columns: Columns) -> None:
        if len(columns):
            self.batch(self._stream.add(columns))
            if self.live:
                self.batch(self._stream.flush())

    def consume(self, job: NbdkitLogJob) -> None:
        """Write the records of an nbdkit log file worked on in a child process: annotated
        there with this writer's map, formatted and written here, on the other core."""
        job.annotate_with(self.annotator.tables())
        # While the child annotates what it has scanned so far, make the per-line text.
        self._prepare()
        for batch in job.batches():
            self.batch(batch)

    def _prepare(self) -> None:
        """Make now the per-line fields this writer's format will need."""
        if self.summary:
            return
        if self.fmt == "text":
            _ = self.annotator.name_table
        elif self.fmt == "csv":
            _ = self._csv_objects
        else:
            _ = self._json_objects

    def batch(self, batch: RecordBatch) -> None:
        if not len(batch):
            return
        if not batch.in_object.all():
            self.disk_offsets_only = True
        if self.summary:
            self._totals.add(batch, self.annotator)
            return
        for part in batch.chunks(_CHUNK):
            if self.fmt == "text":
                self.out.write(_text_lines(part, self.annotator))
            elif self.fmt == "csv":
                self.out.write(_csv_lines(part, self._csv_objects))
            else:
                self.out.write(_json_lines(part, self._json_objects))
        self.out.flush()

    def close(self) -> None:
        self.batch(self._stream.flush())
        if self.summary:
            self.out.write(self._totals.render(self.annotator, self.fmt))
        self.out.flush()

    # Per map line, made once: entry row + 1 is line row, entry 0 is "nothing in the map".

    @functools.cached_property
    def _csv_objects(self) -> textcols.Pieces:
        lines = [("", "", "", ""), *self.annotator.columns_of_lines()]
        return textcols.table(
            [",".join(map(csv_field, c)).encode("utf-8", "surrogateescape") for c in lines]
        )

    @functools.cached_property
    def _json_objects(self) -> textcols.Pieces:
        dumps = json.dumps
        lines = [("", "", "", ""), *self.annotator.columns_of_lines()]
        return textcols.table(
            [
                f'"type":{dumps(t)},"device":{dumps(d)},"kind":{dumps(k)},"path":{dumps(p)}'.encode()
                for t, d, k, p in lines
            ]
        )


# Human text


def seconds_pieces(times: npt.ArrayLike, missing: bytes) -> textcols.Pieces:
    """Seconds with six decimals (``1714557600.100700``, ``-1.500000``), ``missing`` where
    the time is unknown (NaN)."""
    t = np.asarray(times, dtype=np.float64)
    known = np.isfinite(t)
    micros = np.round(t[known] * 1e6).astype(np.int64)
    magnitude = np.abs(micros)
    frac = np.empty((len(micros), 7), dtype=np.uint8)
    frac[:, 0] = ord(".")
    part = magnitude % 1_000_000
    for k in range(6, 0, -1):
        part, frac[:, k] = np.divmod(part, 10)
    frac[:, 1:] += ord("0")
    text, offsets = textcols.assemble(
        [
            textcols.lookup((micros < 0).astype(np.int64), [b"", b"-"]),
            textcols.decimal(magnitude // 1_000_000),
            textcols.fixed(frac),
        ],
        len(micros),
    )
    return textcols.merge(
        known, textcols.rows(text, offsets), textcols.literal(missing, int((~known).sum()))
    )


def _clock_pieces(times: npt.NDArray[np.float64]) -> textcols.Pieces:
    """``HH:MM:SS.uuuuuu``, the UTC wall clock of seconds since the epoch."""
    clock = np.round(times * 1e6).astype(np.int64) % 86_400_000_000
    m = np.empty((len(times), 15), dtype=np.uint8)
    fields = np.divmod(clock, 1_000_000)
    rest, micro = fields
    rest, second = np.divmod(rest, 60)
    hour, minute = np.divmod(rest, 60)
    for col, value in ((0, hour), (3, minute), (6, second)):
        m[:, col], m[:, col + 1] = np.divmod(value, 10)
    for k in range(14, 8, -1):
        micro, m[:, k] = np.divmod(micro, 10)
    m += ord("0")
    m[:, 2] = m[:, 5] = ord(":")
    m[:, 8] = ord(".")
    return textcols.fixed(m)


def time_pieces(times: npt.ArrayLike) -> textcols.Pieces:
    """A record's time as text: the UTC wall clock ``HH:MM:SS.uuuuuu`` for seconds since the
    epoch, ``S.uuuuuu`` for the relative seconds of blkparse and QEMU, ``-`` where unknown."""
    t = np.asarray(times, dtype=np.float64)
    wall = np.isfinite(t) & (t > 1e9)
    if wall.all():
        return _clock_pieces(t)
    return textcols.merge(wall, _clock_pieces(t[wall]), seconds_pieces(t[~wall], b"-"))


def time_text(value: float | None) -> str:
    """:func:`time_pieces` of one value."""
    pieces = time_pieces([np.nan if value is None else value])
    return textcols.assemble([pieces])[0].decode()


def _ranges_fields(
    first: Int, starts: Int, ends: Int, in_object: npt.NDArray[np.bool_]
) -> list[textcols.Pieces | bytes]:
    """Fields that write each record's ranges after two spaces, ``  a-b,c-d``: at most four,
    then ``,... (N ranges)``; ``  disk a-b`` where the ranges are disk offsets."""
    records = len(first) - 1
    count = np.diff(first)
    if (count == 1).all():  # the common case, one range a record: no text of its own
        lead: textcols.Pieces | bytes = b"  "
        if not in_object.all():
            lead = textcols.lookup((~in_object).astype(np.int64), [b"  ", b"  disk "])
        return [lead, textcols.hexadecimal(starts), b"-", textcols.hexadecimal(ends)]
    shown = np.minimum(count, 4)
    owner = np.repeat(np.arange(records), count)
    place = np.arange(len(starts)) - first[owner]
    keep = place < 4
    kept_owner, kept_place = owner[keep], place[keep]
    # Before the first range of a record its lead, between ranges a comma.
    lead_code = np.where(kept_place > 0, 0, np.where(in_object[kept_owner], 1, 2))
    text, offsets = textcols.assemble(
        [
            textcols.lookup(lead_code, [b",", b"  ", b"  disk "]),
            textcols.hexadecimal(starts[keep]),
            b"-",
            textcols.hexadecimal(ends[keep]),
        ]
    )
    kept_first = np.concatenate(([0], np.cumsum(shown)))
    ranges = textcols.rows_of(text, offsets, kept_first[:-1], kept_first[1:])
    many = count > 4
    if not many.any():
        return [ranges]
    more_text, more_offsets = textcols.assemble(
        [b",... (", textcols.decimal(count[many]), b" ranges)"]
    )
    more = textcols.merge(
        many,
        textcols.rows(more_text, more_offsets),
        textcols.literal(b"", int((~many).sum())),
    )
    return [ranges, more]


def _text_lines(batch: RecordBatch, annotator: Annotator) -> bytes:
    """The human text of a batch of records: ``TIME OP OBJECT  RANGES (SIZE)[  FAILED:E]``."""
    ops = [f" {op} ".encode() for op in batch.op_names]
    ends = [b"\n" if s == "ok" else f"  {s.upper()}\n".encode() for s in batch.status_names]
    sizes, which_size = np.unique(batch.bytes, return_inverse=True)
    text, _ = textcols.assemble(
        [
            time_pieces(batch.time),
            textcols.lookup(batch.op, ops),
            textcols.pick(annotator.name_table, batch.row + 1),
            *_ranges_fields(batch.range_first, batch.range_start, batch.range_end, batch.in_object),
            textcols.lookup(
                which_size.reshape(-1), [f" ({human_size(int(s))})".encode() for s in sizes]
            ),
            textcols.lookup(batch.status, ends),
        ],
        len(batch),
    )
    return text


# CSV and JSON lines


def _range_lists(
    ranges: tuple[Int, Int, Int], number: Any, between: bytes, pair: bytes, wrap: bytes
) -> textcols.Pieces:
    """Each record's ranges as one field (``ranges`` is ``(first, starts, ends)``: record i has
    ranges ``first[i]:first[i + 1]``): ``number`` formats the values, ``pair`` joins start and
    end, ``between`` separates ranges, ``wrap`` (two bytes or none) encloses each range."""
    first, starts, ends = ranges
    records = len(first) - 1
    count = np.diff(first)
    owner = np.repeat(np.arange(records), count)
    last = (np.arange(len(starts)) - first[owner]) == count[owner] - 1
    fields: list[textcols.Pieces | bytes] = []
    if wrap:
        fields.append(wrap[:1])
    fields += [number(starts), pair, number(ends)]
    if wrap:
        fields.append(wrap[1:])
    fields.append(textcols.lookup(last.astype(np.int64), [between, b""]))
    text, offsets = textcols.assemble(fields, len(starts))
    return textcols.rows_of(text, offsets, first[:-1], first[1:])


def _csv_lines(batch: RecordBatch, objects: textcols.Pieces) -> bytes:
    ops = [f"{op},".encode() for op in batch.op_names]
    statuses = [f"{csv_field(s)},".encode() for s in batch.status_names]
    ranges = (batch.range_first, batch.range_start, batch.range_end)
    disk_ranges = (batch.disk_first, batch.disk_start, batch.disk_end)
    text, _ = textcols.assemble(
        [
            seconds_pieces(batch.time, b""),
            b",",
            textcols.lookup(batch.op, ops),
            textcols.lookup(batch.status, statuses),
            f"{batch.disk},".encode(),
            textcols.pick(objects, batch.row + 1),  # type, device, kind, path; quoted as needed
            b",",
            _range_lists(ranges, textcols.hexadecimal, b" ", b"-", b""),
            b",",
            _range_lists(disk_ranges, textcols.hexadecimal, b" ", b"-", b""),
            b",",
            textcols.decimal(batch.bytes),
            b",",
            textcols.decimal(batch.requests),
            b"\n",
        ],
        len(batch),
    )
    return text


def _json_lines(batch: RecordBatch, objects: textcols.Pieces) -> bytes:
    ops = [f'"op":{json.dumps(op)},'.encode() for op in batch.op_names]
    statuses = [f'"status":{json.dumps(s)},'.encode() for s in batch.status_names]
    ranges = (batch.range_first, batch.range_start, batch.range_end)
    disk_ranges = (batch.disk_first, batch.disk_start, batch.disk_end)
    text, _ = textcols.assemble(
        [
            b'{"time":',
            seconds_pieces(batch.time, b"null"),
            b",",
            textcols.lookup(batch.op, ops),
            textcols.lookup(batch.status, statuses),
            f'"disk":{batch.disk},'.encode(),
            textcols.pick(objects, batch.row + 1),
            b',"ranges":[',
            _range_lists(ranges, textcols.decimal, b",", b",", b"[]"),
            b'],"disk_ranges":[',
            _range_lists(disk_ranges, textcols.decimal, b",", b",", b"[]"),
            b'],"bytes":',
            textcols.decimal(batch.bytes),
            b',"requests":',
            textcols.decimal(batch.requests),
            b"}\n",
        ],
        len(batch),
    )
    return text


class _Totals:
    """Per-object totals in order of first access, added a batch at a time."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        """Object number (-1: nothing in the map) -> entry."""
        self.row: list[int] = []
        self.first: list[float] = []
        self.sums = np.zeros((0, 5), dtype=np.int64)
        """read, written, other bytes, requests, failed records."""

    def add(self, batch: RecordBatch, annotator: Annotator) -> None:
        safe = np.maximum(batch.row, 0)
        obj = np.where(batch.row >= 0, annotator.object_of[safe], -1)
        unique, first_at, inverse = np.unique(obj, return_index=True, return_inverse=True)
        order = np.argsort(first_at, kind="stable")
        entry = np.empty(len(unique), dtype=np.int64)
        for u in order.tolist():
            key = int(unique[u])
            e = self.index.get(key)
            if e is None:
                e = self.index[key] = len(self.row)
                at = int(first_at[u])
                self.row.append(int(batch.row[at]))
                t = float(batch.time[at])
                self.first.append(t)
            entry[u] = e
        if len(self.row) > len(self.sums):
            grown = np.zeros((len(self.row), 5), dtype=np.int64)
            grown[: len(self.sums)] = self.sums
            self.sums = grown
        target = entry[inverse.reshape(-1)]
        op_names = batch.op_names
        op = np.asarray(batch.op)
        read = op == op_names.index("read") if "read" in op_names else np.zeros(len(op), bool)
        write = op == op_names.index("write") if "write" in op_names else np.zeros(len(op), bool)
        ok_code = batch.status_names.index("ok") if "ok" in batch.status_names else -1
        np.add.at(self.sums[:, 0], target, np.where(read, batch.bytes, 0))
        np.add.at(self.sums[:, 1], target, np.where(write, batch.bytes, 0))
        np.add.at(self.sums[:, 2], target, np.where(read | write, 0, batch.bytes))
        np.add.at(self.sums[:, 3], target, batch.requests)
        np.add.at(self.sums[:, 4], target, (batch.status != ok_code).astype(np.int64))

    def render(self, annotator: Annotator, fmt: str) -> bytes:
        buf = io.StringIO()
        free_read = 0
        if fmt == "text":
            buf.write("ORDER  FIRST            READ       WRITTEN    REQUESTS  OBJECT\n")
        elif fmt == "csv":
            buf.write(",".join(SUMMARY_COLUMNS) + "\n")
        writer = csv.writer(buf, lineterminator="\n")
        for e, row in enumerate(self.row):
            read, written, other, requests, failed = self.sums[e].tolist()
            type_, device, kind, path = annotator.describe(row)
            if row < 0 or kind in FREE_KINDS:
                free_read += read
            first = None if self.first[e] != self.first[e] else self.first[e]
            if fmt == "text":
                note = f"  {failed} failed" if failed else ""
                buf.write(
                    f"{e + 1:5d}  {time_text(first):15s}  {human_size(read):>9s}  "
                    f"{human_size(written):>9s}  {requests:8d}  {annotator.name(row)}{note}\n"
                )
                continue
            values = [e + 1, first, type_, device, kind, path, read, written, other]
            values += [requests, failed]
            if fmt == "csv":
                writer.writerow(["" if v is None else v for v in values])
            else:
                buf.write(json.dumps(dict(zip(SUMMARY_COLUMNS, values))) + "\n")
        if fmt == "text":
            buf.write(f"reads of free space or of nothing in the map: {human_size(free_read)}\n")
        return buf.getvalue().encode("utf-8", "surrogateescape")
