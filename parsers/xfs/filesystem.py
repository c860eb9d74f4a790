"""An XFS filesystem (v4 and v5) read for its block map: AG headers, btrees, inodes, forks,
directories.

Reference: "XFS Algorithms & Data Structures"
(https://mirrors.edge.kernel.org/pub/linux/utils/fs/xfs/docs/xfs_filesystem_structure.pdf).

:class:`XFS` validates the primary superblock eagerly and reads the rest on demand: each
allocation group's AGF, AGI and AGFL, the short-form btrees (free space by block and by count,
inodes, free inodes, reverse mapping, reference counts) level by level, the inode chunks the
inode btrees list (a window of chunks at a time into numpy columns), every inode's data and
attribute forks (extent lists decoded in bulk; the bmbt btrees of every inode walked
together, level by level), the entries of every directory format in bulk, the free extents of
the by-block btree, and whether the log ends with an unmount record.

Units: ``fsblock`` numbers are XFS's own (AG number in the high bits); everything handed out
is in bytes from the start of the filesystem, except run lengths and logical offsets, which
are in filesystem blocks. Every walk over on-disk pointers is bounded (levels, the AG's size,
a set of blocks already seen: a btree that points back at itself is reported, not followed)
and every pointer is checked against the filesystem's size; damage becomes a
:class:`~parsers.errors.ParserError` in a ``problems`` list and the walk goes on.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parsers.errors import DamagedError, NotThisFormat, ParserError, UnsupportedError
from parsers.stream import ReadSeek, gather_into
from parsers.xfs import structs as S

Array = npt.NDArray[np.int64]
_EMPTY = np.zeros(0, dtype=np.int64)
#: Inode chunks read at once (64 inodes each): bounds the buffer (16 MiB of 512-byte inodes).
CHUNK_WINDOW = 512
#: Btree blocks read at once.
BTREE_WINDOW = 2048
#: Directory bytes read, and their entries decoded, at once.
DIR_WINDOW_BYTES = 8 << 20
NULL_AGBLOCK = 0xFFFFFFFF
_PAD = np.zeros(16, dtype=np.uint8)
NULL_FSINO = (1 << 64) - 1


def _ragged(starts: npt.ArrayLike, counts: npt.ArrayLike) -> Array:
    """``starts[i] .. starts[i] + counts[i] - 1`` for each ``i``, laid end to end."""
    s = np.asarray(starts, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    if total == 0:
        return _EMPTY
    ends = np.cumsum(c)
    base = np.repeat(s - (ends - c), c)
    return base + np.arange(total, dtype=np.int64)


def _be(buf: npt.NDArray[np.uint8], pos: Array, width: int) -> Array:
    """Big-endian unsigned integers of ``width`` bytes at byte positions ``pos`` (any
    alignment); 8-byte values come back as int64 bit patterns."""
    value = np.zeros(len(pos), dtype=np.uint64)
    for k in range(width):
        value = (value << np.uint64(8)) | buf[pos + k].astype(np.uint64)
    return value.astype(np.int64)


def _gather_names(buf: npt.NDArray[np.uint8], offsets: Array, lengths: Array) -> bytes:
    """The bytes at ``offsets`` (``lengths`` long), laid end to end."""
    if not len(offsets):
        return b""
    return bytes(buf[_ragged(offsets, lengths)].tobytes())


@dataclass(frozen=True)
class Superblock:
    """The fields of the superblock the map needs, with units in their names."""

    version: int
    """4, or 5 for CRC-enabled filesystems."""
    block_size: int
    sector_size: int
    inode_size: int
    inodes_per_block: int
    inopb_log: int
    ag_blocks: int
    ag_count: int
    ag_block_log: int
    data_blocks: int
    realtime_blocks: int
    log_start: int
    """fsblock number of the internal log; 0 when the log is on an external device."""
    log_blocks: int
    root_ino: int
    rbm_ino: int
    rsum_ino: int
    quota_inos: tuple[int, ...]
    dir_block_log: int
    has_ftype: bool
    sparse_inodes: bool
    finobt: bool
    rmapbt: bool
    reflink: bool
    nrext64: bool
    incompat: int
    ro_compat: int
    features: tuple[str, ...]
    uuid: str
    label: str
    icount: int
    ifree: int
    free_blocks: int
    crc_ok: bool | None
    """Whether the stored CRC matches (v5), None on v4."""

    @property
    def size(self) -> int:
        return self.data_blocks * self.block_size

    @property
    def dir_block_size(self) -> int:
        return self.block_size << self.dir_block_log


def _features(sb: Any) -> tuple[str, ...]:
    words = [f"v{sb.sb_versionnum & S.VERSION_NUMBITS}"]
    if sb.sb_versionnum & S.VERSION_NUMBITS == 5:
        words.append("crc")
        for value, names in (
            (sb.sb_features_ro_compat, S.RO_COMPAT_NAMES),
            (sb.sb_features_incompat, S.INCOMPAT_NAMES),
        ):
            for bit in range(32):
                if value & (1 << bit):
                    words.append(names.get(1 << bit, f"unknown-{1 << bit:#x}"))
    else:
        if sb.sb_versionnum & S.VERSION_MOREBITSBIT and sb.sb_features2 & S.FEATURES2_FTYPE:
            words.append("ftype")
        if sb.sb_versionnum & S.VERSION_ATTRBIT:
            words.append("attr")
        if sb.sb_versionnum & S.VERSION_MOREBITSBIT and sb.sb_features2 & S.FEATURES2_ATTR2:
            words.append("attr2")
    return tuple(words)


def parse_superblock(data: bytes, offset: int = 0) -> Superblock:
    """Validate and decode one superblock copy (``data``: its whole sector, at least 264 bytes).

    Raises:
        NotThisFormat: no XFSB magic.
        DamagedError: a field no mkfs.xfs writes (sizes, logs and counts that disagree).
        UnsupportedError: a version other than 4 or 5.
    """
    if len(data) < S.SUPERBLOCK_SIZE:
        raise NotThisFormat("xfs-superblock", offset, f"only {len(data)} bytes")
    sb = S.Superblock.parse(data[: S.SUPERBLOCK_SIZE])
    if sb.sb_magicnum != S.SB_MAGIC:
        raise NotThisFormat("xfs-superblock", offset, f"magic {sb.sb_magicnum:#010x}, not XFSB")

    def bad(message: str) -> DamagedError:
        return DamagedError("xfs-superblock", offset, message)

    version = sb.sb_versionnum & S.VERSION_NUMBITS
    if version not in (4, 5):
        raise UnsupportedError("xfs-superblock", offset, f"version {version}")
    bs = sb.sb_blocksize
    if not (9 <= sb.sb_blocklog <= 16 and bs == 1 << sb.sb_blocklog):
        raise bad(f"block size {bs} (log {sb.sb_blocklog})")
    if not (9 <= sb.sb_sectlog <= 15 and sb.sb_sectsize == 1 << sb.sb_sectlog):
        raise bad(f"sector size {sb.sb_sectsize}")
    if sb.sb_sectsize > bs:
        raise bad(f"sector size {sb.sb_sectsize} above the block size {bs}")
    if not (8 <= sb.sb_inodelog <= 11 and sb.sb_inodesize == 1 << sb.sb_inodelog):
        raise bad(f"inode size {sb.sb_inodesize}")
    if sb.sb_inodesize > bs or sb.sb_inopblog != sb.sb_blocklog - sb.sb_inodelog:
        raise bad(f"{sb.sb_inopblock} inodes of {sb.sb_inodesize} bytes per block of {bs}")
    if sb.sb_inopblock != bs // sb.sb_inodesize:
        raise bad(f"{sb.sb_inopblock} inodes per block")
    if version == 5 and sb.sb_inodesize < 512:
        raise bad(f"inode size {sb.sb_inodesize} on a v5 filesystem")
    if sb.sb_agcount == 0 or sb.sb_agblocks < 64:
        raise bad(f"{sb.sb_agcount} AGs of {sb.sb_agblocks} blocks")
    if not (sb.sb_agblklog <= 31 and (1 << sb.sb_agblklog) >= sb.sb_agblocks):
        raise bad(f"AG block log {sb.sb_agblklog} for {sb.sb_agblocks} blocks per AG")
    if sb.sb_agblklog and (1 << (sb.sb_agblklog - 1)) >= sb.sb_agblocks:
        raise bad(f"AG block log {sb.sb_agblklog} for {sb.sb_agblocks} blocks per AG")
    if not ((sb.sb_agcount - 1) * sb.sb_agblocks < sb.sb_dblocks <= sb.sb_agcount * sb.sb_agblocks):
        raise bad(f"{sb.sb_dblocks} blocks in {sb.sb_agcount} AGs of {sb.sb_agblocks}")
    if sb.sb_dirblklog > 16 - sb.sb_blocklog + 0 and sb.sb_dirblklog:
        raise bad(f"directory block log {sb.sb_dirblklog}")
    if sb.sb_logstart and sb.sb_logblocks == 0:
        raise bad("an internal log of 0 blocks")
    ro_compat = sb.sb_features_ro_compat if version == 5 else 0
    incompat = sb.sb_features_incompat if version == 5 else 0
    if version == 5:
        ftype = bool(incompat & S.INCOMPAT_FTYPE)
    else:
        ftype = bool(
            sb.sb_versionnum & S.VERSION_MOREBITSBIT and sb.sb_features2 & S.FEATURES2_FTYPE
        )
    crc_ok = None
    if version == 5:
        crc_ok = S.xfs_checksum(data, S.SB_CRC_OFFSET) == S.stored_checksum(data, S.SB_CRC_OFFSET)
    quota = [sb.sb_uquotino, sb.sb_gquotino]
    if version == 5:
        quota.append(sb.sb_pquotino)
    return Superblock(
        version=version,
        block_size=bs,
        sector_size=sb.sb_sectsize,
        inode_size=sb.sb_inodesize,
        inodes_per_block=sb.sb_inopblock,
        inopb_log=sb.sb_inopblog,
        ag_blocks=sb.sb_agblocks,
        ag_count=sb.sb_agcount,
        ag_block_log=sb.sb_agblklog,
        data_blocks=sb.sb_dblocks,
        realtime_blocks=sb.sb_rblocks,
        log_start=sb.sb_logstart,
        log_blocks=sb.sb_logblocks,
        root_ino=sb.sb_rootino,
        rbm_ino=sb.sb_rbmino,
        rsum_ino=sb.sb_rsumino,
        quota_inos=tuple(q for q in quota if q not in (0, NULL_FSINO)),
        dir_block_log=sb.sb_dirblklog,
        has_ftype=ftype,
        sparse_inodes=bool(incompat & S.INCOMPAT_SPINODES),
        finobt=bool(ro_compat & S.RO_COMPAT_FINOBT),
        rmapbt=bool(ro_compat & S.RO_COMPAT_RMAPBT),
        reflink=bool(ro_compat & S.RO_COMPAT_REFLINK),
        nrext64=bool(incompat & S.INCOMPAT_NREXT64),
        incompat=incompat,
        ro_compat=ro_compat,
        features=_features(sb),
        uuid=str(uuid_module.UUID(bytes=sb.sb_uuid)),
        label=sb.sb_fname.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
        icount=sb.sb_icount,
        ifree=sb.sb_ifree,
        free_blocks=sb.sb_fdblocks,
        crc_ok=crc_ok,
    )


@dataclass(frozen=True)
class AGHeaders:
    """One allocation group's AGF, AGI and AGFL, as the map needs them (AG block numbers).

    A header whose magic is wrong is left out (its btrees are not walked): ``agf_ok`` and
    ``agi_ok`` say which were usable."""

    agno: int
    length: int
    """Blocks in this AG (by the superblock's geometry)."""
    agf_ok: bool
    agi_ok: bool
    bno_root: int = 0
    bno_levels: int = 0
    cnt_root: int = 0
    cnt_levels: int = 0
    rmap_root: int = 0
    rmap_levels: int = 0
    refcount_root: int = 0
    refcount_levels: int = 0
    free_blocks: int = 0
    ino_root: int = 0
    ino_levels: int = 0
    fino_root: int = 0
    fino_levels: int = 0
    inode_count: int = 0
    free_inodes: int = 0
    agfl_blocks: tuple[int, ...] = ()
    problems: tuple[ParserError, ...] = ()


@dataclass
class BtreeWalk:
    """The blocks of one btree (AG block numbers, every level) and its leaf records."""

    blocks: Array
    records: npt.NDArray[np.uint8]
    """(n, record size) raw leaf records, in key order."""
    problems: list[ParserError] = field(default_factory=list)


@dataclass
class InodeTable:
    """The inodes in use (by the inode btrees) whose records carry the IN magic, as columns
    in inode-number order. Columns are as narrow as their fields."""

    ino: npt.NDArray[np.uint64]
    position: Array
    """Byte offset of each inode record in the filesystem."""
    mode: npt.NDArray[np.uint16]
    format: npt.NDArray[np.uint8]
    aformat: npt.NDArray[np.uint8]
    size: Array
    nlink: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint16]
    kept_rows: Array
    """Rows (ascending) whose whole record is kept in :attr:`kept`: btree forks, short-form
    directories."""
    kept: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.ino)

    def index_of(self, ino: int) -> int:
        i = int(np.searchsorted(self.ino, np.uint64(ino)))
        return i if i < len(self.ino) and int(self.ino[i]) == ino else -1

    def record(self, row: int) -> bytes | None:
        k = int(np.searchsorted(self.kept_rows, row))
        if k < len(self.kept_rows) and self.kept_rows[k] == row:
            return self.kept[k].tobytes()
        return None


@dataclass
class ForkRuns:
    """Extents of many inodes' forks, as columns: inode row, logical block, byte offset in
    the filesystem, length in blocks, unwritten flag."""

    row: Array
    logical: Array
    physical: Array
    length: Array
    unwritten: npt.NDArray[np.bool_]

    @classmethod
    def empty(cls) -> ForkRuns:
        return cls(_EMPTY, _EMPTY, _EMPTY, _EMPTY, np.zeros(0, dtype=bool))

    @classmethod
    def concat(cls, parts: list[ForkRuns]) -> ForkRuns:
        if not parts:
            return cls.empty()
        return cls(
            *(np.concatenate([getattr(p, n) for p in parts]) for n in cls.__dataclass_fields__)
        )

    def sorted(self) -> ForkRuns:
        order = np.lexsort((self.logical, self.row))
        return ForkRuns(*(getattr(self, n)[order] for n in self.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.row)


@dataclass
class TreeBlocks:
    """bmbt blocks of many inodes' forks: inode row, byte offset, and which fork (0 data, 1
    attr)."""

    row: Array
    physical: Array
    fork: npt.NDArray[np.uint8]


@dataclass
class BulkEntries:
    """Directory entries of many directories, as columns: the directory's row, the child's
    inode number, and the names laid end to end."""

    dir_row: Array
    inodes: npt.NDArray[np.uint64]
    names_blob: bytes
    name_lengths: npt.NDArray[np.uint16]
    problems: list[ParserError] = field(default_factory=list)

    @classmethod
    def concat(cls, parts: list[BulkEntries]) -> BulkEntries:
        if not parts:
            return cls(_EMPTY, np.zeros(0, np.uint64), b"", np.zeros(0, np.uint16))
        return cls(
            np.concatenate([p.dir_row for p in parts]),
            np.concatenate([p.inodes for p in parts]),
            b"".join(p.names_blob for p in parts),
            np.concatenate([p.name_lengths for p in parts]),
            [x for p in parts for x in p.problems],
        )


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class XFS:
    """An XFS filesystem on a readable, seekable stream.

    Args:
        fh: the filesystem's device (position 0 = the filesystem's first byte).
        size: the device size in bytes.

    Raises:
        NotThisFormat: no XFS superblock at 0.
        DamagedError: the primary superblock is damaged, or its geometry does not fit.
        UnsupportedError: a superblock version bmap does not read.
    """

    def __init__(self, fh: ReadSeek, size: int) -> None:
        self.fh = fh
        self.device_size = size
        self._problems: list[ParserError] = []
        head = self.read(0, 512)
        if len(head) < 512:
            raise NotThisFormat("xfs-superblock", 0, "device shorter than one sector")
        sb0 = parse_superblock(head, 0)
        self.sb = sb = parse_superblock(self.read(0, sb0.sector_size), 0)
        self.block_size = sb.block_size
        if sb.crc_ok is False:
            self._problems.append(DamagedError("xfs-superblock", 0, "CRC mismatch"))
        if sb.size > size:
            self._problems.append(
                DamagedError(
                    "xfs-superblock",
                    0,
                    f"the filesystem claims {sb.size:#x} bytes but its device holds {size:#x}; "
                    "blocks past the end are not read",
                )
            )
        # AGs that start past the device are not read: the walk over AGs is bounded by the
        # device's size, whatever the superblock claims.
        ag_bytes = sb.ag_blocks * sb.block_size
        self.readable_ags = min(sb.ag_count, -(-size // ag_bytes))
        if self.readable_ags < sb.ag_count:
            self._problems.append(
                DamagedError(
                    "xfs-superblock",
                    0,
                    f"{sb.ag_count - self.readable_ags} of {sb.ag_count} AGs lie past the end of "
                    "the device; they are not read",
                )
            )
        self.progress: Callable[[str, int, int], None] = _no_progress
        #: Bytes of each inode's core (v3 inodes on v5, v2 otherwise).
        self.core_size = S.DINODE_CORE_V3 if sb.version == 5 else S.DINODE_CORE_V2

    def take_problems(self) -> list[ParserError]:
        """Damage of the filesystem's own tables found since the last call."""
        taken, self._problems = self._problems, []
        return taken

    # -- reading and geometry ------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``; zeros for any part past the device (never read)."""
        if offset >= self.device_size or size <= 0:
            return bytes(max(size, 0))
        want = min(size, self.device_size - offset)
        self.fh.seek(offset)
        data = self.fh.read(want)
        return data + bytes(size - len(data))

    def read_many(self, offsets: Array, size: int) -> npt.NDArray[np.uint8]:
        """``size`` bytes at each of ``offsets``, as an (n, size) array; zeros past the device."""
        n = len(offsets)
        raw = bytearray(n * size)
        if n:
            inside = offsets < self.device_size
            lengths = np.clip(self.device_size - offsets, 0, size)
            sel = np.flatnonzero(inside & (offsets >= 0))
            gather_into(
                self.fh,
                memoryview(raw),
                offsets[sel],
                sel.astype(np.int64) * size,
                lengths[sel],
            )
        return np.frombuffer(raw, dtype=np.uint8).reshape(n, size)

    def ag_length(self, agno: int) -> int:
        sb = self.sb
        if agno == sb.ag_count - 1:
            return sb.data_blocks - agno * sb.ag_blocks
        return sb.ag_blocks

    def ag_start(self, agno: int) -> int:
        """Byte offset of AG ``agno``."""
        return agno * self.sb.ag_blocks * self.block_size

    def fsblocks_to_bytes(self, fsb: Array, count: Array) -> tuple[Array, npt.NDArray[np.bool_]]:
        """Byte offsets of fsblock numbers, and whether each run of ``count`` blocks lies
        inside one AG of the filesystem."""
        sb = self.sb
        fsb = np.asarray(fsb, dtype=np.int64)
        count = np.asarray(count, dtype=np.int64)
        agno = fsb >> sb.ag_block_log
        agbno = fsb & ((1 << sb.ag_block_log) - 1)
        last = sb.ag_count - 1
        ag_len = np.where(agno == last, sb.data_blocks - last * sb.ag_blocks, sb.ag_blocks)
        ok = (fsb >= 0) & (agno < sb.ag_count) & (count > 0) & (agbno + count <= ag_len)
        return (agno * sb.ag_blocks + agbno) * sb.block_size, ok

    # -- AG headers ----------------------------------------------------------------------

    def ag_headers(self, agno: int) -> AGHeaders:
        """The AGF, AGI and AGFL of AG ``agno`` (sectors 1, 2 and 3 of the AG)."""
        sb = self.sb
        sect = sb.sector_size
        base = self.ag_start(agno)
        length = self.ag_length(agno)
        problems: list[ParserError] = []
        raw = self.read(base + sect, 3 * sect)
        agf_raw, agi_raw, agfl_raw = raw[:sect], raw[sect : 2 * sect], raw[2 * sect :]
        values: dict[str, Any] = {}

        def check_crc(name: str, data: bytes, offset: int, at: int) -> None:
            if sb.version == 5 and S.xfs_checksum(data, offset) != S.stored_checksum(data, offset):
                problems.append(DamagedError(name, at, "CRC mismatch"))

        agf = S.AGF.parse(agf_raw)
        agf_ok = agf.agf_magicnum == S.AGF_MAGIC and agf.agf_seqno == agno
        if not agf_ok:
            problems.append(
                DamagedError(
                    "agf", base + sect, f"bad magic or AG number ({agf.agf_seqno}); not used"
                )
            )
        else:
            check_crc("agf", agf_raw, S.AGF_CRC_OFFSET, base + sect)
            if agf.agf_length != length:
                problems.append(
                    DamagedError("agf", base + sect, f"length {agf.agf_length}, not {length}")
                )
            values.update(
                bno_root=agf.agf_bno_root,
                bno_levels=agf.agf_bno_level,
                cnt_root=agf.agf_cnt_root,
                cnt_levels=agf.agf_cnt_level,
                free_blocks=agf.agf_freeblks,
            )
            if sb.rmapbt:
                values.update(rmap_root=agf.agf_rmap_root, rmap_levels=agf.agf_rmap_level)
            if sb.reflink:
                values.update(
                    refcount_root=agf.agf_refcount_root, refcount_levels=agf.agf_refcount_level
                )
        agi = S.AGI.parse(agi_raw)
        agi_ok = agi.agi_magicnum == S.AGI_MAGIC and agi.agi_seqno == agno
        if not agi_ok:
            problems.append(
                DamagedError(
                    "agi", base + 2 * sect, f"bad magic or AG number ({agi.agi_seqno}); not used"
                )
            )
        else:
            check_crc("agi", agi_raw, S.AGI_CRC_OFFSET, base + 2 * sect)
            values.update(
                ino_root=agi.agi_root,
                ino_levels=agi.agi_level,
                inode_count=agi.agi_count,
                free_inodes=agi.agi_freecount,
            )
            if sb.finobt:
                values.update(fino_root=agi.agi_free_root, fino_levels=agi.agi_free_level)
        agfl: tuple[int, ...] = ()
        if agf_ok:
            agfl = self._agfl(agno, agfl_raw, agf, problems)
        return AGHeaders(
            agno, length, agf_ok, agi_ok, agfl_blocks=agfl, problems=tuple(problems), **values
        )

    def _agfl(
        self, agno: int, raw: bytes, agf: Any, problems: list[ParserError]
    ) -> tuple[int, ...]:
        """The AG blocks on the free list: slots ``flfirst`` to ``fllast``, wrapping."""
        sb = self.sb
        at = self.ag_start(agno) + 3 * sb.sector_size
        header = 0
        if sb.version == 5:
            head = S.AGFLHeader.parse(raw[: S.AGFL_V5_HEADER])
            if head.agfl_magicnum != S.AGFL_MAGIC or head.agfl_seqno != agno:
                problems.append(DamagedError("agfl", at, "bad magic or AG number; not used"))
                return ()
            if S.xfs_checksum(raw, S.AGFL_CRC_OFFSET) != S.stored_checksum(raw, S.AGFL_CRC_OFFSET):
                problems.append(DamagedError("agfl", at, "CRC mismatch"))
            header = S.AGFL_V5_HEADER
        slots = np.frombuffer(raw[header:], dtype=">u4").astype(np.int64)
        size = len(slots)
        count = agf.agf_flcount
        if count == 0:
            return ()
        if agf.agf_flfirst >= size or agf.agf_fllast >= size or count > size:
            problems.append(
                DamagedError(
                    "agf",
                    at - 2 * sb.sector_size,
                    f"free list slots {agf.agf_flfirst}..{agf.agf_fllast} ({count}) outside "
                    f"the {size} of the AGFL",
                )
            )
            return ()
        index = (agf.agf_flfirst + np.arange(count)) % size
        blocks = slots[index]
        ok = (blocks > 0) & (blocks < self.ag_length(agno))
        if not ok.all():
            problems.append(
                DamagedError("agfl", at, f"{int((~ok).sum())} free-list blocks outside the AG")
            )
        return tuple(blocks[ok].tolist())

    # -- btrees --------------------------------------------------------------------------

    def walk_btree(
        self, agno: int, name: str, root: int, levels: int, want_records: bool = True
    ) -> BtreeWalk:
        """Every block of the short-form btree ``name`` of AG ``agno``, level by level from
        ``root``; the leaf records when ``want_records``.

        Bounded: at most :data:`~parsers.xfs.structs.MAX_BTREE_LEVELS` levels, every pointer
        inside the AG, no block twice (a pointer to a block already seen is a cycle: reported
        and not followed), a block whose magic or level is wrong is reported and skipped.
        """
        sb = self.sb
        bs = self.block_size
        problems: list[ParserError] = []
        recsize, keysize = S.BTREE_SIZES[name]
        empty = BtreeWalk(_EMPTY, np.zeros((0, recsize), dtype=np.uint8), problems)
        magic = S.BTREE_MAGIC.get((name, sb.version))
        length = self.ag_length(agno)
        base = self.ag_start(agno)
        where = base + root * bs
        if magic is None:
            return empty
        if not 1 <= levels <= S.MAX_BTREE_LEVELS:
            problems.append(DamagedError(name, where, f"AG {agno}: {levels} levels"))
            return empty
        if not 0 < root < length:
            problems.append(DamagedError(name, None, f"AG {agno}: root block {root} outside"))
            return empty
        hs = S.SHORT_HEADER[sb.version]
        seen = {root}
        frontier = np.array([root], dtype=np.int64)
        blocks: list[Array] = []
        records: list[npt.NDArray[np.uint8]] = []
        level = levels - 1
        while len(frontier) and level >= 0:
            next_parts: list[Array] = []
            for lo in range(0, len(frontier), BTREE_WINDOW):
                part = frontier[lo : lo + BTREE_WINDOW]
                buf = self.read_many(base + part * bs, bs)
                head = buf[:, :8].copy()
                got_magic = head[:, 0:4].copy().view(">u4")[:, 0]
                got_level = head[:, 4:6].copy().view(">u2")[:, 0]
                numrecs = head[:, 6:8].copy().view(">u2")[:, 0].astype(np.int64)
                ok = (got_magic == magic) & (got_level == level)
                for b in part[~ok][:5].tolist():
                    problems.append(
                        DamagedError(
                            name,
                            base + b * bs,
                            f"AG {agno} block {b}: not a level-{level} {name} block; skipped",
                        )
                    )
                maxrecs = (bs - hs) // recsize if level == 0 else (bs - hs) // (keysize + 4)
                over = ok & (numrecs > maxrecs)
                if over.any():
                    problems.append(
                        DamagedError(
                            name,
                            base + int(part[over][0]) * bs,
                            f"AG {agno}: {int(over.sum())} block(s) claim more records than fit; "
                            "cut to what fits",
                        )
                    )
                numrecs = np.where(ok, np.minimum(numrecs, maxrecs), 0)
                blocks.append(part[ok])
                rows = np.repeat(np.arange(len(part)), numrecs)
                slot = _ragged(np.zeros(len(part), np.int64), numrecs)
                flat = buf.reshape(-1)
                if level == 0:
                    if want_records and len(rows):
                        at = rows * bs + hs + slot * recsize
                        records.append(flat[at[:, None] + np.arange(recsize)])
                else:
                    at = rows * bs + hs + maxrecs * keysize + slot * 4
                    next_parts.append(_be(flat, at, 4))
            level -= 1
            if not next_parts:
                break
            ptrs = np.concatenate(next_parts)
            inside = (ptrs > 0) & (ptrs < length)
            if not inside.all():
                problems.append(
                    DamagedError(
                        name,
                        None,
                        f"AG {agno}: {int((~inside).sum())} pointer(s) outside the AG; skipped",
                    )
                )
            ptrs = ptrs[inside]
            fresh = []
            cycles = 0
            for p in ptrs.tolist():
                if p in seen:
                    cycles += 1
                    continue
                seen.add(p)
                fresh.append(p)
            if cycles:
                problems.append(
                    DamagedError(
                        name,
                        where,
                        f"AG {agno}: {cycles} pointer(s) to blocks already walked (a cycle); "
                        "not followed",
                    )
                )
            frontier = np.array(fresh, dtype=np.int64)
        recs = np.concatenate(records) if records else empty.records
        return BtreeWalk(
            np.concatenate(blocks) if blocks else _EMPTY, recs.reshape(-1, recsize), problems
        )

    # -- inodes --------------------------------------------------------------------------

    def inode_chunks(self, agno: int, inobt: BtreeWalk) -> dict[str, Array]:
        """The inode chunks of an AG's inobt records: first inode number, byte offset, and
        the masks of present (not a sparse hole) and in-use inodes (bit i: inode i)."""
        sb = self.sb
        recs = np.ascontiguousarray(inobt.records).view(S.INOBT_REC_DTYPE).reshape(-1)
        startino = recs["startino"].astype(np.int64)
        if sb.sparse_inodes:
            holemask = recs["holemask"].astype(np.int64)
        else:
            holemask = np.zeros(len(recs), np.int64)
        free = recs["free"].astype(np.uint64)
        # Bit i of the holemask covers inodes 4i..4i+3.
        bits = ((holemask[:, None] >> np.arange(16)) & 1).astype(bool)
        hole = np.repeat(bits, 4, axis=1)
        present = ~hole
        in_use = present & ~((free[:, None] >> np.arange(64, dtype=np.uint64)) & 1).astype(bool)
        agino_limit = self.ag_length(agno) << sb.inopb_log
        ok = (startino % min(64, sb.inodes_per_block) == 0) & (startino + 64 <= agino_limit)
        if not ok.all():
            self._problems.append(
                DamagedError(
                    "inobt",
                    None,
                    f"AG {agno}: {int((~ok).sum())} inode chunk(s) outside the AG or not "
                    "aligned; skipped",
                )
            )
        startino, present, in_use = startino[ok], present[ok], in_use[ok]
        ino = (np.int64(agno) << (sb.ag_block_log + sb.inopb_log)) | startino
        position = self.ag_start(agno) + startino * sb.inode_size
        return {"ino": ino, "position": position, "present": present, "in_use": in_use}

    def chunk_ranges(self, position: Array, present: npt.NDArray[np.bool_]) -> tuple[Array, Array]:
        """The byte ranges of chunks' present inodes (a sparse chunk's holes left out)."""
        isz = self.sb.inode_size
        # Runs of present inodes per chunk, by their edges.
        edges = np.diff(
            np.concatenate(
                (np.zeros((len(present), 1), bool), present, np.zeros((len(present), 1), bool)),
                axis=1,
            ).astype(np.int8),
            axis=1,
        )
        r_start, i_start = np.nonzero(edges == 1)
        r_end, i_end = np.nonzero(edges == -1)
        return position[r_start] + i_start * isz, position[r_end] + i_end * isz

    def read_inodes(
        self, chunks: dict[str, Array]
    ) -> tuple[InodeTable, ForkRuns, ForkRuns, list[ParserError]]:
        """The inodes in use of ``chunks`` (all AGs, in inode order), a window of chunks at a
        time: the table, and the extents of every extent-list data and attribute fork,
        decoded in bulk."""
        sb = self.sb
        isz = sb.inode_size
        problems: list[ParserError] = []
        dtype = S.inode_dtype(isz)
        parts: list[dict[str, Any]] = []
        data_parts: list[ForkRuns] = []
        attr_parts: list[ForkRuns] = []
        total = len(chunks["ino"])
        row_base = 0
        bad_magic = 0
        for lo in range(0, total, CHUNK_WINDOW):
            sl = slice(lo, lo + CHUNK_WINDOW)
            raw = self.read_many(chunks["position"][sl], 64 * isz).reshape(-1, isz)
            use = chunks["in_use"][sl].reshape(-1)
            ino = (chunks["ino"][sl][:, None] + np.arange(64)).reshape(-1)[use]
            position = (chunks["position"][sl][:, None] + np.arange(64) * isz).reshape(-1)[use]
            # The fields straight from the window (strided views), gathered for the inodes in
            # use: no copy of whole records.
            full = raw.reshape(-1).view(dtype)
            idx = np.flatnonzero(use)
            good = (full["di_magic"][idx] == S.DINODE_MAGIC) & (full["di_mode"][idx] != 0)
            bad_magic += int((~good).sum())
            idx = idx[good]
            ino, position = ino[good], position[good]
            fields = {name: full[name][idx] for name in dtype.names or ()}
            part = self._columns(raw, idx, fields, ino, position, row_base, problems)
            data_parts.append(part.pop("data_runs"))
            attr_parts.append(part.pop("attr_runs"))
            parts.append(part)
            row_base += len(ino)
            self.progress("inode chunks", min(lo + CHUNK_WINDOW, total), total)
        if bad_magic:
            problems.append(
                DamagedError(
                    "inode-chunk",
                    None,
                    f"{bad_magic} inode(s) in use by the inode btree without an inode record "
                    "(bad magic or no mode); skipped",
                )
            )

        def cat(name: str, dtype: Any) -> Any:
            if not parts:
                return np.zeros(0, dtype)
            return np.concatenate([p[name] for p in parts])

        kept = [p["kept"] for p in parts if len(p["kept"])]
        inodes = InodeTable(
            ino=cat("ino", np.uint64),
            position=cat("position", np.int64),
            mode=cat("mode", np.uint16),
            format=cat("format", np.uint8),
            aformat=cat("aformat", np.uint8),
            size=cat("size", np.int64),
            nlink=cat("nlink", np.uint32),
            flags=cat("flags", np.uint16),
            kept_rows=cat("kept_rows", np.int64),
            kept=np.concatenate(kept) if kept else np.zeros((0, isz), np.uint8),
        )
        order = np.argsort(inodes.ino, kind="stable")
        if (np.diff(order) != 1).any():
            problems.append(
                DamagedError("inobt", None, "inode chunks out of order or listed twice")
            )
        return (
            inodes,
            ForkRuns.concat(data_parts).sorted(),
            ForkRuns.concat(attr_parts).sorted(),
            problems,
        )

    def _literal(self, version: npt.NDArray[np.uint8]) -> Array:
        return np.where(version >= 3, S.DINODE_CORE_V3, S.DINODE_CORE_V2).astype(np.int64)

    def _columns(
        self,
        raw: npt.NDArray[np.uint8],
        idx: Array,
        table: dict[str, Any],
        ino: Array,
        position: Array,
        row_base: int,
        problems: list[ParserError],
    ) -> dict[str, Any]:
        sb = self.sb
        isz = sb.inode_size
        n = len(idx)
        lit = self._literal(table["di_version"])
        forkoff = table["di_forkoff"].astype(np.int64) * 8
        bad_fork = forkoff >= isz - lit
        if bad_fork.any():
            problems.append(
                DamagedError(
                    "inode",
                    None,
                    f"{int(bad_fork.sum())} inode(s) with an attribute fork offset past the "
                    f"inode (first: inode {int(ino[bad_fork][0])}); their attribute forks skipped",
                )
            )
            forkoff = np.where(bad_fork, 0, forkoff)
        data_size = np.where(forkoff > 0, forkoff, isz - lit)
        attr_at = lit + forkoff
        attr_size = np.where(forkoff > 0, isz - attr_at, 0)
        big = np.zeros(n, bool)
        if sb.nrext64:
            flags2 = _be(raw.reshape(-1), idx * isz + 120, 8)
            big = (flags2 & 0x10) != 0
        nextents = np.where(
            big, table["di_big_nextents"].astype(np.int64), table["di_nextents"].astype(np.int64)
        )
        anextents = np.where(
            big, table["di_nextents"].astype(np.int64), table["di_anextents"].astype(np.int64)
        )
        fmt = table["di_format"]
        afmt = table["di_aformat"]
        data_runs = self._extent_list(
            raw, idx, fmt == S.FMT_EXTENTS, lit, data_size, nextents, ino, row_base, problems
        )
        attr_runs = self._extent_list(
            raw,
            idx,
            (afmt == S.FMT_EXTENTS) & (forkoff > 0),
            attr_at,
            attr_size,
            anextents,
            ino,
            row_base,
            problems,
        )
        mode = table["di_mode"]
        is_dir = (mode & S.S_IFMT) == S.S_IFDIR
        keep = (
            (fmt == S.FMT_BTREE)
            | ((afmt == S.FMT_BTREE) & (forkoff > 0))
            | (is_dir & (fmt == S.FMT_LOCAL))
        )
        kept_rows = np.flatnonzero(keep)
        return {
            "ino": ino.astype(np.uint64),
            "position": position,
            "mode": mode.astype(np.uint16),
            "format": fmt.astype(np.uint8),
            "aformat": np.where(forkoff > 0, afmt, 0).astype(np.uint8),
            "size": table["di_size"].astype(np.int64),
            "nlink": table["di_nlink"].astype(np.uint32),
            "flags": table["di_flags"].astype(np.uint16),
            "kept_rows": kept_rows + row_base,
            "kept": raw[idx[kept_rows]],
            "data_runs": data_runs,
            "attr_runs": attr_runs,
        }

    def _extent_list(
        self,
        raw: npt.NDArray[np.uint8],
        idx: Array,
        mask: npt.NDArray[np.bool_],
        fork_at: Array,
        fork_size: Array,
        count: Array,
        ino: Array,
        row_base: int,
        problems: list[ParserError],
    ) -> ForkRuns:
        """The extent records in the forks of the ``mask`` inodes, decoded in bulk."""
        sel = np.flatnonzero(mask)
        if not len(sel):
            return ForkRuns.empty()
        room = fork_size[sel] // S.BMBT_REC_SIZE
        n = count[sel]
        over = (n > room) | (n < 0)
        for i in np.flatnonzero(over)[:5].tolist():
            problems.append(
                DamagedError(
                    "inode",
                    None,
                    f"inode {int(ino[sel[i]])}: {int(n[i])} extents claimed, {int(room[i])} fit "
                    "in the fork; cut",
                )
            )
        n = np.clip(n, 0, room)
        rows = np.repeat(sel, n)
        slot = _ragged(np.zeros(len(sel), np.int64), n)
        at = idx[rows] * raw.shape[1] + np.repeat(fork_at[sel], n) + slot * S.BMBT_REC_SIZE
        flat = raw.reshape(-1)
        words = np.ascontiguousarray(flat[at[:, None] + np.arange(16)]).view(">u8")
        return self._decode_bmbt(
            words[:, 0],
            words[:, 1],
            rows + row_base,
            lambda r: f"inode {int(ino[r - row_base])}",
            problems,
        )

    def _decode_bmbt(
        self,
        l0: Any,
        l1: Any,
        rows: Array,
        owner: Callable[[int], str],
        problems: list[ParserError],
    ) -> ForkRuns:
        """Extent records (two big-endian 64-bit words each) as runs; runs outside the
        filesystem are dropped with a problem."""
        l0 = np.asarray(l0, dtype=np.uint64)
        l1 = np.asarray(l1, dtype=np.uint64)
        unwritten = (l0 >> np.uint64(63)).astype(bool)
        logical = ((l0 >> np.uint64(9)) & np.uint64(S.BMBT_STARTOFF_MASK)).astype(np.int64)
        startblock = (((l0 & np.uint64(0x1FF)) << np.uint64(43)) | (l1 >> np.uint64(21))).astype(
            np.int64
        )
        length = (l1 & np.uint64(S.BMBT_LEN_MASK)).astype(np.int64)
        physical, ok = self.fsblocks_to_bytes(startblock, length)
        if not ok.all():
            bad_rows = np.unique(rows[~ok])
            for r in bad_rows[:5].tolist():
                problems.append(
                    DamagedError(
                        "inode", None, f"{owner(r)}: an extent lies outside the filesystem"
                    )
                )
        return ForkRuns(rows[ok], logical[ok], physical[ok], length[ok], unwritten[ok])

    def fork_btrees(
        self, inodes: InodeTable, rows: Array, fork: int
    ) -> tuple[ForkRuns, Array, Array, list[ParserError]]:
        """The extents of the btree-format forks (0 data, 1 attr) of inodes ``rows``, and the
        bmbt blocks (inode row, byte offset), walked level by level from the roots in the
        inodes: every inode's tree at once, one read of each level's blocks.

        Bounded: at most :data:`~parsers.xfs.structs.MAX_BTREE_LEVELS` levels, every pointer
        inside the filesystem, no block twice (a pointer to a block already walked, in this
        inode's tree or another's, is a cycle: reported and not followed)."""
        sb = self.sb
        bs = self.block_size
        isz = sb.inode_size
        problems: list[ParserError] = []
        ino = inodes.ino
        empty = (ForkRuns.empty(), _EMPTY, _EMPTY, problems)
        k = np.searchsorted(inodes.kept_rows, rows)
        k = np.minimum(k, max(len(inodes.kept_rows) - 1, 0))
        if not len(rows) or not len(inodes.kept_rows):
            return empty
        rows = rows[inodes.kept_rows[k] == rows]
        k = np.searchsorted(inodes.kept_rows, rows)
        recs = inodes.kept[k]
        flat = recs.reshape(-1)
        base = np.arange(len(rows), dtype=np.int64) * isz
        lit = self._literal(recs[:, 4])
        forkoff = recs[:, 82].astype(np.int64) * 8
        forkoff = np.where(forkoff >= isz - lit, 0, forkoff)  # reported when read
        if fork == 0:
            at, size = lit, np.where(forkoff > 0, forkoff, isz - lit)
        else:
            at, size = lit + forkoff, isz - lit - forkoff
        fits = (size >= S.BMDR_HEADER + 16) & (at + size <= isz)
        here = base + np.where(fits, at, 0)
        level = _be(flat, here, 2)
        numrecs = _be(flat, here + 2, 2)
        maxrecs = np.maximum((size - S.BMDR_HEADER) // 16, 0)
        ok = fits & (level >= 1) & (level < S.MAX_BTREE_LEVELS) & (numrecs <= maxrecs)
        for r in rows[~ok][:5].tolist():
            problems.append(
                DamagedError("bmbt", None, f"inode {int(ino[r])}: a bmbt root that does not fit")
            )
        count = np.where(ok, numrecs, 0)
        slot = _ragged(np.zeros(len(rows), np.int64), count)
        owner = np.repeat(np.arange(len(rows)), count)
        ptr_at = here[owner] + S.BMDR_HEADER + maxrecs[owner] * 8 + slot * 8
        f_row = rows[owner]
        f_ptr = _be(flat, ptr_at, 8)
        f_level = level[owner] - 1
        magic = S.BTREE_MAGIC[("bmbt", sb.version)]
        hs = S.LONG_HEADER[sb.version]
        mr = (bs - hs) // 16
        seen = _EMPTY
        block_rows: list[Array] = []
        block_offsets: list[Array] = []
        rec_rows: list[Array] = []
        l0s: list[Array] = []
        l1s: list[Array] = []

        def report(bad_rows: Array, message: str, offsets: Array | None = None) -> None:
            for i, r in enumerate(bad_rows[:5].tolist()):
                at_ = None if offsets is None else int(offsets[i])
                problems.append(DamagedError("bmbt", at_, f"inode {int(ino[r])}: {message}"))

        for _ in range(S.MAX_BTREE_LEVELS):
            if not len(f_row):
                break
            offsets, inside = self.fsblocks_to_bytes(f_ptr, np.ones(len(f_ptr), np.int64))
            report(f_row[~inside], "a bmbt pointer outside the filesystem")
            f_row, offsets, f_level = f_row[inside], offsets[inside], f_level[inside]
            # A block reached twice (in this tree or another's, or at this level twice).
            again = np.isin(offsets, seen)
            _, first = np.unique(offsets, return_index=True)
            twice = np.ones(len(offsets), dtype=bool)
            twice[first] = False
            again |= twice
            report(
                f_row[again], "a bmbt block reached twice (a cycle); not followed", offsets[again]
            )
            f_row, offsets, f_level = f_row[~again], offsets[~again], f_level[~again]
            seen = np.union1d(seen, offsets)
            next_row: list[Array] = []
            next_ptr: list[Array] = []
            next_level: list[Array] = []
            for lo in range(0, len(offsets), BTREE_WINDOW):
                part = slice(lo, lo + BTREE_WINDOW)
                buf = self.read_many(offsets[part], bs).reshape(-1)
                starts = np.arange(len(offsets[part]), dtype=np.int64) * bs
                got_magic = _be(buf, starts, 4)
                got_level = _be(buf, starts + 4, 2)
                nr = _be(buf, starts + 6, 2)
                row_p, level_p = f_row[part], f_level[part]
                good = (got_magic == magic) & (got_level == level_p)
                report(
                    row_p[~good],
                    "a block that is not the bmbt block expected",
                    offsets[part][~good],
                )
                report(row_p[good & (nr > mr)], "a bmbt block with more records than fit; cut")
                nr = np.where(good, np.minimum(nr, mr), 0)
                block_rows.append(row_p[good])
                block_offsets.append(offsets[part][good])
                leaf = good & (level_p == 0)
                n_leaf = np.where(leaf, nr, 0)
                which = np.repeat(np.arange(len(nr)), n_leaf)
                pos = starts[which] + hs + _ragged(np.zeros(len(nr), np.int64), n_leaf) * 16
                rec_rows.append(row_p[which])
                l0s.append(_be(buf, pos, 8))
                l1s.append(_be(buf, pos + 8, 8))
                n_node = np.where(good & (level_p > 0), nr, 0)
                which = np.repeat(np.arange(len(nr)), n_node)
                pos = starts[which] + hs + mr * 8 + _ragged(np.zeros(len(nr), np.int64), n_node) * 8
                next_row.append(row_p[which])
                next_ptr.append(_be(buf, pos, 8))
                next_level.append(level_p[which] - 1)
            f_row = np.concatenate(next_row) if next_row else _EMPTY
            f_ptr = np.concatenate(next_ptr) if next_ptr else _EMPTY
            f_level = np.concatenate(next_level) if next_level else _EMPTY
        report(f_row, "a bmbt deeper than any the kernel builds; cut")
        runs = self._decode_bmbt(
            np.concatenate(l0s) if l0s else _EMPTY,
            np.concatenate(l1s) if l1s else _EMPTY,
            np.concatenate(rec_rows) if rec_rows else _EMPTY,
            lambda r: f"inode {int(ino[r])}",
            problems,
        )
        return (
            runs,
            np.concatenate(block_rows) if block_rows else _EMPTY,
            np.concatenate(block_offsets) if block_offsets else _EMPTY,
            problems,
        )

    # -- directories ---------------------------------------------------------------------

    def shortform_entries(self, inodes: InodeTable, rows: Array) -> BulkEntries:
        """Entries of short-form directories (in the inode's data fork), decoded together:
        one numpy step per entry position."""
        sb = self.sb
        isz = sb.inode_size
        problems: list[ParserError] = []
        k = np.searchsorted(inodes.kept_rows, rows)
        k = np.minimum(k, max(len(inodes.kept_rows) - 1, 0))
        has = (inodes.kept_rows[k] == rows) if len(inodes.kept_rows) else np.zeros(0, bool)
        rows, k = rows[has], k[has]
        if not len(rows):
            return BulkEntries.concat([])
        buf = inodes.kept[k].reshape(-1)
        base = np.arange(len(rows), dtype=np.int64) * isz
        version = inodes.kept[k][:, 4]
        lit = self._literal(version)
        forkoff = inodes.kept[k][:, 82].astype(np.int64) * 8
        forkoff = np.where(forkoff >= isz - lit, 0, forkoff)
        fork_end = base + lit + np.where(forkoff > 0, forkoff, isz - lit)
        count = buf[base + lit].astype(np.int64)
        i8 = buf[base + lit + 1].astype(np.int64)
        ino_size = np.where(i8 > 0, 8, 4)
        pos = base + lit + 2 + ino_size
        ftype = 1 if sb.has_ftype else 0
        out_dir, out_ino, out_at, out_len = [], [], [], []
        alive = np.arange(len(rows))
        for j in range(256):
            alive = alive[count[alive] > j]
            if not len(alive):
                break
            p = pos[alive]
            fits = p + 3 <= fork_end[alive]
            namelen = np.where(fits, buf[np.minimum(p, len(buf) - 1)], 0).astype(np.int64)
            ino_at = p + 3 + namelen + ftype
            end = ino_at + ino_size[alive]
            fits &= (end <= fork_end[alive]) & (namelen > 0)
            for r in rows[alive[~fits]][:5].tolist():
                problems.append(
                    DamagedError(
                        "directory",
                        None,
                        f"short-form directory inode {int(inodes.ino[r])}: entry {j} runs past "
                        "the fork; rest skipped",
                    )
                )
            alive = alive[fits]
            p, namelen, ino_at = p[fits], namelen[fits], ino_at[fits]
            isz_here = ino_size[alive]
            value = np.where(
                isz_here == 8,
                _be(buf, np.minimum(ino_at, len(buf) - 8), 8),
                _be(buf, np.minimum(ino_at, len(buf) - 4), 4),
            )
            out_dir.append(rows[alive])
            out_ino.append(value)
            out_at.append(p + 3)
            out_len.append(namelen)
            pos[alive] = ino_at + isz_here
        if not out_dir:
            return BulkEntries.concat([])
        at = np.concatenate(out_at)
        lengths = np.concatenate(out_len)
        order = np.argsort(np.concatenate(out_dir), kind="stable")
        at, lengths = at[order], lengths[order]
        return BulkEntries(
            np.concatenate(out_dir)[order],
            np.concatenate(out_ino)[order].astype(np.uint64),
            _gather_names(buf, at, lengths),
            lengths.astype(np.uint16),
            problems,
        )

    def block_entries(self, runs: ForkRuns) -> BulkEntries:
        """Entries of every directory data block (block, leaf and node directories, and
        btree ones) among ``runs`` (the data forks of directories, in row order), decoded in
        windows of :data:`DIR_WINDOW_BYTES`: one numpy step per entry position."""
        sb = self.sb
        bs = self.block_size
        fpd = 1 << sb.dir_block_log  # filesystem blocks per directory block
        leaf_block = S.DIR2_LEAF_OFFSET // bs
        # Every filesystem block of the data space, in (row, logical) order.
        limit = np.clip(leaf_block - runs.logical, 0, None)
        length = np.minimum(runs.length, limit)
        sel = np.flatnonzero(length > 0)
        count = length[sel]
        problems: list[ParserError] = []
        # Bounded by the filesystem's size: directories that claim more blocks between them
        # than it has are damaged (or share blocks): cut.
        total = np.cumsum(count)
        if len(total) and int(total[-1]) > sb.data_blocks:
            problems.append(
                DamagedError(
                    "directory",
                    None,
                    f"directories claim {int(total[-1])} data blocks, more than the "
                    f"filesystem's {sb.data_blocks}; cut there",
                )
            )
            keep = total <= sb.data_blocks
            sel, count = sel[keep], count[keep]
        row = np.repeat(runs.row[sel], count)
        offs = _ragged(np.zeros(len(sel), np.int64), count)
        logical = np.repeat(runs.logical[sel], count) + offs
        physical = np.repeat(runs.physical[sel], count) + offs * bs
        # Only whole directory blocks: each of its fsblocks present, in order.
        dirblock = logical >> sb.dir_block_log
        if fpd > 1:
            key = (row << 40) | dirblock
            _, first, counts = np.unique(key, return_index=True, return_counts=True)
            whole = first[(counts == fpd) & ((logical[first] & (fpd - 1)) == 0)]
            take = _ragged(whole, np.full(len(whole), fpd))
            row, physical = row[take], physical[take]
        # A block two directories claim is decoded once, for the first (each block's entries
        # once: the work follows the filesystem's size).
        firsts = physical[::fpd]
        _, once = np.unique(firsts, return_index=True)
        if len(once) < len(firsts):
            problems.append(
                DamagedError(
                    "directory",
                    None,
                    f"{len(firsts) - len(once)} directory block(s) claimed by more than one "
                    "directory; decoded for the first only",
                )
            )
            once = np.sort(once)
            take = _ragged(once * fpd, np.full(len(once), fpd))
            row, physical = row[take], physical[take]
        n_blocks = len(row) // fpd
        dir_rows = row[::fpd] if fpd > 1 else row
        dbs = bs * fpd
        window = max(1, DIR_WINDOW_BYTES // dbs)
        parts = []
        for lo in range(0, n_blocks, window):
            hi = min(lo + window, n_blocks)
            # Padding: a broken chain may look a few bytes past the last block.
            buf = np.concatenate(
                (self.read_many(physical[lo * fpd : hi * fpd], bs).reshape(-1), _PAD)
            )
            parts.append(self._decode_dir_blocks(buf, dir_rows[lo:hi], dbs))
            self.progress("directory blocks", hi, n_blocks)
        entries = BulkEntries.concat(parts)
        entries.problems[:0] = problems
        return entries

    def _decode_dir_blocks(
        self, buf: npt.NDArray[np.uint8], dir_rows: Array, dbs: int
    ) -> BulkEntries:
        sb = self.sb
        problems: list[ParserError] = []
        n = len(dir_rows)
        starts = np.arange(n, dtype=np.int64) * dbs
        magic = _be(buf, starts, 4)
        is_block = magic == S.DIR2_BLOCK_MAGIC[sb.version]
        is_data = magic == S.DIR2_DATA_MAGIC[sb.version]
        bad = ~(is_block | is_data)
        if bad.any():
            problems.append(
                DamagedError(
                    "directory",
                    None,
                    f"{int(bad.sum())} directory data block(s) without a data magic; skipped",
                )
            )
        hdr = S.DIR2_DATA_HEADER[sb.version]
        tail_count = _be(buf, starts + dbs - 8, 4)
        max_leaf = (dbs - hdr - 8) // S.DIR2_LEAF_ENTRY_SIZE
        bad_tail = is_block & (tail_count > max_leaf)
        if bad_tail.any():
            problems.append(
                DamagedError("directory", None, "a block directory's leaf count does not fit")
            )
        end = np.where(is_block, dbs - 8 - tail_count * 8, dbs)
        end = np.where(bad | bad_tail, 0, end) + starts
        ftype = 1 if sb.has_ftype else 0
        q_ok = end > starts + hdr
        q = (starts + hdr)[q_ok]
        blk = np.flatnonzero(q_ok)
        found_q: list[Array] = []
        found_b: list[Array] = []
        broken = 0
        for _ in range(dbs // 8 + 1):
            if not len(q):
                break
            tag = _be(buf, q, 2)
            free = tag == S.DIR2_DATA_FREE_TAG
            free_len = _be(buf, q + 2, 2)
            namelen = buf[q + 8].astype(np.int64)
            size = np.where(free, free_len, (8 + 1 + namelen + ftype + 2 + 7) & ~7)
            nq = q + size
            good = (size >= 8) & (size % 8 == 0) & (nq <= end[blk])
            broken += int((~good).sum())
            entry = good & ~free
            found_q.append(q[entry])
            found_b.append(blk[entry])
            go_on = good & (nq < end[blk])
            q, blk = nq[go_on], blk[go_on]
        if broken:
            problems.append(
                DamagedError(
                    "directory",
                    None,
                    f"{broken} directory data block(s) with a bad entry or free region; the rest "
                    "of each skipped",
                )
            )
        q = np.concatenate(found_q) if found_q else _EMPTY
        blk = np.concatenate(found_b) if found_b else _EMPTY
        order = np.argsort(q, kind="stable")
        q, blk = q[order], blk[order]
        namelen = buf[q + 8].astype(np.int64)
        ino = _be(buf, q, 8)
        first = buf[q + 9]
        second = buf[np.minimum(q + 10, len(buf) - 1)]
        dot = (first == 0x2E) & ((namelen == 1) | ((namelen == 2) & (second == 0x2E)))
        keep = ~dot & (namelen > 0)
        q, blk, namelen, ino = q[keep], blk[keep], namelen[keep], ino[keep]
        return BulkEntries(
            dir_rows[blk],
            ino.astype(np.uint64),
            _gather_names(buf, q + 9, namelen),
            namelen.astype(np.uint16),
            problems,
        )

    # -- the log -------------------------------------------------------------------------

    def log_is_clean(self) -> bool | None:
        """Whether the internal log ends with an unmount record (the filesystem was unmounted
        cleanly), found as the kernel finds it: the head is where the cycle number stamped in
        each 512-byte log block drops (a binary search, a few reads), and the last record
        header before it must hold one operation, flagged as an unmount. None where that
        cannot be told (no internal log, no record header found)."""
        sb = self.sb
        if not sb.log_start:
            return None
        start, ok = self.fsblocks_to_bytes(np.array([sb.log_start]), np.array([sb.log_blocks]))
        if not ok.all():
            return None
        log_at = int(start[0])
        n_bbs = min(sb.log_blocks * self.block_size, self.device_size - log_at) // S.LOG_BB
        if n_bbs < 2:
            return None

        def word(bb: int, at: int = 0) -> int:
            return int.from_bytes(self.read(log_at + bb * S.LOG_BB + at, 4), "big")

        def cycle(bb: int) -> int:
            return word(bb, 4) if word(bb) == S.LOG_HEADER_MAGIC else word(bb)

        first = cycle(0)
        last = cycle(n_bbs - 1)
        if last == first:
            head = n_bbs  # written to the end in this cycle (or wrapped exactly)
        else:
            lo, hi = 0, n_bbs - 1  # cycle(lo) == first, cycle(hi) != first
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if cycle(mid) == first:
                    lo = mid
                else:
                    hi = mid
            head = hi
        # The last record header before the head, at most one biggest record back.
        for bb in range(head - 1, max(head - 1 - S.LOG_MAX_RECORD_BBS, -1), -1):
            if word(bb) != S.LOG_HEADER_MAGIC:
                continue
            header = S.LogRecordHeader.parse(self.read(log_at + bb * S.LOG_BB, S.LOG_BB))
            if header.h_num_logops != 1:
                return False
            header_bbs = 1
            if header.h_version & 2 and header.h_size > S.LOG_HEADER_CYCLE_SIZE:
                header_bbs = -(-header.h_size // S.LOG_HEADER_CYCLE_SIZE)
            op_at = log_at + ((bb + header_bbs) % n_bbs) * S.LOG_BB
            flags = self.read(op_at + 9, 1)[0]
            return bool(flags & S.LOG_UNMOUNT_TRANS)
        return None

    # -- free space ----------------------------------------------------------------------

    def free_extents(self, agno: int, bnobt: BtreeWalk) -> tuple[Array, Array]:
        """The free extents of an AG's bnobt records as byte ranges ``(starts, ends)``."""
        recs = np.ascontiguousarray(bnobt.records).view(S.ALLOC_REC_DTYPE).reshape(-1)
        start = recs["startblock"].astype(np.int64)
        count = recs["blockcount"].astype(np.int64)
        ok = (count > 0) & (start + count <= self.ag_length(agno))
        if not ok.all():
            self._problems.append(
                DamagedError(
                    "bnobt", None, f"AG {agno}: {int((~ok).sum())} free extent(s) outside the AG"
                )
            )
        base = self.ag_start(agno)
        bs = self.block_size
        return base + start[ok] * bs, base + (start[ok] + count[ok]) * bs


def describe(fs: XFS) -> dict[str, Any]:
    """What ``bmap info`` shows about an XFS filesystem."""
    sb = fs.sb
    return {
        "type": "xfs",
        "version": sb.version,
        "label": sb.label,
        "uuid": sb.uuid,
        "block_size": sb.block_size,
        "sector_size": sb.sector_size,
        "inode_size": sb.inode_size,
        "size": sb.size,
        "blocks": sb.data_blocks,
        "free_blocks": sb.free_blocks,
        "inodes": sb.icount,
        "free_inodes": sb.ifree,
        "ag_count": sb.ag_count,
        "ag_blocks": sb.ag_blocks,
        "log": "internal" if sb.log_start else "external",
        "log_blocks": sb.log_blocks,
        "realtime_blocks": sb.realtime_blocks,
        "features": list(sb.features),
    }
