"""QEMU's ``blk_co_preadv`` / ``blk_co_pwritev`` trace events, with or without the
``pid@seconds:`` prefix.
"""

from __future__ import annotations

import re

from bmap.trace.requests import Request, TraceParser

_QEMU = re.compile(
    r"^(?:\d+@(?P<time>\d+\.\d+):)?blk_co_(?P<op>preadv|pwritev)\s+blk\s+\S+\s+bs\s+\S+\s+"
    r"offset\s+(?P<offset>\d+)\s+bytes\s+(?P<bytes>\d+)"
)


class QemuParser(TraceParser):
    name = "qemu"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return _QEMU.match(line.strip()) is not None

    def feed(self, number: int, line: str) -> list[Request]:
        m = _QEMU.match(line.strip())
        if not m:
            if "blk_co_" in line or not line.strip():
                return []
            self.skip(number, line)
            return []
        op = "read" if m["op"] == "preadv" else "write"
        time = float(m["time"]) if m["time"] else None
        return [Request(time, op, int(m["offset"]), int(m["bytes"]), "ok", 0, number)]
