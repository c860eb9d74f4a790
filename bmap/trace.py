"""Trace replay: name the objects behind every request of an I/O log.

Input formats (detected from the first lines that parse, or chosen):

- ``nbdkit``: the nbdkit ``log`` filter, both the format of nbdkit 1.24 and later and the
  older one; requests and completions are paired by (connection, id);
- ``qemu``: QEMU's ``blk_co_preadv`` / ``blk_co_pwritev`` trace events, with or without the
  ``pid@seconds:`` prefix;
- ``blkparse``: blkparse's default text output (completion events, 512-byte sectors);
- ``csv``: ``offset,length[,op[,time]]``.

Each request is split over the objects it touches; each piece is named by the innermost object
there (a file before its directory, per-file metadata before filesystem metadata, then the LV,
the partition, the disk), with the byte range inside that object. Consecutive pieces of the
same operation on the same object make one record, as virt-bmap's logger did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from bmap.index import MapIndex

OPS = ("read", "write", "trim", "zero", "cache")
OP_CODE = {op: i for i, op in enumerate(OPS)}
_NBDKIT_OPS = {"Read": "read", "Write": "write", "Trim": "trim", "Zero": "zero", "Cache": "cache"}


class Request(NamedTuple):
    """One request from a log, complete or not (a tuple: a log holds millions)."""

    time: float | None
    """Seconds since the epoch (UTC) where the log says, else None."""
    op: str
    offset: int
    length: int
    status: str = "ok"
    """``ok``, ``failed:EIO`` (and the like) or ``unfinished`` (no completion in the log)."""
    connection: int = 0
    line: int = 0


# --------------------------------------------------------------------------------------------
# Parsers: each turns lines into Requests, keeps what it cannot parse as a count.

_NBDKIT = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) (?:connection=(?P<conn>\d+) )?"
    r"(?P<leave>\.\.\.)?(?P<act>[A-Za-z]+)(?: id=(?P<id>\d+))?(?P<rest>.*)$"
)
_FIELD = re.compile(r"(\w+)=(0x[0-9a-fA-F]+|-?\d+)")
_ERROR = re.compile(r"error=(\w+)|\((E\w+|Other)[^)]*\)")
_QEMU = re.compile(
    r"^(?:\d+@(?P<time>\d+\.\d+):)?blk_co_(?P<op>preadv|pwritev)\s+blk\s+\S+\s+bs\s+\S+\s+"
    r"offset\s+(?P<offset>\d+)\s+bytes\s+(?P<bytes>\d+)"
)
_BLKPARSE = re.compile(
    r"^\s*\d+,\d+\s+\d+\s+\d+\s+(?P<time>\d+\.\d+)\s+\d+\s+(?P<act>[A-Za-z])\s+"
    r"(?P<rwbs>[A-Z]+)\s+(?P<sector>\d+)\s+\+\s+(?P<count>\d+)(?:\s+\[(?P<extra>[^\]]*)\])?"
)
_CSV = re.compile(
    r"^\s*(?P<offset>0x[0-9a-fA-F]+|\d+)\s*,\s*(?P<length>0x[0-9a-fA-F]+|\d+)"
    r"(?:\s*,\s*(?P<op>[A-Za-z]*))?(?:\s*,\s*(?P<time>[-+0-9.eE]+))?\s*$"
)


_SECONDS: dict[str, float] = {}


def _epoch(stamp: str) -> float:
    """``YYYY-MM-DD HH:MM:SS.uuuuuu`` (UTC) to seconds since the epoch; the whole-second part
    is cached, since a log has many lines per second."""
    whole = stamp[:19]
    base = _SECONDS.get(whole)
    if base is None:
        base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[whole] = base
    return base + int(stamp[20:26]) / 1e6


class TraceParser:
    """Base: feed lines, collect requests; ``unparsed`` counts lines of no known shape."""

    name = "?"

    def __init__(self) -> None:
        self.unparsed = 0
        self.first_unparsed: list[tuple[int, str]] = []

    def skip(self, number: int, line: str) -> None:
        self.unparsed += 1
        if len(self.first_unparsed) < 5:
            self.first_unparsed.append((number, line[:120]))

    def feed(self, number: int, line: str) -> list[Request]:
        raise NotImplementedError

    def finish(self) -> list[Request]:
        return []


class NbdkitParser(TraceParser):
    """nbdkit's log filter; ENTER and LEAVE lines paired by (connection, id)."""

    name = "nbdkit"

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[tuple[int, int], Request] = {}
        self.pending_columns: dict[str, Any] | None = None
        """Requests still waiting for their completion, from :func:`feed_nbdkit_text`."""

    def feed(self, number: int, line: str) -> list[Request]:
        fast = self._fast(number, line)
        if fast is not None:
            return fast
        m = _NBDKIT.match(line)
        if not m:
            self.skip(number, line)
            return []
        act = m["act"]
        if act not in _NBDKIT_OPS and act not in (
            "Flush",
            "Extents",
            "Connect",
            "Disconnect",
            "Ready",
            "Fork",
            "Preconnect",
            "ListExports",
        ):
            self.skip(number, line)
            return []
        op = _NBDKIT_OPS.get(act)
        if op is None or m["id"] is None:
            return []
        key = (int(m["conn"] or 0), int(m["id"]))
        if not m["leave"]:
            fields = dict(_FIELD.findall(m["rest"]))
            # A request line ends with " ..."; one that does not was cut short (the log's
            # last line while it is being written, or a damaged log).
            if "offset" not in fields or "count" not in fields or not m["rest"].endswith("..."):
                self.skip(number, line)
                return []
            self.pending[key] = Request(
                _epoch(m["date"]),
                op,
                int(fields["offset"], 0),
                int(fields["count"], 0),
                "unfinished",
                key[0],
                number,
            )
            return []
        request = self.pending.pop(key, None)
        if request is None:
            return []  # a completion whose request came before the log began
        fields = dict(_FIELD.findall(m["rest"]))
        ret = int(fields.get("return", "0"), 0)
        status = "ok"
        if ret != 0:
            err = _ERROR.search(m["rest"])
            status = f"failed:{(err.group(1) or err.group(2)) if err else 'error'}"
        return [
            Request(
                request.time,
                request.op,
                request.offset,
                request.length,
                status,
                request.connection,
                request.line,
            )
        ]

    def _fast(self, number: int, line: str) -> list[Request] | None:
        """The common lines of nbdkit 1.24+, split on spaces; None to take the slow path."""
        parts = line.split(" ")
        if len(parts) < 5 or not parts[2].startswith("connection="):
            return None
        act = parts[3]
        try:
            if act[0] == "." and len(parts) >= 6 and parts[5] == "return=0":
                op = _NBDKIT_OPS.get(act[3:])
                if op is None:
                    return None
                key = (int(parts[2][11:]), int(parts[4][3:]))
                request = self.pending.pop(key, None)
                if request is None:
                    return []
                return [
                    Request(
                        request.time,
                        request.op,
                        request.offset,
                        request.length,
                        "ok",
                        request.connection,
                        request.line,
                    )
                ]
            op = _NBDKIT_OPS.get(act)
            if op is None or parts[-1] != "..." or len(parts) < 8:
                return None
            if not (parts[5].startswith("offset=") and parts[6].startswith("count=")):
                return None
            conn = int(parts[2][11:])
            self.pending[(conn, int(parts[4][3:]))] = Request(
                _epoch(parts[0] + " " + parts[1]),
                op,
                int(parts[5][7:], 16),
                int(parts[6][6:], 16),
                "unfinished",
                conn,
                number,
            )
            return []
        except (ValueError, IndexError):
            return None

    def finish(self) -> list[Request]:
        self.unpack_columns()
        left = sorted(self.pending.values(), key=lambda r: r.line)
        self.pending.clear()
        return left

    def unpack_columns(self) -> None:
        """Move the requests waiting in columns into the line-by-line parser's dict."""
        cols = self.pending_columns
        if cols is not None and len(cols["key"]):
            for i in range(len(cols["key"])):
                conn, rid = int(cols["key"][i]) >> 32, int(cols["key"][i]) & 0xFFFFFFFF
                self.pending[(conn, rid)] = Request(
                    float(cols["time"][i]),
                    _OPS_ORDER[int(cols["op"][i])],
                    int(cols["offset"][i]),
                    int(cols["length"][i]),
                    "unfinished",
                    conn,
                    0,
                )
        self.pending_columns = None


# Whole-block patterns for nbdkit 1.24+: each starts with a literal, which the regular
# expression engine finds fast; a request line is taken with the newline that starts it.
_ENTER_RE = re.compile(
    r"\n(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) connection=(\d+) "
    r"(Read|Write|Trim|Zero|Cache) id=(\d+) offset=0x([0-9a-fA-F]+) count=0x([0-9a-fA-F]+)"
    r"[^\n]* \.\.\.(?=\n)"
)
_LEAVE_RE = re.compile(
    r" connection=(\d+) \.\.\.(?:Read|Write|Trim|Zero|Cache) id=(\d+) return=(-?\d+)"
    r"(?: error=(\w+))?"
)
_KNOWN_WITH_CONNECTION = (
    " Connect ",
    " Disconnect ",
    " Flush id=",
    " ...Flush id=",
    " Extents id=",
    " ...Extents id=",
)


@dataclass
class Columns:
    """Completed requests as columns, in completion order."""

    time: npt.NDArray[np.float64]
    op: list[str]
    status: list[str]
    offset: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.offset)


def feed_nbdkit_text(parser: NbdkitParser, text: str, first_number: int) -> Columns:
    """A block of whole lines of an nbdkit 1.24+ log, parsed by whole-block regular
    expressions and paired with numpy; a block holding any other kind of line (the old
    format, garbage, a line cut short) goes line by line through :meth:`NbdkitParser.feed`,
    which counts and reports what it cannot parse."""
    padded = "\n" + text
    lines = text.count("\n")
    enters = _ENTER_RE.findall(padded)
    leaves = _LEAVE_RE.findall(text)
    with_connection = text.count(" connection=")
    known = sum(text.count(k) for k in _KNOWN_WITH_CONNECTION)
    plain = lines - with_connection  # Ready, Fork, Preconnect, ListExports, or garbage
    regular = len(enters) + len(leaves) + known == with_connection
    if regular and plain:
        regular = all(
            _NBDKIT.match(line) is not None
            for line in text.split("\n")[:lines]
            if " connection=" not in line
        )
    if not regular or parser.pending:
        parser.unpack_columns()  # the line-by-line path pairs through its dict
        requests = []
        for number, line in enumerate(text.split("\n")[:lines], start=first_number):
            requests += parser.feed(number, line)
        return _columns(requests)
    n = len(enters)
    times = (
        np.array([e[0] for e in enters], dtype="datetime64[us]").astype(np.int64) / 1e6
        if n
        else np.zeros(0)
    )
    keys = (
        (np.array([e[1] for e in enters], dtype=np.int64) << 32)
        | np.array([e[3] for e in enters], dtype=np.int64)
        if n
        else np.zeros(0, dtype=np.int64)
    )
    fresh = {
        "key": keys,
        "time": times,
        "op": np.array([_OP_INDEX[e[2]] for e in enters], dtype=np.int64),
        "offset": np.array([int(e[4], 16) for e in enters], dtype=np.int64),
        "length": np.array([int(e[5], 16) for e in enters], dtype=np.int64),
    }
    old = parser.pending_columns
    table = fresh if old is None else {k: np.concatenate((old[k], fresh[k])) for k in fresh}
    leave_keys = (
        (np.array([x[0] for x in leaves], dtype=np.int64) << 32)
        | np.array([x[1] for x in leaves], dtype=np.int64)
        if leaves
        else np.zeros(0, dtype=np.int64)
    )
    order = np.argsort(table["key"], kind="stable")
    sorted_keys = table["key"][order]
    pos = np.minimum(np.searchsorted(sorted_keys, leave_keys), max(len(sorted_keys) - 1, 0))
    matched = (sorted_keys[pos] == leave_keys) if len(sorted_keys) else np.zeros(0, bool)
    hit = order[pos[matched]]
    used = np.zeros(len(table["key"]), dtype=bool)
    used[hit] = True
    parser.pending_columns = {k: v[~used] for k, v in table.items()}
    statuses = [
        "ok" if ret == "0" else f"failed:{err or 'error'}"
        for (_, _, ret, err), m in zip(leaves, matched.tolist())
        if m
    ]
    return Columns(
        table["time"][hit],
        [_OPS_ORDER[i] for i in table["op"][hit].tolist()],
        statuses,
        table["offset"][hit],
        table["length"][hit],
    )


_OPS_ORDER = list(_NBDKIT_OPS.values())
_OP_INDEX = {act: i for i, act in enumerate(_NBDKIT_OPS)}


def _columns(requests: list[Request]) -> Columns:
    return Columns(
        np.array([np.nan if r.time is None else r.time for r in requests], dtype=float),
        [r.op for r in requests],
        [r.status for r in requests],
        np.fromiter((r.offset for r in requests), dtype=np.int64, count=len(requests)),
        np.fromiter((r.length for r in requests), dtype=np.int64, count=len(requests)),
    )


class QemuParser(TraceParser):
    name = "qemu"

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


class BlkparseParser(TraceParser):
    """blkparse's default output; completion (C) events count, the summary is skipped."""

    name = "blkparse"

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
        extra = (m["extra"] or "0").strip()
        status = "ok" if extra in ("0", "") else f"failed:{extra}"
        return [
            Request(
                float(m["time"]),
                op,
                int(m["sector"]) * 512,
                int(m["count"]) * 512,
                status,
                0,
                number,
            )
        ]


class CsvParser(TraceParser):
    name = "csv"

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


PARSERS: dict[str, type[TraceParser]] = {
    "nbdkit": NbdkitParser,
    "qemu": QemuParser,
    "blkparse": BlkparseParser,
    "csv": CsvParser,
}


def detect_format(lines: Iterable[str]) -> str | None:
    """The first format whose pattern matches one of the lines."""
    for line in lines:
        if _NBDKIT.match(line) and re.search(r" (Read|Write|Connect|Ready|Trim|Zero)", line):
            return "nbdkit"
        if _QEMU.match(line.strip()):
            return "qemu"
        if _BLKPARSE.match(line):
            return "blkparse"
        if _CSV.match(line):
            return "csv"
    return None


def parse(lines: Iterable[str], fmt: str) -> tuple[list[Request], TraceParser]:
    parser = PARSERS[fmt]()
    out: list[Request] = []
    for number, line in enumerate(lines, start=1):
        out += parser.feed(number, line.rstrip("\n"))
    out += parser.finish()
    return out, parser


# --------------------------------------------------------------------------------------------
# Annotation


@dataclass
class Tiling:
    """The disk cut into runs, each named by its innermost line (-1: no line there)."""

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]


def innermost_tiling(frame: Any, disk: int) -> Tiling:
    """Cut ``disk`` at every line boundary and name each piece by its innermost line."""
    sel = frame[frame["disk"] == disk]
    bounds = np.unique(np.concatenate((sel["start"].to_numpy(), sel["end"].to_numpy())))
    if len(bounds) < 2:
        z = np.zeros(0, dtype=np.int64)
        return Tiling(z, z, z)
    starts, ends = bounds[:-1], bounds[1:]
    index = MapIndex.from_frame(frame)
    rows = index.innermost(disk, starts)
    # Neighbouring pieces with the same line are one run.
    new = np.concatenate(([True], (rows[1:] != rows[:-1]) | (starts[1:] != ends[:-1])))
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:], [len(starts)])) - 1
    return Tiling(starts[first], ends[last], rows[first])


@dataclass
class Record:
    """Consecutive pieces of one operation on one object."""

    time: float | None
    op: str
    status: str
    disk: int
    row: int
    """A line of the map naming the object (-1: nothing in the map)."""
    ranges: list[list[int]] = field(default_factory=list)
    """``[start, end)`` inside the object (or on the disk where the map has no offsets)."""
    disk_ranges: list[list[int]] = field(default_factory=list)
    bytes: int = 0
    requests: int = 0
    in_object: bool = True


@dataclass
class RecordBatch:
    """Records of one batch of requests, as columns (``range_first[i]:range_first[i + 1]``
    indexes record i's ranges)."""

    disk: int
    time: npt.NDArray[np.float64]
    op: npt.NDArray[np.int64]
    op_names: list[str]
    status: npt.NDArray[np.int64]
    status_names: list[str]
    row: npt.NDArray[np.int64]
    bytes: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]
    in_object: npt.NDArray[np.bool_]
    range_first: npt.NDArray[np.int64]
    range_start: npt.NDArray[np.int64]
    range_end: npt.NDArray[np.int64]
    disk_first: npt.NDArray[np.int64]
    disk_start: npt.NDArray[np.int64]
    disk_end: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.row)

    def records(self) -> Iterator[Record]:
        rs, re_, rf = self.range_start.tolist(), self.range_end.tolist(), self.range_first.tolist()
        ds, de, df = self.disk_start.tolist(), self.disk_end.tolist(), self.disk_first.tolist()
        times = self.time.tolist()
        for i, (op, status, row, nbytes, nreq, inside) in enumerate(
            zip(
                self.op.tolist(),
                self.status.tolist(),
                self.row.tolist(),
                self.bytes.tolist(),
                self.requests.tolist(),
                self.in_object.tolist(),
            )
        ):
            yield Record(
                None if times[i] != times[i] else times[i],
                self.op_names[op],
                self.status_names[status],
                self.disk,
                row,
                [[rs[j], re_[j]] for j in range(rf[i], rf[i + 1])],
                [[ds[j], de[j]] for j in range(df[i], df[i + 1])],
                nbytes,
                nreq,
                inside,
            )


class Annotator:
    """Names the pieces of requests against one map (a DataFrame from ``read_map``)."""

    def __init__(self, frame: Any, disk: int = 1) -> None:
        self.frame = frame
        self.disk = disk
        self.tiling = innermost_tiling(frame, disk)
        fo = frame["file_offset"]
        self.file_offset = fo.astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
        self.line_start = frame["start"].to_numpy(dtype=np.int64)
        keys = frame["type"] + "\0" + frame["device"] + "\0" + frame["kind"] + "\0" + frame["path"]
        codes, uniques = _factorize(keys.tolist())
        self.object_of = codes
        self.object_keys = uniques
        self.type_code = (
            frame["type"].map({t: i for i, t in enumerate("vpldfmu")}).to_numpy(dtype=np.int64)
        )
        self._columns = list(
            zip(
                frame["type"].tolist(),
                frame["device"].tolist(),
                frame["kind"].tolist(),
                frame["path"].tolist(),
            )
        )

    def records(self, requests: list[Request]) -> Iterator[Record]:
        """Coalesced records, one object each (convenient; :meth:`annotate` is the fast way)."""
        if not requests:
            return
        batch = self.annotate(
            np.array([np.nan if r.time is None else r.time for r in requests], dtype=float),
            [r.op for r in requests],
            [r.status for r in requests],
            np.fromiter((r.offset for r in requests), dtype=np.int64, count=len(requests)),
            np.fromiter((r.length for r in requests), dtype=np.int64, count=len(requests)),
        )
        yield from batch.records()

    def annotate(
        self,
        times: npt.NDArray[np.float64],
        ops: list[str],
        statuses: list[str],
        offs: npt.NDArray[np.int64],
        lens: npt.NDArray[np.int64],
    ) -> RecordBatch:
        """Coalesced records of a whole batch of requests, as columns.

        Each request is cut at the tiling's boundaries (one ``searchsorted`` pair for all of
        them); consecutive pieces with the same operation, status and object form a record.
        """
        t = self.tiling
        ends = offs + np.maximum(lens, 1)
        # The tiling with an empty run before and after it covers every offset.
        top = np.iinfo(np.int64).max
        first = int(t.start[0]) if len(t.start) else 0
        last = int(t.end[-1]) if len(t.end) else 0
        tile_start = np.concatenate(([0], t.start, [last]))
        tile_end = np.concatenate(([first], t.end, [top]))
        tile_row = np.concatenate(([-1], t.row, [-1]))
        lo = np.searchsorted(tile_end, offs, side="right")
        hi = np.searchsorted(tile_start, ends, side="left")
        count = np.maximum(hi - lo, 1)
        req = np.repeat(np.arange(len(offs)), count)
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        k = np.minimum(np.repeat(lo, count) + within, len(tile_row) - 1)
        p_start = np.maximum(tile_start[k], offs[req])
        p_end = np.minimum(tile_end[k], ends[req])
        row = tile_row[k]
        safe = np.maximum(row, 0)
        obj = np.where(row >= 0, self.object_of[safe], -1)
        fo = np.where(row >= 0, self.file_offset[safe], -1)
        # Disks, partitions, LVs, files and directories have offsets of their own; unused
        # space has none, and is given in disk offsets without a note.
        inside = fo >= 0
        needs_offset = np.isin(self.type_code[safe], [0, 1, 2, 3, 4]) & (row >= 0)
        in_start = np.where(inside, fo + p_start - self.line_start[safe], p_start)
        in_end = in_start + (p_end - p_start)
        op_code, op_names = _factorize(ops)
        status_code, status_names = _factorize(statuses)
        key_op = op_code[req]
        key_status = status_code[req]
        new = np.ones(len(req), dtype=bool)
        new[1:] = (
            (key_op[1:] != key_op[:-1])
            | (key_status[1:] != key_status[:-1])
            | (obj[1:] != obj[:-1])
        )
        group_start = np.flatnonzero(new)
        new_request = np.ones(len(req), dtype=bool)
        new_request[1:] = req[1:] != req[:-1]
        new_request |= new
        joins = np.zeros(len(req), dtype=bool)
        joins[1:] = ~new[1:] & (in_start[1:] == in_end[:-1])
        disk_joins = np.zeros(len(req), dtype=bool)
        disk_joins[1:] = ~new[1:] & (p_start[1:] == p_end[:-1])
        heads = np.flatnonzero(~joins)
        disk_heads = np.flatnonzero(~disk_joins)
        first_req = req[group_start]
        return RecordBatch(
            disk=self.disk,
            time=times[first_req],
            op=op_code[first_req],
            op_names=op_names,
            status=status_code[first_req],
            status_names=status_names,
            row=row[group_start],
            bytes=np.add.reduceat(p_end - p_start, group_start),
            requests=np.add.reduceat(new_request.astype(np.int64), group_start),
            in_object=np.logical_and.reduceat(inside | ~needs_offset, group_start),
            range_first=np.append(np.searchsorted(heads, group_start), len(heads)),
            range_start=in_start[heads],
            range_end=in_end[np.append(heads[1:], len(req)) - 1],
            disk_first=np.append(np.searchsorted(disk_heads, group_start), len(disk_heads)),
            disk_start=p_start[disk_heads],
            disk_end=p_end[np.append(disk_heads[1:], len(req)) - 1],
        )

    def describe(self, row: int) -> tuple[str, str, str, str]:
        """``(type, device, kind, path)`` of a line of the map (empty strings for -1)."""
        if row < 0:
            return ("", "", "", "")
        return self._columns[row]


def _factorize(values: list[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    seen: dict[str, int] = {}
    codes = np.fromiter(
        (seen.setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values)
    )
    return codes, list(seen)


# --------------------------------------------------------------------------------------------
# Following a growing log


def follow_lines(path: str, stop: Any = None, poll: float = 0.05) -> Iterator[str | None]:
    """Lines of a log as it grows, like ``tail -f``; ``None`` whenever no more is there yet
    (the caller flushes then). Survives the file being truncated (read again from its start)
    or replaced (the new file is read from its start); a line is yielded only once its newline
    has been written. Ends when ``stop()`` says so and everything written was read.
    """
    import os
    import time as _time

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
