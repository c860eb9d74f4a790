"""Stream views over anything that reads at an offset: a partition inside a disk, an LV made
of pieces of several disks. Reads go through ``pread``, so any number of views share one
source without sharing a file position, and a view of a sub-range copies nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class PositionalReader(Protocol):
    """Anything that reads ``size`` bytes at ``offset`` (short only at its end)."""

    def pread(self, offset: int, size: int) -> bytes: ...


def gather_by_pread(
    source: PositionalReader,
    buffer: memoryview,
    offsets: Sequence[int],
    positions: Sequence[int],
    sizes: Sequence[int],
) -> None:
    for offset, position, size in zip(offsets, positions, sizes):
        data = source.pread(offset, size)
        buffer[position : position + len(data)] = data


class RangeStream(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``offset`` of a positional reader.

    Views of views collapse onto the underlying reader, so a partition inside a disk costs
    one addition per read, however deep the nesting.
    """

    source: PositionalReader
    offset: int
    size: int

    def __init__(self, source: PositionalReader, offset: int, size: int) -> None:
        super().__init__()
        if offset < 0 or size < 0:
            raise ValueError(f"bad range: offset {offset}, size {size}")
        if isinstance(source, RangeStream):
            offset += source.offset
            size = max(0, min(size, source.size - (offset - source.offset)))
            source = source.source
        self.source = source
        self.offset = offset
        self.size = size
        self._pos = 0

    def __repr__(self) -> str:
        return f"RangeStream({self.source!r}, offset={self.offset:#x}, size={self.size:#x})"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            new = pos
        elif whence == os.SEEK_CUR:
            new = self._pos + pos
        elif whence == os.SEEK_END:
            new = self.size + pos
        else:
            raise ValueError(f"bad whence {whence}")
        if new < 0:
            raise ValueError(f"negative seek position {new}")
        self._pos = new
        return new

    def pread(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` of this view, without moving the position."""
        if offset < 0 or size < 0:
            raise ValueError(f"bad read: offset {offset}, size {size}")
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        return self.source.pread(self.offset + offset, size)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def gather_into(
        self,
        buffer: memoryview,
        offsets: npt.ArrayLike,
        positions: npt.ArrayLike,
        sizes: npt.ArrayLike,
    ) -> None:
        """Read ``sizes[i]`` bytes at ``offsets[i]`` of this view into ``buffer[positions[i]:]``
        (:class:`parsers.stream.GatherRead`); what lies past the view's end is not touched.

        Many small reads (the blocks of every directory) cost one system call each, with no
        Python-level ``seek``/``read``/``pread`` layers between them.
        """
        offs = np.asarray(offsets, dtype=np.int64)
        want = np.asarray(sizes, dtype=np.int64)
        if len(offs) and (offs.min() < 0 or want.min() < 0):
            raise ValueError("bad read: a negative offset or size")
        starts = (offs + self.offset).tolist()
        clipped = np.clip(np.minimum(want, self.size - offs), 0, None).tolist()
        places = np.asarray(positions, dtype=np.int64).tolist()
        gather = getattr(self.source, "gather_into", None)
        if gather is None:
            gather_by_pread(self.source, buffer, starts, places, clipped)
        else:
            gather(buffer, starts, places, clipped)

    def view(self, offset: int, size: int) -> RangeStream:
        """A view of ``size`` bytes at ``offset`` inside this one (clipped to this one)."""
        return RangeStream(self, offset, size)


class MappedReader:
    """A device made of pieces of other devices (an LV): ``pread`` splits at piece boundaries.

    Args:
        pieces: ``(dev_start, dev_end, reader, reader_offset)``, sorted and non-overlapping.
            Bytes in no piece (a missing PV) read as zeros.
        size: the device's size.
    """

    def __init__(self, pieces: list[tuple[int, int, PositionalReader, int]], size: int) -> None:
        self.pieces = sorted(pieces, key=lambda p: p[0])
        self.starts = [p[0] for p in self.pieces]
        self.size = size

    def pread(self, offset: int, size: int) -> bytes:
        import bisect

        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        out = bytearray(size)
        i = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        end = offset + size
        while i < len(self.pieces):
            start, stop, reader, base = self.pieces[i]
            if start >= end:
                break
            lo, hi = max(start, offset), min(stop, end)
            if lo < hi:
                data = reader.pread(base + lo - start, hi - lo)
                out[lo - offset : lo - offset + len(data)] = data
            i += 1
        return bytes(out)

    def stream(self) -> RangeStream:
        return RangeStream(self, 0, self.size)
