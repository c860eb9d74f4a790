"""An image file or block device opened read-only: the bytes as they are stored.

Opened ``O_RDONLY`` (and ``O_NOATIME`` where allowed, so that even the access time of the
evidence stays as it was); nothing in bmap ever writes to an input.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path

from bmap.errors import Finding, ImageError
from bmap.images.streams import RangeStream

#: ioctl(BLKSSZGET): the logical sector size of a block device.
_BLKSSZGET = 0x1268


class Image:
    """A disk image opened read-only: a regular file or a block device.

    Attributes:
        format: the image format's name in :data:`IMAGE_FORMATS` (``raw``).
        number: 1-based position among the images given (disk 1, 2, ...).
        path: as given.
        size: in bytes.
        is_block_device: True for a block device.
        sector_size: the device's logical sector size where the kernel knows it, else None.
        container: None: a raw image is no container.
        findings: always empty: raw bytes are read as they are.
    """

    format = "raw"
    container = None

    def __init__(self, path: str | os.PathLike[str], number: int = 1) -> None:
        self.path = Path(path)
        self.number = number
        self.findings: list[Finding] = []
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
