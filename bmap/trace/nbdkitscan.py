"""A block of nbdkit 1.24+ log-filter lines scanned with numpy, a whole block at a time.

The log filter writes one grammar from nbdkit 1.24 to 1.45 (``filters/log/output.c``)::

    2024-05-01 10:00:00.100700 connection=1 Read id=1 offset=0x0 count=0x200 ...
    2024-05-01 10:00:00.100720 connection=1 ...Read id=1 return=0
    2024-05-01 10:00:00.101510 connection=1 ...Read id=8 return=-1 error=EIO

The scan splits every line at its spaces (a line's tokens are consecutive separators of the
block), names the action by its token's first 8 bytes, and reads numbers eight characters at a
time as one 64-bit word (SIMD within a register: the digit test and the multiply-combine that
simdjson uses, and the same for hex). Only lines that match nbdkit's grammar exactly are taken:
a request of the five data operations with exactly its tokens, a completion with ``return=N``
and ``error=E`` on failure, and the other actions' lines by their action word. Everything
else is listed as irregular, for the line-by-line parser to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Int = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]


@dataclass
class Scan:
    """What :func:`scan` found in a block; lines are numbered from 0 in the block."""

    enter_line: Int
    enter_key: Int
    """``connection << 32 | id``."""
    enter_micros: Int
    """The request line's time, microseconds since the epoch (UTC)."""
    enter_op: Int
    """0 read, 1 write, 2 trim, 3 zero, 4 cache."""
    enter_offset: Int
    enter_length: Int
    leave_line: Int
    leave_key: Int
    leave_return: Int
    leave_error: list[tuple[int, int]]
    """For each completion whose return is not 0: the byte range of its error name, or
    ``(0, 0)`` if it has none (``leave_return != 0`` selects them, in order)."""
    irregular: Int
    """``(start, end)`` byte ranges of the lines left to the line-by-line parser."""
    irregular_line: Int


def _u64(x: int) -> np.uint64:
    return np.uint64(x & 0xFFFFFFFFFFFFFFFF)


def _word(text: bytes) -> int:
    """The first 8 bytes of ``text``, zero-padded, as a little-endian integer."""
    return int.from_bytes(text[:8].ljust(8, b"\0"), "little")


_ONES = _u64(0x0101010101010101)
_HIGH = _u64(0x8080808080808080)
_ZEROS = _u64(0x3030303030303030)  # "00000000"
_LOW_NIBBLES = _u64(0x0F0F0F0F0F0F0F0F)
_EVEN_BYTES = _u64(0x00FF00FF00FF00FF)
_EVEN_PAIRS = _u64(0x0000FFFF0000FFFF)
_LOW_HALF = _u64(0x00000000FFFFFFFF)
# keep[n]: the n most significant bytes of a word (the last n characters).
_KEEP = np.array([0] + [_u64(~((1 << (8 * (8 - n))) - 1)) for n in range(1, 9)], dtype=np.uint64)
# mask[n]: the n least significant bytes (the first n characters).
_FIRST = np.array([_u64((1 << (8 * n)) - 1) for n in range(8)] + [_u64(-1)], dtype=np.uint64)


def _byte_ge(x: U64, low: int) -> U64:
    """High bit of each byte set where that byte >= low (bytes below 0x80)."""
    return (x + _u64((0x80 - low) * 0x0101010101010101)) & _HIGH


def _byte_gt(x: U64, high: int) -> U64:
    return (x + _u64((0x7F - high) * 0x0101010101010101)) & _HIGH


def _all_digits(w: U64) -> Bool:
    """Whether all eight characters of a word are decimal digits (simdjson's test)."""
    high_nibbles = _u64(0xF0F0F0F0F0F0F0F0)
    above_nine = ((w + _u64(0x0606060606060606)) & high_nibbles) >> np.uint64(4)
    return ((w & high_nibbles) | above_nine) == _u64(0x3333333333333333)


def _decimal8(w: U64) -> tuple[U64, Bool]:
    """Eight decimal characters (as a little-endian word, first character lowest) to their
    value, and whether all eight are digits."""
    ok = _all_digits(w)
    d = w - _ZEROS
    t = (d & _EVEN_BYTES) * np.uint64(10) + ((d >> np.uint64(8)) & _EVEN_BYTES)
    t = (t & _EVEN_PAIRS) * np.uint64(100) + ((t >> np.uint64(16)) & _EVEN_PAIRS)
    return (t & _LOW_HALF) * np.uint64(10000) + (t >> np.uint64(32)), ok


def _hex8(w: U64) -> tuple[U64, Bool]:
    """Eight hex characters (either case) to their value, and whether all eight are hex."""
    x = w | _u64(0x2020202020202020)  # A-F to a-f; digits already have the bit
    digit = _byte_ge(x, 0x30) & ~_byte_gt(x, 0x39) & (w << np.uint64(2))  # and bit 5 was set
    alpha = _byte_ge(x, 0x61) & ~_byte_gt(x, 0x66)
    ok = (((digit | alpha) & _HIGH) == _HIGH) & ((w & _HIGH) == np.uint64(0))
    d = (x & _LOW_NIBBLES) + np.uint64(9) * ((x >> np.uint64(6)) & _ONES)
    t = ((d & _EVEN_BYTES) << np.uint64(4)) | ((d >> np.uint64(8)) & _EVEN_BYTES)
    t = ((t & _EVEN_PAIRS) << np.uint64(8)) | ((t >> np.uint64(16)) & _EVEN_PAIRS)
    return ((t & _LOW_HALF) << np.uint64(16)) | (t >> np.uint64(32)), ok


class _Block:
    """A block's bytes, read as 64-bit words from any position. Bytes outside the block read
    as zeros (it is padded on both sides)."""

    PAD = 16

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        tail = -(self.PAD + len(data)) % 8 + self.PAD
        # Whole words of the padded block: a word at any byte position is two of these.
        self.aligned = np.frombuffer(bytes(self.PAD) + data + bytes(tail), dtype="<u8")

    def words(self, pos: Int) -> U64:
        """The 8 bytes from each position as a little-endian word (first byte lowest)."""
        p = np.clip(pos + self.PAD, 0, self.size + self.PAD)
        q = p >> 3
        shift = ((p & 7) << 3).astype(np.uint64)
        low = self.aligned.take(q)
        high = self.aligned.take(q + 1)
        # A shift by 64 is undefined: shift the high word in two steps, the last one by 8.
        return (low >> shift) | ((high << (np.uint64(56) - shift)) << np.uint64(8))

    def is_text(self, pos: Int, text: bytes) -> Bool:
        """Whether the bytes at each position begin with ``text`` (at most 16 bytes)."""
        ok = (self.words(pos) & _FIRST[min(len(text), 8)]) == _u64(_word(text))
        if len(text) > 8:
            rest = text[8:]
            ok &= (self.words(pos + 8) & _FIRST[len(rest)]) == _u64(_word(rest))
        return ok

    def _stamp_fields(self, start: Int) -> tuple[Bool, tuple[U64, U64, U64], U64]:
        """Of a ``YYYY-MM-DD HH:MM:SS.uuuuuu`` stamp at each start: whether the separators
        are where they go; its digits as three words of eight characters, each separator
        replaced by a '0' (``YYYY0MM0``, ``DD0HH0MM``, ``SS0uuuuu``); and its last digit's
        value (above 9 where it is no digit)."""
        w0 = self.words(start)  # YYYY-MM-
        w1 = self.words(start + 8)  # DD HH:MM
        w2 = self.words(start + 16)  # :SS.uuuu
        w3 = self.words(start + 17)  # SS.uuuuu
        separators = (
            ((w0 & _u64(0xFF0000FF00000000)) == _u64(0x2D00002D00000000))
            & ((w1 & _u64(0x0000FF0000FF0000)) == _u64(0x00003A0000200000))
            & ((w2 & _u64(0x00000000FF0000FF)) == _u64(0x000000002E00003A))
        )
        digits = (
            (w0 & _u64(0x00FFFF00FFFFFFFF)) | _u64(0x3000003000000000),
            (w1 & _u64(0xFFFF00FFFF00FFFF)) | _u64(0x0000300000300000),
            (w3 & _u64(0xFFFFFFFFFF00FFFF)) | _u64(0x0000000000300000),
        )
        last = (self.words(start + 25) & _u64(0xFF)) - _u64(0x30)  # wraps above 9 if no digit
        return separators, digits, last

    def stamp_form(self, start: Int) -> Bool:
        """Whether a ``YYYY-MM-DD HH:MM:SS.uuuuuu`` stamp starts at each position: digits
        where the digits go, the separators between them."""
        ok, digits, last = self._stamp_fields(start)
        for word in digits:
            ok &= _all_digits(word)
        return ok & (last <= np.uint64(9))

    def numbers(self, start: Int, end: Int, hexadecimal: bool) -> tuple[Int, Bool]:
        """The values of the digit strings ``[start, end)`` (1 to 16 digits, decimal or hex)
        and whether each is well formed and fits an int64."""
        length = end - start
        ok = (length >= 1) & (length <= 16)
        convert = _hex8 if hexadecimal else _decimal8
        # The last eight characters, and the eight before them; what is not part of the
        # string is replaced by '0' characters, which add nothing.
        low_keep = _KEEP[np.clip(length, 0, 8)]
        low = (self.words(end - 8) & low_keep) | (_ZEROS & ~low_keep)
        value, good = convert(low)
        ok &= good
        long = np.flatnonzero(ok & (length > 8))
        if len(long):
            high_keep = _KEEP[length[long] - 8]
            high = (self.words(end[long] - 16) & high_keep) | (_ZEROS & ~high_keep)
            high_value, high_good = convert(high)
            scale = np.uint64(1 << 32) if hexadecimal else np.uint64(10**8)
            value[long] += high_value * scale
            ok[long] &= high_good
            if hexadecimal:  # 16 hex digits from 8 up do not fit an int64
                top = (high_value >> np.uint64(28)) >= np.uint64(8)
                ok[long] &= ~(top & (length[long] == 16))
        return value.astype(np.int64), ok

    def stamps(self, start: Int) -> tuple[Int, Bool, Bool]:
        """``YYYY-MM-DD HH:MM:SS.uuuuuu`` at each start (UTC) as microseconds since the
        epoch; whether each has that form (digits and separators), and whether its fields
        are also in range (a day past its month's end rolls over, as timegm does). Use
        :meth:`stamp_form` where only the form matters: it is cheaper."""
        seps, (date_word, day_word, second_word), last = self._stamp_fields(start)
        date, ok_date = _decimal8(date_word)
        day_hm, ok_dhm = _decimal8(day_word)
        sec_us, ok_su = _decimal8(second_word)
        form = seps & ok_date & ok_dhm & ok_su & (last <= np.uint64(9))
        ok = form.copy()
        date = date.astype(np.int64)  # Y Y Y Y 0 M M 0
        day_hm = day_hm.astype(np.int64)  # D D 0 H H 0 M M
        sec_us = sec_us.astype(np.int64)  # S S 0 u u u u u
        year = date // 10_000
        month = date // 10 % 100
        day = day_hm // 1_000_000
        hour = day_hm // 1_000 % 100
        minute = day_hm % 100
        second = sec_us // 1_000_000
        micro = sec_us % 100_000 * 10 + last.astype(np.int64)
        ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
        ok &= (hour < 24) & (minute < 60) & (second < 61)
        seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60
        return (seconds + second) * 1_000_000 + micro, form, ok


def days_from_civil(year: Any, month: Any, day: Any) -> Any:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm); works on
    ints and arrays alike, so that the line-by-line parser computes the same numbers."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


# Actions with a connection: (first 8 bytes, length) -> class, op. Class 0 is a request,
# 1 a completion, 2 a line of no request.
_ACTS: dict[tuple[int, int], tuple[int, int]] = {}
for _i, _name in enumerate(("Read", "Write", "Trim", "Zero", "Cache")):
    _ACTS[(_word(_name.encode()), len(_name))] = (0, _i)
    _ACTS[(_word(b"..." + _name.encode()), len(_name) + 3)] = (1, _i)
for _name in ("Flush", "...Flush", "Extents", "...Extents", "Connect", "Disconnect"):
    _ACTS[(_word(_name.encode()), len(_name))] = (2, 0)
# Actions of no connection.
_PLAIN = [
    (_word(n.encode()), len(n))
    for n in ("Ready", "Fork", "Preconnect", "...Preconnect", "ListExports", "...ListExports")
]
# Tokens of a request line, by op: date, time, connection, act, id, offset, count, the op's
# own flags (Write and Trim: fua; Zero: trim, fua, fast), "...".
_REQUEST_TOKENS = np.array([8, 9, 9, 11, 8], dtype=np.int64)


def scan(data: bytes) -> Scan | None:
    """Scan a block of whole log lines; None if it does not end in a newline."""
    a = np.frombuffer(data, dtype=np.uint8)
    if not len(a) or a[-1] != 10:
        return None
    block = _Block(data)
    # One pass over the bytes finds spaces, newlines and every other control byte; a line
    # with one of the others (a tab, a carriage return) is left to the line parser.
    controls = np.flatnonzero(a <= 32)
    byte = a[controls]
    newline = byte == 10
    line_end = controls[newline]
    sep = newline | (byte == 32)
    odd = controls[~sep]
    seps = controls[sep]
    n = len(line_end)
    line_start = np.empty(n, dtype=np.int64)
    line_start[0] = 0
    line_start[1:] = line_end[:-1] + 1
    # Token j of a line ends at seps[first + j]; the timestamp's own space ends token 0.
    first = np.searchsorted(seps, line_start)
    tokens = np.searchsorted(seps, line_end) - first + 1
    if len(odd):
        tokens[np.searchsorted(line_end, odd)] = 0  # no candidate below
    # Every line taken here starts with a well-formed timestamp and a space (the line
    # parser's rule); a request's time must also be in range (below).
    length = line_end - line_start
    candidates = np.flatnonzero((length >= 28) & (tokens >= 3))
    candidates = candidates[a[line_start[candidates] + 26] == 32]
    candidates = candidates[block.stamp_form(line_start[candidates])]
    regular = np.zeros(n, dtype=bool)
    regular[candidates] = (tokens[candidates] >= 4) & (length[candidates] >= 40)
    rows = np.flatnonzero(regular)
    with_conn = block.is_text(line_start[rows] + 27, b"connection=")
    # The others may be lines of no connection: "... Ready thread_model=3" and the like.
    plain = np.setdiff1d(candidates, rows[with_conn], assume_unique=True)
    rows = rows[with_conn]

    def token(lines: Int, j: int) -> tuple[Int, Int]:
        k = np.minimum(first[lines] + j, len(seps) - 1)
        return seps[k - 1] + 1, seps[k]

    conn_start, conn_end = token(rows, 2)
    conn, conn_ok = block.numbers(conn_start + 11, conn_end, hexadecimal=False)
    act_start, act_end = token(rows, 3)
    act_length = act_end - act_start
    act_word = block.words(act_start) & _FIRST[np.clip(act_length, 0, 8)]
    act_class = np.full(len(rows), -1, dtype=np.int64)
    act_op = np.zeros(len(rows), dtype=np.int64)
    for (word, size), (cls, op) in _ACTS.items():
        hit = (act_word == _u64(word)) & (act_length == size)
        act_class[hit] = cls
        act_op[hit] = op
    ntok = tokens[rows]
    act_class[~conn_ok | (conn >= 1 << 31)] = -1
    id_start, id_end = token(rows, 4)
    ident, id_ok = block.numbers(id_start + 3, id_end, hexadecimal=False)
    id_ok &= block.is_text(id_start, b"id=") & (ident < 1 << 32)
    key = (conn << 32) | ident

    # Requests: id, offset, count, the op's flags, " ...".
    req = np.flatnonzero((act_class == 0) & id_ok & (ntok == _REQUEST_TOKENS[act_op]))
    lines = rows[req]
    off_start, off_end = token(lines, 5)
    cnt_start, cnt_end = token(lines, 6)
    offset, ok = block.numbers(off_start + 9, off_end, hexadecimal=True)
    count, cnt_ok = block.numbers(cnt_start + 8, cnt_end, hexadecimal=True)
    micros, _, time_ok = block.stamps(line_start[lines])
    ok &= cnt_ok & time_ok
    ok &= block.is_text(off_start, b"offset=0x") & block.is_text(cnt_start, b"count=0x")
    ok &= block.is_text(line_end[lines] - 4, b" ...")
    # A request whose end passes int64 is no request of a disk image (the line code says so).
    ok &= (offset >= 0) & (count >= 0) & (offset <= np.int64((1 << 63) - 1) - np.maximum(count, 0))
    req, offset, count, micros = req[ok], offset[ok], count[ok], micros[ok]

    # Completions: id, return=N, and error=E.
    lv = np.flatnonzero((act_class == 1) & id_ok & ((ntok == 6) | (ntok == 7)))
    lines = rows[lv]
    ret_start, ret_end = token(lines, 5)
    negative = block.is_text(ret_start + 7, b"-")
    ret, ok = block.numbers(ret_start + 7 + negative, ret_end, hexadecimal=False)
    ok &= block.is_text(ret_start, b"return=")
    with_error = ntok[lv] == 7
    err_start, err_end = token(lines, 6)
    ok &= ~with_error | block.is_text(err_start, b"error=")
    lv, ret = lv[ok], np.where(negative[ok], -ret[ok], ret[ok])
    with_error, err_start, err_end = with_error[ok], err_start[ok], err_end[ok]
    failed = np.flatnonzero(ret != 0)
    errors = [
        (int(err_start[i]) + 6, int(err_end[i])) if with_error[i] else (0, 0)
        for i in failed.tolist()
    ]

    recognised = np.zeros(n, dtype=bool)
    recognised[rows[req]] = True
    recognised[rows[lv]] = True
    recognised[rows[act_class == 2]] = True
    if len(plain):
        p_start, p_end = token(plain, 2)
        p_length = p_end - p_start
        p_word = block.words(p_start) & _FIRST[np.clip(p_length, 0, 8)]
        known = np.zeros(len(plain), dtype=bool)
        for word, size in _PLAIN:
            known |= (p_word == _u64(word)) & (p_length == size)
        recognised[plain[known]] = True
    irregular = np.flatnonzero(~recognised)
    return Scan(
        enter_line=rows[req],
        enter_key=key[req],
        enter_micros=micros,
        enter_op=act_op[req],
        enter_offset=offset,
        enter_length=count,
        leave_line=rows[lv],
        leave_key=key[lv],
        leave_return=ret,
        leave_error=errors,
        irregular=np.stack((line_start[irregular], line_end[irregular]), axis=1),
        irregular_line=irregular,
    )
