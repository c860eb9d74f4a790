"""Naming an XFS filesystem as blkid names it: the primary superblock, with libblkid's
plausibility checks (the magic alone is not enough).

https://mirrors.edge.kernel.org/pub/linux/utils/fs/xfs/docs/xfs_filesystem_structure.pdf
"""

from __future__ import annotations

from typing import Any

from parsers.errors import NotThisFormat
from parsers.probe import Content, ProbeReader, c_label, dce_uuid, read_struct
from parsers.xfs import structs as S


def _xfs_plausible(sb: Any) -> bool:
    """libblkid's sanity checks."""
    rtext_bytes = sb.sb_rextsize * sb.sb_blocksize
    return bool(
        sb.sb_agcount > 0
        and 512 <= sb.sb_sectsize <= 32768
        and 9 <= sb.sb_sectlog <= 15
        and sb.sb_sectsize == 1 << sb.sb_sectlog
        and 512 <= sb.sb_blocksize <= 65536
        and 9 <= sb.sb_blocklog <= 16
        and sb.sb_blocksize == 1 << sb.sb_blocklog
        and 256 <= sb.sb_inodesize <= 2048
        and 8 <= sb.sb_inodelog <= 11
        and sb.sb_inodesize == 1 << sb.sb_inodelog
        and sb.sb_blocklog - sb.sb_inodelog == sb.sb_inopblog
        and 4096 <= rtext_bytes <= 1024 * 1024 * 1024
        and sb.sb_imax_pct <= 100
        and sb.sb_dblocks != 0
        and sb.sb_dblocks <= sb.sb_agcount * sb.sb_agblocks
        and sb.sb_dblocks >= (sb.sb_agcount - 1) * sb.sb_agblocks + 64
    )


def probe(dev: ProbeReader) -> Content:
    """XFS: primary superblock at 0, big-endian, "XFSB"."""
    sb = read_struct(S.Superblock, dev, "xfs-superblock", 0)
    if sb.sb_magicnum != S.SB_MAGIC:
        raise NotThisFormat("xfs-superblock", 0, "no XFSB magic")
    if not _xfs_plausible(sb):
        raise NotThisFormat("xfs-superblock", 0, "geometry not plausible")
    return Content(
        "xfs", None, c_label(sb.sb_fname), dce_uuid(sb.sb_uuid), sb.sb_dblocks * sb.sb_blocksize
    )
