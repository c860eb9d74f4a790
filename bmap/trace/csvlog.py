"""Offsets and lengths as CSV: ``offset,length[,op[,time]]`` (decimal or ``0x`` hex), an
optional header line.
"""

from __future__ import annotations

import re

from bmap.trace.requests import OP_CODE, Request, TraceParser

_CSV = re.compile(
    r"^\s*(?P<offset>0x[0-9a-fA-F]+|\d+)\s*,\s*(?P<length>0x[0-9a-fA-F]+|\d+)"
    r"(?:\s*,\s*(?P<op>[A-Za-z]*))?(?:\s*,\s*(?P<time>[-+0-9.eE]+))?\s*$"
)


class CsvParser(TraceParser):
    name = "csv"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return _CSV.match(line) is not None

    def feed(self, number: int, line: str) -> list[Request]:
        m = _CSV.match(line)
        if not m:
            if number == 1 and "offset" in line.lower():
                return []  # a header
            if line.strip():
                self.skip(number, line)
            return []
        op = (m["op"] or "read").lower()
        if op not in OP_CODE:
            self.skip(number, line)
            return []
        time = float(m["time"]) if m["time"] else None
        return [Request(time, op, int(m["offset"], 0), int(m["length"], 0), "ok", 0, number)]
