"""Virtual disks held in containers (qcow2, VMDK, VHD/VHDX, E01, an NBD export).

A :class:`VirtualDisk` is what every layer above reads: the disk the guest sees, with the same
face as a raw :class:`~bmap.images.files.Image` (``number``, ``path``, ``size``, ``pread``,
``stream``), whatever the container does underneath. Offsets are virtual-disk offsets.
:class:`ContainerInfo` says what the container is, for ``bmap info`` and the map's header.

A reader that meets damage while reading (a compressed cluster that does not inflate, a table
pointing past the end of the file) returns zeros for the bytes it cannot give and records a
:class:`~bmap.errors.Finding` in :attr:`VirtualDisk.findings`, once per place; the mapper puts
them in the map. Damage that leaves nothing readable (no header) is a
:class:`~bmap.errors.ContainerError` when the image is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bmap.errors import Finding, Severity
from bmap.images.files import Image
from bmap.images.streams import RangeStream, gather_by_pread


@dataclass(frozen=True)
class ChainLink:
    """One file under a container: a backing file, an external data file, an extent or a
    segment."""

    role: str
    """``backing`` (the next image of a qcow2 chain), ``data-file``, ``extent``, ``segment``."""
    path: str
    format: str


@dataclass
class ContainerInfo:
    """What a container is, as ``bmap info`` shows it and the map's header records it."""

    format: str
    """``qcow2``, ``vmdk``, ``vhd``, ``vhdx``, ``ewf``, ``nbd``."""
    virtual_size: int
    file_size: int
    cluster_size: int | None = None
    """The allocation unit (qcow2 cluster, VMDK grain, VHD/VHDX block, EWF chunk)."""
    compression: str | None = None
    """``deflate``, ``zstd``, ... where the container compresses; ``none`` where it may and
    does not; None where the format has no compression."""
    chain: tuple[ChainLink, ...] = ()
    """The files it reads beside itself, in order (a qcow2's backing files, depth first)."""
    details: dict[str, str] = field(default_factory=dict)
    """Format-specific facts: the subformat (``monolithicSparse``, ``dynamic``), the version,
    an E01's case metadata and stored hashes."""


class DiskReader(Protocol):
    """A container's reader: the virtual disk's bytes at an offset, short only at its end."""

    def pread(self, offset: int, size: int) -> bytes: ...


class VirtualDisk:
    """The disk a container holds, read through its reader.

    Attributes:
        file: the container file itself, opened read-only (None for an NBD export).
        format: the container format (:attr:`ContainerInfo.format`).
        container: what the container is.
        number, path: as the file's.
        size: the virtual disk's size.
        sector_size: the guest's logical sector size where the container records it.
        findings: damage met while reading, once per place.
    """

    is_block_device = False

    def __init__(
        self,
        reader: DiskReader,
        info: ContainerInfo,
        *,
        file: Image | None = None,
        path: str | Path | None = None,
        number: int | None = None,
        sector_size: int | None = None,
        closers: Sequence[Callable[[], object]] = (),
    ) -> None:
        if file is None and (path is None or number is None):
            raise TypeError("a virtual disk with no file needs its path and number")
        self.file = file
        self.reader = reader
        self.container = info
        self.format = info.format
        self.number: int = file.number if number is None and file is not None else number  # type: ignore[assignment]
        self.path: Path = Path(path) if path is not None else file.path  # type: ignore[union-attr]
        self.size = info.virtual_size
        self.sector_size = sector_size
        self.findings: list[Finding] = []
        self._seen: set[tuple[int | None, str]] = set()
        self._closers = list(closers)
        self._gather = getattr(reader, "gather_into", None)

    def __repr__(self) -> str:
        return (
            f"VirtualDisk({str(self.path)!r}, format={self.format}, number={self.number}, "
            f"size={self.size:#x})"
        )

    def pread(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` of the virtual disk."""
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        return self.reader.pread(offset, size)

    def gather_into(
        self,
        buffer: memoryview,
        offsets: Sequence[int],
        positions: Sequence[int],
        sizes: Sequence[int],
    ) -> None:
        """Read each piece into ``buffer`` (the reader's own ``gather_into`` where it has one;
        the pieces lie inside the virtual disk: :meth:`RangeStream.gather_into` clips them)."""
        if self._gather is not None:
            self._gather(buffer, offsets, positions, sizes)
        else:
            gather_by_pread(self, buffer, offsets, positions, sizes)

    def damage(self, severity: Severity, offset: int | None, source: str, message: str) -> None:
        """Record damage met while reading (once per ``offset`` and ``message``)."""
        key = (offset, message)
        if key not in self._seen:
            self._seen.add(key)
            self.findings.append(Finding(severity, self.number, offset, source, message))

    def stream(self) -> RangeStream:
        """A view of the whole virtual disk."""
        return RangeStream(self, 0, self.size)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> VirtualDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
