"""``bmap trace``'s own CSV and JSON-lines output read back as a log (``bmap-csv``,
``bmap-jsonl``), so that a trace written once can be reported on, or named again against
another map, without its original log.

A record is consecutive requests to one object, merged (:mod:`bmap.trace.output`): its
``disk_ranges`` are what was asked of the disk, its ``requests`` how many requests they were.
Each disk range becomes one request at the record's time, standing for its share of the
record's requests (:attr:`~bmap.trace.requests.Request.stands_for`: the record's count on its first
range, 0 on the rest), so per-object request counts come out as the original log's. The names
in a record are not used: the map given with it names the ranges again.

Every number is checked before it is converted: offsets are at most 16 hex digits and below
2**63, counts at most 18 decimal digits, a time is any number (a time that is not finite is
no time); a record that breaks a rule is skipped, and counted as a line of no known format.
``bmap report`` reads a whole file at once (:func:`csv_columns`, pandas' C parser), by the same
rules, and reads it line by line only when a record breaks one.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from typing import IO, Any

from bmap.trace.requests import OP_CODE, Columns, Request, TraceParser

#: The record columns of ``bmap trace -f csv`` (:data:`bmap.trace.output.RECORD_COLUMNS`).
CSV_HEADER = "time,op,status,disk,type,device,kind,path,ranges,disk_ranges,bytes,requests"
_COLUMNS = CSV_HEADER.split(",")
_HEX_RANGE = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16})")
_COUNT = re.compile(r"\d{1,18}")
_LIMIT = 1 << 63
_MAX_PENDING = 1 << 20
"""Characters a quoted CSV field may span over several lines before it is given up on."""


def _requests(
    time: float | None, op: str, status: str, ranges: list[tuple[int, int]], count: int
) -> list[Request] | None:
    """A record's requests; None when the record is not one ``bmap trace`` writes."""
    if op not in OP_CODE or not ranges or count < 0:
        return None
    if time is not None and not math.isfinite(time):
        time = None
    if any(not 0 <= start < end < _LIMIT for start, end in ranges):
        return None
    out = [
        Request(time, op, start, end - start, status, 0, 0, count if i == 0 else 0)
        for i, (start, end) in enumerate(ranges)
    ]
    return out


class RecordCsvParser(TraceParser):
    """``bmap trace -f csv`` output: a header line, then one record a line (a quoted path may
    hold line breaks: lines are joined until the quotes close)."""

    name = "bmap-csv"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return line.rstrip("\r\n") == CSV_HEADER

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""
        self._first = 0
        self.disks: set[int] = set()
        """The disks the records name (a trace is of one disk)."""

    def feed(self, number: int, line: str) -> list[Request]:
        if self._pending:
            line = self._pending + "\n" + line
        else:
            self._first = number
        if line.count('"') % 2:  # a quoted field goes on on the next line
            self._pending = line
            if len(line) > _MAX_PENDING:
                self._pending = ""
                self.skip(self._first, line)
            return []
        self._pending = ""
        if line.rstrip("\r") == CSV_HEADER or not line.strip():
            return []
        made = self._record(line.rstrip("\r"))
        if made is None:
            self.skip(self._first, line)
            return []
        return made

    def _record(self, line: str) -> list[Request] | None:
        try:
            fields = next(csv.reader([line], strict=True))
        except (csv.Error, StopIteration):
            return None
        if len(fields) != len(_COLUMNS):
            return None
        row = dict(zip(_COLUMNS, fields))
        time_text = row["time"]
        if not _COUNT.fullmatch(row["disk"]) or not _COUNT.fullmatch(row["requests"]):
            return None
        pairs = row["disk_ranges"].split()
        ranges = []
        for pair in pairs:
            m = _HEX_RANGE.fullmatch(pair)
            if not m:
                return None
            ranges.append((int(m[1], 16), int(m[2], 16)))
        self.disks.add(int(row["disk"]))
        try:
            time = float(time_text) if time_text else None
        except ValueError:
            return None
        return _requests(time, row["op"], row["status"], ranges, int(row["requests"]))

    def finish(self) -> list[Request]:
        if self._pending:
            self.skip(self._first, self._pending)
            self._pending = ""
        return []


class RecordJsonParser(TraceParser):
    """``bmap trace -f jsonl`` output: one JSON object a line."""

    name = "bmap-jsonl"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return line.startswith('{"time":') and '"disk_ranges":' in line

    def __init__(self) -> None:
        super().__init__()
        self.disks: set[int] = set()

    def feed(self, number: int, line: str) -> list[Request]:
        if not line.strip():
            return []
        made = self._record(line)
        if made is None:
            self.skip(number, line)
            return []
        return made

    def _record(self, line: str) -> list[Request] | None:
        if len(line) > _MAX_PENDING:
            return None
        try:
            row = json.loads(line, parse_int=_bounded_int, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return None
        if not isinstance(row, dict):
            return None
        time, op, status = row.get("time"), row.get("op"), row.get("status")
        disk, count, ranges = row.get("disk"), row.get("requests"), row.get("disk_ranges")
        if time is not None and not isinstance(time, (int, float)):
            return None
        if not isinstance(op, str) or not isinstance(status, str):
            return None
        if not isinstance(disk, int) or not isinstance(count, int) or not _is_int(count):
            return None
        if not _is_int(disk) or not isinstance(ranges, list):
            return None
        pairs = []
        for pair in ranges:
            if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_int, pair))):
                return None
            pairs.append((pair[0], pair[1]))
        self.disks.add(disk)
        return _requests(None if time is None else float(time), op, status, pairs, count)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_int(text: str) -> int:
    """A JSON integer of at most 19 digits (a longer one is no offset: the record is
    skipped, and Python's own limit on converting long numbers is never reached)."""
    if len(text.lstrip("-")) > 19:
        raise ValueError("integer too long")
    return int(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number")


_HEX_DIGITS = frozenset("0123456789abcdef")


def csv_columns(fh: IO[bytes]) -> tuple[Columns, set[int]] | None:
    """A whole ``bmap-csv`` file at once (pandas' C parser, then whole-column string work),
    every field checked as :class:`RecordCsvParser` checks it: the requests and the disks the
    records name; None when any record breaks a rule (the line parser then reads the file,
    and counts them)."""
    import numpy as np
    import pandas as pd

    if fh.readline().rstrip(b"\r\n") != CSV_HEADER.encode():
        return None
    wanted = ["time", "op", "status", "disk", "disk_ranges", "requests"]
    dtypes: dict[str, Any] = {c: object for c in wanted}
    dtypes.update(time="float64", disk="int64", requests="int64")
    try:
        frame = pd.read_csv(
            fh,
            header=None,
            names=_COLUMNS,
            usecols=wanted,
            dtype=dtypes,
            keep_default_na=False,
            na_values={"time": [""]},
        )
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    disk, count = frame["disk"].to_numpy(), frame["requests"].to_numpy()
    if len(frame) and not (
        (disk >= 0).all()
        and (disk < 10**18).all()
        and (count >= 0).all()
        and (count < 10**18).all()
    ):
        return None
    if frame[["op", "status", "disk_ranges"]].isna().any().any():
        return None  # a record of fewer fields
    if not frame["op"].isin(list(OP_CODE)).all():
        return None
    # Every record's ranges: "a-b c-d" -> tokens "a-b", "c-d" -> numbers a, b, c, d.
    ranges = frame["disk_ranges"].to_numpy(dtype=object)
    per_record = np.fromiter((r.count(" ") + 1 for r in ranges), np.int64, len(ranges))
    pairs = " ".join(ranges).split(" ") if len(ranges) else []
    if len(pairs) != per_record.sum() or not all(p.count("-") == 1 for p in pairs):
        return None
    numbers = "-".join(pairs).split("-") if pairs else []
    if numbers and (
        not set("".join(numbers)) <= _HEX_DIGITS
        or min(map(len, numbers)) < 1
        or max(map(len, numbers)) > 16
    ):
        return None
    values = np.fromiter(map(int, numbers, itertools.repeat(16)), np.uint64, len(numbers))
    start, end = values[0::2], values[1::2]
    if len(start) and not ((start < end) & (end < np.uint64(_LIMIT))).all():
        return None
    record = np.repeat(np.arange(len(frame)), per_record)
    first = np.concatenate(([True], record[1:] != record[:-1])) if len(record) else record
    seconds = frame["time"].to_numpy(dtype=float, copy=True)
    seconds[~np.isfinite(seconds)] = np.nan
    status, names = pd.factorize(frame["status"])
    columns = Columns(
        seconds[record],
        np.asarray(frame["op"].map(OP_CODE).to_numpy(), dtype=np.int64)[record],
        status.astype(np.int64)[record],
        [str(n) for n in names],
        start.astype(np.int64),
        (end - start).astype(np.int64),
        np.where(first, count[record], 0).astype(np.int64),
    )
    return columns, set(np.unique(disk).tolist())
