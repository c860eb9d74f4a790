"""Trace records out: human text, CSV, JSON lines, or per-object totals (``--summary``).

Records come as :class:`~bmap.trace.RecordBatch` columns and leave as bytes made column by
column (:mod:`bmap.textcols`); the per-object fields (names, CSV-quoted and JSON-encoded
columns) are made once per map line, not once per record.

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

from bmap import textcols
from bmap.mapfile import csv_field
from bmap.render import human_size
from bmap.trace import (
    Annotator,
    NbdkitLogJob,
    RecordBatch,
    RecordStream,
    seconds_pieces,
    text_records,
    time_text,
)
from bmap.tracelogs import Columns, Request

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
_CHUNK = 16384

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
        if self.fmt == "text":
            chunks = text_records(batch, self.annotator)
        elif self.fmt == "csv":
            chunks = _csv_records(batch, self._csv_objects)
        else:
            chunks = _json_records(batch, self._json_objects)
        for chunk in chunks:
            self.out.write(chunk)
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


def _chunks(batch: RecordBatch) -> Any:
    for lo in range(0, len(batch), _CHUNK):
        hi = min(lo + _CHUNK, len(batch))
        r0, r1 = batch.range_first[lo], batch.range_first[hi]
        d0, d1 = batch.disk_first[lo], batch.disk_first[hi]
        yield (
            lo,
            hi,
            (batch.range_first[lo : hi + 1] - r0, batch.range_start[r0:r1], batch.range_end[r0:r1]),
            (batch.disk_first[lo : hi + 1] - d0, batch.disk_start[d0:d1], batch.disk_end[d0:d1]),
        )


def _csv_records(batch: RecordBatch, objects: textcols.Pieces) -> Any:
    ops = [f"{op},".encode() for op in batch.op_names]
    statuses = [f"{csv_field(s)},".encode() for s in batch.status_names]
    for lo, hi, ranges, disk_ranges in _chunks(batch):
        entry = batch.row[lo:hi] + 1
        n = hi - lo
        text, _ = textcols.assemble(
            [
                seconds_pieces(batch.time[lo:hi], b""),
                b",",
                textcols.lookup(batch.op[lo:hi], ops),
                textcols.lookup(batch.status[lo:hi], statuses),
                f"{batch.disk},".encode(),
                textcols.pick(objects, entry),  # type, device, kind, path; quoted as needed
                b",",
                _range_lists(ranges, textcols.hexadecimal, b" ", b"-", b""),
                b",",
                _range_lists(disk_ranges, textcols.hexadecimal, b" ", b"-", b""),
                b",",
                textcols.decimal(batch.bytes[lo:hi]),
                b",",
                textcols.decimal(batch.requests[lo:hi]),
                b"\n",
            ],
            n,
        )
        yield text


def _json_records(batch: RecordBatch, objects: textcols.Pieces) -> Any:
    ops = [f'"op":{json.dumps(op)},'.encode() for op in batch.op_names]
    statuses = [f'"status":{json.dumps(s)},'.encode() for s in batch.status_names]
    for lo, hi, ranges, disk_ranges in _chunks(batch):
        entry = batch.row[lo:hi] + 1
        n = hi - lo
        text, _ = textcols.assemble(
            [
                b'{"time":',
                seconds_pieces(batch.time[lo:hi], b"null"),
                b",",
                textcols.lookup(batch.op[lo:hi], ops),
                textcols.lookup(batch.status[lo:hi], statuses),
                f'"disk":{batch.disk},'.encode(),
                textcols.pick(objects, entry),
                b',"ranges":[',
                _range_lists(ranges, textcols.decimal, b",", b",", b"[]"),
                b'],"disk_ranges":[',
                _range_lists(disk_ranges, textcols.decimal, b",", b",", b"[]"),
                b'],"bytes":',
                textcols.decimal(batch.bytes[lo:hi]),
                b',"requests":',
                textcols.decimal(batch.requests[lo:hi]),
                b"}\n",
            ],
            n,
        )
        yield text


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
