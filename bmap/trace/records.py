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
2**63, counts at most 18 decimal digits; a record that breaks a rule is skipped, and counted
as a line of no known format.
"""

from __future__ import annotations

import csv
import json
import math
import re
from typing import Any

from bmap.trace.requests import OP_CODE, Request, TraceParser

#: The record columns of ``bmap trace -f csv`` (:data:`bmap.trace.output.RECORD_COLUMNS`).
CSV_HEADER = "time,op,status,disk,type,device,kind,path,ranges,disk_ranges,bytes,requests"
_COLUMNS = CSV_HEADER.split(",")
_HEX_RANGE = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16})")
_TIME = re.compile(r"-?\d{1,12}(\.\d{1,9})?")
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
        if time_text and not _TIME.fullmatch(time_text):
            return None
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
        time = float(time_text) if time_text else None
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
