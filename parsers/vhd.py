"""Microsoft Virtual Hard Disk (VHD, the Virtual PC format): fixed, dynamic and differencing.

https://learn.microsoft.com/en-us/windows/win32/vstor/about-vhd (the "Virtual Hard Disk Image
Format Specification", October 2006). Also the small part of VHDX (its metadata region) that
says the block and sector sizes: MS-VHDX 2.6.

A fixed VHD is the disk followed by a 512-byte footer. A dynamic VHD is a copy of the footer,
a 1 KiB dynamic header that points at the block allocation table (BAT: big-endian sector
numbers, 0xFFFFFFFF for a block never written), the blocks (each a sector bitmap padded to a
whole sector, then the block's data), and the footer again at the end.

Why bmap reads VHD itself rather than through libvhdi: libvhdi honours a dynamic disk's sector
bitmaps and returns zeros for every sector whose bit is clear, even where the block holds the
data; qemu (and, by their behaviour, Virtual PC and Hyper-V for dynamic disks) read the data of
an allocated block whatever its bitmap says. An image whose writer left bitmap bits clear reads
correctly in libvhdi up to the first such block and as zeros after it. Here the bitmap is
consulted only where the format gives it meaning: in a differencing disk, where a clear bit
sends the read to the parent.

The disk's size is the footer's "current size" (as libvhdi, Hyper-V and disk2vhd take it).
qemu takes the smaller CHS-geometry size (cylinders x heads x sectors x 512) for images whose
creator is not ``win ``, ``d2v `` or ``qemu``'s own ``qem2``, so ``qemu-img convert`` may give a
few KiB less.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import construct as cs
import numpy as np

from parsers.errors import DamagedError, NotThisFormat, TruncatedError, UnsupportedError


class PositionalReader(Protocol):
    def pread(self, offset: int, size: int) -> bytes: ...


FOOTER = cs.Struct(
    "cookie" / cs.Bytes(8) * "conectix",
    "features" / cs.Int32ub,
    "format_version" / cs.Int32ub * "0x00010000",
    "data_offset" / cs.Int64ub * "the dynamic header's file offset; all ones for a fixed disk",
    "timestamp" / cs.Int32ub * "seconds since 2000-01-01 00:00 UTC",
    "creator_application" / cs.Bytes(4) * "vpc , vs  , win , d2v , qemu, qem2, ...",
    "creator_version" / cs.Int32ub,
    "creator_host_os" / cs.Bytes(4) * "Wi2k, Mac ",
    "original_size" / cs.Int64ub,
    "current_size" / cs.Int64ub * "the disk's size in bytes",
    "cylinders" / cs.Int16ub,
    "heads" / cs.Int8ub,
    "sectors_per_track" / cs.Int8ub,
    "disk_type" / cs.Int32ub * "2 fixed, 3 dynamic, 4 differencing",
    "checksum" / cs.Int32ub * "ones' complement of the byte sum, this field as zero",
    "unique_id" / cs.Bytes(16),
    "saved_state" / cs.Int8ub,
    cs.Padding(427),
)

PARENT_LOCATOR = cs.Struct(
    "platform_code" / cs.Bytes(4) * "W2ru (relative), W2ku (absolute), Wi2r, Wi2k, Mac , MacX",
    "data_space" / cs.Int32ub * "sectors reserved",
    "data_length" / cs.Int32ub * "bytes",
    cs.Padding(4),
    "data_offset" / cs.Int64ub * "file offset of the locator's path",
)

DYNAMIC_HEADER = cs.Struct(
    "cookie" / cs.Const(b"cxsparse"),
    "data_offset" / cs.Int64ub * "unused: all ones",
    "table_offset" / cs.Int64ub * "the BAT's file offset",
    "header_version" / cs.Int32ub,
    "max_table_entries" / cs.Int32ub * "BAT entries",
    "block_size" / cs.Int32ub * "bytes of data per block, 2 MiB by default",
    "checksum" / cs.Int32ub,
    "parent_unique_id" / cs.Bytes(16),
    "parent_timestamp" / cs.Int32ub,
    cs.Padding(4),
    "parent_unicode_name" / cs.Bytes(512) * "UTF-16BE, NUL-padded",
    "parent_locators" / cs.Array(8, PARENT_LOCATOR),
    cs.Padding(256),
)

DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
_UNALLOCATED = 0xFFFFFFFF
_MAX_BLOCK_SIZE = 256 << 20
_MAX_LOCATOR = 64 << 10
_BITMAP_CACHE = 256


def _checksum(data: bytes, field: int) -> int:
    return ~(sum(data) - sum(data[field : field + 4])) & 0xFFFFFFFF


@dataclass(frozen=True)
class ParentLocator:
    platform: str
    path: str


class VHD:
    """A VHD read through ``fh.pread``: the disk as the guest sees it.

    Args:
        fh: the VHD file.
        file_size: its size in bytes.

    Raises:
        NotThisFormat: no footer (at the end, or its copy at the start).
        DamagedError: a footer or dynamic header that does not hold together.
        UnsupportedError: a disk type this reader does not know.
    """

    def __init__(self, fh: PositionalReader, file_size: int) -> None:
        self.fh = fh
        self.file_size = file_size
        self.notes: list[str] = []
        footer_offset, raw = self._find_footer()
        footer = FOOTER.parse(raw)
        if footer.checksum != _checksum(raw, 64):
            self.notes.append(f"vhd-footer at {footer_offset:#x}: checksum mismatch")
        self.footer_offset = footer_offset
        self.disk_type = DISK_TYPES.get(footer.disk_type, "")
        if not self.disk_type:
            raise UnsupportedError(
                "vhd-footer", footer_offset + 60, f"disk type {footer.disk_type}"
            )
        self.size: int = footer.current_size
        self.creator = footer.creator_application.decode("latin-1")
        self.creator_version = footer.creator_version
        self.creator_host_os = footer.creator_host_os.decode("latin-1")
        self.unique_id = uuid.UUID(bytes=footer.unique_id)
        self.chs = (footer.cylinders, footer.heads, footer.sectors_per_track)
        self.block_size: int | None = None
        self.parent: PositionalReader | None = None
        self.parent_unique_id: uuid.UUID | None = None
        self.parent_name = ""
        self.parent_locators: list[ParentLocator] = []
        if self.disk_type == "fixed":
            if self.size > footer_offset:
                raise TruncatedError(
                    "vhd-footer", footer_offset, f"disk of {self.size} bytes in a shorter file"
                )
            return
        self._read_dynamic_header(footer.data_offset)

    def _find_footer(self) -> tuple[int, bytes]:
        # The footer is the last 512 bytes; Virtual PC before 2004 wrote 511. A dynamic disk
        # keeps a copy at 0, which stands in for a damaged or cut end.
        for offset in (self.file_size - 512, self.file_size - 511, 0):
            if offset < 0:
                continue
            raw = self.fh.pread(offset, 512).ljust(512, b"\0")
            if raw[:8] == b"conectix":
                if offset == 0 and self.file_size > 512:
                    self.notes.append(
                        f"vhd-footer at {self.file_size - 512:#x}: missing; "
                        "read the copy at 0 (is the file cut short?)"
                    )
                return offset, raw
        raise NotThisFormat("vhd-footer", max(0, self.file_size - 512), "no 'conectix' cookie")

    def _read_dynamic_header(self, offset: int) -> None:
        raw = self.fh.pread(offset, DYNAMIC_HEADER.sizeof())
        if len(raw) < DYNAMIC_HEADER.sizeof():
            raise TruncatedError("vhd-dynamic-header", offset, "past the end of the file")
        try:
            header = DYNAMIC_HEADER.parse(raw)
        except cs.ConstructError:
            raise DamagedError("vhd-dynamic-header", offset, "no 'cxsparse' cookie") from None
        if header.checksum != _checksum(raw, 36):
            self.notes.append(f"vhd-dynamic-header at {offset:#x}: checksum mismatch")
        block_size = header.block_size
        if block_size < 512 or block_size > _MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise DamagedError("vhd-dynamic-header", offset + 32, f"block size {block_size}")
        self.block_size = block_size
        self.entries: int = header.max_table_entries
        if self.entries * block_size < self.size:
            raise DamagedError(
                "vhd-dynamic-header",
                offset + 28,
                f"{self.entries} BAT entries of {block_size} bytes cover less than the disk's "
                f"{self.size} bytes",
            )
        # Only the entries the disk needs are read: a hostile count does not allocate.
        self.entries = -(-self.size // block_size)
        self.table_offset: int = header.table_offset
        table = self.fh.pread(self.table_offset, self.entries * 4)
        if len(table) < self.entries * 4:
            raise TruncatedError("vhd-bat", self.table_offset, "past the end of the file")
        self.bat = np.frombuffer(table, ">u4")
        # The sector bitmap: one bit per sector of the block, padded to whole sectors.
        self.bitmap_size = -(-(block_size // 512 // 8) // 512) * 512
        if self.disk_type == "differencing":
            self.parent_unique_id = uuid.UUID(bytes=header.parent_unique_id)
            self.parent_name = header.parent_unicode_name.decode("utf-16-be", "replace").split(
                "\0"
            )[0]
            self.parent_locators = list(self._read_locators(header.parent_locators))
        self._bitmap = lru_cache(maxsize=_BITMAP_CACHE)(self._read_bitmap)

    def _read_locators(self, entries: list[cs.Container]) -> list[ParentLocator]:
        found = []
        for entry in entries:
            code = entry.platform_code
            if code not in (b"W2ru", b"W2ku") or not 0 < entry.data_length <= _MAX_LOCATOR:
                continue
            data = self.fh.pread(entry.data_offset, entry.data_length)
            path = data.decode("utf-16-le", "replace").split("\0")[0]
            if path:
                found.append(ParentLocator(code.decode(), path))
        return found

    def _read_bitmap(self, sector: int) -> bytes:
        return self.fh.pread(sector * 512, self.bitmap_size)

    def pread(
        self,
        offset: int,
        size: int,
        on_damage: Callable[[int, int, str], None] | None = None,
    ) -> bytes:
        """Read ``size`` bytes at ``offset`` of the disk; short only at its end.

        Args:
            on_damage: called as ``on_damage(offset, size, message)`` for a range whose data
                lies past the end of the file (it reads as zeros); without it, such a range
                raises :class:`~parsers.errors.TruncatedError`.
        """
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        if self.block_size is None:
            return self._file_range(offset, offset, size, on_damage)
        out = bytearray()
        block_size = self.block_size
        while size > 0:
            block, within = divmod(offset, block_size)
            length = min(size, block_size - within)
            entry = int(self.bat[block])
            if entry == _UNALLOCATED:
                out += self._unwritten(offset, length)
            else:
                data_start = entry * 512 + self.bitmap_size
                if self.disk_type == "differencing":
                    out += self._differencing(entry, data_start, offset, within, length, on_damage)
                else:
                    out += self._file_range(offset, data_start + within, length, on_damage)
            offset += length
            size -= length
        return bytes(out)

    def _unwritten(self, offset: int, length: int) -> bytes:
        if self.disk_type == "differencing":
            if self.parent is None:
                raise UnsupportedError("vhd", None, "a differencing disk read with no parent")
            return self.parent.pread(offset, length).ljust(length, b"\0")
        return bytes(length)

    def _differencing(
        self,
        entry: int,
        data_start: int,
        offset: int,
        within: int,
        length: int,
        on_damage: Callable[[int, int, str], None] | None,
    ) -> bytes:
        bitmap = self._bitmap(entry).ljust(self.bitmap_size, b"\0")
        out = bytearray()
        end = within + length
        pos = within
        while pos < end:
            sector = pos // 512
            here = bool(bitmap[sector >> 3] & (0x80 >> (sector & 7)))
            run_end = min(end, (sector + 1) * 512)
            while run_end < end:  # extend over sectors with the same bit
                s = run_end // 512
                if bool(bitmap[s >> 3] & (0x80 >> (s & 7))) != here:
                    break
                run_end = min(end, (s + 1) * 512)
            virtual = offset + (pos - within)
            if here:
                out += self._file_range(virtual, data_start + pos, run_end - pos, on_damage)
            else:
                out += self._unwritten(virtual, run_end - pos)
            pos = run_end
        return bytes(out)

    def _file_range(
        self,
        virtual: int,
        file_offset: int,
        length: int,
        on_damage: Callable[[int, int, str], None] | None,
    ) -> bytes:
        limit = self.footer_offset if self.disk_type == "fixed" else self.file_size
        data = self.fh.pread(file_offset, max(0, min(length, limit - file_offset)))
        if len(data) < length:
            message = (
                f"vhd data at file offset {file_offset + len(data):#x}: past the end of the file"
            )
            if on_damage is None:
                raise TruncatedError("vhd-block", file_offset, "past the end of the file")
            on_damage(virtual + len(data), length - len(data), message)
            data = data.ljust(length, b"\0")
        return data


# VHDX (MS-VHDX): only what the metadata region says about the disk's geometry.

_VHDX_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
_VHDX_ITEMS = {
    uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b"): "file_parameters",
    uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8"): "virtual_disk_size",
    uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f"): "logical_sector_size",
    uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556"): "physical_sector_size",
}

VHDX_REGION_ENTRY = cs.Struct(
    "guid" / cs.Bytes(16),
    "file_offset" / cs.Int64ul,
    "length" / cs.Int32ul,
    "required" / cs.Int32ul,
)
VHDX_METADATA_ENTRY = cs.Struct(
    "item_id" / cs.Bytes(16),
    "offset" / cs.Int32ul * "from the metadata region's start",
    "length" / cs.Int32ul,
    "flags" / cs.Int32ul,
    cs.Padding(4),
)


@dataclass(frozen=True)
class VHDXParameters:
    block_size: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None
    has_parent: bool


def read_vhdx_parameters(fh: PositionalReader) -> VHDXParameters:
    """The block size, the sector sizes and whether a VHDX has a parent, from its metadata.

    Raises:
        DamagedError: no region table (at 192 KiB or its copy at 256 KiB) or no metadata table.
    """
    for table_offset in (0x30000, 0x40000):
        head = fh.pread(table_offset, 16)
        if head[:4] == b"regi":
            break
    else:
        raise DamagedError("vhdx-region-table", 0x30000, "no 'regi' signature")
    count = min(int.from_bytes(head[8:12], "little"), 2047)
    raw = fh.pread(table_offset + 16, count * VHDX_REGION_ENTRY.sizeof())
    metadata = None
    for i in range(len(raw) // VHDX_REGION_ENTRY.sizeof()):
        entry = VHDX_REGION_ENTRY.parse(raw[i * 32 : i * 32 + 32])
        if uuid.UUID(bytes_le=entry.guid) == _VHDX_METADATA_REGION:
            metadata = entry
    if metadata is None:
        raise DamagedError("vhdx-region-table", table_offset, "no metadata region")
    head = fh.pread(metadata.file_offset, 32)
    if head[:8] != b"metadata":
        raise DamagedError("vhdx-metadata", metadata.file_offset, "no 'metadata' signature")
    count = min(int.from_bytes(head[10:12], "little"), 2047)
    raw = fh.pread(metadata.file_offset + 32, count * VHDX_METADATA_ENTRY.sizeof())
    values: dict[str, bytes] = {}
    for i in range(len(raw) // VHDX_METADATA_ENTRY.sizeof()):
        entry = VHDX_METADATA_ENTRY.parse(raw[i * 32 : i * 32 + 32])
        name = _VHDX_ITEMS.get(uuid.UUID(bytes_le=entry.item_id))
        if name and entry.length <= 64:
            values[name] = fh.pread(metadata.file_offset + entry.offset, entry.length)

    def number(name: str, size: int = 4) -> int | None:
        data = values.get(name, b"")
        return int.from_bytes(data[:size], "little") if len(data) >= size else None

    flags = number("file_parameters", 8)
    return VHDXParameters(
        block_size=number("file_parameters"),
        logical_sector_size=number("logical_sector_size"),
        physical_sector_size=number("physical_sector_size"),
        has_parent=bool(flags is not None and (flags >> 32) & 2),
    )
