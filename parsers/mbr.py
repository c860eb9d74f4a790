"""The DOS / MBR partition table and the chain of extended boot records.

References:
- the MBR layout: https://en.wikipedia.org/wiki/Master_boot_record#Sector_layout
- extended partitions and EBRs: https://en.wikipedia.org/wiki/Extended_boot_record
- Linux's reading of both, which sets the numbering users see (logical partitions from 5):
  ``block/partitions/msdos.c`` (``parse_extended``).

An EBR's data entry is relative to that EBR; its link entry is relative to the start of the
outermost extended partition. Both are walked here with every pointer checked and the chain
bounded, because a hostile image can point anywhere, including back at itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import construct as cs

from parsers.errors import DamagedError, NotThisFormat, ParserError, TruncatedError
from parsers.stream import ReadSeek

SECTOR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
PROTECTIVE_TYPE = 0xEE
#: Linux gives up on a chain after this many EBRs that added nothing; we bound the whole chain.
MAX_EBRS = 256

PartitionEntry = cs.Struct(
    "status" / cs.Int8ul * "0x80 bootable, 0x00 not; anything else is not a partition entry",
    "chs_first" / cs.Bytes(3) * "CHS address of the first sector (ignored: LBA rules)",
    "type_id" / cs.Int8ul * "partition type",
    "chs_last" / cs.Bytes(3) * "CHS address of the last sector (ignored)",
    "start_lba" / cs.Int32ul * "first sector, relative to the table's reference point",
    "num_sectors" / cs.Int32ul * "length in sectors",
)

MBRSector = cs.Struct(
    "bootcode" / cs.Bytes(440),
    "disk_signature" / cs.Int32ul * "Windows disk signature (the label-id sfdisk prints)",
    "reserved" / cs.Bytes(2),
    "entries" / cs.Array(4, PartitionEntry),
    "boot_signature" / cs.Bytes(2) * "0x55 0xAA",
)
assert MBRSector.sizeof() == SECTOR_SIZE

#: Common MBR partition type names, as fdisk prints them.
MBR_TYPE_NAMES: dict[int, str] = {
    0x00: "Empty",
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x11: "Hidden FAT12",
    0x12: "Compaq diagnostics",
    0x14: "Hidden FAT16 <32M",
    0x16: "Hidden FAT16",
    0x17: "Hidden HPFS/NTFS",
    0x1B: "Hidden W95 FAT32",
    0x1C: "Hidden W95 FAT32 (LBA)",
    0x1E: "Hidden W95 FAT16 (LBA)",
    0x27: "Hidden NTFS WinRE",
    0x42: "SFS / Windows dynamic",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x85: "Linux extended",
    0x86: "NTFS volume set",
    0x87: "NTFS volume set",
    0x8E: "Linux LVM",
    0xA5: "FreeBSD",
    0xA6: "OpenBSD",
    0xA8: "Darwin UFS",
    0xA9: "NetBSD",
    0xAB: "Darwin boot",
    0xAF: "HFS / HFS+",
    0xBE: "Solaris boot",
    0xBF: "Solaris",
    0xDA: "Non-FS data",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xFB: "VMware VMFS",
    0xFC: "VMware VMKCORE",
    0xFD: "Linux raid autodetect",
}


def type_name(type_id: int) -> str:
    """The fdisk name of an MBR partition type, or ``unknown`` with the number."""
    return MBR_TYPE_NAMES.get(type_id, f"unknown ({type_id:#04x})")


@dataclass(frozen=True)
class MBREntry:
    """One 16-byte entry of a partition table sector, as stored."""

    slot: int
    """0..3 within its table sector."""
    table_offset: int
    """Byte offset of the table sector that holds this entry."""
    status: int
    type_id: int
    start_lba: int
    """As stored: relative to the table's reference point."""
    num_sectors: int

    @property
    def is_empty(self) -> bool:
        return self.type_id == 0 or self.num_sectors == 0

    @property
    def is_extended(self) -> bool:
        return self.type_id in EXTENDED_TYPES

    @property
    def bootable(self) -> bool:
        return self.status == 0x80


@dataclass(frozen=True)
class MBRPartition:
    """A partition in absolute disk coordinates, numbered as Linux numbers it."""

    number: int
    type_id: int
    start_lba: int
    num_sectors: int
    bootable: bool
    is_extended: bool
    table_offset: int
    """Byte offset of the MBR or EBR sector whose entry describes this partition."""
    slot: int

    @property
    def type_name(self) -> str:
        return type_name(self.type_id)


@dataclass(frozen=True)
class EBR:
    """One extended boot record found on the chain."""

    offset: int
    """Byte offset of the EBR sector on the disk."""
    extended_number: int
    """The primary extended partition whose chain holds it."""


@dataclass(frozen=True)
class ExtendedChain:
    """What walking the EBR chains found: logical partitions, the EBRs, and the damage met."""

    logical: tuple[MBRPartition, ...]
    ebrs: tuple[EBR, ...]
    problems: tuple[ParserError, ...] = field(default=())


def parse_table_sector(data: bytes, offset: int) -> tuple[int, tuple[MBREntry, ...]]:
    """Parse one MBR or EBR sector: ``(disk_signature, entries)``.

    Raises:
        TruncatedError: fewer than 512 bytes.
        NotThisFormat: no 0x55AA boot signature.
    """
    if len(data) < SECTOR_SIZE:
        raise TruncatedError("mbr", offset, f"only {len(data)} of 512 bytes")
    parsed = MBRSector.parse(data[:SECTOR_SIZE])
    if parsed.boot_signature != BOOT_SIGNATURE:
        raise NotThisFormat("mbr", offset + 510, "no 0x55AA boot signature")
    entries = tuple(
        MBREntry(
            slot=i,
            table_offset=offset,
            status=e.status,
            type_id=e.type_id,
            start_lba=e.start_lba,
            num_sectors=e.num_sectors,
        )
        for i, e in enumerate(parsed.entries)
    )
    return parsed.disk_signature, entries


def _read_at(fh: ReadSeek, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


class MBR:
    """The partition table in sector 0 of a disk.

    Validates the boot signature and the four primary entries eagerly; walks the extended
    partitions lazily (:attr:`chain`).

    Args:
        fh: readable, seekable stream of the whole disk.
        disk_size: size of the disk in bytes, to bound every pointer.
        sector_size: the sector size that LBAs count in.

    Raises:
        NotThisFormat: no boot signature, or entries that no partitioning tool writes (a status
            byte other than 0x00/0x80): sector 0 is then a boot sector or garbage, not an MBR.
        TruncatedError: the disk is shorter than one sector.
    """

    def __init__(self, fh: ReadSeek, disk_size: int, sector_size: int = SECTOR_SIZE):
        self.fh = fh
        self.disk_size = disk_size
        self.sector_size = sector_size
        self.disk_signature, self.entries = parse_table_sector(_read_at(fh, 0, SECTOR_SIZE), 0)
        for entry in self.entries:
            if entry.status not in (0x00, 0x80) and not (entry.type_id == 0 and entry.status == 0):
                raise NotThisFormat(
                    "mbr",
                    446 + 16 * entry.slot,
                    f"entry {entry.slot + 1} has status byte {entry.status:#04x}, not 0x00/0x80",
                )

    @property
    def is_protective(self) -> bool:
        """True when an entry of type 0xEE claims the disk for a GPT."""
        return any(e.type_id == PROTECTIVE_TYPE for e in self.entries if not e.is_empty)

    @property
    def is_hybrid(self) -> bool:
        """A protective entry beside other partitions: a hybrid MBR (Boot Camp and friends)."""
        used = [e for e in self.entries if not e.is_empty]
        return self.is_protective and len(used) > 1

    @cached_property
    def primary(self) -> tuple[MBRPartition, ...]:
        """The used primary entries, numbered 1..4 by slot as Linux does (gaps kept)."""
        return tuple(
            MBRPartition(
                number=e.slot + 1,
                type_id=e.type_id,
                start_lba=e.start_lba,
                num_sectors=e.num_sectors,
                bootable=e.bootable,
                is_extended=e.is_extended,
                table_offset=0,
                slot=e.slot,
            )
            for e in self.entries
            if not e.is_empty
        )

    @cached_property
    def chain(self) -> ExtendedChain:
        """Walk every extended partition's EBR chain, bounded and loop-safe."""
        logical: list[MBRPartition] = []
        ebrs: list[EBR] = []
        problems: list[ParserError] = []
        number = 5
        for ext in (p for p in self.primary if p.is_extended):
            number = self._walk_chain(ext, number, logical, ebrs, problems)
        return ExtendedChain(tuple(logical), tuple(ebrs), tuple(problems))

    def _walk_chain(
        self,
        ext: MBRPartition,
        number: int,
        logical: list[MBRPartition],
        ebrs: list[EBR],
        problems: list[ParserError],
    ) -> int:
        ss = self.sector_size
        ext_start = ext.start_lba
        ext_end = ext.start_lba + ext.num_sectors
        seen: dict[int, int] = {}
        ebr_lba = ext_start
        previous_offset: int | None = None
        for _ in range(MAX_EBRS):
            offset = ebr_lba * ss
            if ebr_lba in seen:
                problems.append(
                    DamagedError(
                        "ebr",
                        previous_offset,
                        f"link points back to the EBR at {offset:#x} (a loop); "
                        "the chain is cut there",
                    )
                )
                return number
            if offset + SECTOR_SIZE > self.disk_size:
                problems.append(
                    TruncatedError(
                        "ebr", offset, f"lies past the end of the disk ({self.disk_size:#x})"
                    )
                )
                return number
            try:
                _, entries = parse_table_sector(_read_at(self.fh, offset, SECTOR_SIZE), offset)
            except ParserError as exc:
                problems.append(DamagedError("ebr", offset, exc.reason))
                return number
            seen[ebr_lba] = offset
            ebrs.append(EBR(offset=offset, extended_number=ext.number))
            link: MBREntry | None = None
            for entry in entries:
                if entry.is_empty:
                    continue
                if entry.is_extended:
                    link = link or entry
                    continue
                start = ebr_lba + entry.start_lba
                end = start + entry.num_sectors
                # Linux ignores garbage in slots 3 and 4 that leaves the extended partition.
                if entry.slot >= 2 and (start < ext_start or end > ext_end):
                    continue
                if start < ext_start or end > ext_end:
                    problems.append(
                        DamagedError(
                            "ebr",
                            offset + 446 + 16 * entry.slot,
                            f"logical partition {number} (sectors {start}-{end - 1}) lies "
                            f"outside its extended partition (sectors {ext_start}-{ext_end - 1})",
                        )
                    )
                logical.append(
                    MBRPartition(
                        number=number,
                        type_id=entry.type_id,
                        start_lba=start,
                        num_sectors=entry.num_sectors,
                        bootable=entry.bootable,
                        is_extended=False,
                        table_offset=offset,
                        slot=entry.slot,
                    )
                )
                number += 1
            if link is None:
                return number
            next_lba = ext_start + link.start_lba
            if not ext_start <= next_lba < ext_end:
                problems.append(
                    DamagedError(
                        "ebr",
                        offset + 446 + 16 * link.slot,
                        f"link to sector {next_lba} leaves the extended partition "
                        f"(sectors {ext_start}-{ext_end - 1}); the chain ends there",
                    )
                )
                return number
            previous_offset = offset
            ebr_lba = next_lba
        problems.append(
            DamagedError(
                "ebr", ext_start * ss, f"chain longer than {MAX_EBRS} records; the rest is ignored"
            )
        )
        return number
