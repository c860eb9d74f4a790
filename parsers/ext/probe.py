"""Naming an ext2/3/4 filesystem (or an ext3/4 external journal) as blkid names it.

:func:`probe` reads the primary superblock through the project's one declaration of it
(:data:`parsers.ext.structs.SuperblockHead`) and decides ext2, ext3, ext4 or jbd by the feature
flags, as libblkid does; :func:`probe_backup_superblock` goes further than blkid and finds a
filesystem whose primary superblock is damaged by a backup copy.
"""

from __future__ import annotations

from parsers.errors import NotThisFormat
from parsers.ext import structs as S
from parsers.ext.filesystem import ExtFS
from parsers.probe import Content, ProbeReader, c_label, dce_uuid, read_struct
from parsers.stream import ReadSeek

#: Block sizes above 64 KiB: the superblock is damaged, its size claim is not believed.
_MAX_LOG_BLOCK_SIZE = 6


def _blkid_kind(compat: int, incompat: int, ro_compat: int) -> str:
    """ext4, ext3, ext2 or jbd, decided by the feature flags as libblkid decides it.

    libblkid also asks the running kernel (ext2 driver present? ext4dev?); we answer as it does
    on any current kernel, where ext4 is there, ext4dev is not and ext2 is supported.
    """
    if incompat & S.INCOMPAT_JOURNAL_DEV:
        return "jbd"
    if ro_compat & ~S.EXT3_RO_COMPAT_SUPP or incompat & ~S.EXT3_INCOMPAT_SUPP:
        return "ext4"
    if compat & S.COMPAT_HAS_JOURNAL:
        return "ext3"
    if not (ro_compat & ~S.EXT2_RO_COMPAT_SUPP or incompat & ~S.EXT2_INCOMPAT_SUPP):
        return "ext2"
    raise NotThisFormat("ext-superblock", S.SUPERBLOCK_OFFSET, "needs recovery but has no journal")


def probe(dev: ProbeReader) -> Content:
    """ext2/3/4: superblock at 1024, magic 0xEF53 at 1024+56."""
    sb = read_struct(S.SuperblockHead, dev, "ext-superblock", S.SUPERBLOCK_OFFSET)
    if sb.s_magic != S.MAGIC:
        raise NotThisFormat("ext-superblock", S.SUPERBLOCK_OFFSET + 0x38, "no 0xEF53 magic")
    kind = _blkid_kind(sb.s_feature_compat, sb.s_feature_incompat, sb.s_feature_ro_compat)
    blocks = sb.s_blocks_count_lo
    if sb.s_feature_incompat & S.INCOMPAT_64BIT:
        blocks |= sb.s_blocks_count_hi << 32
    fs_size = None
    if sb.s_log_block_size <= _MAX_LOG_BLOCK_SIZE:
        fs_size = blocks * (1024 << sb.s_log_block_size) or None
    return Content(
        kind,
        f"{sb.s_rev_level}.{sb.s_minor_rev_level}",
        c_label(sb.s_volume_name),
        dce_uuid(sb.s_uuid),
        fs_size,
    )


def probe_backup_superblock(fh: ReadSeek, size: int) -> Content:
    """An ext filesystem found by a backup superblock where the primary is unusable (what the
    mapper then reads too; it says which copy it used).

    Raises:
        ParserError: no usable superblock, primary or backup.
    """
    sb = ExtFS(fh, size).sb
    return Content(sb.kind, "1.0", sb.label or None, sb.uuid, sb.size)
