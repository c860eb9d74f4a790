"""QEMU's ``blk_co_preadv`` / ``blk_co_pwritev`` trace events, with or without the
``pid@seconds:`` prefix.
"""

from __future__ import annotations

import re

from bmap.trace.requests import Request, TraceParser, in_range

_QEMU = re.compile(
    r"^(?:\d+@(?P<time>\d+\.\d+):)?blk_co_(?P<op>preadv|pwritev)\s+blk\s+\S+\s+bs\s+\S+\s+"
    r"offset\s+(?P<offset>\d{1,19})\s+bytes\s+(?P<bytes>\d{1,19})(?!\d)"
)


class QemuParser(TraceParser):
    name = "qemu"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return _QEMU.match(line.strip()) is not None

    def feed(self, number: int, line: str) -> list[Request]:
        m = _QEMU.match(line.strip())
        if not m:
            if not line.strip() or ("blk_co_" in line and "blk_co_p" not in line):
                return []  # another block event (flush, ...): not a read or a write
            self.skip(number, line)
            return []
        op = "read" if m["op"] == "preadv" else "write"
        time = float(m["time"]) if m["time"] else None
        offset, length = int(m["offset"]), int(m["bytes"])
        if not in_range(offset, length):
            self.skip(number, line)
            return []
        return [Request(time, op, offset, length, "ok", 0, number)]
