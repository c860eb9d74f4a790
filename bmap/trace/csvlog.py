"""Offsets and lengths as CSV: ``offset,length[,op[,time]]`` (decimal or ``0x`` hex), an
optional header line.
"""

from __future__ import annotations

import re

from bmap.trace.requests import OP_CODE, Request, TraceParser, in_range, parse_int

_NUMBER = r"0x[0-9a-fA-F]{1,16}|\d{1,19}"  # 64 bits at most: a longer one is no line of ours
_CSV = re.compile(
    rf"^\s*(?P<offset>{_NUMBER})\s*,\s*(?P<length>{_NUMBER})"
    r"(?:\s*,\s*(?P<op>[A-Za-z]*))?(?:\s*,\s*(?P<time>[-+0-9.eE]{1,40}))?\s*$"
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
        try:
            time = float(m["time"]) if m["time"] else None
        except ValueError:  # "1.2.3", "e": the pattern lets them by
            self.skip(number, line)
            return []
        offset, length = parse_int(m["offset"]), parse_int(m["length"])
        if not in_range(offset, length):
            self.skip(number, line)
            return []
        return [Request(time, op, offset, length, "ok", 0, number)]
