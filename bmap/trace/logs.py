"""I/O logs to requests: the table of log formats, format detection, and following a
growing log.

- ``nbdkit``: the nbdkit ``log`` filter (:mod:`~bmap.trace.nbdkit`);
- ``qemu``: QEMU's block trace events (:mod:`~bmap.trace.qemu`);
- ``blkparse``: blkparse's default text output (:mod:`~bmap.trace.blkparse`);
- ``csv``: ``offset,length[,op[,time]]`` (:mod:`~bmap.trace.csvlog`);
- ``bmap-csv``, ``bmap-jsonl``: ``bmap trace``'s own output, read back
  (:mod:`~bmap.trace.records`).

Adding a format: a module with a :class:`~bmap.trace.requests.TraceParser` subclass
(``feed``, ``recognises``), and one line in :data:`LOG_FORMATS`, at the place where format
detection should ask it.
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Generator, Iterable
from typing import Any

from bmap.trace.blkparse import BlkparseParser
from bmap.trace.csvlog import CsvParser
from bmap.trace.nbdkit import NbdkitParser
from bmap.trace.qemu import QemuParser
from bmap.trace.records import RecordCsvParser, RecordJsonParser
from bmap.trace.requests import Request, TraceParser

#: Format name -> its parser; detection asks them in this order, line by line.
LOG_FORMATS: dict[str, type[TraceParser]] = {
    "bmap-csv": RecordCsvParser,
    "bmap-jsonl": RecordJsonParser,
    "nbdkit": NbdkitParser,
    "qemu": QemuParser,
    "blkparse": BlkparseParser,
    "csv": CsvParser,
}


def detect_format(lines: Iterable[str]) -> str | None:
    """The first format that recognises one of the lines (the first line any format
    recognises decides)."""
    for line in lines:
        for name, parser in LOG_FORMATS.items():
            if parser.recognises(line):
                return name
    return None


def parse(lines: Iterable[str], fmt: str) -> tuple[list[Request], TraceParser]:
    """Every request of ``lines`` (completed ones in completion order, then the unfinished),
    and the parser, which counted what it could not parse."""
    parser = LOG_FORMATS[fmt]()
    out: list[Request] = []
    for number, line in enumerate(lines, start=1):
        out += parser.feed(number, line.rstrip("\n"))
    out += parser.finish()
    return out, parser


# --------------------------------------------------------------------------------------------
# Following a growing log


def follow_lines(
    path: str, stop: Any = None, poll: float = 0.05
) -> Generator[str | None, None, None]:
    """Lines of a log as it grows, like ``tail -f``; ``None`` whenever no more is there yet
    (the caller flushes then). Survives the file being truncated (read again from its start)
    or replaced (the new file is read from its start); a line is yielded only once its newline
    has been written. Ends when ``stop()`` says so and everything written was read.
    """
    handle = None
    inode = None
    partial = ""
    while True:
        if handle is None:
            try:
                handle = open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
                partial = ""
            except FileNotFoundError:
                if stop is not None and stop():
                    return
                yield None
                _time.sleep(poll)
                continue
        chunk = handle.read(1 << 16)
        if chunk:
            partial += chunk
            *complete, partial = partial.split("\n")
            yield from complete
            continue
        # At the end: truncated, replaced, or just not written yet?
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_ino != inode:
            handle.close()
            handle = None
            continue
        if st is not None and st.st_size < handle.tell():
            handle.seek(0)
            partial = ""
            continue
        if stop is not None and stop():
            handle.close()
            return
        yield None
        _time.sleep(poll)
