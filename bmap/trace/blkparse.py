"""blkparse's default text output: completion events, 512-byte sectors."""

from __future__ import annotations

import re

from bmap.trace.requests import Request, TraceParser, in_range

_BLKPARSE = re.compile(
    r"^\s*\d+,\d+\s+\d+\s+\d+\s+(?P<time>\d+\.\d+)\s+\d+\s+(?P<act>[A-Za-z])\s+"
    r"(?P<rwbs>[A-Z]+)\s+(?P<sector>\d{1,19})\s+\+\s+(?P<count>\d{1,19})(?!\d)"
    r"(?:\s+\[(?P<extra>[^\]]*)\])?"
)


class BlkparseParser(TraceParser):
    """blkparse's default output; completion (C) events count, the summary is skipped."""

    name = "blkparse"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return _BLKPARSE.match(line) is not None

    def __init__(self) -> None:
        super().__init__()
        self.in_summary = False

    def feed(self, number: int, line: str) -> list[Request]:
        if self.in_summary:
            return []
        m = _BLKPARSE.match(line)
        if not m:
            if line.startswith(("CPU", "Total", "Throughput", "Events")):
                self.in_summary = True
            elif line.strip():
                self.skip(number, line)
            return []
        if m["act"] != "C":
            return []
        rwbs = m["rwbs"]
        op = "trim" if "D" in rwbs else "write" if "W" in rwbs else "read" if "R" in rwbs else ""
        if not op:
            return []
        offset, length = int(m["sector"]) * 512, int(m["count"]) * 512
        if not in_range(offset, length):
            self.skip(number, line)
            return []
        extra = (m["extra"] or "0").strip()
        status = "ok" if extra in ("0", "") else f"failed:{extra}"
        return [
            Request(
                float(m["time"]),
                op,
                offset,
                length,
                status,
                0,
                number,
            )
        ]
