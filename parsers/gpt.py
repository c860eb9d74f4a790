"""The GUID partition table: header, entry array, and the backup copy at the end of the disk.

Reference: UEFI Specification 2.10, section 5.3 "GUID Partition Table (GPT) Disk Layout"
(https://uefi.org/specs/UEFI/2.10/05_GUID_Partition_Table_Format.html).

Both CRC32s are checked (the header's over ``header_size`` bytes with its own CRC field zeroed,
the entry array's over ``num_entries * len_entry`` bytes). When the primary header or its
array is damaged, the backup is used and the damage is reported. The last LBA of an entry is
inclusive: a partition holds ``last_lba - first_lba + 1`` sectors.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import construct as cs
import numpy as np

from parsers.errors import DamagedError, NotThisFormat, ParserError, TruncatedError
from parsers.stream import ReadSeek

SIGNATURE = b"EFI PART"
HEADER_SIZE = 92
#: Sector sizes probed for a header at LBA 1.
SECTOR_SIZES = (512, 4096)
#: Bounds on the entry array that no real table comes near (sgdisk allows up to 16 MiB of
#: entries; 128 entries of 128 bytes is the norm). A hostile header cannot make us read more.
MAX_ENTRIES = 65536
MAX_ARRAY_BYTES = 16 * 1024 * 1024

GUID = cs.Bytes(16)

Header = cs.Struct(
    "signature" / cs.Bytes(8) * '"EFI PART"',
    "revision" / cs.Int32ul * "0x00010000 for GPT 1.0",
    "header_size" / cs.Int32ul * "bytes covered by header_crc32, 92 <= size <= sector size",
    "header_crc32" / cs.Int32ul * "CRC32 of the header with this field zeroed",
    "reserved" / cs.Int32ul,
    "my_lba" / cs.Int64ul * "LBA of this header (1 for the primary)",
    "alternate_lba" / cs.Int64ul * "LBA of the other header",
    "first_usable_lba" / cs.Int64ul,
    "last_usable_lba" / cs.Int64ul * "inclusive",
    "disk_guid" / GUID,
    "partition_entry_lba" / cs.Int64ul * "first LBA of the entry array",
    "num_entries" / cs.Int32ul * "slots in the entry array",
    "len_entry" / cs.Int32ul * "bytes per entry: 128 * 2^n",
    "entries_crc32" / cs.Int32ul * "CRC32 of num_entries * len_entry bytes of the array",
)
assert Header.sizeof() == HEADER_SIZE

Entry = cs.Struct(
    "type_guid" / GUID * "all zero: an unused slot",
    "unique_guid" / GUID,
    "first_lba" / cs.Int64ul,
    "last_lba" / cs.Int64ul * "inclusive",
    "attributes" / cs.Int64ul * "bit 0 required, bit 2 legacy BIOS bootable, 48-63 type-specific",
    "name" / cs.Bytes(72) * "UTF-16LE, NUL padded",
)
assert Entry.sizeof() == 128

#: :data:`Entry` as a numpy record, for reading a whole array at once (65,536 entries, all
#: valid, are a legal GPT: each one built by construct took 0.15 ms).
ENTRY_RECORD = np.dtype(
    [
        ("type_guid", "V16"),
        ("unique_guid", "V16"),
        ("first_lba", "<u8"),
        ("last_lba", "<u8"),
        ("attributes", "<u8"),
        ("name", "V72"),
    ]
)
assert ENTRY_RECORD.itemsize == Entry.sizeof()

#: Type GUIDs and the names fdisk and sgdisk give them.
TYPE_NAMES: dict[str, str] = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux server data",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
    "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3": "Linux root (ARM)",
    "4D21B016-B534-45C2-A9FB-5C16E091FD2D": "Linux variable data",
    "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1": "Linux temporary data",
    "773F91EF-66D4-49B5-BD83-D683BF40AD16": "Linux user's home",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Microsoft LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Microsoft LDM data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
    "55465300-0000-11AA-AA11-00306543ECAC": "Apple UFS",
    "426F6F74-0000-11AA-AA11-00306543ECAC": "Apple boot",
    "516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
    "516E7CB5-6ECF-11D6-8FF8-00022D09712B": "FreeBSD swap",
    "516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
    "516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
    "83BD6B9D-7F41-11DC-BE0B-001560B84F0F": "FreeBSD boot",
    "6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
    "AA31E02A-400F-11DB-9590-000C2911D1B8": "VMware VMFS",
    "9D275380-40AD-11DB-BF97-000C2911D1B8": "VMware kcore crash protection",
    "9E1A2D38-C612-4316-AA26-8B49521E5A8B": "PowerPC PReP boot",
    "BFBFAFE7-A34F-448A-9A5B-6213EB736C22": "Lenovo boot",
    "FE3A2A5D-4F32-41A7-B725-ACCC3285A309": "ChromeOS kernel",
    "3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC": "ChromeOS root fs",
}


def type_name(type_guid: str) -> str:
    """The common name of a partition type GUID, or ``unknown``."""
    return TYPE_NAMES.get(type_guid.upper(), "unknown")


def guid_str(raw: bytes) -> str:
    """A GUID as stored on disk (first three fields little-endian), uppercase as sfdisk prints."""
    return (
        f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-{raw[8:10].hex()}-"
        f"{raw[10:16].hex()}"
    ).upper()


def decode_name(raw: bytes) -> str:
    """A partition name: UTF-16LE up to the first NUL; an unpaired surrogate becomes U+FFFD."""
    return raw[: len(raw) // 2 * 2].decode("utf-16-le", errors="replace").split("\0", 1)[0]


@dataclass(frozen=True)
class GPTHeader:
    """A validated header (primary or backup)."""

    offset: int
    """Byte offset of the header on the disk."""
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    partition_entry_lba: int
    num_entries: int
    len_entry: int
    entries_crc32: int
    revision: int

    @property
    def len_array(self) -> int:
        """Bytes of the entry array that the CRC covers."""
        return self.num_entries * self.len_entry


@dataclass(frozen=True)
class GPTPartition:
    """A used entry, numbered by its slot (1-based) as Linux does."""

    number: int
    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    """Inclusive."""
    attributes: int
    name: str

    @property
    def num_sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    @property
    def type_name(self) -> str:
        return type_name(self.type_guid)


def parse_header(data: bytes, offset: int, sector_size: int) -> GPTHeader:
    """Validate and parse one header sector.

    Raises:
        TruncatedError: fewer bytes than a header.
        NotThisFormat: no ``EFI PART`` signature.
        DamagedError: a bad size, CRC, or field that contradicts the spec.
    """
    if len(data) < HEADER_SIZE:
        raise TruncatedError("gpt-header", offset, f"only {len(data)} of {HEADER_SIZE} bytes")
    h = Header.parse(data)
    if h.signature != SIGNATURE:
        raise NotThisFormat("gpt-header", offset, "no 'EFI PART' signature")
    if not HEADER_SIZE <= h.header_size <= min(sector_size, len(data)):
        raise DamagedError("gpt-header", offset, f"header size {h.header_size} out of range")
    covered = bytearray(data[: h.header_size])
    covered[16:20] = b"\0\0\0\0"
    crc = zlib.crc32(covered)
    if crc != h.header_crc32:
        raise DamagedError(
            "gpt-header",
            offset,
            f"header CRC32 mismatch (stored {h.header_crc32:#010x}, computed {crc:#010x})",
        )
    if h.len_entry < 128 or h.len_entry % 8 or h.len_entry > 4096:
        raise DamagedError("gpt-header", offset, f"entry size {h.len_entry} out of range")
    if h.num_entries > MAX_ENTRIES or h.num_entries * h.len_entry > MAX_ARRAY_BYTES:
        raise DamagedError(
            "gpt-header", offset, f"{h.num_entries} entries of {h.len_entry} bytes is absurd"
        )
    if h.first_usable_lba > h.last_usable_lba + 1:
        raise DamagedError(
            "gpt-header",
            offset,
            f"first usable LBA {h.first_usable_lba} after last usable {h.last_usable_lba}",
        )
    return GPTHeader(
        offset=offset,
        my_lba=h.my_lba,
        alternate_lba=h.alternate_lba,
        first_usable_lba=h.first_usable_lba,
        last_usable_lba=h.last_usable_lba,
        disk_guid=guid_str(h.disk_guid),
        partition_entry_lba=h.partition_entry_lba,
        num_entries=h.num_entries,
        len_entry=h.len_entry,
        entries_crc32=h.entries_crc32,
        revision=h.revision,
    )


def parse_entries(data: bytes, header: GPTHeader, offset: int) -> tuple[GPTPartition, ...]:
    """Check the array's CRC32 and return the used entries.

    Raises:
        TruncatedError: the array runs past the end of the data.
        DamagedError: CRC mismatch.
    """
    if len(data) < header.len_array:
        raise TruncatedError(
            "gpt-entries", offset, f"only {len(data)} of {header.len_array} bytes of the array"
        )
    crc = zlib.crc32(data[: header.len_array])
    if crc != header.entries_crc32:
        raise DamagedError(
            "gpt-entries",
            offset,
            f"entry array CRC32 mismatch (stored {header.entries_crc32:#010x}, "
            f"computed {crc:#010x})",
        )
    count, size = header.num_entries, header.len_entry
    slots = np.frombuffer(data, np.uint8, count * size).reshape(count, size)[:, :128]
    used = np.flatnonzero(slots[:, :16].any(axis=1))
    entries = np.ascontiguousarray(slots[used]).view(ENTRY_RECORD).reshape(-1)
    guids: dict[bytes, str] = {}
    names: dict[bytes, str] = {}

    def text(cache: dict[bytes, str], raw: bytes, decode: Callable[[bytes], str]) -> str:
        found = cache.get(raw)
        if found is None:
            found = cache[raw] = decode(raw)
        return found

    return tuple(
        GPTPartition(
            number=slot + 1,
            type_guid=text(guids, type_guid, guid_str),
            unique_guid=text(guids, unique_guid, guid_str),
            first_lba=first,
            last_lba=last,
            attributes=attributes,
            name=text(names, name, decode_name),
        )
        for slot, type_guid, unique_guid, first, last, attributes, name in zip(
            used.tolist(),
            entries["type_guid"].tolist(),
            entries["unique_guid"].tolist(),
            entries["first_lba"].tolist(),
            entries["last_lba"].tolist(),
            entries["attributes"].tolist(),
            entries["name"].tolist(),
        )
    )


def _read_at(fh: ReadSeek, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def _array_bytes(header: GPTHeader, sector_size: int) -> int:
    """Bytes the array occupies on disk: whole sectors."""
    return -(-header.len_array // sector_size) * sector_size


def has_signature(fh: ReadSeek, offset: int) -> bool:
    """Whether the sector at ``offset`` starts with ``EFI PART``."""
    return _read_at(fh, offset, 8) == SIGNATURE


def probe_sector_size(fh: ReadSeek, disk_size: int) -> int | None:
    """The sector size whose LBA 1 holds an ``EFI PART`` signature, or None.

    A disk made with 4096-byte sectors has its header at byte 4096; one with 512-byte sectors at
    byte 512. Where neither primary is readable, the backup in the last sector decides.
    """
    for ss in SECTOR_SIZES:
        if disk_size >= 2 * ss and _read_at(fh, ss, 8) == SIGNATURE:
            return ss
    for ss in SECTOR_SIZES:
        if (
            disk_size >= 2 * ss
            and disk_size % ss == 0
            and _read_at(fh, disk_size - ss, 8) == SIGNATURE
        ):
            return ss
    return None


@dataclass(frozen=True)
class Location:
    """Where one copy of a GPT structure sits: byte offset and size on the disk."""

    offset: int
    size: int


class GPT:
    """A GUID partition table, primary or, failing that, backup.

    Args:
        fh: readable, seekable stream of the whole disk.
        disk_size: disk size in bytes.
        sector_size: logical sector size (see :func:`probe_sector_size`).

    Attributes:
        header: the header whose entries are used.
        source: ``"primary"`` or ``"backup"``.
        partitions: used entries.
        problems: damage met and worked around (a bad primary, a missing backup, ...).
        primary_header, backup_header: each copy where it is valid, else None.
        structures: ``(kind, Location)`` for every copy of header and array found, valid or
            not, so that a map can name the bytes that hold them.

    Raises:
        NotThisFormat: no GPT signature in either place.
        DamagedError: both copies damaged.
    """

    def __init__(self, fh: ReadSeek, disk_size: int, sector_size: int = 512):
        self.fh = fh
        self.disk_size = disk_size
        self.sector_size = sector_size
        ss = sector_size
        self.problems: list[ParserError] = []
        self.structures: list[tuple[str, Location]] = []

        self.primary_header = self._try_header(ss, ss, "gpt-header")
        last_lba = (disk_size // ss) - 1
        backup_lba = last_lba
        if self.primary_header is not None:
            # The backup lives where the primary says; on a disk that grew, that is not the end.
            backup_lba = self.primary_header.alternate_lba
            if backup_lba > last_lba or backup_lba < 2:
                self.problems.append(
                    TruncatedError(
                        "gpt-backup-header",
                        backup_lba * ss,
                        f"expected at LBA {backup_lba}, which lies outside the disk "
                        f"(last LBA {last_lba}); truncated image?",
                    )
                )
                backup_lba = -1
        self.backup_header = (
            self._try_header(backup_lba * ss, ss, "gpt-backup-header") if backup_lba > 1 else None
        )

        self.primary_entries = self._try_entries(self.primary_header, "gpt-entries")
        self.backup_entries = self._try_entries(self.backup_header, "gpt-backup-entries")

        if self.primary_header is not None and self.primary_entries is not None:
            self.header, self.partitions, self.source = (
                self.primary_header,
                self.primary_entries,
                "primary",
            )
        elif self.backup_header is not None and self.backup_entries is not None:
            self.header, self.partitions, self.source = (
                self.backup_header,
                self.backup_entries,
                "backup",
            )
            self.problems.append(
                DamagedError(
                    "gpt-header",
                    ss,
                    "primary GPT unusable; the backup GPT at "
                    f"{self.backup_header.offset:#x} is used",
                )
            )
        else:
            signatures = [p for p in self.problems if not isinstance(p, NotThisFormat)]
            if not signatures:
                raise NotThisFormat("gpt-header", ss, "no GPT header at LBA 1 or the last LBA")
            raise DamagedError(
                "gpt",
                ss,
                "both primary and backup GPT are damaged: " + "; ".join(str(p) for p in signatures),
            )
        self._check_partitions()

    def _try_header(self, offset: int, ss: int, kind: str) -> GPTHeader | None:
        data = _read_at(self.fh, offset, ss)
        if data[:8] == SIGNATURE:
            self.structures.append((kind, Location(offset, min(ss, self.disk_size - offset))))
        try:
            header = parse_header(data, offset, ss)
        except ParserError as exc:
            self.problems.append(type(exc)(kind, offset, exc.reason))
            return None
        if header.my_lba * ss != offset:
            self.problems.append(
                DamagedError(kind, offset, f"says it lives at LBA {header.my_lba}")
            )
        return header

    def _try_entries(self, header: GPTHeader | None, kind: str) -> tuple[GPTPartition, ...] | None:
        if header is None:
            return None
        ss = self.sector_size
        offset = header.partition_entry_lba * ss
        size = _array_bytes(header, ss)
        if offset >= self.disk_size or header.partition_entry_lba < 1:
            self.problems.append(
                TruncatedError(
                    kind,
                    offset,
                    f"entry array at LBA {header.partition_entry_lba} lies outside the disk",
                )
            )
            return None
        self.structures.append((kind, Location(offset, min(size, self.disk_size - offset))))
        try:
            return parse_entries(_read_at(self.fh, offset, header.len_array), header, offset)
        except ParserError as exc:
            self.problems.append(
                exc if exc.structure == kind else type(exc)(kind, offset, exc.reason)
            )
            return None

    def _check_partitions(self) -> None:
        h = self.header
        for p in self.partitions:
            if p.last_lba < p.first_lba:
                self.problems.append(
                    DamagedError(
                        "gpt-entries",
                        h.partition_entry_lba * self.sector_size + (p.number - 1) * h.len_entry,
                        f"partition {p.number} ends (LBA {p.last_lba}) before it starts "
                        f"(LBA {p.first_lba})",
                    )
                )
            elif p.first_lba < h.first_usable_lba or p.last_lba > h.last_usable_lba:
                self.problems.append(
                    DamagedError(
                        "gpt-entries",
                        h.partition_entry_lba * self.sector_size + (p.number - 1) * h.len_entry,
                        f"partition {p.number} (LBA {p.first_lba}-{p.last_lba}) lies outside "
                        f"the usable area (LBA {h.first_usable_lba}-{h.last_usable_lba})",
                    )
                )

    @property
    def usable_area(self) -> Location:
        h = self.header
        ss = self.sector_size
        return Location(h.first_usable_lba * ss, (h.last_usable_lba - h.first_usable_lba + 1) * ss)
