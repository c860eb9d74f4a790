"""Text made column by column: many rows of hex, decimal, fixed-width and table-lookup fields
assembled into one ``bytes`` by a single ragged gather, without a Python string per row.

A field is a :class:`Pieces`: row ``i`` of it is ``blob[start[i]:start[i] + length[i]]``.
:func:`assemble` concatenates, row by row, the pieces of several fields (and literal
``bytes`` between them): every output byte is one index into the fields' blobs laid end to
end, so the cost is a few numpy passes over the output, whatever the number of rows.

Callers keep chunks of rows moderate (tens of thousands): the index array holds one integer
per output byte.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Int = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_POW16 = np.array([1 << (4 * k) for k in range(1, 16)], dtype=np.uint64)
_POW10 = np.array([10**k for k in range(1, 20)], dtype=np.uint64)


class Pieces(NamedTuple):
    """One field of many rows: row ``i`` is ``blob[start[i]:start[i] + length[i]]``."""

    blob: U8
    start: Int
    length: Int

    def __len__(self) -> int:
        return len(self.start)


def literal(text: bytes, rows: int) -> Pieces:
    """The same bytes in every row."""
    return Pieces(
        np.frombuffer(text, dtype=np.uint8),
        np.zeros(rows, dtype=np.int64),
        np.full(rows, len(text), dtype=np.int64),
    )


def table(items: Sequence[bytes]) -> Pieces:
    """Row ``i`` is ``items[i]``; index the result's ``start`` and ``length`` to pick rows."""
    lengths = np.fromiter((len(t) for t in items), dtype=np.int64, count=len(items))
    blob = np.frombuffer(b"".join(items), dtype=np.uint8) if items else np.zeros(0, np.uint8)
    return Pieces(blob, np.cumsum(lengths) - lengths, lengths)


def lookup(codes: npt.ArrayLike, items: Sequence[bytes]) -> Pieces:
    """Row ``i`` is ``items[codes[i]]``."""
    c = np.asarray(codes, dtype=np.int64)
    whole = table(items)
    return Pieces(whole.blob, whole.start[c], whole.length[c])


def pick(pieces: Pieces, rows: npt.ArrayLike) -> Pieces:
    """Row ``i`` is row ``rows[i]`` of ``pieces``."""
    r = np.asarray(rows, dtype=np.int64)
    return Pieces(pieces.blob, pieces.start[r], pieces.length[r])


def fixed(matrix: U8) -> Pieces:
    """Row ``i`` is row ``i`` of an ``(n, width)`` byte matrix."""
    m = np.ascontiguousarray(matrix, dtype=np.uint8)
    rows, width = m.shape
    return Pieces(
        m.reshape(-1),
        np.arange(rows, dtype=np.int64) * width,
        np.full(rows, width, dtype=np.int64),
    )


def _hex_digits(u: npt.NDArray[np.uint64]) -> Int:
    """How many hex digits each value has (1 for zero)."""
    # frexp is exact below 2**53 (every such integer is a float); above, compare.
    bits = np.frexp(u.astype(np.float64))[1].astype(np.int64)
    big = np.flatnonzero(u >= np.uint64(1 << 53))
    if len(big):
        bits[big] = 53 + (u[big, None] >= _POW2_ABOVE_53[None, :]).sum(axis=1)
    return np.maximum((bits + 3) >> 2, 1)


_POW2_ABOVE_53 = np.array([1 << k for k in range(53, 64)], dtype=np.uint64)
# Every byte value as its two hex characters, as one little-endian uint16.
_HEX_PAIRS = np.array(
    [int.from_bytes(f"{b:02x}".encode(), "little") for b in range(256)], dtype=np.uint16
)


def hexadecimal(values: npt.ArrayLike) -> Pieces:
    """Lowercase hex without ``0x`` or leading zeros (``0`` for zero) of values >= 0."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) and int(v.min()) < 0:
        raise ValueError("hexadecimal() takes values >= 0")
    u = v.astype(np.uint64)
    digits = _hex_digits(u)
    # Big-endian bytes, each to two characters: 16 characters a value.
    pairs = _HEX_PAIRS.take(u.astype(">u8").view(np.uint8))
    rows = len(v)
    return Pieces(pairs.view(np.uint8), np.arange(rows, dtype=np.int64) * 16 + 16 - digits, digits)


def decimal(values: npt.ArrayLike) -> Pieces:
    """Decimal text of int64 values, with a ``-`` for negative ones."""
    v = np.asarray(values, dtype=np.int64)
    rows = len(v)
    negative = v < 0
    # -(-2**63) does not fit an int64; its magnitude does fit a uint64.
    magnitude = np.where(negative, (~v).astype(np.uint64) + np.uint64(1), v.astype(np.uint64))
    digits = 1 + (magnitude[:, None] >= _POW10[None, :18]).sum(axis=1, dtype=np.int64)
    powers = np.concatenate((_POW10[17::-1], [np.uint64(1)]))  # 10**18 ... 1
    matrix = np.empty((rows, 20), dtype=np.uint8)
    matrix[:, 1:] = (magnitude[:, None] // powers[None, :]) % np.uint64(10) + np.uint64(ord("0"))
    width = digits + negative
    first = np.arange(rows, dtype=np.int64) * 20 + 20 - width
    flat = matrix.reshape(-1)
    flat[first[negative]] = ord("-")
    return Pieces(flat, first, width)


def merge(mask: npt.ArrayLike, when_true: Pieces, when_false: Pieces) -> Pieces:
    """Rows of ``when_true`` where ``mask`` is set and of ``when_false`` elsewhere, each of
    them holding only its own rows (``mask.sum()`` and ``(~mask).sum()`` of them)."""
    m = np.asarray(mask, dtype=bool)
    start = np.empty(len(m), dtype=np.int64)
    length = np.empty(len(m), dtype=np.int64)
    start[m] = when_true.start
    length[m] = when_true.length
    start[~m] = when_false.start + len(when_true.blob)
    length[~m] = when_false.length
    return Pieces(np.concatenate((when_true.blob, when_false.blob)), start, length)


def rows(text: bytes, row_offsets: Int) -> Pieces:
    """The rows of an :func:`assemble` result as pieces (row ``i`` to row ``i``)."""
    return Pieces(np.frombuffer(text, dtype=np.uint8), row_offsets[:-1], np.diff(row_offsets))


class _Source:
    """The blobs of one assembly laid end to end in a buffer that is kept from call to call.

    Large blobs seen again (the same arrays: the per-map tables of names and directory
    prefixes that every chunk of lines picks from) stay at the front of the buffer and are
    not copied again; only the small blobs of the chunk are copied behind them.
    """

    LARGE = 1 << 18

    def __init__(self) -> None:
        self.buffer = np.zeros(0, dtype=np.uint8)
        self.front: list[U8] = []
        self.front_starts: list[int] = []
        self.ramp = np.arange(0, dtype=np.intp)

    def lay_out(self, blobs: list[U8]) -> tuple[U8, list[int]]:
        """One array holding every blob, and where each starts in it."""
        size = sum(len(b) for b in blobs)
        where = {id(b): i for i, b in enumerate(blobs)}
        if len(self.buffer) < size or any(id(b) not in where for b in self.front):
            # A front blob is gone: the large blobs of this call become the front.
            if len(self.buffer) < size:
                self.buffer = np.empty(size + size // 4, dtype=np.uint8)
            self.front = [b for b in blobs if len(b) >= self.LARGE]
            self.front_starts = []
            at = 0
            for blob in self.front:
                self.front_starts.append(at)
                self.buffer[at : at + len(blob)] = blob
                at += len(blob)
        buffer = self.buffer
        starts = [-1] * len(blobs)
        at = 0
        for blob, start in zip(self.front, self.front_starts):
            starts[where[id(blob)]] = start
            at = start + len(blob)
        for i, blob in enumerate(blobs):
            if starts[i] < 0:
                starts[i] = at
                buffer[at : at + len(blob)] = blob
                at += len(blob)
        return buffer[:at], starts

    def iota(self, n: int) -> npt.NDArray[np.intp]:
        """``0, 1, ..., n - 1``, a view of a ramp made once."""
        if len(self.ramp) < n:
            self.ramp = np.arange(n + n // 4, dtype=np.intp)
        return self.ramp[:n]


_SOURCE = threading.local()


def _source() -> _Source:
    source: _Source | None = getattr(_SOURCE, "value", None)
    if source is None:
        source = _SOURCE.value = _Source()
    return source


def assemble(fields: Sequence[Pieces | bytes], rows: int | None = None) -> tuple[bytes, Int]:
    """Concatenate, row after row, each row's pieces of ``fields``.

    Returns the text and the offset where each row starts in it (with one more entry, the
    total length, at the end), so that the rows can be used as pieces of another assembly.
    """
    if rows is None:
        rows = next((len(f) for f in fields if isinstance(f, Pieces)), 0)
    k = len(fields)
    if not rows or not k:
        return b"", np.zeros(rows + 1, dtype=np.int64)
    blobs = [np.frombuffer(f, dtype=np.uint8) if isinstance(f, bytes) else f.blob for f in fields]
    source, bases = _source().lay_out(blobs)
    # Row-major (row, field) tables of where each piece comes from and how long it is.
    start = np.empty((rows, k), dtype=np.intp)
    length = np.empty((rows, k), dtype=np.intp)
    for i, f in enumerate(fields):
        if isinstance(f, bytes):
            start[:, i] = bases[i]
            length[:, i] = len(f)
            continue
        if len(f) != rows:
            raise ValueError(f"a field has {len(f)} rows, not {rows}")
        np.add(f.start, bases[i], out=start[:, i])
        length[:, i] = f.length
    flat_length = length.reshape(-1)
    ends = np.cumsum(flat_length)
    total = int(ends[-1])
    row_offsets = np.zeros(rows + 1, dtype=np.int64)
    row_offsets[1:] = ends[k - 1 :: k]
    # Each output byte's index into the source: a piece's start minus where it lands, plus
    # the byte's own position. intp indexes: numpy gathers with nothing else without
    # converting them first (measured 0.7 ns a byte against 2.1 for int32).
    shift = start.reshape(-1) - ends
    shift += flat_length
    index = np.repeat(shift, flat_length)
    index += _source().iota(total)
    return np.take(source, index).tobytes(), row_offsets


def texts(fields: Sequence[Pieces | bytes], rows: int | None = None) -> list[str]:
    """Each row of :func:`assemble` as a ``str`` (UTF-8, ``surrogateescape``, as bmap keeps
    names): one decode and one split for all rows; a row that holds a NUL (only a damaged
    name can) makes them cut at the row offsets instead."""
    text, offsets = assemble([*fields, b"\0"], rows)
    got = text.decode("utf-8", "surrogateescape").split("\0")[:-1]
    if len(got) != len(offsets) - 1:
        bounds = offsets.tolist()
        got = [
            text[a : b - 1].decode("utf-8", "surrogateescape")
            for a, b in itertools.pairwise(bounds)
        ]
    return got


def rows_of(text: bytes, row_offsets: Int, first: Int, last: Int) -> Pieces:
    """Pieces that are runs of rows of an :func:`assemble` result: piece ``i`` is rows
    ``first[i]`` to ``last[i]`` (exclusive)."""
    return Pieces(
        np.frombuffer(text, dtype=np.uint8),
        row_offsets[first],
        row_offsets[last] - row_offsets[first],
    )
