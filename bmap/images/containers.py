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

import numpy as np
import numpy.typing as npt

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


@dataclass(frozen=True)
class HostFile:
    """One file that holds a virtual disk's bytes: the container, a backing file, a data file."""

    path: str
    format: str
    size: int


@dataclass(frozen=True)
class HostStructure:
    """One structure of a container file, where it lies in that file (for ``map --host``)."""

    layer: int
    """The file (index in :meth:`HostLayout.host_files`)."""
    kind: str
    """``qcow2-header``, ``l1-table``, ``l2-table``, ``refcount-table``, ..."""
    offset: int
    length: int
    guest_offset: int = -1
    """The first virtual-disk offset the structure describes (an L2 table's), or -1."""


@dataclass
class HostRuns:
    """Where a virtual disk's bytes sit in its files, one row per run in virtual-disk order.

    Runs that no file stores (zero clusters, clusters no layer allocates) are absent: they
    read as zeros. A compressed run is one cluster; its host range is the compressed bytes.
    """

    guest_start: npt.NDArray[np.int64]
    guest_end: npt.NDArray[np.int64]
    layer: npt.NDArray[np.int64]
    host_start: npt.NDArray[np.int64]
    host_length: npt.NDArray[np.int64]
    compressed: npt.NDArray[np.bool_]


class HostLayout(Protocol):
    """A reader that can say where each byte of the virtual disk sits in its files."""

    def host_files(self) -> list[HostFile]: ...

    def host_structures(self) -> list[HostStructure]: ...

    def host_runs(self) -> HostRuns: ...


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
        self.path: Path | str
        if isinstance(path, str) and "://" in path:
            self.path = path  # an NBD URI stays the text given: a Path would fold its "//"
        elif path is not None:
            self.path = Path(path)
        else:
            self.path = file.path  # type: ignore[union-attr]
        self.size = info.virtual_size
        self.sector_size = sector_size
        self.findings: list[Finding] = []
        #: Where each byte sits in the container's files, where the reader can say (qcow2).
        self.layout: HostLayout | None = None
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
