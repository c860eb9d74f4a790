"""UFS1 and UFS2 (the BSD Fast File System): the superblock, the cylinder group header, what
libblkid reads for VERSION, LABEL and UUID, and where the filesystem's own structures and its
free space lie.

Reference: FreeBSD ``sys/ufs/ffs/fs.h`` (``struct fs``, ``struct cg`` and the macros that place
a cylinder group's pieces: ``cgbase``, ``cgstart``, ``cgsblock``, ``cgtod``, ``cgimin``,
``cgdmin``), https://cgit.freebsd.org/src/tree/sys/ufs/ffs/fs.h, and libblkid's
``libblkid/src/superblocks/ufs.c``.

Every address in the superblock counts fragments (``fs_fsize`` bytes) from the volume's start.
A cylinder group ``c`` covers the fragments ``[c * fs_fpg, (c + 1) * fs_fpg)``; inside it, at
fragment offsets from ``cgstart(c)``, lie a superblock copy (``fs_sblkno``), the group's header
block (``fs_cblkno``), its inode table (``fs_iblkno``) and the first data (``fs_dblkno``). UFS1
staggers ``cgstart`` by ``fs_old_cgoffset * (c & ~fs_old_cgmask)`` fragments; UFS2 does not.
The header's free map (``cg_freeoff``) has one bit per fragment of the group, counted from
``cgbase(c)``, least significant bit first; a set bit is a free fragment.

The structures are in the byte order the superblock's magic is found in (BSD on big-endian
machines wrote big-endian UFS; makefs ``-B be`` still does).

:func:`probe` names the volume as ``blkid -p`` does; :func:`read_layout` gives what the Sleuth
Kit layer needs beside TSK's own walk of the files: the structures' byte ranges and the free
space, every count checked against the volume's real size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import construct as cs
import numpy as np

from parsers import fieldlist
from parsers.errors import DamagedError, NotThisFormat, TruncatedError, UnsupportedError
from parsers.fieldlist import Endian, Field
from parsers.probe import Content, ProbeReader, c_label, is_power_of_2

UFS1_MAGIC = 0x011954
UFS2_MAGIC = 0x19540119
#: Sun, HP-UX and other vendors' variants: libblkid names them "ufs" version 1; their
#: layouts differ from the BSD one, so :func:`read_layout` does not read them.
VENDOR_MAGICS = (0x00195612, 0x00095014, 0x00612195, 0x05231994)
CG_MAGIC = 0x090255

#: Where libblkid looks for the superblock, in its order (bytes).
BLKID_SUPERBLOCK_OFFSETS = (0, 8192, 65536, 262144)
#: Where FreeBSD's ffs_sbget looks (SBLOCKSEARCH: UFS2, UFS1, floppy, "piggy"), in its order.
SUPERBLOCK_OFFSETS = (65536, 8192, 0, 262144)
#: The space reserved for the superblock (SBLOCKSIZE); ``sizeof(struct fs)`` is 1376.
SUPERBLOCK_AREA = 8192
SUPERBLOCK_SIZE = 1376
CG_HEADER_SIZE = 168
INODE_SIZE = {1: 128, 2: 256}
#: UFS_NDADDR: direct block addresses in an inode; only a file that fits in them may end in
#: fragments (ffs_balloc), a longer one ends in a whole block.
DIRECT_BLOCKS = 12
#: MINBSIZE and MAXBSIZE; MAXFRAG.
MIN_BLOCK, MAX_BLOCK, MAX_FRAGS_PER_BLOCK = 4096, 65536, 8
MIN_FRAGMENT = 512
#: Findings of one kind named one by one before a summary line takes over.
_FINDINGS_PER_KIND = 16

# -- structures ---------------------------------------------------------------------------------

SUPERBLOCK_FIELDS: list[Field] = [
    (8, "fs_sblkno", "u32", "superblock copy, fragments from cgstart"),
    (12, "fs_cblkno", "u32", "cylinder group header block, fragments from cgstart"),
    (16, "fs_iblkno", "u32", "inode table, fragments from cgstart"),
    (20, "fs_dblkno", "u32", "first data fragment after the group's header, from cgstart"),
    (24, "fs_old_cgoffset", "u32", "UFS1: cylinder group stagger in fragments"),
    (28, "fs_old_cgmask", "u32", "UFS1: mask of the stagger's cylinder-group number"),
    (36, "fs_old_size", "u32", "UFS1: fragments in the filesystem"),
    (40, "fs_old_dsize", "u32", "UFS1: data fragments"),
    (44, "fs_ncg", "u32", "number of cylinder groups"),
    (48, "fs_bsize", "u32", "block size in bytes"),
    (52, "fs_fsize", "u32", "fragment size in bytes"),
    (56, "fs_frag", "u32", "fragments per block"),
    (104, "fs_sbsize", "u32", "bytes of the superblock actually used"),
    (120, "fs_inopb", "u32", "inodes per block"),
    (144, "fs_id0", "u32", "filesystem id, first word (blkid's UUID, first half)"),
    (148, "fs_id1", "u32", "filesystem id, second word"),
    (152, "fs_old_csaddr", "u32", "UFS1: fragment address of the cylinder group summary"),
    (156, "fs_cssize", "u32", "bytes of the cylinder group summary"),
    (160, "fs_cgsize", "u32", "bytes of a cylinder group header"),
    (184, "fs_ipg", "u32", "inodes per cylinder group"),
    (188, "fs_fpg", "u32", "fragments per cylinder group"),
    (196, "fs_old_cs_nbfree", "u32", "UFS1: free blocks"),
    (204, "fs_old_cs_nffree", "u32", "UFS1: free fragments outside free blocks"),
    (680, "fs_volname", "bytes32", "volume name (UFS2; blkid's LABEL)"),
    (1000, "fs_sblockloc", "u64", "UFS2: byte offset of the standard superblock"),
    (1016, "fs_cs_nbfree", "u64", "UFS2: free blocks"),
    (1032, "fs_cs_nffree", "u64", "UFS2: free fragments outside free blocks"),
    (1080, "fs_size", "u64", "UFS2: fragments in the filesystem"),
    (1088, "fs_dsize", "u64", "UFS2: data fragments"),
    (1096, "fs_csaddr", "u64", "UFS2: fragment address of the cylinder group summary"),
    (1372, "fs_magic", "u32", "0x011954 (UFS1) or 0x19540119 (UFS2)"),
]

CG_FIELDS: list[Field] = [
    (4, "cg_magic", "u32", "0x090255"),
    (12, "cg_cgx", "u32", "this group's number"),
    (20, "cg_ndblk", "u32", "fragments in this group"),
    (28, "cg_cs_nbfree", "u32", "free blocks"),
    (32, "cg_cs_nifree", "u32", "free inodes"),
    (36, "cg_cs_nffree", "u32", "free fragments outside free blocks"),
    (92, "cg_iusedoff", "u32", "byte offset of the used-inode map in the header"),
    (96, "cg_freeoff", "u32", "byte offset of the free-fragment map in the header"),
    (100, "cg_nextfreeoff", "u32", "byte offset of the end of the maps"),
    (116, "cg_niblk", "u32", "UFS2: inode blocks in this group"),
    (120, "cg_initediblk", "u32", "UFS2: inodes initialised so far"),
]

SUPERBLOCK: dict[Endian, cs.Construct] = {
    endian: fieldlist.make_struct(SUPERBLOCK_FIELDS, SUPERBLOCK_SIZE, endian)
    for endian in ("<", ">")
}
CYLINDER_GROUP: dict[Endian, cs.Construct] = {
    endian: fieldlist.make_struct(CG_FIELDS, CG_HEADER_SIZE, endian) for endian in ("<", ">")
}
_MAGIC_AT = SUPERBLOCK_SIZE - 4


def _magic(raw: bytes, magics: tuple[int, ...]) -> tuple[int, Endian] | None:
    """The first of ``magics`` found at fs_magic, in either byte order (libblkid's test)."""
    little = int.from_bytes(raw[_MAGIC_AT:SUPERBLOCK_SIZE], "little")
    big = int.from_bytes(raw[_MAGIC_AT:SUPERBLOCK_SIZE], "big")
    for magic in magics:
        if little == magic:
            return magic, "<"
        if big == magic:
            return magic, ">"
    return None


@dataclass(frozen=True)
class Superblock:
    """The fields of ``struct fs`` the layout needs, UFS1's old fields already chosen."""

    offset: int
    version: int
    byte_order: Endian
    fragment_size: int
    block_size: int
    frags_per_block: int
    num_cgs: int
    frags_per_group: int
    inodes_per_group: int
    inodes_per_block: int
    num_frags: int
    """fs_size: the filesystem's length in fragments."""
    sblkno: int
    cblkno: int
    iblkno: int
    dblkno: int
    cg_offset: int
    cg_mask: int
    cg_size: int
    sb_size: int
    summary_frag: int
    summary_size: int
    free_blocks: int
    free_frags: int
    sblockloc: int

    @property
    def inode_size(self) -> int:
        return INODE_SIZE[self.version]

    def cg_start(self, cg: int) -> int:
        """cgstart(c) in fragments: cgbase(c), plus UFS1's stagger."""
        base = cg * self.frags_per_group
        if self.version == 2:
            return base
        return base + self.cg_offset * (cg & ~self.cg_mask)


def parse_superblock(raw: bytes, offset: int) -> Superblock:
    """The superblock in ``raw`` (1376 bytes read at ``offset``), checked for a geometry that
    can be laid out: block and fragment sizes, the order of a group's pieces, at least one
    group. Raises NotThisFormat without a UFS1/UFS2 magic, DamagedError where the geometry is
    impossible."""
    if len(raw) < SUPERBLOCK_SIZE:
        raise TruncatedError("ufs-superblock", offset, f"needs {SUPERBLOCK_SIZE} bytes")
    found = _magic(raw, (UFS2_MAGIC, UFS1_MAGIC))
    if found is None:
        if _magic(raw, VENDOR_MAGICS) is not None:
            raise UnsupportedError("ufs-superblock", offset, "a vendor UFS variant")
        raise NotThisFormat("ufs-superblock", offset + _MAGIC_AT, "no UFS1 or UFS2 magic")
    magic, endian = found
    sb = SUPERBLOCK[endian].parse(raw)
    version = 2 if magic == UFS2_MAGIC else 1
    if version == 2:
        num_frags, summary_frag = sb.fs_size, sb.fs_csaddr
        free_blocks, free_frags = sb.fs_cs_nbfree, sb.fs_cs_nffree
    else:
        num_frags, summary_frag = sb.fs_old_size, sb.fs_old_csaddr
        free_blocks, free_frags = sb.fs_old_cs_nbfree, sb.fs_old_cs_nffree
    _check_geometry(sb, offset)
    return Superblock(
        offset=offset,
        version=version,
        byte_order=endian,
        fragment_size=sb.fs_fsize,
        block_size=sb.fs_bsize,
        frags_per_block=sb.fs_frag,
        num_cgs=sb.fs_ncg,
        frags_per_group=sb.fs_fpg,
        inodes_per_group=sb.fs_ipg,
        inodes_per_block=sb.fs_inopb,
        num_frags=num_frags,
        sblkno=sb.fs_sblkno,
        cblkno=sb.fs_cblkno,
        iblkno=sb.fs_iblkno,
        dblkno=sb.fs_dblkno,
        cg_offset=sb.fs_old_cgoffset,
        cg_mask=sb.fs_old_cgmask,
        cg_size=sb.fs_cgsize,
        sb_size=sb.fs_sbsize,
        summary_frag=summary_frag,
        summary_size=sb.fs_cssize,
        free_blocks=free_blocks,
        free_frags=free_frags,
        sblockloc=sb.fs_sblockloc,
    )


def _check_geometry(sb: Any, offset: int) -> None:
    def bad(message: str) -> DamagedError:
        return DamagedError("ufs-superblock", offset, message)

    fsize, bsize = sb.fs_fsize, sb.fs_bsize
    if not (is_power_of_2(fsize) and MIN_FRAGMENT <= fsize <= MAX_BLOCK):
        raise bad(f"fragment size {fsize} is not a power of 2 in 512..65536")
    if not (is_power_of_2(bsize) and MIN_BLOCK <= bsize <= MAX_BLOCK and bsize >= fsize):
        raise bad(f"block size {bsize} is not a power of 2 in 4096..65536, >= {fsize}")
    if bsize // fsize > MAX_FRAGS_PER_BLOCK or sb.fs_frag != bsize // fsize:
        raise bad(f"{sb.fs_frag} fragments per block do not match {bsize} / {fsize}")
    fpg = sb.fs_fpg
    if sb.fs_ncg == 0 or fpg == 0 or fpg % sb.fs_frag:
        raise bad(f"{sb.fs_ncg} groups of {fpg} fragments")
    if not sb.fs_sblkno < sb.fs_cblkno < sb.fs_iblkno < sb.fs_dblkno <= fpg:
        raise bad(
            f"a group's pieces are out of order: superblock {sb.fs_sblkno}, header "
            f"{sb.fs_cblkno}, inodes {sb.fs_iblkno}, data {sb.fs_dblkno}, group {fpg}"
        )
    if sb.fs_ipg == 0:
        raise bad("no inodes per group")
    if not CG_HEADER_SIZE <= sb.fs_cgsize <= min(bsize, (sb.fs_iblkno - sb.fs_cblkno) * fsize):
        raise bad(f"a group header of {sb.fs_cgsize} bytes does not fit its block")


# -- probe --------------------------------------------------------------------------------------


def probe(dev: ProbeReader) -> Content:
    """UFS: the magic at 1372 of a superblock at 0, 8, 64 or 256 KiB (libblkid's order), in
    either byte order; the geometry must be plausible too, which libblkid does not ask.

    VERSION "2" or "1" (libblkid says "1" for every magic but UFS2's), LABEL from fs_volname
    for UFS2 only, UUID as ``%08x%08x`` of the two fs_id words unless both are zero."""
    for offset in BLKID_SUPERBLOCK_OFFSETS:
        # A superblock that does not fit stops the search, as blkid's failed read does.
        raw = dev.read("ufs-superblock", offset, SUPERBLOCK_SIZE)
        found = _magic(raw, (UFS2_MAGIC, UFS1_MAGIC, *VENDOR_MAGICS))
        if found is not None:
            break
    else:
        raise NotThisFormat("ufs-superblock", None, "no UFS magic at 0, 8, 64 or 256 KiB")
    magic, endian = found
    sb = SUPERBLOCK[endian].parse(raw)
    version = 2 if magic == UFS2_MAGIC else 1
    try:
        _check_geometry(sb, offset)
    except DamagedError as error:
        raise NotThisFormat("ufs-superblock", offset, error.reason) from None
    num_frags = sb.fs_size if version == 2 else sb.fs_old_size
    if num_frags == 0 or num_frags > sb.fs_ncg * sb.fs_fpg:
        raise NotThisFormat(
            "ufs-superblock", offset, f"{num_frags} fragments in {sb.fs_ncg} groups"
        )
    uuid = f"{sb.fs_id0:08x}{sb.fs_id1:08x}" if sb.fs_id0 or sb.fs_id1 else None
    label = c_label(sb.fs_volname) if version == 2 else None
    return Content(
        "ufs", str(version), label, uuid, num_frags * sb.fs_fsize, offset_in_device=offset
    )


# -- layout -------------------------------------------------------------------------------------


@dataclass(eq=False)
class UfsLayout:
    """Where a UFS volume's own structures and its free space lie, in bytes from the volume's
    start, cut at the volume's end."""

    version: int
    """1 or 2."""
    fragment: int
    """fs_fsize: the allocation unit, in bytes."""
    block: int
    """fs_bsize in bytes."""
    fs_end: int
    """fs_size * fs_fsize (bounded by fs_ncg), never more than one group past the volume's end:
    past ``size`` when the volume is cut short."""
    superblock_offset: int
    """Byte offset of the primary superblock."""
    byte_order: Endian
    """``<`` or ``>``."""
    cylinder_groups: int
    """The cylinder groups laid out (fs_ncg, unless the volume cannot hold that many)."""
    structures: list[tuple[str, int, int]] = field(default_factory=list)
    """``(kind, start, end)``, sorted, not overlapping: ``ufs-boot``, ``ufs-superblock``,
    ``ufs-superblock-backup``, ``ufs-cg``, ``ufs-inodes``, ``ufs-summary``."""
    free: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.empty(0, np.int64), np.empty(0, np.int64))
    )
    """Free byte ranges (starts, ends: int64, sorted, merged) from the groups' free maps."""
    findings: list[tuple[str, int | None, str]] = field(default_factory=list)
    """``(severity, offset, message)``: ``error``, ``warning`` or ``info``."""
    inode_tables: list[tuple[int, int, int]] = field(default_factory=list)
    """``(first inode number, byte offset, inodes)`` of each group's inode table, inside the
    volume."""
    superblock: Superblock | None = None
    """The superblock read (its fields as found, unchecked counts included)."""


class _Findings:
    """Findings with a cap per kind, so that a hostile image cannot make millions of them."""

    def __init__(self, out: list[tuple[str, int | None, str]]) -> None:
        self.out = out
        self.counts: dict[str, tuple[int, str]] = {}

    def add(self, kind: str, severity: str, offset: int | None, message: str) -> None:
        count = self.counts.get(kind, (0, severity))[0] + 1
        self.counts[kind] = (count, severity)
        if count <= _FINDINGS_PER_KIND:
            self.out.append((severity, offset, message))

    def summarise(self) -> None:
        for kind, (count, severity) in self.counts.items():
            if count > _FINDINGS_PER_KIND:
                more = count - _FINDINGS_PER_KIND
                self.out.append((severity, None, f"ufs: {more} more findings like these ({kind})"))


def read_layout(read: Callable[[int, int], bytes], size: int) -> UfsLayout:
    """The layout of the UFS volume whose bytes ``read(offset, length)`` gives (short at the
    end), ``size`` bytes long.

    The superblock is searched where FreeBSD searches (64 KiB, 8 KiB, 0, 256 KiB); a UFS2
    superblock must say it lies where it was found (fs_sblockloc), as FreeBSD asks. The
    cylinder groups' geometry comes from the superblock, their free maps from each group's
    header. Raises a ParserError where there is no usable superblock; damage past that
    (a group header with a bad magic, counts the volume cannot hold, a truncated volume) is a
    finding, and what it spoils is left out.

    Every count is bounded by ``size``: at most ``size / (fs_fpg * fs_fsize) + 1`` groups are
    read, one header each, and nothing at or past ``size`` is asked for.
    """

    def read_bounded(offset: int, length: int) -> bytes:
        length = min(length, size - offset)
        return read(offset, length) if length > 0 else b""

    sb = _find_superblock(read_bounded, size)
    fsize = sb.fragment_size
    layout = UfsLayout(
        version=sb.version,
        fragment=fsize,
        block=sb.block_size,
        fs_end=0,
        superblock_offset=sb.offset,
        byte_order=sb.byte_order,
        cylinder_groups=0,
        superblock=sb,
    )
    findings = _Findings(layout.findings)
    num_cgs, fs_frags = _bounded_counts(sb, size, findings)
    layout.cylinder_groups = num_cgs
    layout.fs_end = fs_frags * fsize
    structures = _fixed_structures(sb, num_cgs, findings, layout.inode_tables)
    layout.inode_tables = [t for t in layout.inode_tables if t[1] < size]
    starts, ends = [], []
    for cg in range(num_cgs):
        free = _cg_free(read_bounded, sb, cg, fs_frags, size, findings)
        if free is not None:
            starts.append(free[0])
            ends.append(free[1])
    layout.structures = _resolve(structures, size, findings)
    layout.free = _merge(starts, ends)
    _check_free_against_structures(layout, findings)
    findings.summarise()
    return layout


def _find_superblock(read: Callable[[int, int], bytes], size: int) -> Superblock:
    problems = []
    seen_magic = False
    for offset in SUPERBLOCK_OFFSETS:
        raw = read(offset, SUPERBLOCK_SIZE)
        if len(raw) < SUPERBLOCK_SIZE:
            problems.append(f"{offset:#x}: past the volume's end")
            continue
        try:
            sb = parse_superblock(raw, offset)
        except NotThisFormat as error:
            problems.append(f"{offset:#x}: {error.reason}")
            continue
        except (UnsupportedError, DamagedError) as error:
            seen_magic = True
            problems.append(f"{offset:#x}: {error.reason}")
            continue
        if sb.version == 2 and sb.sblockloc != offset:
            seen_magic = True
            problems.append(f"{offset:#x}: says it belongs at {sb.sblockloc:#x}")
            continue
        return sb
    kind = DamagedError if seen_magic else NotThisFormat
    raise kind("ufs-superblock", None, "no usable superblock (" + "; ".join(problems) + ")")


def _bounded_counts(sb: Superblock, size: int, findings: _Findings) -> tuple[int, int]:
    """The groups and fragments to lay out: fs_size, unless fs_ncg disagrees (the smaller is
    believed), and never more than one group past the volume's end."""
    fsize, fpg = sb.fragment_size, sb.frags_per_group
    group_bytes = fpg * fsize
    claimed = sb.num_frags
    fs_frags = claimed
    if not (sb.num_cgs - 1) * fpg < claimed <= sb.num_cgs * fpg:
        findings.add(
            "counts",
            "error",
            sb.offset,
            f"ufs-superblock: {claimed} fragments do not fill {sb.num_cgs} groups of {fpg}; "
            "the smaller count is believed",
        )
        fs_frags = min(claimed, sb.num_cgs * fpg) or sb.num_cgs * fpg
    if fs_frags * fsize > size:
        findings.add(
            "truncated",
            "error",
            size,
            f"ufs: the filesystem claims {fs_frags * fsize} bytes but the volume holds "
            f"{size}; what lies past the end is left out",
        )
        if fs_frags * fsize > size + group_bytes:
            fs_frags = -(-size // group_bytes) * fpg
    return -(-fs_frags // fpg), fs_frags


def _fixed_structures(
    sb: Superblock, num_cgs: int, findings: _Findings, tables: list[tuple[int, int, int]]
) -> list[tuple[str, int, int]]:
    """The structures the superblock places (not yet cut at the volume's end); each group's
    inode table is also added to ``tables``."""
    fsize = sb.fragment_size
    primary = sb.offset
    structures = []
    if primary > 0:
        structures.append(("ufs-boot", 0, primary))
    structures.append(("ufs-superblock", primary, primary + SUPERBLOCK_AREA))
    inode_frags = -(-sb.inodes_per_group * sb.inode_size // fsize)
    if inode_frags > sb.dblkno - sb.iblkno:
        findings.add(
            "inodes",
            "error",
            sb.offset,
            f"ufs-superblock: {sb.inodes_per_group} inodes per group do not fit the "
            f"{sb.dblkno - sb.iblkno} fragments before the data; the table is cut there",
        )
        inode_frags = sb.dblkno - sb.iblkno
    if sb.inodes_per_block != sb.block_size // sb.inode_size:
        findings.add(
            "inodes",
            "warning",
            sb.offset,
            f"ufs-superblock: {sb.inodes_per_block} inodes per block, expected "
            f"{sb.block_size // sb.inode_size}",
        )
    fpg = sb.frags_per_group
    for cg in range(num_cgs):
        start = sb.cg_start(cg)
        if start + sb.dblkno > (cg + 1) * fpg:
            findings.add(
                "stagger",
                "error",
                start * fsize,
                f"ufs-cg {cg}: staggered by {start - cg * fpg} fragments, its header runs "
                "past the group's end; its structures are left out",
            )
            continue
        backup = ((start + sb.sblkno) * fsize, (start + sb.cblkno) * fsize)
        if not backup[0] <= primary < backup[1]:
            structures.append(("ufs-superblock-backup", *backup))
        structures.append(("ufs-cg", (start + sb.cblkno) * fsize, (start + sb.iblkno) * fsize))
        inodes = (start + sb.iblkno) * fsize
        structures.append(("ufs-inodes", inodes, inodes + inode_frags * fsize))
        tables.append((cg * sb.inodes_per_group, inodes, inode_frags * fsize // sb.inode_size))
    expected = -(-sb.num_cgs * 16 // fsize) * fsize  # struct csum is 16 bytes
    summary = sb.summary_size
    if summary != expected:
        used = min(expected, -(-num_cgs * 16 // fsize) * fsize)
        findings.add(
            "summary",
            "warning",
            sb.offset,
            f"ufs-superblock: a summary of {summary} bytes for {sb.num_cgs} groups; {used} is used",
        )
        summary = used
    at = sb.summary_frag * fsize
    structures.append(("ufs-summary", at, at + -(-summary // fsize) * fsize))
    return structures


def _cg_free(
    read: Callable[[int, int], bytes],
    sb: Superblock,
    cg: int,
    fs_frags: int,
    size: int,
    findings: _Findings,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The free byte ranges of group ``cg`` by its header's free map, or None (a finding
    says why) when the header is unusable."""
    fsize, fpg = sb.fragment_size, sb.frags_per_group
    base = cg * fpg
    start = sb.cg_start(cg)
    if start + sb.dblkno > base + fpg:
        return None  # a stagger past the group's end: said where the structures are placed
    header_at = (start + sb.cblkno) * fsize
    if header_at >= size:
        findings.add("cg-past-end", "error", header_at, f"ufs-cg {cg}: lies past the volume's end")
        return None
    raw = read(header_at, sb.cg_size)
    if len(raw) < max(CG_HEADER_SIZE, sb.cg_size):
        findings.add("cg-past-end", "error", header_at, f"ufs-cg {cg}: cut by the volume's end")
        return None
    header = CYLINDER_GROUP[sb.byte_order].parse(raw[:CG_HEADER_SIZE])
    if header.cg_magic != CG_MAGIC:
        findings.add(
            "cg-magic",
            "error",
            header_at,
            f"ufs-cg {cg}: bad magic {header.cg_magic:#x}; its free map is not read",
        )
        return None
    if header.cg_cgx != cg:
        findings.add(
            "cg-number", "warning", header_at, f"ufs-cg {cg}: says it is group {header.cg_cgx}"
        )
    # The group's fragments: those the filesystem has there, and the volume holds.
    frags = min(fpg, fs_frags - base, size // fsize - base)
    if frags <= 0:
        return None
    nbytes = -(-frags // 8)
    if not CG_HEADER_SIZE <= header.cg_freeoff <= len(raw) - nbytes:
        findings.add(
            "cg-map",
            "error",
            header_at,
            f"ufs-cg {cg}: a free map of {nbytes} bytes at {header.cg_freeoff} does not fit "
            f"the {len(raw)}-byte header; it is not read",
        )
        return None
    bitmap = np.frombuffer(raw, np.uint8, count=nbytes, offset=header.cg_freeoff)
    bits = np.unpackbits(bitmap, bitorder="little")[:frags].astype(np.int8)
    edges = np.diff(bits, prepend=np.int8(0), append=np.int8(0))
    first = np.flatnonzero(edges == 1).astype(np.int64)
    past = np.flatnonzero(edges == -1).astype(np.int64)
    return (base + first) * fsize, (base + past) * fsize


def _merge(starts: list[np.ndarray], ends: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, non-overlapping runs (each group's in order, groups in order), joined where
    one ends where the next begins."""
    if not starts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, hi = np.concatenate(starts), np.concatenate(ends)
    if lo.size == 0:
        return lo, hi
    breaks = lo[1:] != hi[:-1]
    keep_lo = np.concatenate(([True], breaks))
    keep_hi = np.concatenate((breaks, [True]))
    return lo[keep_lo], hi[keep_hi]


def _resolve(
    structures: list[tuple[str, int, int]], size: int, findings: _Findings
) -> list[tuple[str, int, int]]:
    """Sorted, cut at the volume's end, an overlap cut from the later range (named in a
    finding); empty ranges dropped."""
    out: list[tuple[str, int, int]] = []
    cut_at_end = 0
    for kind, start, end in sorted(structures, key=lambda item: (item[1], item[2])):
        if end > size:
            cut_at_end += 1
            end = size
        if out and start < out[-1][2]:
            previous = out[-1]
            findings.add(
                "overlap",
                "warning",
                start,
                f"{kind} at {start:#x} overlaps {previous[0]} at {previous[1]:#x}; cut",
            )
            start = previous[2]
        if start < end:
            out.append((kind, start, end))
    if cut_at_end:
        findings.add(
            "structures-past-end",
            "error",
            size,
            f"ufs: {cut_at_end} structures reach past the volume's end; cut there",
        )
    return out


def _check_free_against_structures(layout: UfsLayout, findings: _Findings) -> None:
    """A free map that frees a structure of the filesystem's own is damaged: say so."""
    free_lo, free_hi = layout.free
    if not layout.structures or free_lo.size == 0:
        return
    lo = np.array([start for _, start, _ in layout.structures], np.int64)
    hi = np.array([end for _, _, end in layout.structures], np.int64)
    index = np.searchsorted(free_hi, lo, side="right")
    inside = index < free_lo.size
    overlapping = inside & (free_lo[np.minimum(index, free_lo.size - 1)] < hi)
    for position in np.flatnonzero(overlapping):
        kind, start, _ = layout.structures[position]
        findings.add(
            "free-structure",
            "warning",
            start,
            f"{kind} at {start:#x}: the free map marks part of it free",
        )


# -- inodes whose block trees a walker should not follow -------------------------------------

#: The dinode fields read here: (offset of di_mode, di_size, di_blocks, the 12 direct and 3
#: indirect addresses; the width of an address), UFS1 and UFS2 (FreeBSD ufs/ufs/dinode.h).
_DINODE = {1: (0, 8, 104, 40, 4), 2: (0, 16, 24, 112, 8)}
#: A symlink shorter than this lives in the inode's address fields (a fast symlink).
_FAST_SYMLINK = {1: 60, 2: 120}
_IFMT, _IFLNK = 0o170000, 0o120000
#: Inode table bytes decoded at a time.
_INODE_CHUNK = 1 << 20
#: A file may span at most this many times the volume's blocks (sparse files do) before a
#: walker is shown it shorter.
SPAN_PER_VOLUME_BLOCK = 8


@dataclass(frozen=True)
class Overrun:
    """An inode whose block tree a walker should not follow as it stands."""

    inode: int
    size_offset: int
    """Byte offset of its ``di_size`` field in the volume."""
    shown_size: int
    """The size to show a walker instead: 0 where the tree is inconsistent, else the span
    the volume allows."""
    why: str


def tree_overruns(read: Callable[[int, int], bytes], layout: UfsLayout, size: int) -> list[Overrun]:
    """Inodes whose block trees would make a walker work past what the volume holds.

    A walker that builds a file's run list (TSK's) visits every address up to the file's size,
    the absent (sparse) parts of the tree included, and appends a run for each stretch. So:

    - a file whose size spans more than :data:`SPAN_PER_VOLUME_BLOCK` times the volume's
      blocks (plus the direct and one indirect block's worth) is shown that long;
    - a file longer than the blocks it holds (``di_blocks``) whose indirect blocks, followed,
      reach more addresses than that is inconsistent (crafted, or an indirect pointer to a
      data block) and is shown empty.

    Each candidate's tree is walked with a budget of the blocks it holds; the whole scan reads
    at most twice the volume's blocks of indirect blocks, and a candidate left unchecked once
    that is spent is shown empty too.
    """
    order = layout.byte_order
    version = layout.version
    mode_at, size_at, blocks_at, addr_at, width = _DINODE[version]
    isize = INODE_SIZE[version]
    fsize, bsize = layout.fragment, layout.block
    per_block = bsize // width
    volume_blocks = max(1, size // bsize)
    span = SPAN_PER_VOLUME_BLOCK * volume_blocks + DIRECT_BLOCKS + per_block
    addr_type = np.dtype(f"{order}i{width}")
    out: list[Overrun] = []
    work = 2 * volume_blocks  # indirect blocks read, all candidates together

    def addresses(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw[: len(raw) // width * width], dtype=addr_type).astype(np.int64)

    for first, offset, count in layout.inode_tables:
        step = _INODE_CHUNK // isize
        for done in range(0, count, step):
            raw = read(offset + done * isize, min(step, count - done) * isize)
            n = len(raw) // isize
            if n == 0:
                break
            table = np.frombuffer(raw[: n * isize], dtype=np.uint8).reshape(n, isize)

            def column(at: int, kind: str, table: np.ndarray = table) -> np.ndarray:
                return table[:, at : at + int(kind[-1])].copy().view(f"{order}{kind}").ravel()

            mode = column(mode_at, "u2").astype(np.int64)
            length = column(size_at, "u8")
            held = column(blocks_at, "u4" if version == 1 else "u8").astype(np.float64)
            indirect = table[:, addr_at + DIRECT_BLOCKS * width : addr_at + 15 * width]
            fast = ((mode & _IFMT) == _IFLNK) & (length < _FAST_SYMLINK[version])
            spans = np.ceil(length.astype(np.float64) / bsize)
            held_blocks = np.minimum(held * 512 / bsize, volume_blocks) + 1
            # Any inode, in use or not: TSK builds the run list of whatever inode it is asked
            # for (an unused root included), and walks a size with no tree below it too.
            candidates = np.flatnonzero(
                ~fast
                & ((indirect.any(axis=1) & (spans > held_blocks + DIRECT_BLOCKS)) | (spans > span))
            )
            for i in candidates.tolist():
                inode = first + done + i
                at = offset + (done + i) * isize + size_at
                budget = int(held_blocks[i]) + DIRECT_BLOCKS
                if work <= 0:
                    out.append(Overrun(inode, at, 0, "not checked: the scan's budget was spent"))
                    continue
                tops = addresses(bytes(indirect[i]))
                followed, reads = _follow(read, tops, fsize, bsize, size, budget, addresses)
                work -= reads
                if followed > budget:
                    why = (
                        f"its indirect blocks reach more than the {budget} blocks it holds "
                        f"(size {int(length[i])})"
                    )
                    out.append(Overrun(inode, at, 0, why))
                elif spans[i] > span:
                    why = (
                        f"its size {int(length[i])} spans more than {SPAN_PER_VOLUME_BLOCK} "
                        "times the volume"
                    )
                    out.append(Overrun(inode, at, span * bsize, why))
    return out


def _follow(
    read: Callable[[int, int], bytes],
    tops: np.ndarray,
    fsize: int,
    bsize: int,
    size: int,
    budget: int,
    addresses: Callable[[bytes], np.ndarray],
) -> tuple[int, int]:
    """Addresses followed below the three top indirect addresses (single, double, triple),
    stopping once past ``budget``; and the indirect blocks read."""
    stack = [(int(a), level) for level, a in enumerate(tops.tolist()) if a != 0]
    followed = len(stack)
    reads = 0
    while stack and followed <= budget:
        addr, level = stack.pop()
        at = addr * fsize
        if at < 0 or at + bsize > size:
            continue  # outside the volume: a walker reads nothing there
        reads += 1
        children = addresses(read(at, bsize))
        nonzero = children[children != 0]
        followed += len(nonzero)
        if level > 0 and followed <= budget:
            stack.extend((int(c), level - 1) for c in nonzero.tolist())
    return followed, reads
