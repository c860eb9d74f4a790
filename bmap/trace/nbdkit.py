"""nbdkit's log filter (``--filter=log``): both the format of nbdkit 1.24 and later and the
older one; requests and completions are paired by (connection, id).

A log read from a file goes through :meth:`NbdkitParser.feed_block`: a block of whole lines is
scanned with numpy (:mod:`bmap.trace.nbdkitscan`; the lines of nbdkit 1.24+ have a fixed
grammar, see ``filters/log/output.c``), and any line the scan is not sure of is decided by the
line-by-line code, so that both paths give the same requests, in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, NamedTuple

import numpy as np
import numpy.typing as npt

from bmap.errors import MapFormatError
from bmap.trace.nbdkitscan import Scan, days_from_civil, scan
from bmap.trace.requests import (
    OP_CODE,
    OPS,
    Columns,
    Int,
    Request,
    TraceParser,
    in_range,
    parse_int,
)

_NBDKIT_OPS = {"Read": "read", "Write": "write", "Trim": "trim", "Zero": "zero", "Cache": "cache"}
_NBDKIT_OTHER = (
    "Flush",
    "Extents",
    "Connect",
    "Disconnect",
    "Ready",
    "Fork",
    "Preconnect",
    "ListExports",
)

_NBDKIT = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) (?:connection=(?P<conn>\d{1,18}) )?"
    r"(?P<leave>\.\.\.)?(?P<act>[A-Za-z]+)(?: id=(?P<id>\d{1,18})(?!\w))?(?P<rest>.*)$"
)
#: ``name=number``; a number of more digits than 64 bits take is no number (the field is then
#: missing, and the line garbage): never converted, whatever its length.
_FIELD = re.compile(r"(\w+)=(0x[0-9a-fA-F]{1,16}|-?\d{1,19})(?!\w)")
#: What makes a line of nbdkit's grammar an nbdkit log line for format detection.
_DETECT = re.compile(r" (Read|Write|Connect|Ready|Trim|Zero)")
_ERROR = re.compile(r"error=(\w+)|\((E\w+|Other)[^)]*\)")


def _stamp_micros(stamp: str) -> int | None:
    """``YYYY-MM-DD HH:MM:SS.uuuuuu`` (UTC) to microseconds since the epoch; None when a
    field is out of range. A day past the end of its month rolls over, as timegm does."""
    year, month, day = int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10])
    hour, minute, second = int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    days = days_from_civil(year, month, day)
    return (days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000 + int(stamp[20:26])


class _Line(NamedTuple):
    """What one nbdkit log line is: ``garbage``, ``other`` (a line of no request: Connect,
    Flush, ...), ``enter`` (a request) or ``leave`` (its completion)."""

    kind: str
    key: tuple[int, int] = (0, 0)
    request: Request | None = None
    status: str = ""


_WORD = re.compile(r"\w+", re.ASCII)
_GARBAGE = _Line("garbage")
_OTHER = _Line("other")


class NbdkitParser(TraceParser):
    """nbdkit's log filter; ENTER and LEAVE lines paired by (connection, id).

    A request whose (connection, id) comes again before its completion is superseded: it is
    reported as ``unfinished`` at the end, and the completion belongs to the newer request.
    """

    name = "nbdkit"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return bool(_NBDKIT.match(line)) and _DETECT.search(line) is not None

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[tuple[int, int], Request] = {}
        self.superseded: list[Request] = []
        self._columns: _Pending | None = None
        """Requests still waiting for their completion, from :meth:`feed_block`."""

    def classify(self, number: int, line: str) -> _Line:
        m = _NBDKIT.match(line)
        if not m:
            return _GARBAGE
        act = m["act"]
        op = _NBDKIT_OPS.get(act)
        if op is None and act not in _NBDKIT_OTHER:
            return _GARBAGE
        if op is None or m["id"] is None:
            return _OTHER
        key = (int(m["conn"] or 0), int(m["id"]))
        rest = m["rest"]
        if not m["leave"]:
            fields = dict(_FIELD.findall(rest))
            # A request line ends with " ..."; one that does not was cut short (the log's
            # last line while it is being written, or a damaged log).
            if "offset" not in fields or "count" not in fields or not rest.endswith("..."):
                return _GARBAGE
            micros = _stamp_micros(m["date"])
            offset, count = parse_int(fields["offset"]), parse_int(fields["count"])
            # Offsets and counts are 64-bit in NBD; bmap keeps them as int64, so anything at
            # or above 2**63 cannot be a real request of a disk image.
            if micros is None or not in_range(offset, count):
                return _GARBAGE
            request = Request(
                micros / 1e6,
                op,
                offset,
                count,
                "unfinished",
                key[0],
                number,
            )
            return _Line("enter", key, request)
        ret = parse_int(dict(_FIELD.findall(rest)).get("return", "0"))
        status = "ok"
        if ret != 0:
            err = _ERROR.search(rest)
            status = f"failed:{(err.group(1) or err.group(2)) if err else 'error'}"
        return _Line("leave", key, status=status)

    def feed(self, number: int, line: str) -> list[Request]:
        if self._columns is not None:
            self._unpack_columns()
        parsed = self.classify(number, line)
        if parsed.kind == "garbage":
            self.skip(number, line)
            return []
        if parsed.kind == "enter":
            assert parsed.request is not None
            self._wait(parsed.key, parsed.request)
            return []
        if parsed.kind == "leave":
            request = self.pending.pop(parsed.key, None)
            if request is None:
                return []  # a completion whose request came before the log began
            return [request._replace(status=parsed.status)]
        return []

    def _wait(self, key: tuple[int, int], request: Request) -> None:
        """``request`` waits for its completion; one waiting under the same key is
        superseded (reported unfinished at the end)."""
        older = self.pending.get(key)
        if older is not None:
            self.superseded.append(older)
        self.pending[key] = request

    def finish(self) -> list[Request]:
        if self._columns is not None:
            self._unpack_columns()
        left = sorted([*self.superseded, *self.pending.values()], key=lambda r: r.line)
        self.pending.clear()
        self.superseded.clear()
        return left

    # -- a block at a time ---------------------------------------------------------------

    def feed_block(self, data: bytes, first_number: int) -> Columns:
        """The requests completed in ``data``, a block of whole lines (each ending in a
        newline) whose first line is line ``first_number`` of the log.

        The block is scanned with numpy; a line the scan does not recognise is classified
        by :meth:`classify`: garbage is counted as usual, and if it is anything else (the
        older log format, a hand-edited line) the whole block goes line by line.
        """
        found = scan(data)
        if found is None or not self._pack_pending():
            return self._feed_lines(data, first_number)
        texts = [data[a:b].decode("utf-8", "replace") for a, b in found.irregular.tolist()]
        numbers = (found.irregular_line + first_number).tolist()
        kinds = [self.classify(n, t).kind for n, t in zip(numbers, texts)]
        if any(k != "garbage" and k != "other" for k in kinds):
            return self._feed_lines(data, first_number)
        statuses = ["ok"]
        status = np.zeros(len(found.leave_key), dtype=np.int64)
        failed = np.flatnonzero(found.leave_return != 0)
        for i, (a, b) in zip(failed.tolist(), found.leave_error):
            # classify()'s rule: a non-zero return is a failure, named by error= if any; an
            # error name that is not a plain word goes line by line, as classify() sees it.
            name = data[a:b].decode("ascii", "replace") if b else "error"
            if not _WORD.fullmatch(name):
                return self._feed_lines(data, first_number)
            if f"failed:{name}" not in statuses:
                statuses.append(f"failed:{name}")
            status[i] = statuses.index(f"failed:{name}")
        for n, t, k in zip(numbers, texts, kinds):
            if k == "garbage":
                self.skip(n, t)
        return self._pair(found, first_number, status, statuses)

    def _feed_lines(self, data: bytes, first_number: int) -> Columns:
        text = data.decode("utf-8", "replace")
        requests: list[Request] = []
        for number, line in enumerate(text.split("\n")[: text.count("\n")], start=first_number):
            requests += self.feed(number, line)
        return Columns.of(requests)

    def _pair(
        self, scan: Scan, first_number: int, leave_status: Int, status_names: list[str]
    ) -> Columns:
        """Pair this block's completions with the requests of this block and of earlier
        ones: a completion belongs to the request just before it with the same key."""
        old = self._columns or _Pending.empty()
        fresh = _Pending(
            scan.enter_key,
            scan.enter_micros / 1e6,
            scan.enter_op,
            scan.enter_offset,
            scan.enter_length,
            scan.enter_line + first_number,
        )
        table = _Pending.concat(old, fresh)
        n_req = len(table.key)
        keys = np.concatenate((table.key, scan.leave_key))
        # Requests waiting from earlier blocks come first, in the order they were made.
        position = np.concatenate(
            (
                np.arange(-len(old.key), 0, dtype=np.int64),
                scan.enter_line,
                scan.leave_line,
            )
        )
        order = np.lexsort((position, keys))
        is_leave = order >= n_req
        sorted_keys = keys[order]
        match = np.zeros(len(order), dtype=bool)
        match[1:] = is_leave[1:] & ~is_leave[:-1] & (sorted_keys[1:] == sorted_keys[:-1])
        leave_index = order[match] - n_req
        request_index = order[np.flatnonzero(match) - 1]
        # In completion order.
        by_leave = np.argsort(leave_index, kind="stable")
        leave_index, request_index = leave_index[by_leave], request_index[by_leave]
        used = np.zeros(n_req, dtype=bool)
        used[request_index] = True
        self._columns = table.select(~used)
        return Columns(
            table.time[request_index],
            table.op[request_index],
            leave_status[leave_index],
            status_names,
            table.offset[request_index],
            table.length[request_index],
        )

    def _pack_pending(self) -> bool:
        """Move the line-by-line parser's waiting requests into columns, oldest first;
        False if a key does not fit the columns' 64 bits (the caller goes line by line)."""
        if not self.pending:
            return True
        if any(c >= 1 << 31 or i >= 1 << 32 for c, i in self.pending):
            return False
        waiting = sorted(self.pending.items(), key=lambda kv: kv[1].line)
        self.pending.clear()
        packed = _Pending(
            np.array([(c << 32) | i for (c, i), _ in waiting], dtype=np.int64),
            np.array([np.nan if r.time is None else r.time for _, r in waiting], dtype=float),
            np.array([OP_CODE[r.op] for _, r in waiting], dtype=np.int64),
            np.array([r.offset for _, r in waiting], dtype=np.int64),
            np.array([r.length for _, r in waiting], dtype=np.int64),
            np.array([r.line for _, r in waiting], dtype=np.int64),
        )
        self._columns = packed if self._columns is None else _Pending.concat(self._columns, packed)
        return True

    def _unpack_columns(self) -> None:
        """Move the requests waiting in columns into the line-by-line parser's dict."""
        cols = self._columns
        self._columns = None
        if cols is None:
            return
        for key, seconds, op, offset, length, line in zip(
            cols.key.tolist(),
            cols.time.tolist(),
            cols.op.tolist(),
            cols.offset.tolist(),
            cols.length.tolist(),
            cols.line.tolist(),
        ):
            time = None if seconds != seconds else seconds
            request = Request(time, OPS[op], offset, length, "unfinished", key >> 32, line)
            self._wait((key >> 32, key & 0xFFFFFFFF), request)


@dataclass
class _Pending:
    """Requests waiting for their completion, as columns; key = connection << 32 | id."""

    key: Int
    time: npt.NDArray[np.float64]
    op: Int
    offset: Int
    length: Int
    line: Int

    @classmethod
    def empty(cls) -> _Pending:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros(0), z, z, z, z)

    @classmethod
    def concat(cls, a: _Pending, b: _Pending) -> _Pending:
        return cls(
            *(
                np.concatenate((getattr(a, f), getattr(b, f)))
                for f in ("key", "time", "op", "offset", "length", "line")
            )
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> _Pending:
        return _Pending(
            self.key[mask],
            self.time[mask],
            self.op[mask],
            self.offset[mask],
            self.length[mask],
            self.line[mask],
        )


# --------------------------------------------------------------------------------------------
# Reading a whole log file

LOG_BLOCK = 2 << 20
"""Bytes of an nbdkit log scanned at once."""
MAX_LINE = 128 << 20
"""A longer line means the file is no log (and is not read into memory whole)."""


def nbdkit_log_columns(fh: IO[bytes], parser: NbdkitParser, name: str) -> Iterator[Columns]:
    """The requests of an nbdkit log read from ``fh`` (closed at the end), a block of whole
    lines at a time, in completion order; the unfinished ones last.

    Raises:
        MapFormatError: a line longer than 128 MiB (this is no log).
    """
    with fh:
        yield from _log_blocks(fh, parser, name)


def _log_blocks(fh: IO[bytes], parser: NbdkitParser, name: str) -> Iterator[Columns]:
    number = 1
    carry: list[bytes] = []  # the start of a line not yet ended, in parts (joined once)
    carried = 0
    while True:
        block = fh.read(LOG_BLOCK)
        if not block:
            break
        cut = block.rfind(b"\n") + 1
        if not cut:
            carry.append(block)
            carried += len(block)
            if carried > MAX_LINE:
                raise MapFormatError(f"{name}: a line longer than 128 MiB; not a log")
            continue
        data = b"".join([*carry, block[:cut]]) if carry else block[:cut]
        carry, carried = [block[cut:]], len(block) - cut
        yield parser.feed_block(data, number)
        number += data.count(b"\n")
    # The last line, with no newline: complete only if nbdkit finished writing it.
    rest = b"".join(carry)
    last = parser.feed(number, rest.decode("utf-8", "replace")) if rest else []
    yield Columns.of(last + parser.finish())
