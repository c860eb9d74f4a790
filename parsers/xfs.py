"""XFS: the primary superblock, with libblkid's plausibility checks.

https://mirrors.edge.kernel.org/pub/linux/utils/fs/xfs/docs/xfs_filesystem_structure.pdf
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat
from parsers.probe import Content, ProbeReader, c_label, dce_uuid, read_struct

XFS_SUPERBLOCK = cs.Struct(
    "sb_magicnum" / cs.Const(b"XFSB") * "0x58465342",
    "sb_blocksize" / cs.Int32ub * "file system block size in bytes",
    "sb_dblocks" / cs.Int64ub * "blocks in the data device",
    "sb_rblocks" / cs.Int64ub,
    "sb_rextents" / cs.Int64ub,
    "sb_uuid" / cs.Bytes(16),
    "sb_logstart" / cs.Int64ub,
    "sb_rootino" / cs.Int64ub,
    "sb_rbmino" / cs.Int64ub,
    "sb_rsumino" / cs.Int64ub,
    "sb_rextsize" / cs.Int32ub * "realtime extent size in blocks",
    "sb_agblocks" / cs.Int32ub * "blocks per allocation group",
    "sb_agcount" / cs.Int32ub * "number of allocation groups",
    "sb_rbmblocks" / cs.Int32ub,
    "sb_logblocks" / cs.Int32ub,
    "sb_versionnum" / cs.Int16ub,
    "sb_sectsize" / cs.Int16ub,
    "sb_inodesize" / cs.Int16ub,
    "sb_inopblock" / cs.Int16ub,
    "sb_fname" / cs.Bytes(12) * "label, NUL-padded",
    "sb_blocklog" / cs.Int8ub,
    "sb_sectlog" / cs.Int8ub,
    "sb_inodelog" / cs.Int8ub,
    "sb_inopblog" / cs.Int8ub,
    "sb_agblklog" / cs.Int8ub,
    "sb_rextslog" / cs.Int8ub,
    "sb_inprogress" / cs.Int8ub,
    "sb_imax_pct" / cs.Int8ub,
)


def _xfs_plausible(sb: cs.Container) -> bool:
    """libblkid's sanity checks: the magic alone is not enough."""
    rtext_bytes = sb.sb_rextsize * sb.sb_blocksize
    return (
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
    sb = read_struct(XFS_SUPERBLOCK, dev, "xfs-superblock", 0)
    if not _xfs_plausible(sb):
        raise NotThisFormat("xfs-superblock", 0, "geometry not plausible")
    return Content(
        "xfs", None, c_label(sb.sb_fname), dce_uuid(sb.sb_uuid), sb.sb_dblocks * sb.sb_blocksize
    )
