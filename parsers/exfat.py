"""exFAT: the boot region, its checksum and the root directory's volume label.

https://learn.microsoft.com/en-us/windows/win32/fileio/exfat-specification
"""

from __future__ import annotations

import logging

import construct as cs

from parsers.errors import NotThisFormat, ParserError
from parsers.probe import Content, ProbeReader, read_struct, serial_uuid, utf16_label

logger = logging.getLogger(__name__)

EXFAT_BOOT_SECTOR = cs.Struct(
    "jump_boot" / cs.Const(b"\xeb\x76\x90"),
    "file_system_name" / cs.Const(b"EXFAT   "),
    "must_be_zero" / cs.Bytes(53),
    "partition_offset" / cs.Int64ul,
    "volume_length" / cs.Int64ul * "volume size in sectors",
    "fat_offset" / cs.Int32ul * "in sectors",
    "fat_length" / cs.Int32ul,
    "cluster_heap_offset" / cs.Int32ul * "in sectors",
    "cluster_count" / cs.Int32ul,
    "first_cluster_of_root_directory" / cs.Int32ul,
    "volume_serial_number" / cs.Int32ul,
    "file_system_revision_minor" / cs.Int8ul,
    "file_system_revision_major" / cs.Int8ul,
    "volume_flags" / cs.Int16ul,
    "bytes_per_sector_shift" / cs.Int8ul * "9..12",
    "sectors_per_cluster_shift" / cs.Int8ul * "0..25 - bytes_per_sector_shift",
    "number_of_fats" / cs.Int8ul,
    "drive_select" / cs.Int8ul,
    "percent_in_use" / cs.Int8ul,
    cs.Padding(7),
    "boot_code" / cs.Bytes(390),
    "boot_signature" / cs.Const(0xAA55, cs.Int16ul),
)

EXFAT_VOLUME_LABEL_ENTRY = cs.Struct(
    "entry_type" / cs.Int8ul * "0x83",
    "character_count" / cs.Int8ul * "0..11",
    "volume_label" / cs.Bytes(22) * "UTF-16LE",
    cs.Padding(8),
)
_EXFAT_ENTRY_LABEL = 0x83
_EXFAT_ENTRY_END = 0x00
_EXFAT_DIR_SCAN = 64 * 1024
_EXFAT_FIRST_CLUSTER = 2
_EXFAT_LAST_CLUSTER = 0xFFFFFF6


def _exfat_boot_checksum(region: bytes) -> int:
    checksum = 0
    for index, byte in enumerate(region):
        if index in (106, 107, 112):  # VolumeFlags and PercentInUse change in place
            continue
        checksum = ((checksum >> 1) | ((checksum & 1) << 31)) + byte
        checksum &= 0xFFFFFFFF
    return checksum


def _exfat_label(dev: ProbeReader, boot: cs.Container) -> str | None:
    sector_shift = boot.bytes_per_sector_shift
    cluster_bytes = 1 << (sector_shift + boot.sectors_per_cluster_shift)

    def cluster_offset(cluster: int) -> int:
        sector = boot.cluster_heap_offset + (
            (cluster - _EXFAT_FIRST_CLUSTER) << boot.sectors_per_cluster_shift
        )
        return sector << sector_shift

    cluster = boot.first_cluster_of_root_directory
    if not _EXFAT_FIRST_CLUSTER <= cluster <= _EXFAT_LAST_CLUSTER:
        return None
    offset = cluster_offset(cluster)
    entry_size = EXFAT_VOLUME_LABEL_ENTRY.sizeof()
    for _ in range(_EXFAT_DIR_SCAN // entry_size):
        entry = read_struct(EXFAT_VOLUME_LABEL_ENTRY, dev, "exfat-dir-entry", offset)
        if entry.entry_type == _EXFAT_ENTRY_END:
            return None
        if entry.entry_type == _EXFAT_ENTRY_LABEL:
            length = min(entry.character_count * 2, len(entry.volume_label))
            return utf16_label(entry.volume_label[:length], "utf-16-le")
        offset += entry_size
        if offset % cluster_bytes == 0:
            fat_entry = (boot.fat_offset << sector_shift) + cluster * 4
            cluster = int.from_bytes(dev.read("exfat-fat", fat_entry, 4), "little")
            if not _EXFAT_FIRST_CLUSTER <= cluster <= _EXFAT_LAST_CLUSTER:
                return None
            offset = cluster_offset(cluster)
    return None


def probe(dev: ProbeReader) -> Content:
    """exFAT: "EXFAT   " at 3, boot region checksum valid, label from the root directory."""
    boot = read_struct(EXFAT_BOOT_SECTOR, dev, "exfat-boot-sector", 0)
    if any(boot.must_be_zero):
        raise NotThisFormat("exfat-boot-sector", 11, "MustBeZero is not zero")
    sector_shift = boot.bytes_per_sector_shift
    if not 9 <= sector_shift <= 12 or boot.sectors_per_cluster_shift > 25 - sector_shift:
        raise NotThisFormat("exfat-boot-sector", 108, "sector or cluster size out of range")
    sector = 1 << sector_shift
    region = dev.read("exfat-boot-region", 0, 12 * sector)
    checksum = _exfat_boot_checksum(region[: 11 * sector])
    expected = checksum.to_bytes(4, "little") * (sector // 4)
    if region[11 * sector :] != expected:
        raise NotThisFormat("exfat-boot-checksum", 11 * sector, "boot region checksum mismatch")
    try:
        label = _exfat_label(dev, boot)
    except ParserError as error:
        logger.debug("exfat label: %s", error)
        label = None
    version = f"{boot.file_system_revision_major}.{boot.file_system_revision_minor}"
    return Content(
        "exfat",
        version,
        label,
        serial_uuid(boot.volume_serial_number),
        (boot.volume_length << sector_shift) or None,
    )
