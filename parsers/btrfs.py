"""btrfs: the primary superblock.

https://btrfs.readthedocs.io/en/latest/dev/On-disk-format.html
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat
from parsers.probe import Content, ProbeReader, c_label, dce_uuid, read_struct

BTRFS_SUPERBLOCK_OFFSET = 0x10000

BTRFS_SUPERBLOCK = cs.Struct(
    "csum" / cs.Bytes(32),
    "fsid" / cs.Bytes(16) * "file system UUID",
    "bytenr" / cs.Int64ul * "physical address of this block",
    "flags" / cs.Int64ul,
    "magic" / cs.Const(b"_BHRfS_M"),
    "generation" / cs.Int64ul,
    "root" / cs.Int64ul,
    "chunk_root" / cs.Int64ul,
    "log_root" / cs.Int64ul,
    "log_root_transid" / cs.Int64ul,
    "total_bytes" / cs.Int64ul * "size of the file system (all devices)",
    "bytes_used" / cs.Int64ul,
    "root_dir_objectid" / cs.Int64ul,
    "num_devices" / cs.Int64ul,
    "sectorsize" / cs.Int32ul,
    "nodesize" / cs.Int32ul,
    "leafsize" / cs.Int32ul,
    "stripesize" / cs.Int32ul,
    "sys_chunk_array_size" / cs.Int32ul,
    "chunk_root_generation" / cs.Int64ul,
    "compat_flags" / cs.Int64ul,
    "compat_ro_flags" / cs.Int64ul,
    "incompat_flags" / cs.Int64ul,
    "csum_type" / cs.Int16ul,
    "root_level" / cs.Int8ul,
    "chunk_root_level" / cs.Int8ul,
    "log_root_level" / cs.Int8ul,
    "dev_item" / cs.Bytes(98) * "this device's btrfs_dev_item",
    "label" / cs.Bytes(256) * "label, NUL-terminated",
)
_BTRFS_MIN_SIZE = 1024 * 1024


def probe(dev: ProbeReader) -> Content:
    """btrfs: primary superblock at 64 KiB, "_BHRfS_M" at 0x10040."""
    if dev.size < _BTRFS_MIN_SIZE:
        raise NotThisFormat("btrfs-superblock", 0, "device smaller than 1 MiB")
    sb = read_struct(BTRFS_SUPERBLOCK, dev, "btrfs-superblock", BTRFS_SUPERBLOCK_OFFSET)
    return Content("btrfs", None, c_label(sb.label), dce_uuid(sb.fsid), sb.total_bytes or None)
