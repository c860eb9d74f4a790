"""An ext2/3/4 filesystem read for its block map: layout, inodes, extents, directories.

Reference: https://www.kernel.org/doc/html/latest/filesystems/ext4/index.html

:class:`ExtFS` validates the superblock eagerly (falling back to a backup copy when the primary
is damaged) and reads the rest on demand: the group descriptors, the static layout of every
group (superblock copies, descriptor tables, reserved GDT blocks, bitmaps, inode tables), the
inode tables a group at a time into numpy arrays, every inode's blocks (extent trees of any
depth, block maps with indirect blocks), directory entries and the free-block bitmaps.

Everything is in filesystem blocks (``block_size`` bytes) counted from the start of the
filesystem; the caller turns blocks into bytes on its device. Every walk over on-disk pointers
is bounded and every pointer is checked against the filesystem's size: damage becomes a
:class:`~parsers.errors.ParserError` and the walk goes on. The damage of one inode's blocks or
of some directory blocks comes back with them (:attr:`BlockRuns.problems`,
:attr:`DirEntries.problems`, :attr:`BulkEntries.problems`); the damage of the filesystem's own
tables (superblock, group descriptors, static layout, inode tables), found when they are first
read, is handed over by :meth:`ExtFS.take_problems`.
"""

from __future__ import annotations

import struct
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from parsers.errors import DamagedError, NotThisFormat, ParserError
from parsers.ext import structs as S
from parsers.stream import ReadSeek, gather_into

#: Deepest extent tree the kernel builds is 5 levels; anything deeper is damage.
MAX_EXTENT_DEPTH = 5
#: Directory blocks read, and their entry chains followed, at once: bounds the buffer. Wide,
#: since following the chains costs a few numpy steps per entry position, whatever the width.
DIR_WINDOW_BYTES = 8 << 20
#: Directory blocks decoded at once: bounds the per-entry working columns (about 100 bytes
#: for each of up to 200 entries a block).
DIR_CHUNK_BLOCKS = 512
_EMPTY = np.zeros(0, dtype=np.int64)
#: Extended attribute header magic (in-inode area and external blocks).
XATTR_MAGIC = 0xEA020000


@dataclass(frozen=True)
class Superblock:
    """The fields of the superblock that the map needs, with units in their names."""

    offset: int
    """Byte offset inside the filesystem where this copy was read."""
    block_size: int
    cluster_size: int
    blocks_count: int
    inodes_count: int
    free_blocks: int
    free_inodes: int
    first_data_block: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    inode_size: int
    desc_size: int
    group_count: int
    first_ino: int
    rev_level: int
    compat: int
    incompat: int
    ro_compat: int
    uuid: str
    label: str
    last_mounted: str
    reserved_gdt_blocks: int
    first_meta_bg: int
    backup_bgs: tuple[int, int]
    journal_inum: int
    mmp_block: int
    quota_inums: tuple[int, ...]
    orphan_file_inum: int
    log_groups_per_flex: int
    state: int
    mkfs_time: int
    write_time: int

    def has(self, compat: int = 0, incompat: int = 0, ro_compat: int = 0) -> bool:
        return bool(
            (self.compat & compat) or (self.incompat & incompat) or (self.ro_compat & ro_compat)
        )

    @property
    def kind(self) -> str:
        """ext2, ext3 or ext4, by the features the ext3 driver understood (blkid's rule; the
        probe, :func:`parsers.ext.probe.probe`, also names journal devices)."""
        if self.incompat & ~S.EXT3_INCOMPAT_SUPP or self.ro_compat & ~S.EXT3_RO_COMPAT_SUPP:
            return "ext4"
        return "ext3" if self.compat & S.COMPAT_HAS_JOURNAL else "ext2"

    @property
    def features(self) -> list[str]:
        words = []
        for value, names in (
            (self.compat, S.COMPAT_NAMES),
            (self.incompat, S.INCOMPAT_NAMES),
            (self.ro_compat, S.RO_COMPAT_NAMES),
        ):
            for bit in range(32):
                if value & (1 << bit):
                    words.append(names.get(1 << bit, f"unknown-{1 << bit:#x}"))
        return words

    @property
    def size(self) -> int:
        return self.blocks_count * self.block_size

    @property
    def cluster_ratio(self) -> int:
        return self.cluster_size // self.block_size


def parse_superblock(data: bytes, offset: int, device_size: int | None = None) -> Superblock:
    """Validate and decode one superblock copy.

    Raises:
        NotThisFormat: no 0xEF53 magic.
        DamagedError: a field no mke2fs writes (sizes, counts out of range).
    """
    if len(data) < S.SUPERBLOCK_SIZE:
        raise NotThisFormat("superblock", offset, f"only {len(data)} bytes")
    sb = S.Superblock.parse(data[: S.SUPERBLOCK_SIZE])
    if sb.s_magic != S.MAGIC:
        raise NotThisFormat("superblock", offset, f"magic {sb.s_magic:#06x}, not 0xEF53")

    def bad(message: str) -> DamagedError:
        return DamagedError("superblock", offset, message)

    if sb.s_log_block_size > 6:
        raise bad(f"block size 1024 << {sb.s_log_block_size} is absurd")
    block_size = 1024 << sb.s_log_block_size
    incompat, ro_compat = sb.s_feature_incompat, sb.s_feature_ro_compat
    if ro_compat & S.RO_COMPAT_BIGALLOC:
        if not sb.s_log_block_size <= sb.s_log_cluster_size <= sb.s_log_block_size + 16:
            raise bad(f"cluster size 1024 << {sb.s_log_cluster_size} is absurd")
        cluster_size = 1024 << sb.s_log_cluster_size
    else:
        cluster_size = block_size
    blocks = sb.s_blocks_count_lo
    if incompat & S.INCOMPAT_64BIT:
        blocks |= sb.s_blocks_count_hi << 32
    if sb.s_blocks_per_group == 0 or sb.s_blocks_per_group > 8 * block_size * (
        cluster_size // block_size
    ):
        raise bad(f"{sb.s_blocks_per_group} blocks per group")
    ratio = cluster_size // block_size
    clusters_per_group = sb.s_blocks_per_group // ratio
    if ratio > 1 and (
        sb.s_clusters_per_group != clusters_per_group or sb.s_blocks_per_group % ratio
    ):
        # One block bitmap holds a group's clusters: the two counts must agree.
        raise bad(
            f"{sb.s_clusters_per_group} clusters per group for {sb.s_blocks_per_group} "
            f"blocks of clusters of {ratio} blocks"
        )
    if sb.s_inodes_per_group == 0 or sb.s_inodes_per_group > 8 * block_size:
        raise bad(f"{sb.s_inodes_per_group} inodes per group")
    if blocks <= sb.s_first_data_block:
        raise bad(f"{blocks} blocks")
    inode_size = 128 if sb.s_rev_level == 0 else sb.s_inode_size
    if inode_size < 128 or inode_size > block_size or inode_size & (inode_size - 1):
        raise bad(f"inode size {inode_size}")
    desc_size = 32
    if incompat & S.INCOMPAT_64BIT:
        desc_size = sb.s_desc_size
        if desc_size < 32 or desc_size > 1024 or desc_size & (desc_size - 1):
            raise bad(f"group descriptor size {desc_size}")
    groups = -(-(blocks - sb.s_first_data_block) // sb.s_blocks_per_group)
    if sb.s_inodes_count > groups * sb.s_inodes_per_group:
        raise bad(f"{sb.s_inodes_count} inodes in {groups} groups of {sb.s_inodes_per_group}")
    free_blocks = sb.s_free_blocks_count_lo | (
        (sb.s_free_blocks_count_hi << 32) if incompat & S.INCOMPAT_64BIT else 0
    )
    return Superblock(
        offset=offset,
        block_size=block_size,
        cluster_size=cluster_size,
        blocks_count=blocks,
        inodes_count=sb.s_inodes_count,
        free_blocks=free_blocks,
        free_inodes=sb.s_free_inodes_count,
        first_data_block=sb.s_first_data_block,
        blocks_per_group=sb.s_blocks_per_group,
        clusters_per_group=clusters_per_group,
        inodes_per_group=sb.s_inodes_per_group,
        inode_size=inode_size,
        desc_size=desc_size,
        group_count=groups,
        first_ino=11 if sb.s_rev_level == 0 else max(sb.s_first_ino, 11),
        rev_level=sb.s_rev_level,
        compat=sb.s_feature_compat,
        incompat=incompat,
        ro_compat=ro_compat,
        uuid=str(uuid_module.UUID(bytes=sb.s_uuid)),
        label=sb.s_volume_name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
        last_mounted=sb.s_last_mounted.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
        reserved_gdt_blocks=sb.s_reserved_gdt_blocks
        if sb.s_feature_compat & S.COMPAT_RESIZE_INODE
        else 0,
        first_meta_bg=sb.s_first_meta_bg,
        backup_bgs=(sb.s_backup_bgs0, sb.s_backup_bgs1),
        journal_inum=sb.s_journal_inum if sb.s_feature_compat & S.COMPAT_HAS_JOURNAL else 0,
        mmp_block=sb.s_mmp_block if incompat & S.INCOMPAT_MMP else 0,
        quota_inums=tuple(
            q for q in (sb.s_usr_quota_inum, sb.s_grp_quota_inum, sb.s_prj_quota_inum) if q
        ),
        orphan_file_inum=sb.s_orphan_file_inum if sb.s_feature_compat & S.COMPAT_ORPHAN_FILE else 0,
        log_groups_per_flex=sb.s_log_groups_per_flex,
        state=sb.s_state,
        mkfs_time=sb.s_mkfs_time,
        write_time=sb.s_wtime,
    )


@dataclass
class LeafExtents:
    """Leaf extents held in the inodes themselves (a depth-0 extent tree in ``i_block``), as
    columns in inode-row order: decoded as the inode tables are read, so the 60 bytes of
    ``i_block`` are not kept for the inodes whose whole tree is here."""

    row: npt.NDArray[np.int64]
    logical: npt.NDArray[np.uint32]
    physical: npt.NDArray[np.int64]
    length: npt.NDArray[np.uint16]
    """Blocks, without the unwritten flag's 32768."""
    unwritten: npt.NDArray[np.bool_]


@dataclass
class InodeTable:
    """The inodes in use (by the inode bitmaps) of every inode table, as columns.

    Columns are as wide as their on-disk fields, no wider: for a filesystem of millions of
    files this table is most of a map's memory. ``i_block`` is kept only for the inodes that
    are not :attr:`leaf` (block-mapped files, deeper extent trees, symlinks, device nodes,
    inline data); the others' extents are in :attr:`extents`.
    """

    ino: npt.NDArray[np.uint32]
    mode: npt.NDArray[np.uint16]
    size: npt.NDArray[np.int64]
    links: npt.NDArray[np.uint16]
    flags: npt.NDArray[np.uint32]
    blocks: npt.NDArray[np.int64]
    """Allocated space in 512-byte units (or blocks with HUGE_FILE_FL)."""
    file_acl: npt.NDArray[np.int64]
    dtime: npt.NDArray[np.uint32]
    extra_isize: npt.NDArray[np.uint16]
    in_use: npt.NDArray[np.bool_]
    """The inode bitmap's word."""
    leaf: npt.NDArray[np.bool_]
    """The inode has extents and its whole extent tree is a valid root in ``i_block``."""
    extents: LeafExtents
    i_block_rows: npt.NDArray[np.int64]
    """The rows (ascending) whose ``i_block`` is kept, in :attr:`i_blocks`."""
    i_blocks: npt.NDArray[np.uint8]
    """(len(i_block_rows), 60) raw ``i_block`` bytes."""
    table_offsets: npt.NDArray[np.int64]
    """Byte offset of each group's inode table in the filesystem."""
    inodes_per_group: int
    inode_size: int

    def __len__(self) -> int:
        return len(self.ino)

    def index_of(self, ino: int) -> int:
        """Row of inode number ``ino``, or -1 when it was not read."""
        i = int(np.searchsorted(self.ino, ino))
        return i if i < len(self.ino) and self.ino[i] == ino else -1

    def position(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Byte offset of each inode record of ``rows`` in the filesystem."""
        index = self.ino[np.asarray(rows, dtype=np.int64)].astype(np.int64) - 1
        group, slot = np.divmod(index, self.inodes_per_group)
        return self.table_offsets[group] + slot * self.inode_size

    def drop(self, *columns: str) -> None:
        """Free ``columns`` that their user is done with: each becomes empty (a later use
        finds no rows)."""
        for name in columns:
            column = getattr(self, name)
            setattr(self, name, np.zeros(0, dtype=column.dtype))

    def drop_extents(self) -> None:
        """Free :attr:`extents` once they were used (a second use finds none)."""
        empty = np.zeros(0, np.int64)
        self.extents = LeafExtents(
            empty, empty.astype(np.uint32), empty, empty.astype(np.uint16), empty.astype(bool)
        )

    def i_block(self, row: int) -> bytes | None:
        """The 60 bytes of ``i_block`` of ``row``, or None for a :attr:`leaf` inode."""
        k = int(np.searchsorted(self.i_block_rows, row))
        if k < len(self.i_block_rows) and self.i_block_rows[k] == row:
            return self.i_blocks[k].tobytes()
        return None


@dataclass
class BlockRuns:
    """Where one inode's contents live: runs of blocks, plus the blocks that describe them."""

    logical: npt.NDArray[np.int64]
    physical: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    unwritten: npt.NDArray[np.bool_]
    tree_blocks: list[int]
    """Extent-tree nodes outside the inode, or indirect blocks (IND, DIND, TIND)."""
    problems: list[ParserError] = field(default_factory=list)
    """Damage met while walking them (the runs it concerns are left out)."""

    @classmethod
    def empty(cls) -> BlockRuns:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, np.zeros(0, dtype=bool), [])


@dataclass(frozen=True)
class DirEntries:
    """Entries of one directory (without ``.`` and ``..``)."""

    inodes: npt.NDArray[np.int64]
    names: list[bytes]
    file_types: npt.NDArray[np.int64]
    problems: list[ParserError] = field(default_factory=list)
    """Entries that did not parse (the rest of their block is skipped)."""


@dataclass(frozen=True)
class BulkEntries:
    """Entries of many directory blocks, as columns in block order."""

    block: npt.NDArray[np.int64]
    inodes: npt.NDArray[np.uint32]
    names_blob: bytes
    """Every name, each followed by a NUL: one object, not one per name, and decoded in one
    call. A valid name never holds a NUL, but a damaged one can: :attr:`name_lengths` is what
    says where each name ends."""
    name_lengths: npt.NDArray[np.uint16]
    file_types: npt.NDArray[np.uint8]
    problems: list[ParserError] = field(default_factory=list)
    """Blocks whose entries stopped parsing (the rest of each such block is skipped)."""

    @property
    def names(self) -> list[bytes]:
        return split_names(self.names_blob, self.name_lengths)

    @classmethod
    def concat(cls, parts: list[BulkEntries]) -> BulkEntries:
        """The entries of several parts, in order (their ``block`` columns as they are)."""
        return cls(
            block=np.concatenate([p.block for p in parts]),
            inodes=np.concatenate([p.inodes for p in parts]),
            names_blob=b"".join(p.names_blob for p in parts),
            name_lengths=np.concatenate([p.name_lengths for p in parts]),
            file_types=np.concatenate([p.file_types for p in parts]),
            problems=[problem for p in parts for problem in p.problems],
        )


def split_names(blob: bytes, lengths: npt.NDArray[Any]) -> list[bytes]:
    """The names of a blob of NUL-terminated names, by their lengths (a name may hold a NUL)."""
    if blob.count(b"\0") == len(lengths):
        return blob.split(b"\0")[:-1]
    starts = (np.cumsum(lengths + 1) - (lengths + 1)).tolist()
    return [blob[a : a + n] for a, n in zip(starts, lengths.tolist())]


#: Where each field of an extent entry starts in its 12 bytes.
_EXTENT_FIELD_OFFSETS = {
    name: spec[1] for name, spec in (S.EXTENT_ENTRY_DTYPE.fields or {}).items()
}


def _gather_names(
    buf: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> bytes:
    """The bytes at ``offsets`` (``lengths`` long), each followed by a NUL, vectorised.

    Each name is taken with the byte after it (``buf`` must hold one byte past every name),
    which then becomes the NUL: one gather over the output, no scatter.
    """
    span = lengths + 1
    ends = np.cumsum(span)
    index_type = np.int32 if len(buf) < 2**31 else np.int64
    source = np.repeat((offsets - (ends - span)).astype(index_type), span)
    source += np.arange(len(source), dtype=index_type)
    out = buf.take(source)
    out[ends - 1] = 0
    return out.tobytes()


def _merge_runs(
    logical: npt.NDArray[np.int64],
    physical: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
    unwritten: npt.NDArray[np.bool_],
) -> BlockRuns:
    """Coalesce runs that continue each other both logically and physically."""
    if len(logical) == 0:
        return BlockRuns.empty()
    order = np.argsort(logical, kind="stable")
    lo, ph, ln, uw = logical[order], physical[order], length[order], unwritten[order]
    cont = (lo[1:] == lo[:-1] + ln[:-1]) & (ph[1:] == ph[:-1] + ln[:-1]) & (uw[1:] == uw[:-1])
    starts = np.concatenate(([True], ~cont))
    group = np.cumsum(starts) - 1
    total = np.zeros(int(group[-1]) + 1, dtype=np.int64)
    np.add.at(total, group, ln)
    return BlockRuns(lo[starts], ph[starts], total, uw[starts], [])


def _leaf_extents(
    i_block: npt.NDArray[np.uint8], flags: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], ...]:
    """The extents of the inodes whose whole extent tree is a valid depth-0 root in
    ``i_block`` ((n, 60) bytes), vectorised: ``(leaf, which, logical, physical, length,
    unwritten)``, ``leaf`` a mask of the n inodes and the rest one entry per extent (``which``
    the inode's index), in inode order then slot order.

    The header and the four entry slots are read straight from 16- and 32-bit views at the
    offsets of :data:`S.EXTENT_ENTRY_DTYPE`: no structured copies.
    """
    u2 = i_block.view("<u2")
    u4 = i_block.view("<u4")
    count = u2[:, 1].astype(np.int64)
    leaf = (
        ((flags & S.EXTENTS_FL) != 0)
        & ((flags & S.INLINE_DATA_FL) == 0)
        & (u2[:, 0] == S.EXTENT_HEADER_MAGIC)
        & (u2[:, 3] == 0)
        & (count <= 4)
    )
    count = np.where(leaf, count, 0)
    which, slot = np.nonzero(np.arange(4) < count[:, None])
    entry = 12 + S.EXTENT_ENTRY_DTYPE.itemsize * slot

    def column(name: str, width: int) -> npt.NDArray[Any]:
        view = u2 if width == 2 else u4
        return view[which, (entry + _EXTENT_FIELD_OFFSETS[name]) // width]

    raw_len = column("len", 2)
    unwritten = raw_len > 32768
    length = np.where(unwritten, raw_len - 32768, raw_len).astype(np.uint16)
    physical = (column("start_hi", 2).astype(np.int64) << 32) | column("start_lo", 4)
    return leaf, which.astype(np.int64), column("block", 4), physical, length, unwritten


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class ExtFS:
    """An ext2/3/4 filesystem on a readable, seekable stream.

    Args:
        fh: the filesystem's device (position 0 = the filesystem's first byte).
        size: the device size in bytes.

    Raises:
        NotThisFormat: no ext superblock at 1024 nor at a backup location.
        DamagedError: the primary superblock and every backup tried are damaged.
    """

    def __init__(self, fh: ReadSeek, size: int) -> None:
        self.fh = fh
        self.device_size = size
        self._problems: list[ParserError] = []
        self.sb = self._find_superblock()
        sb = self.sb
        self.block_size = sb.block_size
        if sb.size > size:
            self._problems.append(
                DamagedError(
                    "superblock",
                    sb.offset,
                    f"the filesystem claims {sb.size:#x} bytes but its device holds {size:#x}; "
                    "blocks past the end are not read",
                )
            )
        self.readable_blocks = min(sb.blocks_count, size // sb.block_size)
        #: Told ``(stage, done, total)`` as the inode tables and directory blocks are read.
        self.progress: Callable[[str, int, int], None] = _no_progress
        self._csum = sb.has(ro_compat=S.RO_COMPAT_GDT_CSUM | S.RO_COMPAT_METADATA_CSUM)

    def take_problems(self) -> list[ParserError]:
        """The damage of the filesystem's own tables found since the last call (the superblock
        when the filesystem was opened; the group descriptors, the static layout and the inode
        tables when they were first read), each handed over once."""
        taken, self._problems = self._problems, []
        return taken

    # -- reading -------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(size)

    def read_blocks(self, block: int, count: int = 1) -> bytes:
        """Blocks ``[block, block + count)``; zero bytes for any part past the device."""
        bs = self.block_size
        data = self.read(block * bs, count * bs)
        if len(data) < count * bs:
            data += bytes(count * bs - len(data))
        return data

    def block_ok(self, block: int, count: int = 1) -> bool:
        return self.sb.first_data_block <= block and block + count <= self.sb.blocks_count

    def runs_ok(
        self, physical: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """:meth:`block_ok` for many runs at once (an empty run is not ok)."""
        sb = self.sb
        inside = (physical >= sb.first_data_block) & (physical + length <= sb.blocks_count)
        return (length > 0) & inside

    # -- superblock ----------------------------------------------------------------------

    def _plausible(self, sb: Superblock) -> Superblock:
        """A superblock whose counts fit the device it is on: every walk over groups is
        bounded by the device's size, whatever a hostile superblock claims."""
        if sb.group_count * sb.desc_size > self.device_size:
            raise DamagedError(
                "superblock",
                sb.offset,
                f"{sb.group_count} groups: their descriptors alone would not fit the device",
            )
        if sb.blocks_per_group % 8:
            raise DamagedError("superblock", sb.offset, f"{sb.blocks_per_group} blocks per group")
        return sb

    def _find_superblock(self) -> Superblock:
        try:
            return self._plausible(
                parse_superblock(self.read(S.SUPERBLOCK_OFFSET, S.SUPERBLOCK_SIZE), 1024)
            )
        except NotThisFormat as exc:
            primary_error: ParserError = exc
        except DamagedError as exc:
            primary_error = exc
        # The backup in group 1 sits at the start of that group; try every block size.
        for bs in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
            first = 1 if bs == 1024 else 0
            offset = (8 * bs + first) * bs
            if offset + S.SUPERBLOCK_SIZE > self.device_size:
                continue
            try:
                sb = self._plausible(parse_superblock(self.read(offset, S.SUPERBLOCK_SIZE), offset))
            except ParserError:
                continue
            if sb.block_size == bs and sb.blocks_per_group == 8 * bs:
                self._problems.append(
                    DamagedError(
                        "superblock",
                        1024,
                        f"primary superblock unusable ({primary_error.reason}); "
                        f"the backup at {offset:#x} is used",
                    )
                )
                return sb
        raise primary_error

    # -- groups --------------------------------------------------------------------------

    def group_first_block(self, group: int) -> int:
        return self.sb.first_data_block + group * self.sb.blocks_per_group

    def has_super(self, group: int) -> bool:
        """Whether ``group`` holds a copy of the superblock (and, classically, the GDT)."""
        if group == 0:
            return True
        sb = self.sb
        if sb.has(compat=S.COMPAT_SPARSE_SUPER2):
            return group in sb.backup_bgs
        if not sb.has(ro_compat=S.RO_COMPAT_SPARSE_SUPER) or group == 1:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    @cached_property
    def descs_per_block(self) -> int:
        return self.block_size // self.sb.desc_size

    @cached_property
    def gdt_blocks(self) -> int:
        """Blocks of the classic (non-meta_bg) descriptor table."""
        sb = self.sb
        if sb.has(incompat=S.INCOMPAT_META_BG):
            return min(sb.first_meta_bg, -(-sb.group_count // self.descs_per_block))
        return -(-sb.group_count // self.descs_per_block)

    def descriptor_block(self, index: int) -> int:
        """Where block ``index`` of the descriptor table lives (primary copy)."""
        sb = self.sb
        if not sb.has(incompat=S.INCOMPAT_META_BG) or index < sb.first_meta_bg:
            return self.super_block(0) + 1 + index
        return self.meta_bg_descriptor_block(index * self.descs_per_block)

    def super_block(self, group: int) -> int:
        """The block that holds group ``group``'s superblock copy.

        The primary is at byte 1024: block 1 with 1 KiB blocks (even with bigalloc, whose
        first data block is 0), block 0 otherwise.
        """
        if group == 0:
            return 1 if self.block_size == 1024 else 0
        return self.group_first_block(group)

    def meta_bg_descriptor_block(self, group: int) -> int:
        """Where a meta_bg descriptor block sits in ``group`` (the first, second or last of
        its meta group): after the group's superblock copy, if it has one."""
        block = self.group_first_block(group) + int(self.has_super(group))
        if group == 0 and self.sb.first_data_block == 0 and self.block_size == 1024:
            block += 1  # the kernel's special case: 1 KiB blocks, superblock in block 1
        return block

    @cached_property
    def groups(self) -> dict[str, npt.NDArray[np.int64]]:
        """Every group descriptor, decoded into columns."""
        sb = self.sb
        count = sb.group_count
        n_blocks = -(-count // self.descs_per_block)
        raw = bytearray()
        for index in range(n_blocks):
            block = self.descriptor_block(index)
            if not self.block_ok(block):
                self._problems.append(
                    DamagedError("group-descriptors", block * self.block_size, "outside the fs")
                )
                raw += bytes(self.block_size)
            else:
                raw += self.read_blocks(block)
        dtype = S.make_dtype(S.GROUP_DESC_FIELDS, sb.desc_size)
        table = np.frombuffer(bytes(raw), dtype=dtype, count=count)
        wide = sb.desc_size >= 64

        def combine(lo: str, hi: str) -> npt.NDArray[np.int64]:
            value = table[lo].astype(np.int64)
            if wide:
                value |= table[hi].astype(np.int64) << 32
            return value

        return {
            "block_bitmap": combine("bg_block_bitmap_lo", "bg_block_bitmap_hi"),
            "inode_bitmap": combine("bg_inode_bitmap_lo", "bg_inode_bitmap_hi"),
            "inode_table": combine("bg_inode_table_lo", "bg_inode_table_hi"),
            "flags": table["bg_flags"].astype(np.int64),
            "itable_unused": combine("bg_itable_unused_lo", "bg_itable_unused_hi")
            if wide
            else table["bg_itable_unused_lo"].astype(np.int64),
        }

    @cached_property
    def inode_table_blocks(self) -> int:
        return -(-self.sb.inodes_per_group * self.sb.inode_size // self.block_size)

    def static_layout(self) -> list[tuple[str, int, int]]:
        """Every static structure as ``(kind, first block, block count)``.

        Kinds: ``boot-block`` and ``superblock`` (block 0 of a filesystem with blocks larger
        than 1 KiB holds both: the caller splits it at 1 KiB), ``superblock-backup``,
        ``group-descriptors``, ``reserved-gdt``, ``block-bitmap``, ``inode-bitmap``,
        ``inode-table``, ``mmp``.
        """
        sb = self.sb
        layout: list[tuple[str, int, int]] = []
        meta_bg = sb.has(incompat=S.INCOMPAT_META_BG)
        for g in range(sb.group_count):
            if self.has_super(g):
                sb_block = self.super_block(g)
                layout.append(("superblock" if g == 0 else "superblock-backup", sb_block, 1))
                if self.gdt_blocks:
                    layout.append(("group-descriptors", sb_block + 1, self.gdt_blocks))
                if sb.reserved_gdt_blocks:
                    layout.append(
                        ("reserved-gdt", sb_block + 1 + self.gdt_blocks, sb.reserved_gdt_blocks)
                    )
            if meta_bg:
                per = self.descs_per_block
                meta_group, position = divmod(g, per)
                if meta_group >= sb.first_meta_bg and position in (0, 1, per - 1):
                    layout.append(("group-descriptors", self.meta_bg_descriptor_block(g), 1))
        groups = self.groups
        itb = self.inode_table_blocks
        for g in range(sb.group_count):
            layout.append(("block-bitmap", int(groups["block_bitmap"][g]), 1))
            layout.append(("inode-bitmap", int(groups["inode_bitmap"][g]), 1))
            layout.append(("inode-table", int(groups["inode_table"][g]), itb))
        if sb.mmp_block:
            layout.append(("mmp", sb.mmp_block, 1))
        if self.block_size == 1024:
            layout.append(("boot-block", 0, 1))
        checked = []
        for kind, block, count in layout:
            if not self.block_ok(block, count) and not (kind == "boot-block" and block == 0):
                self._problems.append(
                    DamagedError(
                        kind, block * self.block_size, f"blocks {block}+{count} outside the fs"
                    )
                )
                continue
            checked.append((kind, block, count))
        return checked

    # -- inodes --------------------------------------------------------------------------

    @property
    def inodes_in_use(self) -> int:
        """How many inode records :attr:`inodes` reads: the inodes in use by the bitmaps of
        the inode tables that lie inside the filesystem (so never more than its real inode
        tables hold). Reads the inode bitmaps, not the tables."""
        return sum(len(keep) for *_, keep in self._inode_plan)

    @cached_property
    def _inode_plan(self) -> list[tuple[int, int, int, npt.NDArray[np.int64]]]:
        """``(group, inode table block, records to read, rows in use)`` per group whose table
        is read, from the group descriptors and the inode bitmaps."""
        sb = self.sb
        groups = self.groups
        ipg = sb.inodes_per_group
        plan: list[tuple[int, int, int, npt.NDArray[np.int64]]] = []
        for g in range(sb.group_count):
            if self._csum and groups["flags"][g] & S.BG_INODE_UNINIT:
                continue
            used = ipg
            if self._csum:
                used = ipg - int(groups["itable_unused"][g])
                if not 0 <= used <= ipg:
                    self._problems.append(
                        DamagedError(
                            "group-descriptors", None, f"group {g}: {used} used inodes of {ipg}"
                        )
                    )
                    used = ipg
            used = min(used, max(0, sb.inodes_count - g * ipg))
            if used == 0:
                continue
            table = int(groups["inode_table"][g])
            nblocks = -(-used * sb.inode_size // self.block_size)
            if not self.block_ok(table, nblocks):
                self._problems.append(
                    DamagedError(
                        "inode-table",
                        table * self.block_size,
                        f"group {g}: inode table outside the fs; its inodes are skipped",
                    )
                )
                continue
            bitmap_block = int(groups["inode_bitmap"][g])
            if self.block_ok(bitmap_block):
                bits = np.unpackbits(
                    np.frombuffer(self.read_blocks(bitmap_block), dtype=np.uint8),
                    bitorder="little",
                )[:used].astype(bool)
            else:
                bits = np.ones(used, dtype=bool)
            plan.append((g, table, used, np.flatnonzero(bits).astype(np.int64)))
        if not plan:
            raise DamagedError("inode-table", None, "no inode table could be read")
        return plan

    @cached_property
    def inodes(self) -> InodeTable:
        """The in-use inodes of every inode table, read a group at a time.

        Two passes keep memory flat: the inode bitmaps first (one block per group) to count
        the inodes in use (:attr:`_inode_plan`), then each group's table, decoded straight
        into the final columns.
        """
        sb = self.sb
        dtype = S.make_dtype(S.INODE_FIELDS, sb.inode_size)
        ipg = sb.inodes_per_group
        plan = self._inode_plan
        self.__dict__.pop("_inode_plan", None)  # read once: its rows are not kept
        total = sum(len(keep) for *_, keep in plan)
        # Columns as wide as their on-disk fields (np.uint32 for 32-bit inode numbers).
        widths: dict[str, Any] = {
            "ino": np.uint32,
            "mode": np.uint16,
            "size": np.int64,
            "links": np.uint16,
            "flags": np.uint32,
            "blocks": np.int64,
            "file_acl": np.int64,
            "dtime": np.uint32,
            "extra": np.uint16,
            "leaf": np.bool_,
        }
        col = {name: np.empty(total, dtype=width) for name, width in widths.items()}
        extent_parts: list[tuple[npt.NDArray[Any], ...]] = []
        kept_rows: list[npt.NDArray[np.int64]] = []
        kept_i_block: list[npt.NDArray[np.uint8]] = []
        huge = sb.has(ro_compat=S.RO_COMPAT_HUGE_FILE)
        has_extra = "i_extra_isize" in (dtype.names or ())
        table_offsets = np.zeros(sb.group_count, dtype=np.int64)
        pos = 0
        for done, (g, table, used, keep) in enumerate(plan, 1):
            self.progress("inode tables", done, len(plan))
            n = len(keep)
            table_offsets[g] = table * self.block_size
            if n == 0:
                continue
            raw = self.read_blocks(table, -(-used * sb.inode_size // self.block_size))
            rec = np.frombuffer(raw, dtype=dtype, count=used)
            if n < used:  # a table in use throughout (the common case) is not copied
                rec = rec[keep]
            sl = slice(pos, pos + n)
            col["ino"][sl] = g * ipg + 1 + keep
            col["mode"][sl] = rec["i_mode"]
            col["size"][sl] = rec["i_size_lo"].astype(np.int64) | (
                rec["i_size_high"].astype(np.int64) << 32
            )
            col["links"][sl] = rec["i_links_count"]
            flags = rec["i_flags"]
            col["flags"][sl] = flags
            blocks = rec["i_blocks_lo"].astype(np.int64)
            if huge:
                blocks |= rec["l_i_blocks_high"].astype(np.int64) << 32
            col["blocks"][sl] = blocks
            col["file_acl"][sl] = rec["i_file_acl_lo"].astype(np.int64) | (
                rec["l_i_file_acl_high"].astype(np.int64) << 32
            )
            col["dtime"][sl] = rec["i_dtime"]
            col["extra"][sl] = rec["i_extra_isize"] if has_extra else 0
            i_block = np.frombuffer(rec["i_block"].tobytes(), dtype=np.uint8).reshape(-1, 60)
            leaf, *extents = _leaf_extents(i_block, flags)
            col["leaf"][sl] = leaf
            extent_parts.append((extents[0] + pos, *extents[1:]))
            others = np.flatnonzero(~leaf)
            kept_rows.append(others + pos)
            kept_i_block.append(i_block[others])
            pos += n
        if not extent_parts:  # every table's inodes are free by the bitmaps
            extent_parts = [_leaf_extents(np.zeros((0, 60), np.uint8), np.zeros(0, np.uint32))[1:]]
            kept_rows, kept_i_block = [np.zeros(0, np.int64)], [np.zeros((0, 60), np.uint8)]
        row, logical, physical, length, unwritten = (np.concatenate(c) for c in zip(*extent_parts))
        return InodeTable(
            ino=col["ino"],
            mode=col["mode"],
            size=col["size"],
            links=col["links"],
            flags=col["flags"],
            blocks=col["blocks"],
            file_acl=col["file_acl"],
            dtime=col["dtime"],
            extra_isize=col["extra"],
            in_use=np.ones(total, dtype=bool),
            leaf=col["leaf"],
            extents=LeafExtents(row, logical, physical, length, unwritten),
            i_block_rows=np.concatenate(kept_rows),
            i_blocks=np.concatenate(kept_i_block),
            table_offsets=table_offsets,
            inodes_per_group=ipg,
            inode_size=sb.inode_size,
        )

    def inode_record(self, row: int) -> bytes:
        """The raw bytes of one inode record (for inline data and in-inode xattrs)."""
        return self.read(int(self.inodes.position([row])[0]), self.sb.inode_size)

    def i_block(self, row: int) -> bytes:
        """The 60 bytes of ``i_block`` of ``row`` (kept, or read again for a leaf inode)."""
        kept = self.inodes.i_block(row)
        return kept if kept is not None else self.inode_record(row)[40:100]

    # -- blocks of an inode --------------------------------------------------------------

    def depth0_extents(self, rows: npt.NDArray[np.int64]) -> tuple[npt.NDArray[Any], ...]:
        """Leaf extents held in the inode itself, for many inodes at once.

        Returns ``(row, logical, physical, length, unwritten, slow_rows)`` as int64 columns
        (unwritten as bool): the extents of the inodes of ``rows`` whose tree is a valid
        depth-0 root, in row order, and the rows that need :meth:`runs_of` (deeper trees, or
        roots that do not validate).
        """
        table = self.inodes
        ext = table.extents
        chosen = np.zeros(len(table), dtype=bool)
        chosen[rows] = True
        mask = chosen[ext.row]
        del chosen
        slow = rows[~table.leaf[rows]]
        if mask.all():  # every leaf extent (the usual case): no copies of the wide columns
            return (
                ext.row,
                ext.logical.astype(np.int64),
                ext.physical,
                ext.length.astype(np.int64),
                ext.unwritten,
                slow,
            )
        return (
            ext.row[mask],
            ext.logical[mask].astype(np.int64),
            ext.physical[mask],
            ext.length[mask].astype(np.int64),
            ext.unwritten[mask],
            slow,
        )

    def runs_of(self, row: int, owner: str) -> BlockRuns:
        """Every block of one inode: data runs and the tree or indirect blocks.

        ``owner`` names the inode in problems (a path, or ``inode N``).
        """
        flags = int(self.inodes.flags[row])
        if flags & S.INLINE_DATA_FL:
            return BlockRuns.empty()
        i_block = self.i_block(row)
        problems: list[ParserError] = []
        if flags & S.EXTENTS_FL:
            runs = self._extent_runs(i_block, owner, problems)
        else:
            runs = self._mapped_runs(i_block, owner, problems)
        runs.problems = problems
        return runs

    def _check_run(
        self, owner: str, logical: int, physical: int, length: int, problems: list[ParserError]
    ) -> bool:
        if length <= 0 or not self.block_ok(physical, length):
            problems.append(
                DamagedError(
                    owner,
                    None,
                    f"extent {logical}+{length} -> block {physical} lies outside the fs "
                    f"(blocks {self.sb.first_data_block}-{self.sb.blocks_count - 1}); skipped",
                )
            )
            return False
        return True

    def _extent_runs(self, i_block: bytes, owner: str, problems: list[ParserError]) -> BlockRuns:
        lo: list[npt.NDArray[np.int64]] = []
        ph: list[npt.NDArray[np.int64]] = []
        ln: list[npt.NDArray[np.int64]] = []
        uw: list[npt.NDArray[np.bool_]] = []
        tree: list[int] = []
        visited: set[int] = set()
        budget = [self.sb.blocks_count]

        def node(data: bytes, depth_expected: int | None, where: str) -> None:
            h = S.ExtentHeader.parse(data[:12])
            if h.eh_magic != S.EXTENT_HEADER_MAGIC:
                problems.append(DamagedError(owner, None, f"{where}: no extent header"))
                return
            capacity = (len(data) - 12) // 12
            if h.eh_entries > capacity or h.eh_depth > MAX_EXTENT_DEPTH:
                problems.append(
                    DamagedError(
                        owner, None, f"{where}: {h.eh_entries} entries, depth {h.eh_depth}"
                    )
                )
                return
            if depth_expected is not None and h.eh_depth != depth_expected:
                problems.append(
                    DamagedError(
                        owner, None, f"{where}: depth {h.eh_depth}, expected {depth_expected}"
                    )
                )
                return
            entries = np.frombuffer(data, dtype=S.EXTENT_ENTRY_DTYPE, count=h.eh_entries, offset=12)
            if h.eh_depth == 0:
                raw = entries["len"].astype(np.int64)
                unwritten = raw > 32768
                length = np.where(unwritten, raw - 32768, raw)
                physical = (entries["start_hi"].astype(np.int64) << 32) | entries["start_lo"]
                logical = entries["block"].astype(np.int64)
                ok = self.runs_ok(physical, length)
                for i in np.flatnonzero(~ok).tolist():  # each one reported
                    self._check_run(
                        owner, int(logical[i]), int(physical[i]), int(length[i]), problems
                    )
                lo.append(logical[ok])
                ph.append(physical[ok])
                ln.append(length[ok])
                uw.append(unwritten[ok])
                return
            for e in entries:
                child = (int(e["leaf_hi"]) << 32) | int(e["leaf_lo"])
                if not self.block_ok(child):
                    problems.append(
                        DamagedError(owner, None, f"extent index -> block {child} outside the fs")
                    )
                    continue
                if child in visited:
                    problems.append(
                        DamagedError(owner, None, f"extent tree visits block {child} twice")
                    )
                    continue
                budget[0] -= 1
                if budget[0] < 0:
                    return
                visited.add(child)
                tree.append(child)
                node(self.read_blocks(child), h.eh_depth - 1, f"extent node {child}")

        node(i_block, None, "extent root")
        none = np.zeros(0, dtype=np.int64)
        runs = _merge_runs(
            np.concatenate(lo) if lo else none,
            np.concatenate(ph) if ph else none,
            np.concatenate(ln) if ln else none,
            np.concatenate(uw) if uw else none.astype(bool),
        )
        runs.tree_blocks = tree
        return runs

    def _mapped_runs(self, i_block: bytes, owner: str, problems: list[ParserError]) -> BlockRuns:
        pointers = np.frombuffer(i_block, dtype="<u4").astype(np.int64)
        per = self.block_size // 4
        logical_parts: list[npt.NDArray[np.int64]] = []
        physical_parts: list[npt.NDArray[np.int64]] = []
        tree: list[int] = []
        visited: set[int] = set()

        direct = pointers[:12]
        used = np.flatnonzero(direct)
        logical_parts.append(used.astype(np.int64))
        physical_parts.append(direct[used])

        def walk(block: int, level: int, first_logical: int) -> None:
            if not self.block_ok(block):
                problems.append(DamagedError(owner, None, f"indirect block {block} outside the fs"))
                return
            if block in visited:
                problems.append(
                    DamagedError(owner, None, f"indirect block {block} referenced twice")
                )
                return
            visited.add(block)
            tree.append(block)
            entries = np.frombuffer(self.read_blocks(block), dtype="<u4").astype(np.int64)
            nonzero = np.flatnonzero(entries)
            span = per ** (level - 1)
            if level == 1:
                logical_parts.append(first_logical + nonzero)
                physical_parts.append(entries[nonzero])
                return
            for i in nonzero.tolist():
                walk(int(entries[i]), level - 1, first_logical + i * span)

        start = 12
        for level, pointer in enumerate(pointers[12:15].tolist(), start=1):
            if pointer:
                walk(pointer, level, start)
            start += per**level
        logical = np.concatenate(logical_parts)
        physical = np.concatenate(physical_parts)
        ok = (physical >= self.sb.first_data_block) & (physical < self.sb.blocks_count)
        if not ok.all():
            problems.append(
                DamagedError(
                    owner, None, f"{int((~ok).sum())} block pointers outside the fs; skipped"
                )
            )
        runs = _merge_runs(
            logical[ok],
            physical[ok],
            np.ones(int(ok.sum()), dtype=np.int64),
            np.zeros(int(ok.sum()), dtype=bool),
        )
        runs.tree_blocks = tree
        return runs

    # -- directories ---------------------------------------------------------------------

    def dir_entries(
        self, data: bytes, owner: str, base: int = 0, block_size: int | None = None
    ) -> DirEntries:
        """Parse the linear directory entries in ``data`` (whole blocks, or inline data).

        htree index blocks need no special case: they look like one empty entry spanning the
        block. ``base`` is where ``data`` starts in the directory, for messages; an inline
        area is one "block" of its own length (``block_size``).
        """
        inodes: list[int] = []
        names: list[bytes] = []
        types: list[int] = []
        problems: list[ParserError] = []
        filetype = self.sb.has(incompat=S.INCOMPAT_FILETYPE)
        bs = block_size or self.block_size
        unpack = struct.unpack_from
        n = len(data)
        for block_start in range(0, n, bs):
            end = min(block_start + bs, n)
            pos = block_start
            while pos + 8 <= end:
                ino, rec_len, name_len, ftype = unpack("<IHBB", data, pos)
                if rec_len == 0 or rec_len == 65535:
                    rec_len = bs if bs >= 65536 else rec_len
                elif bs >= 65536:
                    rec_len = (rec_len & 65532) | ((rec_len & 3) << 16)
                if not filetype:
                    name_len |= ftype << 8
                    ftype = 0
                if rec_len < 8 or rec_len % 4 or pos + rec_len > end or name_len + 8 > rec_len:
                    problems.append(
                        DamagedError(
                            owner,
                            None,
                            f"directory entry at byte {base + pos}: rec_len {rec_len}, "
                            f"name_len {name_len}; rest of the block skipped",
                        )
                    )
                    break
                if ino and name_len:
                    name = data[pos + 8 : pos + 8 + name_len]
                    if name != b"." and name != b"..":
                        inodes.append(ino)
                        names.append(name)
                        types.append(ftype)
                pos += rec_len
        return DirEntries(
            np.asarray(inodes, dtype=np.int64),
            names,
            np.asarray(types, dtype=np.int64),
            problems,
        )

    def bulk_dir_entries(self, blocks: npt.NDArray[np.int64]) -> BulkEntries:
        """Parse many directory blocks at once: the ``rec_len`` chains of every block advance
        together, one numpy step per entry position.

        ``blocks`` lists physical block numbers; the answer's ``block`` column says which
        position of that list each entry came from. Entries ``.`` and ``..``, deleted entries
        (inode 0), htree index blocks and checksum tails are left out. A chain that breaks
        (a bad ``rec_len``) ends its block and is reported.
        """
        bs = self.block_size
        # Whole chunks of blocks to a window (at least one).
        window = max(1, DIR_WINDOW_BYTES // bs // DIR_CHUNK_BLOCKS) * DIR_CHUNK_BLOCKS
        parts = []
        for i in range(0, len(blocks), window):
            parts += self._dir_window(blocks[i : i + window], i)
            self.progress("directory blocks", min(i + window, len(blocks)), len(blocks))
        parts = parts or [self._decode_entries(np.zeros(2, np.uint8), blocks[:0], _EMPTY, 0, 0)]
        return BulkEntries.concat(parts)

    def _dir_window(self, blocks: npt.NDArray[np.int64], base: int) -> list[BulkEntries]:
        """:meth:`bulk_dir_entries` for one window of blocks (bounded memory); ``base`` is
        the window's first position in the whole list.

        Two passes. The first only follows the ``rec_len`` chains of the whole window: a
        handful of numpy steps per entry position, over the blocks whose chains go on (the
        window is wide so that the steps are few). The second checks and decodes the entries
        found, :data:`DIR_CHUNK_BLOCKS` blocks at a time; the first bad entry of a block ends
        that block, as in :meth:`dir_entries`.
        """
        bs = self.block_size
        n = len(blocks)
        # Eight bytes of padding: a chain that ends 4 bytes short of its block's end reads a
        # header there; that header is dropped below.
        raw = bytearray(n * bs + 8)
        if n:
            # Consecutive block numbers are read as one piece.
            breaks = np.flatnonzero(np.diff(blocks) != 1) + 1
            starts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [n]))
            gather_into(
                self.fh, memoryview(raw), blocks[starts] * bs, starts * bs, (ends - starts) * bs
            )
        buf = np.frombuffer(raw, dtype=np.uint8)
        u16 = buf.view("<u2")
        # Entry positions in 16-bit words; a block is 2**shift words.
        shift = (bs // 2).bit_length() - 1
        q = np.arange(n, dtype=np.int64) << shift
        steps = []
        # Each step moves at least 8 bytes inside a block: at most bs/8 steps.
        while len(q):
            steps.append(q)
            rec_len = u16[q + 2] if bs < 65536 else self._rec_lens(u16, q)
            nq = q + (rec_len >> 1)
            q = nq[(((nq ^ q) >> shift) == 0) & (rec_len >= 8)]
        q = np.sort(np.concatenate(steps)) if steps else _EMPTY
        del steps
        # Positions are in block order: each chunk of blocks is one slice of them.
        bounds = np.searchsorted(q, np.arange(0, n + DIR_CHUNK_BLOCKS, DIR_CHUNK_BLOCKS) << shift)
        return [
            self._decode_entries(
                buf, blocks, q[bounds[k] : bounds[k + 1]], k * DIR_CHUNK_BLOCKS, base
            )
            for k in range(len(bounds) - 1)
            if bounds[k + 1] > bounds[k] or k == 0
        ]

    def _rec_lens(
        self, u16: npt.NDArray[np.uint16], q: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """The ``rec_len`` of the entries at word positions ``q`` (decoded for blocks of
        64 KiB and more, where the low bits carry the high ones)."""
        bs = self.block_size
        rec_len = u16[q + 2].astype(np.int64)
        if bs >= 65536:
            rec_len = np.where(
                (rec_len == 0) | (rec_len == 65535),
                bs,
                (rec_len & 65532) | ((rec_len & 3) << 16),
            )
        return rec_len

    def _decode_entries(
        self,
        buf: npt.NDArray[np.uint8],
        blocks: npt.NDArray[np.int64],
        q: npt.NDArray[np.int64],
        first: int,
        base: int,
    ) -> BulkEntries:
        """Check and decode the entries at word positions ``q`` of ``buf``, which all lie in
        the window's blocks ``first`` onwards (``blocks`` lists the window's block numbers,
        ``base`` is the window's first position in the whole list)."""
        bs = self.block_size
        shift = (bs // 2).bit_length() - 1
        p = q << 1
        rec_len = self._rec_lens(buf.view("<u2"), q)
        u16 = buf.view("<u2")
        name_len = buf[p + 6].astype(np.int64)
        ftype = buf[p + 7].astype(np.int64)
        if not self.sb.has(incompat=S.INCOMPAT_FILETYPE):
            name_len |= ftype << 8
            ftype = np.zeros_like(ftype)
        within = p & (bs - 1)
        block = q >> shift
        # A header that does not fit ends its block quietly.
        fits = within + 8 <= bs
        ok = (
            (rec_len >= 8)
            & (rec_len % 4 == 0)
            & (within + rec_len <= bs)
            & (name_len + 8 <= rec_len)
        )
        bad = fits & ~ok
        # The first bad entry of each block, by the block's place in this part.
        cut = np.full(DIR_CHUNK_BLOCKS, np.iinfo(np.int64).max, dtype=np.int64)
        bad_blocks, first_bad = np.unique(block[bad], return_index=True)
        cut[bad_blocks - first] = q[bad][first_bad]
        ino = u16[q].astype(np.int64) | (u16[q + 1].astype(np.int64) << 16)
        head = buf[p + 8]
        # "." and ".." are the directory's own bookkeeping.
        dot = (head == 0x2E) & ((name_len == 1) | ((name_len == 2) & (buf[p + 9] == 0x2E)))
        keep = fits & ok & (q < cut[block - first]) & (ino != 0) & (name_len > 0) & ~dot
        problems: list[ParserError] = [
            DamagedError(
                "directory-block",
                int(blocks[b]) * bs,
                "directory entry with a bad rec_len or name_len; rest of the block skipped",
            )
            for b in bad_blocks.tolist()
        ]
        # Columns as narrow as their fields: a big filesystem has millions of entries.
        return BulkEntries(
            block=block[keep] + base,
            inodes=ino[keep].astype(np.uint32),
            names_blob=_gather_names(buf, p[keep] + 8, name_len[keep]),
            name_lengths=name_len[keep].astype(np.uint16),
            file_types=ftype[keep].astype(np.uint8),
            problems=problems,
        )

    def inline_data(self, row: int) -> bytes:
        """The bytes of an inline-data inode: i_block, then the system.data xattr value."""
        record = self.inode_record(row)
        head = record[40:100]
        if self.sb.inode_size <= 128 or len(record) < 130:
            return head
        start = 128 + struct.unpack_from("<H", record, 128)[0]  # i_extra_isize
        if start + 4 > len(record):
            return head
        if struct.unpack_from("<I", record, start)[0] != XATTR_MAGIC:
            return head
        area = record[start + 4 :]
        pos = 0
        while pos + 16 <= len(area):
            name_len, index, value_offs, value_inum, value_size = struct.unpack_from(
                "<BBHII", area, pos
            )
            if name_len == 0 and index == 0:
                break
            name = area[pos + 16 : pos + 16 + name_len]
            if index == 7 and name == b"data" and value_inum == 0:
                return head + area[value_offs : value_offs + value_size]
            pos += (16 + name_len + 3) & ~3
        return head

    def inline_directory(self, row: int, owner: str) -> DirEntries:
        """Entries of an inline directory: a 4-byte parent inode, then entries."""
        data = self.inline_data(row)
        parts = [self.dir_entries(data[4:60], owner, 4, 56)]
        if len(data) > 60:
            parts.append(self.dir_entries(data[60:], owner, 60, len(data) - 60))
        return DirEntries(
            np.concatenate([p.inodes for p in parts]),
            [name for p in parts for name in p.names],
            np.concatenate([p.file_types for p in parts]),
            [problem for p in parts for problem in p.problems],
        )

    # -- free space ----------------------------------------------------------------------

    def free_clusters(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Runs of free clusters from the block bitmaps: ``(first cluster, end cluster)``.

        Groups whose bitmap was never initialised (BLOCK_UNINIT, :meth:`uninit_block_groups`)
        are left out: they are free except for the static structures inside them.
        """
        sb = self.sb
        groups = self.groups
        cpg = sb.clusters_per_group
        total_clusters = -(-(sb.blocks_count - sb.first_data_block) // sb.cluster_ratio)
        bits = np.ones(sb.group_count * cpg, dtype=bool)  # True = in use
        for g in range(sb.group_count):
            if self._csum and groups["flags"][g] & S.BG_BLOCK_UNINIT:
                continue  # no bitmap was ever written: see uninit_block_groups()
            block = int(groups["block_bitmap"][g])
            if not self.block_ok(block):
                continue
            raw = np.frombuffer(self.read_blocks(block), dtype=np.uint8)
            got = np.unpackbits(raw, bitorder="little")[:cpg].astype(bool)
            bits[g * cpg : g * cpg + len(got)] = got  # a short bitmap: the rest stays "used"
        bits = bits[:total_clusters]
        edges = np.diff(np.concatenate(([True], bits, [True])).astype(np.int8))
        starts = np.flatnonzero(edges == -1)
        ends = np.flatnonzero(edges == 1)
        return starts.astype(np.int64), ends.astype(np.int64)

    def uninit_block_groups(self) -> list[int]:
        if not self._csum:
            return []
        return [int(g) for g in np.flatnonzero(self.groups["flags"] & S.BG_BLOCK_UNINIT)]


def describe(fs: ExtFS) -> dict[str, Any]:
    """What ``bmap info`` shows about a filesystem."""
    sb = fs.sb
    return {
        "type": sb.kind,
        "label": sb.label,
        "uuid": sb.uuid,
        "block_size": sb.block_size,
        "cluster_size": sb.cluster_size,
        "size": sb.size,
        "blocks": sb.blocks_count,
        "free_blocks": sb.free_blocks,
        "inodes": sb.inodes_count,
        "free_inodes": sb.free_inodes,
        "inode_size": sb.inode_size,
        "groups": sb.group_count,
        "features": sb.features,
        "last_mounted": sb.last_mounted,
    }
