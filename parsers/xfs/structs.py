"""XFS on-disk structures: one field list each, two readers.

Reference: "XFS Algorithms & Data Structures" (the kernel's XFS on-disk format book,
https://mirrors.edge.kernel.org/pub/linux/utils/fs/xfs/docs/xfs_filesystem_structure.pdf) and
``fs/xfs/libxfs/xfs_format.h``, ``xfs_da_format.h``, ``xfs_log_format.h``.

Everything on disk is big-endian, except the CRC32C of v5 (CRC-enabled) structures, which is
stored little-endian. Each structure is declared once as a list of ``(offset, name, kind,
doc)``; from it come a construct ``Struct`` (for the single structures: the superblock, the AG
headers, one btree block header) and a numpy ``dtype`` with explicit offsets (for the bulk
tables: the inode chunks are read a chunk or more at a time and only the fields listed are
decoded). One declaration, two speeds.
"""

from __future__ import annotations

from typing import Any

import construct as cs
import numpy as np

from parsers import fieldlist
from parsers.fieldlist import Field


def make_struct(fields: list[Field], size: int) -> cs.Construct:
    """A construct Struct (big-endian) with padding wherever the field list skips bytes."""
    return fieldlist.make_struct(fields, size, ">")


def make_dtype(fields: list[Field], itemsize: int) -> np.dtype[Any]:
    """A numpy dtype that decodes only the listed fields of records of ``itemsize`` bytes."""
    return fieldlist.make_dtype(fields, itemsize, ">")


def magic(text: bytes) -> int:
    """A four-byte magic as the big-endian number it is on disk."""
    return int.from_bytes(text, "big")


# --------------------------------------------------------------------------------------------
# superblock (sector 0 of every allocation group; AG 0's is the primary)

SB_MAGIC = magic(b"XFSB")
SUPERBLOCK_SIZE = 264
SB_CRC_OFFSET = 224

SUPERBLOCK_FIELDS: list[Field] = [
    (0, "sb_magicnum", "u32", "XFSB"),
    (4, "sb_blocksize", "u32", "filesystem block size in bytes"),
    (8, "sb_dblocks", "u64", "blocks in the data device"),
    (16, "sb_rblocks", "u64", "blocks in the realtime device"),
    (24, "sb_rextents", "u64", "realtime extents"),
    (32, "sb_uuid", "bytes16", "filesystem UUID"),
    (48, "sb_logstart", "u64", "first block of an internal log (fsblock number), 0: external"),
    (56, "sb_rootino", "u64", "root directory inode"),
    (64, "sb_rbmino", "u64", "realtime bitmap inode"),
    (72, "sb_rsumino", "u64", "realtime summary inode"),
    (80, "sb_rextsize", "u32", "realtime extent size in blocks"),
    (84, "sb_agblocks", "u32", "blocks per allocation group"),
    (88, "sb_agcount", "u32", "allocation groups"),
    (92, "sb_rbmblocks", "u32", "realtime bitmap blocks"),
    (96, "sb_logblocks", "u32", "log blocks"),
    (100, "sb_versionnum", "u16", "version (low 4 bits) and feature bits"),
    (102, "sb_sectsize", "u16", "sector size in bytes"),
    (104, "sb_inodesize", "u16", "inode size in bytes"),
    (106, "sb_inopblock", "u16", "inodes per block"),
    (108, "sb_fname", "bytes12", "label, NUL-padded"),
    (120, "sb_blocklog", "u8", "log2 of sb_blocksize"),
    (121, "sb_sectlog", "u8", "log2 of sb_sectsize"),
    (122, "sb_inodelog", "u8", "log2 of sb_inodesize"),
    (123, "sb_inopblog", "u8", "log2 of sb_inopblock"),
    (124, "sb_agblklog", "u8", "log2 of sb_agblocks, rounded up"),
    (125, "sb_rextslog", "u8", "log2 of sb_rextents"),
    (126, "sb_inprogress", "u8", "mkfs in progress"),
    (127, "sb_imax_pct", "u8", "max % of the space for inodes"),
    (128, "sb_icount", "u64", "allocated inodes"),
    (136, "sb_ifree", "u64", "free inodes"),
    (144, "sb_fdblocks", "u64", "free data blocks"),
    (152, "sb_frextents", "u64", "free realtime extents"),
    (160, "sb_uquotino", "u64", "user quota inode"),
    (168, "sb_gquotino", "u64", "group quota inode"),
    (176, "sb_qflags", "u16", "quota flags"),
    (178, "sb_flags", "u8", "misc flags"),
    (179, "sb_shared_vn", "u8", "shared version number"),
    (180, "sb_inoalignmt", "u32", "inode chunk alignment, blocks"),
    (184, "sb_unit", "u32", "stripe unit, blocks"),
    (188, "sb_width", "u32", "stripe width, blocks"),
    (192, "sb_dirblklog", "u8", "log2 of directory block size in filesystem blocks"),
    (193, "sb_logsectlog", "u8", "log2 of the log's sector size"),
    (194, "sb_logsectsize", "u16", "log sector size"),
    (196, "sb_logsunit", "u32", "log stripe unit"),
    (200, "sb_features2", "u32", "more feature bits"),
    (204, "sb_bad_features2", "u32", "copy of sb_features2 (an old alignment bug)"),
    (208, "sb_features_compat", "u32", "v5 compatible features"),
    (212, "sb_features_ro_compat", "u32", "v5 read-only compatible features"),
    (216, "sb_features_incompat", "u32", "v5 incompatible features"),
    (220, "sb_features_log_incompat", "u32", "v5 log incompatible features"),
    (224, "sb_crc", "u32", "CRC32C of the sector (little-endian)"),
    (228, "sb_spino_align", "u32", "sparse inode chunk alignment"),
    (232, "sb_pquotino", "u64", "project quota inode"),
    (240, "sb_lsn", "u64", "last write sequence"),
    (248, "sb_meta_uuid", "bytes16", "metadata UUID (incompat meta_uuid)"),
]
Superblock = make_struct(SUPERBLOCK_FIELDS, SUPERBLOCK_SIZE)

# sb_versionnum
VERSION_NUMBITS = 0x000F
VERSION_ATTRBIT = 0x0010
VERSION_NLINKBIT = 0x0020
VERSION_QUOTABIT = 0x0040
VERSION_ALIGNBIT = 0x0080
VERSION_DALIGNBIT = 0x0100
VERSION_LOGV2BIT = 0x0400
VERSION_SECTORBIT = 0x0800
VERSION_EXTFLGBIT = 0x1000
VERSION_DIRV2BIT = 0x2000
VERSION_MOREBITSBIT = 0x8000
# sb_features2
FEATURES2_LAZYSBCOUNT = 0x02
FEATURES2_ATTR2 = 0x08
FEATURES2_PARENT = 0x10
FEATURES2_PROJID32 = 0x80
FEATURES2_CRC = 0x100
FEATURES2_FTYPE = 0x200
# v5 feature words
RO_COMPAT_FINOBT = 0x1
RO_COMPAT_RMAPBT = 0x2
RO_COMPAT_REFLINK = 0x4
RO_COMPAT_INOBTCNT = 0x8
INCOMPAT_FTYPE = 0x1
INCOMPAT_SPINODES = 0x2
INCOMPAT_META_UUID = 0x4
INCOMPAT_BIGTIME = 0x8
INCOMPAT_NEEDSREPAIR = 0x10
INCOMPAT_NREXT64 = 0x20
INCOMPAT_EXCHRANGE = 0x40
INCOMPAT_PARENT = 0x80
INCOMPAT_METADIR = 0x100
#: What ``bmap info`` calls each feature bit.
RO_COMPAT_NAMES = {1: "finobt", 2: "rmapbt", 4: "reflink", 8: "inobtcount"}
INCOMPAT_NAMES = {
    1: "ftype",
    2: "sparse",
    4: "meta_uuid",
    8: "bigtime",
    0x10: "needsrepair",
    0x20: "nrext64",
    0x40: "exchange",
    0x80: "parent",
    0x100: "metadir",
}
#: Incompatible features whose layout bmap reads (the others change structures it reads).
INCOMPAT_KNOWN = (
    INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT
)

# --------------------------------------------------------------------------------------------
# AG headers: sector 1 the AGF, sector 2 the AGI, sector 3 the AGFL

AGF_MAGIC = magic(b"XAGF")
AGF_SIZE = 224
AGF_CRC_OFFSET = 216
AGF_FIELDS: list[Field] = [
    (0, "agf_magicnum", "u32", "XAGF"),
    (4, "agf_versionnum", "u32", "1"),
    (8, "agf_seqno", "u32", "AG number"),
    (12, "agf_length", "u32", "blocks in this AG"),
    (16, "agf_bno_root", "u32", "root block of the by-block free-space btree"),
    (20, "agf_cnt_root", "u32", "root block of the by-count free-space btree"),
    (24, "agf_rmap_root", "u32", "root block of the reverse-mapping btree"),
    (28, "agf_bno_level", "u32", "levels of the bnobt"),
    (32, "agf_cnt_level", "u32", "levels of the cntbt"),
    (36, "agf_rmap_level", "u32", "levels of the rmapbt"),
    (40, "agf_flfirst", "u32", "first AGFL slot in use"),
    (44, "agf_fllast", "u32", "last AGFL slot in use"),
    (48, "agf_flcount", "u32", "AGFL slots in use"),
    (52, "agf_freeblks", "u32", "free blocks"),
    (56, "agf_longest", "u32", "longest free extent"),
    (60, "agf_btreeblks", "u32", "blocks of the free-space (and rmap) btrees beyond roots"),
    (64, "agf_uuid", "bytes16", "filesystem UUID (v5)"),
    (80, "agf_rmap_blocks", "u32", "rmapbt blocks"),
    (84, "agf_refcount_blocks", "u32", "refcountbt blocks"),
    (88, "agf_refcount_root", "u32", "root block of the refcount btree"),
    (92, "agf_refcount_level", "u32", "levels of the refcountbt"),
    (208, "agf_lsn", "u64", "last write sequence"),
    (216, "agf_crc", "u32", "CRC32C of the sector (little-endian)"),
]
AGF = make_struct(AGF_FIELDS, AGF_SIZE)

AGI_MAGIC = magic(b"XAGI")
AGI_SIZE = 344
AGI_CRC_OFFSET = 312
AGI_FIELDS: list[Field] = [
    (0, "agi_magicnum", "u32", "XAGI"),
    (4, "agi_versionnum", "u32", "1"),
    (8, "agi_seqno", "u32", "AG number"),
    (12, "agi_length", "u32", "blocks in this AG"),
    (16, "agi_count", "u32", "allocated inodes"),
    (20, "agi_root", "u32", "root block of the inode btree"),
    (24, "agi_level", "u32", "levels of the inobt"),
    (28, "agi_freecount", "u32", "free inodes"),
    (32, "agi_newino", "u32", "last allocated chunk"),
    (36, "agi_dirino", "u32", "unused"),
    (40, "agi_unlinked", "bytes256", "64 hash buckets of unlinked inodes"),
    (296, "agi_uuid", "bytes16", "filesystem UUID (v5)"),
    (312, "agi_crc", "u32", "CRC32C of the sector (little-endian)"),
    (320, "agi_lsn", "u64", "last write sequence"),
    (328, "agi_free_root", "u32", "root block of the free inode btree"),
    (332, "agi_free_level", "u32", "levels of the finobt"),
    (336, "agi_iblocks", "u32", "inobt blocks (inobtcount)"),
    (340, "agi_fblocks", "u32", "finobt blocks (inobtcount)"),
]
AGI = make_struct(AGI_FIELDS, AGI_SIZE)

AGFL_MAGIC = magic(b"XAFL")
AGFL_V5_HEADER = 36
AGFL_CRC_OFFSET = 32
AGFL_V5_FIELDS: list[Field] = [
    (0, "agfl_magicnum", "u32", "XAFL"),
    (4, "agfl_seqno", "u32", "AG number"),
    (8, "agfl_uuid", "bytes16", "filesystem UUID"),
    (24, "agfl_lsn", "u64", "last write sequence"),
    (32, "agfl_crc", "u32", "CRC32C of the sector (little-endian)"),
]
"""v5 only: on v4 the sector is the bare array of block numbers."""
AGFLHeader = make_struct(AGFL_V5_FIELDS, AGFL_V5_HEADER)

# --------------------------------------------------------------------------------------------
# btree blocks: short form (AG btrees, 32-bit pointers), long form (bmbt, 64-bit pointers)

SHORT_BLOCK_V4_FIELDS: list[Field] = [
    (0, "bb_magic", "u32", "which btree"),
    (4, "bb_level", "u16", "0 for a leaf"),
    (6, "bb_numrecs", "u16", "records (leaf) or keys and pointers (node)"),
    (8, "bb_leftsib", "u32", "left sibling AG block, 0xffffffff for none"),
    (12, "bb_rightsib", "u32", "right sibling AG block"),
]
SHORT_BLOCK_V5_FIELDS: list[Field] = [
    *SHORT_BLOCK_V4_FIELDS,
    (16, "bb_blkno", "u64", "this block's own 512-byte sector number"),
    (24, "bb_lsn", "u64", "last write sequence"),
    (32, "bb_uuid", "bytes16", "filesystem UUID"),
    (48, "bb_owner", "u32", "AG number"),
    (52, "bb_crc", "u32", "CRC32C of the block (little-endian)"),
]
ShortBlockV4 = make_struct(SHORT_BLOCK_V4_FIELDS, 16)
ShortBlockV5 = make_struct(SHORT_BLOCK_V5_FIELDS, 56)
SHORT_HEADER = {4: 16, 5: 56}

LONG_BLOCK_V4_FIELDS: list[Field] = [
    (0, "bb_magic", "u32", "BMAP or BMA3"),
    (4, "bb_level", "u16", "0 for a leaf"),
    (6, "bb_numrecs", "u16", "records or keys"),
    (8, "bb_leftsib", "u64", "left sibling fsblock, all ones for none"),
    (16, "bb_rightsib", "u64", "right sibling fsblock"),
]
LONG_BLOCK_V5_FIELDS: list[Field] = [
    *LONG_BLOCK_V4_FIELDS,
    (24, "bb_blkno", "u64", "this block's own sector number"),
    (32, "bb_lsn", "u64", "last write sequence"),
    (40, "bb_uuid", "bytes16", "filesystem UUID"),
    (56, "bb_owner", "u64", "owning inode"),
    (64, "bb_crc", "u32", "CRC32C of the block (little-endian)"),
]
LongBlockV4 = make_struct(LONG_BLOCK_V4_FIELDS, 24)
LongBlockV5 = make_struct(LONG_BLOCK_V5_FIELDS, 72)
LONG_HEADER = {4: 24, 5: 72}

#: Btree magics by (btree, version).
BTREE_MAGIC = {
    ("bnobt", 4): magic(b"ABTB"),
    ("bnobt", 5): magic(b"AB3B"),
    ("cntbt", 4): magic(b"ABTC"),
    ("cntbt", 5): magic(b"AB3C"),
    ("inobt", 4): magic(b"IABT"),
    ("inobt", 5): magic(b"IAB3"),
    ("finobt", 4): magic(b"FIBT"),
    ("finobt", 5): magic(b"FIB3"),
    ("rmapbt", 5): magic(b"RMB3"),
    ("refcountbt", 5): magic(b"R3FC"),
    ("bmbt", 4): magic(b"BMAP"),
    ("bmbt", 5): magic(b"BMA3"),
}
#: (leaf record size, node key size) of each short-form btree; the rmapbt's nodes hold a low
#: and a high key per pointer (overlapping intervals).
BTREE_SIZES = {
    "bnobt": (8, 8),
    "cntbt": (8, 8),
    "inobt": (16, 4),
    "finobt": (16, 4),
    "rmapbt": (24, 40),
    "refcountbt": (12, 4),
}
#: The kernel's deepest btree is 9 levels; anything deeper is damage.
MAX_BTREE_LEVELS = 9

ALLOC_REC_DTYPE = np.dtype([("startblock", ">u4"), ("blockcount", ">u4")])
INOBT_REC_DTYPE = np.dtype(
    {
        "names": ["startino", "holemask", "count", "freecount_sp", "freecount", "free"],
        "formats": [">u4", ">u2", "u1", "u1", ">u4", ">u8"],
        "offsets": [0, 4, 6, 7, 4, 8],
        "itemsize": 16,
    }
)
"""An inobt record, both layouts: sparse (holemask, count, freecount in the middle word) and
full (the middle word is the free count)."""
REFCOUNT_REC_DTYPE = np.dtype([("startblock", ">u4"), ("blockcount", ">u4"), ("refcount", ">u4")])
#: The high bit of a refcount record's start: a copy-on-write staging extent.
REFCOUNT_COW_FLAG = 1 << 31

# bmbt extent record: 128 bits, big-endian: 1 bit unwritten, 54 bits file offset, 52 bits
# start block, 21 bits length.
BMBT_REC_SIZE = 16
BMBT_STARTOFF_MASK = (1 << 54) - 1
BMBT_LEN_MASK = (1 << 21) - 1
#: The inode-root form of a bmbt (xfs_bmdr_block): level and numrecs, then keys and pointers.
BMDR_HEADER = 4

# --------------------------------------------------------------------------------------------
# inodes

DINODE_MAGIC = 0x494E  # "IN"
DINODE_CORE_V2 = 100
DINODE_CORE_V3 = 176
DINODE_CRC_OFFSET = 100
DINODE_FIELDS: list[Field] = [
    (0, "di_magic", "u16", "IN"),
    (2, "di_mode", "u16", "type and permissions"),
    (4, "di_version", "u8", "1, 2 or 3 (v5)"),
    (5, "di_format", "u8", "data fork format (XFS_DINODE_FMT_*)"),
    (6, "di_onlink", "u16", "link count of version 1 inodes"),
    (8, "di_uid", "u32", ""),
    (12, "di_gid", "u32", ""),
    (16, "di_nlink", "u32", "link count"),
    (20, "di_projid_lo", "u16", ""),
    (22, "di_projid_hi", "u16", ""),
    (24, "di_big_nextents", "u64", "data fork extents with nrext64 (else padding)"),
    (32, "di_atime", "u64", ""),
    (40, "di_mtime", "u64", ""),
    (48, "di_ctime", "u64", ""),
    (56, "di_size", "u64", "bytes"),
    (64, "di_nblocks", "u64", "blocks of both forks and their btrees"),
    (72, "di_extsize", "u32", "extent size hint"),
    (76, "di_nextents", "u32", "data fork extents (attr fork extents with nrext64)"),
    (80, "di_anextents", "u16", "attr fork extents (padding with nrext64)"),
    (82, "di_forkoff", "u8", "attr fork offset in the literal area, 8-byte units; 0: none"),
    (83, "di_aformat", "u8", "attr fork format"),
    (84, "di_dmevmask", "u32", ""),
    (88, "di_dmstate", "u16", ""),
    (90, "di_flags", "u16", "XFS_DIFLAG_*"),
    (92, "di_gen", "u32", "generation"),
    (96, "di_next_unlinked", "u32", "unlinked list"),
    (100, "di_crc", "u32", "CRC32C of the inode (v3, little-endian)"),
    (104, "di_changecount", "u64", ""),
    (112, "di_lsn", "u64", ""),
    (120, "di_flags2", "u64", "XFS_DIFLAG2_*"),
    (128, "di_cowextsize", "u32", ""),
    (144, "di_crtime", "u64", ""),
    (152, "di_ino", "u64", "the inode's own number (v3)"),
    (160, "di_uuid", "bytes16", "filesystem UUID (v3)"),
]
DinodeCore = make_struct(DINODE_FIELDS, DINODE_CORE_V3)
#: The fields the bulk table decodes, from the same list.
INODE_BULK_FIELDS = {
    "di_magic",
    "di_mode",
    "di_version",
    "di_format",
    "di_nlink",
    "di_big_nextents",
    "di_size",
    "di_nextents",
    "di_anextents",
    "di_forkoff",
    "di_aformat",
    "di_flags",
}


def inode_dtype(inode_size: int) -> np.dtype[Any]:
    """The bulk inode-table dtype: the decoded fields of records of ``inode_size`` bytes."""
    return make_dtype([f for f in DINODE_FIELDS if f[1] in INODE_BULK_FIELDS], inode_size)


FMT_DEV = 0
FMT_LOCAL = 1
FMT_EXTENTS = 2
FMT_BTREE = 3
FMT_UUID = 4
FMT_META_BTREE = 5
DIFLAG_REALTIME = 0x1
DIFLAG2_REFLINK = 0x2

S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000

# --------------------------------------------------------------------------------------------
# directories (xfs_da_format.h)

#: Short form header: entry count, count of entries with 8-byte inode numbers, parent.
DIR2_SF_HEADER_FIELDS: list[Field] = [
    (0, "count", "u8", "entries"),
    (1, "i8count", "u8", "entries needing 8-byte inode numbers (then all are 8 bytes)"),
]
Dir2SfHeader = make_struct(DIR2_SF_HEADER_FIELDS, 2)

DIR2_BLOCK_MAGIC = {4: magic(b"XD2B"), 5: magic(b"XDB3")}
DIR2_DATA_MAGIC = {4: magic(b"XD2D"), 5: magic(b"XDD3")}
#: Data and block headers: magic (and the v5 block header), then three best-free slots.
DIR2_DATA_HEADER = {4: 16, 5: 64}
DIR3_BLOCK_HEADER_FIELDS: list[Field] = [
    (0, "magic", "u32", "XDB3 or XDD3"),
    (4, "crc", "u32", "CRC32C (little-endian)"),
    (8, "blkno", "u64", "the block's own sector number"),
    (16, "lsn", "u64", ""),
    (24, "uuid", "bytes16", ""),
    (40, "owner", "u64", "the directory's inode"),
    (48, "bestfree", "bytes12", "three (offset, length) pairs"),
]
Dir3DataHeader = make_struct(DIR3_BLOCK_HEADER_FIELDS, 64)
DIR2_DATA_HEADER_V4_FIELDS: list[Field] = [
    (0, "magic", "u32", "XD2B or XD2D"),
    (4, "bestfree", "bytes12", "three (offset, length) pairs"),
]
Dir2DataHeader = make_struct(DIR2_DATA_HEADER_V4_FIELDS, 16)
#: Block form's tail: the leaf entry count and the stale count, the block's last 8 bytes.
DIR2_BLOCK_TAIL = cs.Struct("count" / cs.Int32ub, "stale" / cs.Int32ub)
DIR2_LEAF_ENTRY_SIZE = 8
#: An unused region of a data block starts with this tag.
DIR2_DATA_FREE_TAG = 0xFFFF
#: The directory's data blocks are below this byte offset; the leaf and free-index blocks are
#: above (32 GiB and 64 GiB).
DIR2_LEAF_OFFSET = 1 << 35

#: The header every leaf, node and free-index block (and attribute leaf) starts with: the
#: sibling pointers and a 16-bit magic (v4), then on v5 the CRC, self and owner fields.
DA_BLKINFO_FIELDS: list[Field] = [
    (0, "forw", "u32", "next block at this level (directory block number)"),
    (4, "back", "u32", "previous block at this level"),
    (8, "magic", "u16", "which kind of block"),
    (10, "pad", "u16", ""),
]
DA3_BLKINFO_FIELDS: list[Field] = [
    *DA_BLKINFO_FIELDS,
    (12, "crc", "u32", "CRC32C (little-endian)"),
    (16, "blkno", "u64", "the block's own sector number"),
    (24, "lsn", "u64", ""),
    (32, "uuid", "bytes16", ""),
    (48, "owner", "u64", "the owning inode"),
]
DaBlkinfo = make_struct(DA_BLKINFO_FIELDS, 12)
Da3Blkinfo = make_struct(DA3_BLKINFO_FIELDS, 56)
#: Leaf blocks (leaf and node directories): the header, then (hash, address) pairs.
DIR2_LEAF_HDR_FIELDS: list[Field] = [
    *DA_BLKINFO_FIELDS,
    (12, "count", "u16", "leaf entries"),
    (14, "stale", "u16", "entries of removed names"),
]
DIR3_LEAF_HDR_FIELDS: list[Field] = [
    *DA3_BLKINFO_FIELDS,
    (56, "count", "u16", "leaf entries"),
    (58, "stale", "u16", "entries of removed names"),
]
Dir2LeafHeader = make_struct(DIR2_LEAF_HDR_FIELDS, 16)
Dir3LeafHeader = make_struct(DIR3_LEAF_HDR_FIELDS, 64)
#: Internal nodes of a directory's or attribute fork's dabtree.
DA_NODE_HDR_FIELDS: list[Field] = [
    *DA_BLKINFO_FIELDS,
    (12, "count", "u16", "entries"),
    (14, "level", "u16", "1 above the leaves"),
]
DA3_NODE_HDR_FIELDS: list[Field] = [
    *DA3_BLKINFO_FIELDS,
    (56, "count", "u16", "entries"),
    (58, "level", "u16", "1 above the leaves"),
]
DaNodeHeader = make_struct(DA_NODE_HDR_FIELDS, 16)
Da3NodeHeader = make_struct(DA3_NODE_HDR_FIELDS, 64)
#: Free-index blocks of node directories (at 64 GiB on).
DIR2_FREE_HDR_FIELDS: list[Field] = [
    (0, "magic", "u32", "XD2F"),
    (4, "firstdb", "u32", "first data block described"),
    (8, "nvalid", "u32", "entries"),
    (12, "nused", "u32", "entries in use"),
]
Dir2FreeHeader = make_struct(DIR2_FREE_HDR_FIELDS, 16)
#: Attribute leaf blocks: the header after the block info.
ATTR_LEAF_HDR_FIELDS: list[Field] = [
    *DA_BLKINFO_FIELDS,
    (12, "count", "u16", "entries"),
    (14, "usedbytes", "u16", "bytes of names and values"),
    (16, "firstused", "u16", "first used byte of the name area"),
    (18, "holes", "u8", "a hole in the name area"),
]
AttrLeafHeader = make_struct(ATTR_LEAF_HDR_FIELDS, 32)
ATTR3_LEAF_HDR_FIELDS: list[Field] = [
    *DA3_BLKINFO_FIELDS,
    (56, "count", "u16", "entries"),
    (58, "usedbytes", "u16", ""),
    (60, "firstused", "u16", ""),
    (62, "holes", "u8", ""),
]
Attr3LeafHeader = make_struct(ATTR3_LEAF_HDR_FIELDS, 80)
#: Short-form attribute fork in the inode: total size, entry count.
ATTR_SF_HDR_FIELDS: list[Field] = [
    (0, "totsize", "u16", "bytes of the fork in use"),
    (2, "count", "u8", "entries"),
]
AttrSfHeader = make_struct(ATTR_SF_HDR_FIELDS, 4)
#: The inode-root form of a bmbt: level and record count, then keys and pointers.
BmdrHeader = cs.Struct("bb_level" / cs.Int16ub, "bb_numrecs" / cs.Int16ub)
#: A bmbt extent record, both words.
BmbtRecord = cs.BitStruct(
    "unwritten" / cs.Flag,
    "startoff" / cs.BitsInteger(54),
    "startblock" / cs.BitsInteger(52),
    "blockcount" / cs.BitsInteger(21),
)
DA_MAGIC = {
    "dir2-leaf1": 0xD2F1,
    "dir2-leafn": 0xD2FF,
    "da-node": 0xFEBE,
    "dir3-leaf1": 0x3DF1,
    "dir3-leafn": 0x3DFF,
    "da3-node": 0x3EBE,
    "attr-leaf": 0xFBEE,
    "attr3-leaf": 0x3BEE,
}
DIR2_FREE_MAGIC = {4: magic(b"XD2F"), 5: magic(b"XDF3")}
ATTR3_RMT_MAGIC = magic(b"XARM")

# --------------------------------------------------------------------------------------------
# symlinks

SYMLINK_MAGIC = magic(b"XSLM")
SYMLINK_V5_FIELDS: list[Field] = [
    (0, "sl_magic", "u32", "XSLM"),
    (4, "sl_offset", "u32", "offset of this block's piece in the target"),
    (8, "sl_bytes", "u32", "target bytes in this block"),
    (12, "sl_crc", "u32", "CRC32C (little-endian)"),
    (16, "sl_uuid", "bytes16", ""),
    (32, "sl_owner", "u64", "the symlink's inode"),
    (40, "sl_blkno", "u64", ""),
    (48, "sl_lsn", "u64", ""),
]
SymlinkHeader = make_struct(SYMLINK_V5_FIELDS, 56)

# --------------------------------------------------------------------------------------------
# the log (xfs_log_format.h): records of 512-byte basic blocks, each block's first word the
# cycle number of the pass that wrote it (a record header's second)

LOG_BB = 512
LOG_HEADER_MAGIC = 0xFEEDBABE
LOG_HEADER_CYCLE_SIZE = 32 * 1024
#: The biggest record (256 KiB of data and its headers), in basic blocks.
LOG_MAX_RECORD_BBS = (256 * 1024) // LOG_BB + 8
#: ``oh_flags`` of an operation header: the unmount record.
LOG_UNMOUNT_TRANS = 0x20
LOG_RECORD_HEADER_FIELDS: list[Field] = [
    (0, "h_magicno", "u32", "0xFEEDBABE"),
    (4, "h_cycle", "u32", "write cycle of the log"),
    (8, "h_version", "u32", "1, or 2 (v2 log)"),
    (12, "h_len", "u32", "bytes of data"),
    (16, "h_lsn", "u64", "this record's sequence number (cycle, block)"),
    (24, "h_tail_lsn", "u64", "the oldest record still needed"),
    (32, "h_crc", "u32", "CRC32C of the record (little-endian)"),
    (36, "h_prev_block", "u32", "block of the previous record"),
    (40, "h_num_logops", "u32", "operations in the record"),
    (300, "h_fmt", "u32", "format of the filesystem"),
    (304, "h_fs_uuid", "bytes16", "filesystem UUID"),
    (320, "h_size", "u32", "size of the in-core log buffer (v2)"),
]
LogRecordHeader = make_struct(LOG_RECORD_HEADER_FIELDS, LOG_BB)

# --------------------------------------------------------------------------------------------
# CRC32C, as XFS computes it: over the structure with its CRC field taken as zero, seeded
# with all ones and inverted at the end; stored little-endian.

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)
del _i, _c


def crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC32C (Castagnoli, reflected) with no final inversion."""
    table = _CRC32C_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def xfs_checksum(data: bytes, crc_offset: int) -> int:
    """The CRC XFS stores at ``crc_offset`` of ``data`` (as an integer, to compare with the
    little-endian field)."""
    zeroed = data[:crc_offset] + b"\0\0\0\0" + data[crc_offset + 4 :]
    return crc32c(zeroed) ^ 0xFFFFFFFF


def stored_checksum(data: bytes, crc_offset: int) -> int:
    return int.from_bytes(data[crc_offset : crc_offset + 4], "little")
