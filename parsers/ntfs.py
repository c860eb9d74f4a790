"""NTFS: the boot sector and the ``$Volume`` record's volume name.

https://github.com/libyal/libfsntfs/blob/main/documentation/New%20Technologies%20File%20System%20(NTFS).asciidoc
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat, UnsupportedError
from parsers.probe import Content, ProbeReader, read_struct, utf16_label

NTFS_BOOT_SECTOR = cs.Struct(
    "jump" / cs.Bytes(3),
    "oem_id" / cs.Const(b"NTFS    "),
    "bytes_per_sector" / cs.Int16ul,
    "sectors_per_cluster" / cs.Int8ul,
    "reserved_sectors" / cs.Int16ul * "0",
    "fats" / cs.Int8ul * "0",
    "root_entries" / cs.Int16ul * "0",
    "sectors" / cs.Int16ul * "0",
    "media_type" / cs.Int8ul,
    "sectors_per_fat" / cs.Int16ul * "0",
    "sectors_per_track" / cs.Int16ul,
    "heads" / cs.Int16ul,
    "hidden_sectors" / cs.Int32ul,
    "large_sectors" / cs.Int32ul * "0",
    cs.Padding(4),
    "number_of_sectors" / cs.Int64ul * "sectors in the volume (the backup boot sector not)",
    "mft_lcn" / cs.Int64ul * "first cluster of $MFT",
    "mftmirr_lcn" / cs.Int64ul * "first cluster of $MFTMirr",
    "clusters_per_mft_record" / cs.Int8sl * "> 0 clusters, < 0 means 2**-n bytes",
    cs.Padding(3),
    "clusters_per_index_record" / cs.Int8sl,
    cs.Padding(3),
    "volume_serial" / cs.Int64ul,
    "checksum" / cs.Int32ul,
)

NTFS_MFT_RECORD_HEADER = cs.Struct(
    "magic" / cs.Const(b"FILE"),
    "usa_ofs" / cs.Int16ul,
    "usa_count" / cs.Int16ul,
    "lsn" / cs.Int64ul,
    "sequence_number" / cs.Int16ul,
    "link_count" / cs.Int16ul,
    "attrs_offset" / cs.Int16ul * "offset of the first attribute",
    "flags" / cs.Int16ul,
    "bytes_in_use" / cs.Int32ul,
    "bytes_allocated" / cs.Int32ul,
)

NTFS_RESIDENT_ATTRIBUTE = cs.Struct(
    "type" / cs.Int32ul * "0x60 $VOLUME_NAME, 0xFFFFFFFF end",
    "length" / cs.Int32ul,
    "non_resident" / cs.Int8ul,
    "name_length" / cs.Int8ul,
    "name_offset" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "instance" / cs.Int16ul,
    "value_length" / cs.Int32ul,
    "value_offset" / cs.Int16ul,
)

_NTFS_MFT_RECORD_VOLUME = 3
_NTFS_ATTR_VOLUME_NAME = 0x60
_NTFS_ATTR_END = 0xFFFFFFFF
_NTFS_MAX_CLUSTER = 64 * 1024
_NTFS_MAX_MFT_RECORD = 64 * 1024


def _ntfs_volume_name(record: bytes) -> str | None:
    """The $VOLUME_NAME attribute of the $Volume MFT record, as blkid reads it (no fixups)."""
    header = NTFS_MFT_RECORD_HEADER.parse(record)
    attr_off = header.attrs_offset
    attr_size = NTFS_RESIDENT_ATTRIBUTE.sizeof()
    # each step moves forward by a non-zero length, so this ends within the record
    while attr_off + attr_size <= len(record) and attr_off <= header.bytes_allocated:
        attr = NTFS_RESIDENT_ATTRIBUTE.parse(record[attr_off:])
        if attr.length == 0 or attr.type == _NTFS_ATTR_END:
            return None
        if attr.type == _NTFS_ATTR_VOLUME_NAME:
            start = attr_off + attr.value_offset
            value = record[start : start + attr.value_length]
            return utf16_label(value, "utf-16-le")
        attr_off += attr.length
    return None


def probe(dev: ProbeReader) -> Content:
    """NTFS: "NTFS    " at 3, blkid's BPB checks, $MFT found, label from $Volume."""
    boot = read_struct(NTFS_BOOT_SECTOR, dev, "ntfs-boot-sector", 0)
    sector_size = boot.bytes_per_sector
    sectors_per_cluster = boot.sectors_per_cluster
    if not 256 <= sector_size <= 4096:
        raise NotThisFormat("ntfs-boot-sector", 0x0B, f"sector size {sector_size}")
    if sectors_per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128):
        raise NotThisFormat("ntfs-boot-sector", 0x0D, "sectors per cluster")
    if sector_size * sectors_per_cluster > _NTFS_MAX_CLUSTER:
        raise NotThisFormat("ntfs-boot-sector", 0x0B, "cluster larger than 64 KiB")
    if (
        boot.reserved_sectors
        or boot.root_entries
        or boot.sectors
        or boot.sectors_per_fat
        or boot.large_sectors
        or boot.fats
    ):
        raise NotThisFormat("ntfs-boot-sector", 0x0E, "FAT fields not zero")
    per_record = boot.clusters_per_mft_record
    if per_record > 0:
        if per_record not in (1, 2, 4, 8, 16, 32, 64):
            raise NotThisFormat("ntfs-boot-sector", 0x40, "clusters per MFT record")
        record_size = per_record * sectors_per_cluster * sector_size
    elif -31 <= per_record <= -9:
        record_size = 1 << -per_record
    else:
        raise NotThisFormat("ntfs-boot-sector", 0x40, "clusters per MFT record")
    if record_size > _NTFS_MAX_MFT_RECORD:
        raise UnsupportedError("ntfs-boot-sector", 0x40, f"MFT record of {record_size} bytes")
    nr_clusters = boot.number_of_sectors // sectors_per_cluster
    if boot.mft_lcn > nr_clusters or boot.mftmirr_lcn > nr_clusters:
        raise NotThisFormat("ntfs-boot-sector", 0x30, "$MFT outside the volume")

    mft_offset = boot.mft_lcn * sectors_per_cluster * sector_size
    if dev.read("ntfs-mft-record", mft_offset, 4) != b"FILE":
        raise NotThisFormat("ntfs-mft-record", mft_offset, "no FILE record at $MFT")
    volume_offset = mft_offset + _NTFS_MFT_RECORD_VOLUME * record_size
    record = dev.read("ntfs-mft-record", volume_offset, record_size)
    if record[:4] != b"FILE":
        raise NotThisFormat("ntfs-mft-record", volume_offset, "no FILE record at $Volume")
    label = _ntfs_volume_name(record)
    uuid = f"{boot.volume_serial:016X}" if boot.volume_serial else None
    return Content("ntfs", None, label, uuid, boot.number_of_sectors * sector_size or None)
