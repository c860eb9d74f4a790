"""The one place that opens disk images, and the stream views everything else reads through.

Images are opened ``O_RDONLY`` (and ``O_NOATIME`` where allowed, so that even the access time
of the evidence stays as it was); nothing in bmap ever writes to an input. Reads go through
``os.pread``, so any number of views share one descriptor without sharing a file position, and
a view of a sub-range (:class:`RangeStream`) copies nothing.

Every image is identified by its first bytes before anything reads it: :data:`IMAGE_FORMATS`
is the table of the image formats bmap reads, one line each, tried in order. A format's
reader wraps the file opened read-only and gives the virtual disk the guest sees. Raw images
are the only ones today, and the last line (it takes any bytes). Adding a container format: a
module with its reader, and one line in :data:`IMAGE_FORMATS` before ``raw``.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from bmap.errors import ImageError

#: ioctl(BLKSSZGET): the logical sector size of a block device.
_BLKSSZGET = 0x1268


class PositionalReader(Protocol):
    """Anything that reads ``size`` bytes at ``offset`` (short only at its end)."""

    def pread(self, offset: int, size: int) -> bytes: ...


def _gather_by_pread(
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
            _gather_by_pread(self.source, buffer, starts, places, clipped)
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


class Image:
    """A disk image opened read-only: a regular file or a block device.

    Attributes:
        format: the image format's name in :data:`IMAGE_FORMATS` (``raw``).
        number: 1-based position among the images given (disk 1, 2, ...).
        path: as given.
        size: in bytes.
        is_block_device: True for a block device.
        sector_size: the device's logical sector size where the kernel knows it, else None.
    """

    format = "raw"

    def __init__(self, path: str | os.PathLike[str], number: int = 1) -> None:
        self.path = Path(path)
        self.number = number
        self.fd = _open_read_only(self.path)
        try:
            st = os.fstat(self.fd)
            self.is_block_device = stat.S_ISBLK(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                raise ImageError(f"{self.path}: is a directory, not a disk image")
            if not (stat.S_ISREG(st.st_mode) or self.is_block_device):
                raise ImageError(f"{self.path}: not a regular file or block device")
            self.size = os.lseek(self.fd, 0, os.SEEK_END) if self.is_block_device else st.st_size
            if self.size == 0:
                raise ImageError(f"{self.path}: is empty (0 bytes)")
            self.sector_size = _block_sector_size(self.fd) if self.is_block_device else None
        except BaseException:
            os.close(self.fd)
            raise

    def __repr__(self) -> str:
        return f"Image({str(self.path)!r}, number={self.number}, size={self.size:#x})"

    def pread(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; short only at the end of the image."""
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        try:
            data = os.pread(self.fd, size, offset)
            while len(data) < size:
                more = os.pread(self.fd, size - len(data), offset + len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise ImageError(
                f"{self.path}: read error at {offset:#x}: {exc.strerror or exc}"
            ) from exc
        return data

    def gather_into(
        self,
        buffer: memoryview,
        offsets: Sequence[int],
        positions: Sequence[int],
        sizes: Sequence[int],
    ) -> None:
        """Read each piece straight into ``buffer`` with ``preadv``; short only at the end."""
        preadv = os.preadv
        fd = self.fd
        total = self.size
        try:
            for offset, position, size in zip(offsets, positions, sizes):
                if offset + size > total:
                    size = total - offset
                    if size <= 0:
                        continue
                got = preadv(fd, [buffer[position : position + size]], offset)
                while got < size:  # interrupted: the rest
                    more = preadv(fd, [buffer[position + got : position + size]], offset + got)
                    if not more:
                        break
                    got += more
        except OSError as exc:
            raise ImageError(
                f"{self.path}: read error at {offset:#x}: {exc.strerror or exc}"
            ) from exc

    def stream(self) -> RangeStream:
        """A view of the whole image."""
        return RangeStream(self, 0, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageFormat(NamedTuple):
    """One image format: how its first bytes are recognised, and how its reader wraps the
    file (opened read-only) into the virtual disk."""

    name: str
    recognises: Callable[[bytes], bool]
    open: Callable[[Image], Image]


HEAD_SIZE = 4096
"""Bytes of an image's start that :data:`IMAGE_FORMATS` are shown."""

#: The image formats, tried in order on an image's first bytes; the first that recognises them
#: opens the image.
IMAGE_FORMATS: tuple[ImageFormat, ...] = (ImageFormat("raw", lambda head: True, lambda file: file),)


def open_image(path: str | os.PathLike[str], number: int = 1) -> Image:
    """Open one image read-only, in the first of :data:`IMAGE_FORMATS` that recognises it.

    Raises:
        ImageError: the path cannot be opened or read.
    """
    file = Image(path, number)
    try:
        head = file.pread(0, HEAD_SIZE)
        for image_format in IMAGE_FORMATS:
            if image_format.recognises(head):
                return image_format.open(file)
    except BaseException:
        file.close()
        raise
    file.close()
    raise ImageError(f"{path}: no image format recognises it")


def open_images(paths: Iterable[str | os.PathLike[str]]) -> list[Image]:
    """Open every image read-only (:func:`open_image`), numbered 1, 2, ... in the order given.

    Raises:
        ImageError: for the first path that cannot be opened; the others are closed again.
    """
    images: list[Image] = []
    try:
        for number, path in enumerate(paths, start=1):
            images.append(open_image(path, number))
    except BaseException:
        for image in images:
            image.close()
        raise
    return images


def _open_read_only(path: Path) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags | os.O_NOATIME)
        except PermissionError:
            # O_NOATIME needs ownership of the file; plain read access is enough without it.
            return os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not a disk image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ENOMEDIUM:
            raise ImageError(f"{path}: no medium in the drive") from None
        raise ImageError(f"{path}: cannot open: {exc.strerror or exc}") from None


def _block_sector_size(fd: int) -> int | None:
    try:
        raw = fcntl.ioctl(fd, _BLKSSZGET, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("=i", raw)[0])
