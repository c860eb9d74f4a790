"""VMDK, VHDX and EWF (E01) through the libyal bindings; VHD through :mod:`parsers.vhd`.

pyvmdk, pyvhdi and pyewf read every file through a Python file object (``open_file_object``):
each file is opened here, read-only, as an :class:`~bmap.images.files.Image`, and handed over as
a :class:`_ReadOnlyFile` that reads it with ``pread``. The bindings never see a path, so none
of them can open a file for writing, and a missing extent or segment is bmap's own one-line
error.

VHD is read by :class:`parsers.vhd.VHD`, not pyvhdi: libvhdi returns zeros for the sectors of
an allocated dynamic-disk block whose bitmap bits are clear, where qemu (the reference) reads
the data; the module docstring of :mod:`parsers.vhd` says more.

A read the binding fails (damaged data, a cut file) is retried piece by piece; what still fails
reads as zeros and becomes a finding (:meth:`VirtualDisk.damage`); the map goes on.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bmap.errors import BmapError, ContainerError, ImageError, Severity
from bmap.images.containers import ChainLink, ContainerInfo, VirtualDisk
from bmap.images.files import Image
from parsers.errors import ParserError
from parsers.vhd import VHD, read_vhdx_parameters

__all__ = ["open_ewf", "open_vhd", "open_vhdx", "open_vmdk"]

#: How deep a chain of parents (VMDK, VHD, VHDX) may go before bmap calls it a loop.
MAX_CHAIN = 16
#: The piece a failed read is retried in, so that one bad chunk does not blank its neighbours.
_RETRY_PIECE = 4096


class _ReadOnlyFile:
    """A file object over an :class:`Image` for the libyal bindings: ``read``, ``seek``,
    ``tell``/``get_offset``, ``get_size``; it has no ``write``."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.name = str(image.path)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.image.size - self._position
        data = self.image.pread(self._position, size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._position
        elif whence == os.SEEK_END:
            offset += self.image.size
        if offset < 0:
            raise OSError(f"{self.name}: seek to a negative offset")
        self._position = offset
        return offset

    def tell(self) -> int:
        return self._position

    get_offset = tell

    def get_size(self) -> int:
        return self.image.size

    def close(self) -> None:
        """The bindings call this on close; the :class:`Image` is closed by its owner."""


class _Files:
    """Every file a container reads beside itself, opened read-only and closed together."""

    def __init__(self) -> None:
        self.images: list[Image] = []

    def open(self, path: Path, number: int, owner: Path, what: str) -> _ReadOnlyFile:
        try:
            image = Image(path, number)
        except ImageError as exc:
            raise ImageError(f"{owner}: {what} {exc}") from None
        self.images.append(image)
        return _ReadOnlyFile(image)

    def close(self) -> None:
        while self.images:
            self.images.pop().close()


class _BindingReader:
    """A libyal handle's ``read_buffer_at_offset`` as a :class:`DiskReader`: a failed range is
    retried in pieces, and what still fails reads as zeros and becomes a finding."""

    def __init__(self, handle: Any, size: int, fmt: str) -> None:
        self.handle = handle
        self.size = size
        self.fmt = fmt
        self.disk: VirtualDisk | None = None

    def pread(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        try:
            return self._read(offset, size)
        except OSError:
            pass
        out = bytearray()
        end = offset + size
        pos = offset
        while pos < end:
            piece = min(end, (pos // _RETRY_PIECE + 1) * _RETRY_PIECE) - pos
            try:
                out += self._read(pos, piece)
            except OSError as exc:
                self._damage(pos, piece, _first_line(exc))
                out += bytes(piece)
            pos += piece
        return bytes(out)

    def _read(self, offset: int, size: int) -> bytes:
        data: bytes = self.handle.read_buffer_at_offset(size, offset)
        if len(data) < size:
            # The bindings return short only at the end of the media, which pread clipped to.
            raise OSError(f"short read: {len(data)} of {size} bytes")
        return data

    def _damage(self, offset: int, size: int, message: str) -> None:
        if self.disk is not None:
            text = f"{self.fmt}: {size} bytes unreadable, read as zeros: {message}"
            self.disk.damage(Severity.ERROR, offset, self.fmt, text)


def _first_line(exc: BaseException) -> str:
    """The cause of a libyal error in one line.

    A libyal error is a backtrace of C functions, ``binding_function: summary.
    innermost_function: cause. ... outermost_function: ...``; the innermost cause says most."""
    if not isinstance(exc, OSError | ValueError | TypeError | MemoryError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    parts = [p.strip() for p in _LIBYAL_FRAME.split(" ".join(str(exc).split())) if p.strip()]
    if not parts:
        return type(exc).__name__
    cause = parts[1] if len(parts) > 1 else parts[0]
    return _LIBYAL_FUNCTION.sub("", cause).rstrip(".")


_LIBYAL_FRAME = re.compile(r"(?<=\.)\s+(?=[a-z_0-9]+: )")
_LIBYAL_FUNCTION = re.compile(r"^[a-z_0-9]+: ")


def _container_error(path: Path, what: str, exc: BaseException) -> ContainerError:
    return ContainerError(f"{path}: {what} cannot be opened: {_first_line(exc)}")


def _finish(
    reader: _BindingReader | Any,
    info: ContainerInfo,
    file: Image,
    sector_size: int | None,
    closers: list[Callable[[], object]],
) -> VirtualDisk:
    if isinstance(reader, _BindingReader) and reader.size > 0:
        # A container whose very first sector does not read (its grain tables cut off, say)
        # is refused here: mapped, it would read as zeros and look like an empty disk.
        try:
            reader._read(0, min(reader.size, 512))
        except OSError as exc:
            raise ContainerError(
                f"{file.path}: {reader.fmt.upper()} is damaged: the disk's first sector cannot "
                f"be read: {_first_line(exc)}"
            ) from None
    disk = VirtualDisk(reader, info, file=file, sector_size=sector_size, closers=closers)
    if isinstance(reader, _BindingReader):
        reader.disk = disk
    return disk


def _guard(path: Path, what: str, closers: list[Callable[[], object]], work: Callable[[], Any]):
    """Run ``work``; on any failure run ``closers`` and raise one clear error."""
    try:
        return work()
    except BmapError:
        _close_all(closers)
        raise
    except (OSError, ParserError, ValueError, TypeError, MemoryError) as exc:
        _close_all(closers)
        raise _container_error(path, what, exc) from None
    except BaseException:
        _close_all(closers)
        raise


def _close_all(closers: list[Callable[[], object]]) -> None:
    while closers:
        try:
            closers.pop()()
        except Exception:
            pass


def _chain_guard(path: Path, seen: tuple[Path, ...]) -> None:
    if len(seen) >= MAX_CHAIN:
        raise ContainerError(f"{path}: a chain of more than {MAX_CHAIN} parent images")
    resolved = path.resolve()
    if resolved in seen:
        raise ContainerError(f"{path}: the chain of parent images loops back to {resolved}")


# VMDK


def _vmdk_names(module: Any, attribute: str) -> dict[int, str]:
    names = getattr(module, attribute)
    return {getattr(names, n): n.lower() for n in dir(names) if n.isupper()}


_VMDK_CREATE_TYPES = {
    "monolithic_sparse": "monolithicSparse",
    "monolithic_flat": "monolithicFlat",
    "stream_optimized": "streamOptimized",
    "sparse_2gb_extent": "twoGbMaxExtentSparse",
    "flat_2gb_extent": "twoGbMaxExtentFlat",
    "vmfs_flat": "vmfs",
    "vmfs_sparse": "vmfsSparse",
    "device": "fullDevice",
    "device_paritioned": "partitionedDevice",
}


def open_vmdk(file: Image) -> VirtualDisk:
    """A VMDK: a sparse extent (``KDMV``/``COWD``) or a text descriptor naming its extents,
    found beside the descriptor; a parent (``parentCID``) is read through ``set_parent``.

    Raises:
        ImageError: an extent or the parent file is missing or unreadable.
        ContainerError: a header or descriptor libvmdk cannot read.
    """
    return _open_vmdk(file, (file.path.resolve(),))


def _open_vmdk(file: Image, seen: tuple[Path, ...]) -> VirtualDisk:
    import pyvmdk

    files = _Files()
    closers: list[Callable[[], object]] = [files.close]
    handle = pyvmdk.handle()

    def work() -> VirtualDisk:
        handle.open_file_object(_ReadOnlyFile(file))
        closers.append(handle.close)
        folder = file.path.parent
        extents: list[ChainLink] = []
        objects = []
        extent_types = _vmdk_names(pyvmdk, "extent_types")
        # A sparse file with its descriptor inside (monolithicSparse, streamOptimized) is its
        # own only extent, whatever name the descriptor gives it (the file may be renamed).
        embedded = file.pread(0, 4) in (b"KDMV", b"COWD") and handle.number_of_extents == 1
        for descriptor in handle.extent_descriptors:
            name = descriptor.filename or ""
            extent_type = extent_types.get(descriptor.type, str(descriptor.type))
            if not name or extent_type == "zero":
                continue
            path = file.path if embedded else folder / name
            if embedded or _same_file(path, file):
                objects.append(_ReadOnlyFile(file))
            else:
                objects.append(files.open(path, file.number, file.path, "extent"))
            extents.append(ChainLink("extent", str(path), extent_type))
        handle.open_extent_data_files_as_file_objects(objects)
        chain = list(extents)
        if handle.parent_filename:
            parent = _open_parent(file, handle.parent_filename, seen, _open_vmdk)
            closers.insert(0, parent.close)
            handle.set_parent(parent.reader.handle)  # type: ignore[attr-defined]
            chain.append(ChainLink("backing", str(parent.path), "vmdk"))
            chain.extend(parent.container.chain)
        disk_type = _vmdk_names(pyvmdk, "disk_types").get(handle.disk_type, "")
        grain, compression = _vmdk_grain(file, objects)
        details = {
            "create-type": _VMDK_CREATE_TYPES.get(disk_type, disk_type),
            "extents": str(len(extents)),
            "content-id": f"{handle.content_identifier:08x}",
        }
        if handle.parent_filename:
            details["parent-content-id"] = f"{handle.parent_content_identifier:08x}"
        info = ContainerInfo(
            format="vmdk",
            virtual_size=handle.media_size,
            file_size=file.size,
            cluster_size=grain,
            compression=compression,
            chain=tuple(chain),
            details=details,
        )
        disk = _finish(_BindingReader(handle, handle.media_size, "vmdk"), info, file, None, closers)
        for extent in [_ReadOnlyFile(file), *objects]:
            problem = _vmdk_directory_problem(extent.image)
            if problem:
                disk.damage(Severity.ERROR, None, "vmdk", f"{extent.image.path.name}: {problem}")
        return disk

    return _guard(file.path, "VMDK", closers, work)  # type: ignore[no-any-return]


def _same_file(path: Path, file: Image) -> bool:
    try:
        return os.path.samefile(path, file.path)
    except OSError:
        return False


def _vmdk_grain(file: Image, extents: list[_ReadOnlyFile]) -> tuple[int | None, str | None]:
    """Grain size and compression from the first sparse extent's header (libvmdk keeps them to
    itself): ``KDMV`` has grainSize (sectors) at 20 and compressAlgorithm at 77; ``COWD`` its
    granularity (sectors) at 16."""
    for extent in [_ReadOnlyFile(file), *extents]:
        head = extent.image.pread(0, 80)
        if head[:4] == b"KDMV" and len(head) >= 79:
            grain = int.from_bytes(head[20:28], "little") * 512
            algorithm = int.from_bytes(head[77:79], "little")
            return grain or None, {0: None, 1: "deflate"}.get(algorithm, f"method {algorithm}")
        if head[:4] == b"COWD" and len(head) >= 20:
            return int.from_bytes(head[16:20], "little") * 512 or None, None
    return None, None


_KDMV = struct.Struct("<4sIIQQQQIQQQ")
_GD_AT_END = 0xFFFFFFFFFFFFFFFF
#: The most grain-table bytes compared with their copies (a 2 TiB disk of 64 KiB grains).
_GD_CHECK_LIMIT = 64 << 20


def _vmdk_directory_problem(image: Image) -> str | None:
    """Compare a sparse extent's grain tables with their redundant copies. libvmdk reads
    through the first directory only; where it is damaged (a bad gdOffset), every grain reads
    as sparse, zeros with no error. In a healthy file both directories lie inside the file and
    the tables they point at hold the same entries. Bounded by the file's size, not by the
    header's counts."""
    head = image.pread(0, _KDMV.size)
    if len(head) < _KDMV.size or head[:4] != b"KDMV":
        return None
    _, _, _, capacity, grain, _, _, per_table, rgd, gd, _ = _KDMV.unpack(head)
    if gd == _GD_AT_END or not (grain and per_table and rgd):
        return None  # streamOptimized keeps its directory in the footer
    grains = -(-capacity // grain)
    entries = -(-grains // per_table)
    table = per_table * 4
    if entries * table > _GD_CHECK_LIMIT:
        return None  # a claim this large is left to the reads themselves
    for name, sector in (("grain directory", gd), ("redundant grain directory", rgd)):
        if sector * 512 + entries * 4 > image.size:
            return f"the {name} at sector {sector} lies past the end of the file"
    primary = np.frombuffer(image.pread(gd * 512, entries * 4), "<u4").tolist()
    backup = np.frombuffer(image.pread(rgd * 512, entries * 4), "<u4").tolist()
    differ = sum(
        image.pread(a * 512, table) != image.pread(b * 512, table)
        for a, b in zip(primary, backup)
        if a or b
    )
    if differ:
        return (
            f"{differ} of {entries} grain tables differ from their redundant copies (the "
            f"directories at sectors {gd} and {rgd}); read through the first, as libvmdk does"
        )
    return None


def _open_parent(
    child: Image,
    name: str,
    seen: tuple[Path, ...],
    opener: Callable[[Image, tuple[Path, ...]], VirtualDisk],
    candidates: list[str] | None = None,
) -> VirtualDisk:
    """Open the parent ``name`` of ``child`` (relative to the child's folder; a Windows path
    falls back to its last component there)."""
    names = [*(candidates or []), name]
    tried: list[Path] = []
    for candidate in names:
        relative = child.path.parent / candidate.replace("\\", "/")
        for path in (relative, child.path.parent / _basename(candidate)):
            if path not in tried:
                tried.append(path)
            if path.is_file():
                _chain_guard(path, seen)
                parent = Image(path, child.number)
                try:
                    return opener(parent, (*seen, path.resolve()))
                except BaseException:
                    parent.close()
                    raise
    raise ImageError(f"{child.path}: parent image {name!r} not found (looked for {tried[0]})")


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


# VHD (parsers.vhd) and VHDX (pyvhdi)


class _VHDReader:
    def __init__(self, vhd: VHD) -> None:
        self.vhd = vhd
        self.disk: VirtualDisk | None = None

    def pread(self, offset: int, size: int) -> bytes:
        return self.vhd.pread(offset, size, self._damage)

    def _damage(self, offset: int, size: int, message: str) -> None:
        if self.disk is not None:
            text = f"vhd: {size} bytes unreadable, read as zeros: {message}"
            self.disk.damage(Severity.ERROR, offset, "vhd", text)


def open_vhd(file: Image) -> VirtualDisk:
    """A VHD (fixed, dynamic or differencing), read by :class:`parsers.vhd.VHD`.

    Raises:
        ImageError: the parent of a differencing disk is missing.
        ContainerError: a footer or dynamic header too damaged to read.
    """
    return _open_vhd(file, (file.path.resolve(),))


def _open_vhd(file: Image, seen: tuple[Path, ...]) -> VirtualDisk:
    closers: list[Callable[[], object]] = []

    def work() -> VirtualDisk:
        vhd = VHD(file, file.size)
        chain: list[ChainLink] = []
        details = {
            "disk-type": vhd.disk_type,
            "creator": f"{vhd.creator.strip()} {vhd.creator_version >> 16}."
            f"{vhd.creator_version & 0xFFFF} ({vhd.creator_host_os.strip()})",
            "geometry-chs": "/".join(str(n) for n in vhd.chs),
            "identifier": str(vhd.unique_id),
        }
        if vhd.disk_type == "differencing":
            locators = [loc.path for loc in vhd.parent_locators]
            parent = _open_parent(file, vhd.parent_name, seen, _open_vhd, locators)
            closers.append(parent.close)
            if isinstance(parent.reader, _VHDReader):
                got = parent.reader.vhd.unique_id
                if got != vhd.parent_unique_id:
                    raise ContainerError(
                        f"{file.path}: parent {parent.path} is not the parent this disk was "
                        f"made from (identifier {got}, expected {vhd.parent_unique_id})"
                    )
            vhd.parent = parent
            chain.append(ChainLink("backing", str(parent.path), parent.format))
            chain.extend(parent.container.chain)
            details["parent-name"] = vhd.parent_name
        reader = _VHDReader(vhd)
        info = ContainerInfo(
            format="vhd",
            virtual_size=vhd.size,
            file_size=file.size,
            cluster_size=vhd.block_size,
            chain=tuple(chain),
            details=details,
        )
        disk = VirtualDisk(reader, info, file=file, sector_size=None, closers=closers)
        reader.disk = disk
        for note in vhd.notes:
            disk.damage(Severity.WARNING, None, "vhd", note)
        return disk

    return _guard(file.path, "VHD", closers, work)  # type: ignore[no-any-return]


def open_vhdx(file: Image) -> VirtualDisk:
    """A VHDX through pyvhdi; a differencing disk's parent through ``set_parent``.

    Raises:
        ImageError: the parent is missing.
        ContainerError: headers, region or metadata tables libvhdi cannot read.
    """
    return _open_vhdx(file, (file.path.resolve(),))


def _open_vhdx(file: Image, seen: tuple[Path, ...]) -> VirtualDisk:
    import pyvhdi

    closers: list[Callable[[], object]] = []
    handle = pyvhdi.file()

    def work() -> VirtualDisk:
        handle.open_file_object(_ReadOnlyFile(file))
        closers.append(handle.close)
        parameters = read_vhdx_parameters(file)
        types = {getattr(pyvhdi.disk_types, n): n.lower() for n in dir(pyvhdi.disk_types)}
        disk_type = types.get(handle.disk_type, str(handle.disk_type))
        if disk_type == "differential":
            disk_type = "differencing"
        chain: list[ChainLink] = []
        if handle.parent_filename:
            parent = _open_parent(file, handle.parent_filename, seen, _open_vhdx)
            closers.insert(0, parent.close)
            handle.set_parent(parent.reader.handle)  # type: ignore[attr-defined]
            chain.append(ChainLink("backing", str(parent.path), "vhdx"))
            chain.extend(parent.container.chain)
        details = {"disk-type": disk_type, "identifier": str(handle.identifier)}
        if parameters.logical_sector_size:
            details["logical-sector-size"] = str(parameters.logical_sector_size)
        if parameters.physical_sector_size:
            details["physical-sector-size"] = str(parameters.physical_sector_size)
        info = ContainerInfo(
            format="vhdx",
            virtual_size=handle.media_size,
            file_size=file.size,
            cluster_size=parameters.block_size,
            chain=tuple(chain),
            details=details,
        )
        sector_size = parameters.logical_sector_size or handle.bytes_per_sector
        reader = _BindingReader(handle, handle.media_size, "vhdx")
        return _finish(reader, info, file, sector_size, closers)

    return _guard(file.path, "VHDX", closers, work)  # type: ignore[no-any-return]


# EWF (E01)

_EWF_HEADER_NAMES = {
    "case_number": "case-number",
    "description": "description",
    "examiner_name": "examiner",
    "evidence_number": "evidence-number",
    "notes": "notes",
    "acquiry_date": "acquiry-date",
    "system_date": "system-date",
    "acquiry_operating_system": "acquiry-os",
    "acquiry_software": "acquiry-software",
    "acquiry_software_version": "acquiry-software-version",
    "model": "model",
    "serial_number": "serial-number",
    "device_label": "device-label",
    "password": "password",
    "compression_level": "compression-level",
}


def open_ewf(file: Image) -> VirtualDisk:
    """An EWF (E01) evidence file and every segment beside it (``.E02``, ...), found by
    ``pyewf.glob``; the case metadata and the stored hashes go into the details.

    Raises:
        ImageError: a segment cannot be opened.
        ContainerError: a segment is missing from the set, or headers libewf cannot read.
    """
    import pyewf

    files = _Files()
    closers: list[Callable[[], object]] = [files.close]
    handle = pyewf.handle()

    def work() -> VirtualDisk:
        names = [Path(name) for name in pyewf.glob(str(file.path))]
        if not names or not _same_file(names[0], file):
            raise ContainerError(
                f"{file.path}: not the first segment of an EWF set (open the .E01 file)"
            )
        objects = [_ReadOnlyFile(file)]
        objects += [files.open(name, file.number, file.path, "segment") for name in names[1:]]
        levels = [
            _check_ewf_segment(segment.image, number, last=number == len(objects))
            for number, segment in enumerate(objects, start=1)
        ]
        level = next((lv for lv in levels if lv is not None), None)
        handle.open_file_objects(objects)
        closers.append(handle.close)
        details = {}
        for key, value in sorted(handle.get_header_values().items()):
            if value:
                details[_EWF_HEADER_NAMES.get(key, key.replace("_", "-"))] = str(value)
        for key, value in sorted(handle.get_hash_values().items()):
            details[f"stored-{key.lower()}"] = str(value)
        media_types = {getattr(pyewf.media_types, n): n.lower() for n in dir(pyewf.media_types)}
        methods = {
            getattr(pyewf.compression_methods, n): n.lower() for n in dir(pyewf.compression_methods)
        }
        details["media-type"] = media_types.get(handle.media_type, str(handle.media_type))
        details["bytes-per-sector"] = str(handle.bytes_per_sector)
        details["sectors-per-chunk"] = str(handle.sectors_per_chunk)
        details["segments"] = str(len(names))
        info = ContainerInfo(
            format="ewf",
            virtual_size=handle.media_size,
            file_size=sum(o.image.size for o in objects),
            cluster_size=handle.sectors_per_chunk * handle.bytes_per_sector or None,
            compression=_ewf_compression(
                methods.get(handle.compression_method, str(handle.compression_method)), level
            ),
            chain=tuple(ChainLink("segment", str(name), "ewf") for name in names),
            details=details,
        )
        reader = _BindingReader(handle, handle.media_size, "ewf")
        return _finish(reader, info, file, handle.bytes_per_sector or None, closers)

    return _guard(file.path, "EWF", closers, work)  # type: ignore[no-any-return]


_EWF_SECTION = struct.Struct("<16sQQ40xI")
#: The compression level byte of a ``volume``/``disk`` section's data (EnCase 1052-byte layout).
_EWF_LEVEL_AT = 52
_EWF_LEVELS = {0: "none", 1: "fast", 2: "best"}


def _ewf_compression(method: str, level: int | None) -> str:
    """The method pyewf names, with the level the volume section stores (pyewf gives the
    method even where nothing is compressed)."""
    if level == 0:
        return "none"
    return method if level is None else f"{method} ({_EWF_LEVELS.get(level, level)})"


def _check_ewf_segment(image: Image, number: int, *, last: bool) -> int | None:
    """Walk one segment's section chain: it must end in ``next`` (more segments follow) or
    ``done`` (the last). libewf opens a segment set that is cut short or lacks its later
    segments and reads the missing chunks as zeros, without an error; this refuses it.

    Returns the compression level of the segment's ``volume`` or ``disk`` section, if it
    has one (the first segment does).

    Raises:
        ContainerError: a segment out of order, a chain that runs past the file's end, or a
            set that ends before its ``done`` section.
    """
    level = None
    head = image.pread(0, 13)
    stored = int.from_bytes(head[9:11], "little")
    if stored != number:
        raise ContainerError(
            f"{image.path}: EWF segment {stored} where segment {number} was expected "
            "(a segment of the set is missing)"
        )
    offset = 13
    for _ in range(image.size // _EWF_SECTION.size + 1):
        raw = image.pread(offset, _EWF_SECTION.size)
        if len(raw) < _EWF_SECTION.size:
            break
        kind, following, _size, _checksum = _EWF_SECTION.unpack(raw)
        kind = kind.rstrip(b"\0")
        if kind in (b"volume", b"disk") and level is None:
            byte = image.pread(offset + _EWF_SECTION.size + _EWF_LEVEL_AT, 1)
            level = byte[0] if byte else None
        if kind in (b"done", b"next"):
            if kind == b"next" and last:
                raise ContainerError(
                    f"{image.path}: EWF segment {number} says more segments follow, and "
                    f"{_segment_name(image.path, number + 1)} is missing"
                )
            return level
        if following <= offset:
            break
        offset = following
    raise ContainerError(
        f"{image.path}: EWF segment {number} is cut short or damaged: its section chain "
        f"breaks at {offset:#x} of {image.size:#x} bytes before its 'done' or 'next' section"
    )


def _segment_name(path: Path, number: int) -> str:
    # .E01 .. .E99, then .EAA .. (libewf's naming); only the first 99 are spelled out here.
    suffix = path.suffix
    if number <= 99 and len(suffix) == 4:
        return path.with_suffix(f"{suffix[:2]}{number:02d}").name
    return f"segment {number}"
