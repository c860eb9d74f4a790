"""The nbdkit block scanner against the line-by-line parser: the same requests, in the same
order, the same unfinished ones and the same count of unparsed lines, for any log and any way
of cutting it into blocks. Plus known values for the numbers the scanner reads itself."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.trace.logs import parse
from bmap.trace.nbdkit import NbdkitParser
from bmap.trace.nbdkitscan import _Block, scan
from bmap.trace.requests import OPS, Columns

FLAGS = {
    "Read": "",
    "Cache": "",
    "Write": " fua=0",
    "Trim": " fua=1",
    "Zero": " trim=1 fua=0 fast=0",
}

stamp = st.builds(
    lambda y, mo, d, h, mi, s, us: f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{us:06d}",
    st.sampled_from([1970, 2000, 2024, 2026, 9999]),
    st.sampled_from([1, 2, 12, 13, 0]),  # 13 and 0: out of range
    st.sampled_from([1, 28, 29, 30, 31, 32]),
    st.sampled_from([0, 23, 24]),
    st.sampled_from([0, 59, 60]),
    st.sampled_from([0, 59, 60, 61]),
    st.integers(0, 999_999),
)
hex_number = st.one_of(
    st.integers(0, 2**40).map(lambda v: f"0x{v:x}"),
    st.integers(0, 2**64 - 1).map(lambda v: f"0x{v:x}"),  # 16 digits: may not fit an int64
    st.integers(0, 2**20).map(lambda v: f"0x{v:X}"),  # upper case
    st.sampled_from(["0x", "0x0", "0x00000000000000001", "0xg1", "12"]),
    # past int64 together with a count, and of thousands of digits
    st.sampled_from(["0x7fffffffffffff00", "0x" + "f" * 40, "0x" + "9" * 5000]),
)
decimal = st.one_of(
    st.integers(0, 5).map(str),
    st.sampled_from(["01", "007", "", "x", "4294967296", "99999999999", "2147483648"]),
    st.sampled_from(["9" * 19, "9" * 20, "1" * 5000]),
)


@st.composite
def request_line(draw):
    op = draw(st.sampled_from(list(FLAGS)))
    flags = FLAGS[op] if draw(st.integers(0, 9)) else " fua=0 extra=1"
    end = draw(st.sampled_from([" ...", " ...", " ...", "", " ..", " ...x"]))
    return (
        f"{draw(stamp)} connection={draw(decimal)} {op} id={draw(decimal)} "
        f"offset={draw(hex_number)} count={draw(hex_number)}{flags}{end}"
    )


@st.composite
def completion_line(draw):
    op = draw(st.sampled_from(list(FLAGS)))
    ret = draw(st.sampled_from(["0", "0", "0", "-1", "1", "01", "-", "x"]))
    error = draw(st.sampled_from(["", "", " error=EIO", " error=ENOSPC", " error=E-X", " (EIO)"]))
    return (
        f"{draw(stamp)} connection={draw(decimal)} ...{op} id={draw(decimal)} return={ret}{error}"
    )


other_line = st.builds(
    lambda t, line: f"{t} {line}",
    stamp,
    st.sampled_from(
        [
            "Ready thread_model=3",
            "Fork",
            "Preconnect id=1 readonly=0 ...",
            "...Preconnect id=1 return=0",
            "ListExports id=1 readonly=0 tls=0 ...",
            '...ListExports id=1 exports=("") return=0',
            'connection=1 Connect export="" tls=0 size=0x400 write=1',
            "connection=2 Disconnect transactions=3",
            "connection=1 Flush id=5 ...",
            "connection=1 ...Flush id=5 return=0",
            "connection=1 Extents id=6 offset=0x0 count=0xa00000 req_one=0 ...",
            'connection=1 ...Extents id=6 extents=(0x0 0x200000 "") return=0',
            "connection=1 ...Read id=1 return=0 (Success)",  # the older format
            "connection=1 ...Read id=2 return=-1 (EIO)",
            "connection=1 Bogus id=1 ...",
            "connection=x Read id=1 offset=0x0 count=0x1 ...",
            "Reads",
            "",
        ]
    ),
)
garbage = st.one_of(
    st.sampled_from([b"", b"hello", b"2024-05-01", b"\t", b"connection=1 Read id=1 ..."]),
    st.sampled_from(["é" * 30, "2024-05-01 10:00:00.\u0661\u0662\u0663456 Ready"]).map(str.encode),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),  # invalid UTF-8 too
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=80).map(
        str.encode
    ),
)


@st.composite
def mutated_line(draw):
    """A valid request or completion with one space or its end changed to a control byte
    (a tab, a carriage return, ...): the scanner must leave it to the line parser."""
    line = draw(st.one_of(request_line(), completion_line())).encode()
    spaces = [i for i, c in enumerate(line) if c == 32]
    byte = draw(st.sampled_from([9, 13, 11, 12, 0, 31, 127]))
    if draw(st.booleans()) and spaces:
        i = draw(st.sampled_from(spaces))
        return line[:i] + bytes([byte]) + line[i + 1 :]
    return line + bytes([byte])


log_line = st.one_of(
    mutated_line(),
    *(s.map(str.encode) for s in (request_line(), request_line(), completion_line())),
    completion_line().map(str.encode),
    other_line.map(str.encode),
    garbage,
)


def _by_blocks(data: bytes, cuts: list[int]) -> tuple[list[tuple], NbdkitParser]:
    parser = NbdkitParser()
    lines = data.split(b"\n")[:-1]
    bounds = sorted({min(c, len(lines)) for c in cuts} | {0, len(lines)})
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        block = b"".join(line + b"\n" for line in lines[lo:hi])
        parts.append(parser.feed_block(block, lo + 1))
    parts.append(Columns.of(parser.finish()))
    got = Columns.concat(parts)
    return _rows(got), parser


def _rows(columns: Columns) -> list[tuple]:
    return [
        (
            None if math.isnan(t) else t,
            OPS[op],
            off,
            length,
            columns.status_names[s],
        )
        for t, op, s, off, length in zip(
            columns.time.tolist(),
            columns.op.tolist(),
            columns.status.tolist(),
            columns.offset.tolist(),
            columns.length.tolist(),
        )
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_line, max_size=60), st.lists(st.integers(0, 60), max_size=6))
def test_block_scanner_equals_line_parser(lines, cuts):
    data = b"".join(line + b"\n" for line in lines)
    # The line parser reads the log as the CLI does: UTF-8, bad bytes replaced.
    text = data.decode("utf-8", "replace")
    requests, line_parser = parse(text.split("\n")[:-1], "nbdkit")
    want = [(r.time, r.op, r.offset, r.length, r.status) for r in requests]
    got, block_parser = _by_blocks(data, cuts)
    assert got == want
    assert block_parser.unparsed == line_parser.unparsed
    assert block_parser.first_unparsed == line_parser.first_unparsed


def _nbdkit_like(n: int, seed: int) -> list[str]:
    """Regular nbdkit lines only: every one of them is the scanner's to decide."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        conn = int(rng.integers(1, 4))
        op = list(FLAGS)[int(rng.integers(0, 5))]
        us = int(rng.integers(0, 10**6))
        t = f"2026-12-01 08:{i % 60:02d}:{(i // 60) % 60:02d}.{us:06d}"
        out.append(
            f"{t} connection={conn} {op} id={i} offset=0x{int(rng.integers(0, 2**40)):x} "
            f"count=0x{int(rng.integers(1, 2**20)):x}{FLAGS[op]} ..."
        )
        ret = "0" if rng.random() < 0.9 else "-1 error=EIO"
        out.append(f"{t} connection={conn} ...{op} id={i} return={ret}")
    return out


def test_regular_lines_take_the_fast_path_and_agree():
    lines = _nbdkit_like(3000, 1)
    data = "".join(line + "\n" for line in lines).encode()
    found = scan(data)
    assert found is not None
    assert len(found.irregular_line) == 0  # nothing left to the line parser
    assert len(found.enter_line) == 3000 and len(found.leave_line) == 3000
    requests, _ = parse(lines, "nbdkit")
    got, _ = _by_blocks(data, [700, 1301, 4000])
    assert got == [(r.time, r.op, r.offset, r.length, r.status) for r in requests]
    assert sum(1 for r in requests if r.status == "failed:EIO") > 100


def test_a_pending_request_does_not_push_later_blocks_off_the_fast_path():
    head = "2026-12-01 08:00:00.000001 connection=1 Read id=1 offset=0x0 count=0x200 ...\n"
    odd = "2026-12-01 08:00:00.000002 connection=1 ...Read id=9 return=0 (Success)\n"
    parser = NbdkitParser()
    assert len(parser.feed_block((head + odd).encode(), 1)) == 0  # went line by line
    assert parser.pending  # request 1 waits in the line parser's dict
    rest = "".join(line + "\n" for line in _nbdkit_like(10, 2)).encode()
    done = parser.feed_block(rest, 3)
    assert len(done) == 10 and not parser.pending  # scanned: the waiting one moved to columns
    tail = b"2026-12-01 08:00:01.000000 connection=1 ...Read id=1 return=0\n"
    last = parser.feed_block(tail, 23)
    assert last.offset.tolist() == [0] and last.length.tolist() == [0x200]


def test_numbers_read_eight_characters_at_a_time():
    values = ["0", "7", "a", "F", "10", "deadbeef", "123456789", "7fffffffffffffff", "ffffffff"]
    data = (" ".join(values) + " 8000000000000000 12g4\n").encode()
    starts = [0]
    for v in [*values, "8000000000000000"]:
        starts.append(starts[-1] + len(v) + 1)
    ends = [s + len(v) for s, v in zip(starts, [*values, "8000000000000000", "12g4"])]
    block = _Block(data)
    got, ok = block.numbers(np.array(starts), np.array(ends), hexadecimal=True)
    assert got[:-2].tolist() == [int(v, 16) for v in values]
    assert ok.tolist() == [True] * len(values) + [False, False]
    dec = ["0", "9", "10", "12345678", "123456789", "9999999999999999"]
    data = (" ".join(dec) + "\n").encode()
    starts = np.cumsum([0] + [len(v) + 1 for v in dec[:-1]])
    got, ok = _Block(data).numbers(starts, starts + [len(v) for v in dec], hexadecimal=False)
    assert got.tolist() == [int(v) for v in dec] and ok.all()


def test_timestamps_match_the_calendar():
    import calendar

    stamps = [
        "1970-01-01 00:00:00.000000",
        "2024-02-29 23:59:59.999999",
        "2026-12-01 08:07:06.054321",
    ]
    data = ("\n".join(stamps) + "\n").encode()
    starts = np.array([0, 27, 54])
    micros, form, ok = _Block(data).stamps(starts)
    assert form.all() and ok.all()
    for m, s in zip(micros.tolist(), stamps):
        whole = calendar.timegm(
            (int(s[:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]), int(s[17:19]))
        )
        assert m == whole * 1_000_000 + int(s[20:])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(log_line, max_size=40),
    st.integers(1, 400),
    st.booleans(),
)
def test_reading_a_file_in_blocks_of_any_size_changes_nothing(lines, block, cut_last):
    """Lines cut by the block size, spanning several blocks, a last line with no newline."""
    import io

    import bmap.trace.nbdkit as tracelogs

    data = b"".join(line + b"\n" for line in lines)
    if cut_last and data:
        data = data[:-1]  # the log ends in the middle of being written
    text = data.decode("utf-8", "replace")
    # The lines as a file gives them: no empty one after the last newline.
    reference = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    requests, line_parser = parse(reference, "nbdkit") if text else ([], NbdkitParser())
    want = [(r.time, r.op, r.offset, r.length, r.status) for r in requests]
    saved = tracelogs.LOG_BLOCK
    tracelogs.LOG_BLOCK = block
    try:
        parser = NbdkitParser()
        got = _rows(
            Columns.concat(list(tracelogs.nbdkit_log_columns(io.BytesIO(data), parser, "x")))
        )
    finally:
        tracelogs.LOG_BLOCK = saved
    assert got == want
    assert parser.unparsed == line_parser.unparsed


HUGE = ["1" * 5000, str(2**64), str(2**63), "0x" + "f" * 17, "0x" + "9" * 5000]


def _hostile_lines(fmt: str) -> list[str]:
    """Lines of each format whose numbers are past int64 or thousands of digits long, or
    whose request ends past int64."""
    t = "2026-12-01 08:00:00.000001 connection=1"
    if fmt == "nbdkit":
        lines = []
        for i, n in enumerate([*HUGE, "0x7fffffffffffff00"]):
            n = n if n.startswith("0x") else f"0x{n}"
            lines += [
                f"{t} Read id={i} offset={n} count=0x1000 ...",
                f"{t} ...Read id={i} return=0",
            ]
        lines += [f"{t} Read id=99 offset=0x0 count=0x200 ...", f"{t} ...Read id=99 return=0"]
        return lines
    if fmt == "qemu":
        line = "12@1.5:blk_co_preadv blk 0x1 bs 0x2 offset {} bytes {} flags 0x0"
        return [line.format(n, 512) for n in HUGE[:3]] + [line.format(0, 512)]
    if fmt == "blkparse":
        line = "  8,0    1        1     0.000100000  1234  C   R {} + {} [0]"
        return [line.format(n, 8) for n in [*HUGE[:3], 2**54]] + [line.format(0, 1)]
    return [f"{n},512" for n in HUGE] + ["9223372036854775807,1", "0,512,read,1.2.3", "0,512"]


@pytest.mark.parametrize("fmt", ["nbdkit", "qemu", "blkparse", "csv"])
def test_numbers_past_int64_are_lines_of_no_known_format(fmt):
    """Every such line is skipped and counted, never converted past 19 digits (no Python
    limit error) and never wrapped; the one good request is kept. The nbdkit block scanner
    agrees with the line parser."""
    lines = _hostile_lines(fmt)
    requests, parser = parse(lines, fmt)
    assert [(r.offset, r.length) for r in requests] == [(0, 512)]
    expected_bad = {"nbdkit": len(HUGE) + 1, "qemu": 3, "blkparse": 4, "csv": len(HUGE) + 2}
    assert parser.unparsed == expected_bad[fmt]
    if fmt == "nbdkit":
        data = "".join(line + "\n" for line in lines).encode()
        got, block_parser = _by_blocks(data, [3])
        assert [(g[2], g[3]) for g in got] == [(0, 512)]
        assert block_parser.unparsed == parser.unparsed
