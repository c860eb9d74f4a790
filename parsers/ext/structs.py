"""ext2/3/4 on-disk structures: one field list each, two readers.

Reference: the kernel's "ext4 Data Structures and Algorithms"
(https://www.kernel.org/doc/html/latest/filesystems/ext4/index.html) and ``fs/ext4/ext4.h``.

Each structure is declared once as a list of ``(offset, name, kind, doc)``; from it come a
construct ``Struct`` (for the single structures: the superblock, one extent header) and a numpy
``dtype`` with explicit offsets (for the bulk tables: group descriptors and inode tables are read
a whole table at a time and only the fields listed are decoded). One declaration, two speeds.
"""

from __future__ import annotations

from typing import Any

import construct as cs
import numpy as np

from parsers import fieldlist
from parsers.fieldlist import Field


def make_struct(fields: list[Field], size: int) -> cs.Construct:
    """A construct Struct (little-endian) with padding wherever the field list skips bytes."""
    return fieldlist.make_struct(fields, size, "<")


def make_dtype(fields: list[Field], itemsize: int) -> np.dtype[Any]:
    """A numpy dtype that decodes only the listed fields of records of ``itemsize`` bytes."""
    return fieldlist.make_dtype(fields, itemsize, "<")


SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53

SUPERBLOCK_FIELDS: list[Field] = [
    (0x00, "s_inodes_count", "u32", "inodes in the filesystem"),
    (0x04, "s_blocks_count_lo", "u32", "blocks in the filesystem"),
    (0x08, "s_r_blocks_count_lo", "u32", "blocks reserved for root"),
    (0x0C, "s_free_blocks_count_lo", "u32", ""),
    (0x10, "s_free_inodes_count", "u32", ""),
    (0x14, "s_first_data_block", "u32", "1 for 1 KiB blocks, else 0"),
    (0x18, "s_log_block_size", "u32", "block size = 1024 << this"),
    (0x1C, "s_log_cluster_size", "u32", "cluster size = 1024 << this (bigalloc)"),
    (0x20, "s_blocks_per_group", "u32", ""),
    (0x24, "s_clusters_per_group", "u32", ""),
    (0x28, "s_inodes_per_group", "u32", ""),
    (0x2C, "s_mtime", "u32", "last mount time"),
    (0x30, "s_wtime", "u32", "last write time"),
    (0x38, "s_magic", "u16", "0xEF53"),
    (0x3A, "s_state", "u16", "1 clean, 2 errors, 4 orphans being recovered"),
    (0x3E, "s_minor_rev_level", "u16", "minor revision"),
    (0x4C, "s_rev_level", "u32", "0 original, 1 dynamic inode sizes"),
    (0x54, "s_first_ino", "u32", "first non-reserved inode"),
    (0x58, "s_inode_size", "u16", "bytes per inode record"),
    (0x5A, "s_block_group_nr", "u16", "group that holds this copy"),
    (0x5C, "s_feature_compat", "u32", ""),
    (0x60, "s_feature_incompat", "u32", ""),
    (0x64, "s_feature_ro_compat", "u32", ""),
    (0x68, "s_uuid", "bytes16", "volume UUID"),
    (0x78, "s_volume_name", "bytes16", "label"),
    (0x88, "s_last_mounted", "bytes64", ""),
    (0xCE, "s_reserved_gdt_blocks", "u16", "blocks kept after the GDT for growth"),
    (0xE0, "s_journal_inum", "u32", "journal inode (8)"),
    (0xE4, "s_journal_dev", "u32", "external journal device"),
    (0xE8, "s_last_orphan", "u32", "head of the orphan inode list"),
    (0xFE, "s_desc_size", "u16", "group descriptor size with 64bit"),
    (0x104, "s_first_meta_bg", "u32", "first meta block group"),
    (0x108, "s_mkfs_time", "u32", ""),
    (0x150, "s_blocks_count_hi", "u32", ""),
    (0x158, "s_free_blocks_count_hi", "u32", ""),
    (0x15C, "s_min_extra_isize", "u16", ""),
    (0x168, "s_mmp_block", "u64", "multi-mount protection block"),
    (0x174, "s_log_groups_per_flex", "u8", "flex_bg group size = 1 << this"),
    (0x240, "s_usr_quota_inum", "u32", ""),
    (0x244, "s_grp_quota_inum", "u32", ""),
    (0x24C, "s_backup_bgs0", "u32", "sparse_super2: first backup group"),
    (0x250, "s_backup_bgs1", "u32", "sparse_super2: second backup group"),
    (0x26C, "s_prj_quota_inum", "u32", ""),
    (0x280, "s_orphan_file_inum", "u32", "orphan_file feature"),
]
Superblock = make_struct(SUPERBLOCK_FIELDS, SUPERBLOCK_SIZE)
#: The superblock up to ``s_flags``: all that content detection reads (a device too small for
#: the whole superblock can still be named, as blkid names it).
SUPERBLOCK_HEAD_SIZE = 0x164
SuperblockHead = make_struct(
    [f for f in SUPERBLOCK_FIELDS if f[0] < SUPERBLOCK_HEAD_SIZE], SUPERBLOCK_HEAD_SIZE
)

GROUP_DESC_FIELDS: list[Field] = [
    (0x00, "bg_block_bitmap_lo", "u32", ""),
    (0x04, "bg_inode_bitmap_lo", "u32", ""),
    (0x08, "bg_inode_table_lo", "u32", ""),
    (0x0C, "bg_free_blocks_count_lo", "u16", ""),
    (0x0E, "bg_free_inodes_count_lo", "u16", ""),
    (0x12, "bg_flags", "u16", "1 INODE_UNINIT, 2 BLOCK_UNINIT, 4 INODE_ZEROED"),
    (0x1C, "bg_itable_unused_lo", "u16", "unused inodes at the end of the table"),
    (0x20, "bg_block_bitmap_hi", "u32", ""),
    (0x24, "bg_inode_bitmap_hi", "u32", ""),
    (0x28, "bg_inode_table_hi", "u32", ""),
    (0x32, "bg_itable_unused_hi", "u16", ""),
]

INODE_FIELDS: list[Field] = [
    (0x00, "i_mode", "u16", "file type and permissions"),
    (0x04, "i_size_lo", "u32", ""),
    (0x14, "i_dtime", "u32", "deletion time"),
    (0x1A, "i_links_count", "u16", ""),
    (0x1C, "i_blocks_lo", "u32", "512-byte units, or blocks with HUGE_FILE_FL"),
    (0x20, "i_flags", "u32", ""),
    (0x28, "i_block", "bytes60", "extent tree root, block map, symlink or inline data"),
    (0x68, "i_file_acl_lo", "u32", "external xattr block"),
    (0x6C, "i_size_high", "u32", ""),
    (0x74, "l_i_blocks_high", "u16", ""),
    (0x76, "l_i_file_acl_high", "u16", ""),
    (0x80, "i_extra_isize", "u16", "bytes of extra fields after the first 128"),
]

EXTENT_HEADER_MAGIC = 0xF30A
ExtentHeader = cs.Struct(
    "eh_magic" / cs.Int16ul * "0xF30A",
    "eh_entries" / cs.Int16ul * "valid entries following",
    "eh_max" / cs.Int16ul * "capacity",
    "eh_depth" / cs.Int16ul * "0 for a leaf",
    "eh_generation" / cs.Int32ul,
)
#: One 12-byte extent-tree entry, either kind: a leaf extent or an index entry.
EXTENT_ENTRY_DTYPE = np.dtype(
    {
        "names": ["block", "len", "start_hi", "start_lo", "leaf_lo", "leaf_hi"],
        "formats": ["<u4", "<u2", "<u2", "<u4", "<u4", "<u2"],
        "offsets": [0, 4, 6, 8, 4, 8],
        "itemsize": 12,
    }
)

DIRENT_HEADER = cs.Struct(
    "inode" / cs.Int32ul,
    "rec_len" / cs.Int16ul,
    "name_len" / cs.Int8ul,
    "file_type" / cs.Int8ul,
)

# Feature bits.
COMPAT_HAS_JOURNAL = 0x4
COMPAT_RESIZE_INODE = 0x10
COMPAT_SPARSE_SUPER2 = 0x200
COMPAT_ORPHAN_FILE = 0x1000
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_INLINE_DATA = 0x8000
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_BTREE_DIR = 0x4
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

# What the ext2 and ext3 drivers understood; a filesystem that uses more is ext4 (libblkid's
# rule for naming an ext filesystem).
EXT2_RO_COMPAT_SUPP = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR
EXT2_INCOMPAT_SUPP = INCOMPAT_FILETYPE | INCOMPAT_META_BG
EXT3_RO_COMPAT_SUPP = EXT2_RO_COMPAT_SUPP
EXT3_INCOMPAT_SUPP = EXT2_INCOMPAT_SUPP | INCOMPAT_RECOVER

COMPAT_NAMES = {
    0x1: "dir_prealloc",
    0x2: "imagic_inodes",
    0x4: "has_journal",
    0x8: "ext_attr",
    0x10: "resize_inode",
    0x20: "dir_index",
    0x40: "lazy_bg",
    0x200: "sparse_super2",
    0x400: "fast_commit",
    0x800: "stable_inodes",
    0x1000: "orphan_file",
}
INCOMPAT_NAMES = {
    0x1: "compression",
    0x2: "filetype",
    0x4: "needs_recovery",
    0x8: "journal_dev",
    0x10: "meta_bg",
    0x40: "extent",
    0x80: "64bit",
    0x100: "mmp",
    0x200: "flex_bg",
    0x400: "ea_inode",
    0x1000: "dirdata",
    0x2000: "metadata_csum_seed",
    0x4000: "large_dir",
    0x8000: "inline_data",
    0x10000: "encrypt",
    0x20000: "casefold",
}
RO_COMPAT_NAMES = {
    0x1: "sparse_super",
    0x2: "large_file",
    0x4: "btree_dir",
    0x8: "huge_file",
    0x10: "uninit_bg",
    0x20: "dir_nlink",
    0x40: "extra_isize",
    0x80: "snapshot",
    0x100: "quota",
    0x200: "bigalloc",
    0x400: "metadata_csum",
    0x800: "replica",
    0x1000: "read-only",
    0x2000: "project",
    0x4000: "shared_blocks",
    0x8000: "verity",
    0x10000: "orphan_present",
}

# Inode flags and modes.
INDEX_FL = 0x1000
HUGE_FILE_FL = 0x40000
EXTENTS_FL = 0x80000
EA_INODE_FL = 0x200000
INLINE_DATA_FL = 0x10000000

S_IFMT = 0xF000
S_IFSOCK = 0xC000
S_IFLNK = 0xA000
S_IFREG = 0x8000
S_IFBLK = 0x6000
S_IFDIR = 0x4000
S_IFCHR = 0x2000
S_IFIFO = 0x1000

# Group descriptor flags.
BG_INODE_UNINIT = 0x1
BG_BLOCK_UNINIT = 0x2

ROOT_INO = 2
BAD_BLOCKS_INO = 1
RESIZE_INO = 7
JOURNAL_INO = 8
