"""FAT12/16/32, exFAT, NTFS, ISO9660 and HFS+ through The Sleuth Kit (pytsk3): every
structure, directory and file of a filesystem as map lines.

This is the only module that imports pytsk3. TSK reads the volume through
:class:`VolumeImage`, an ``Img_Info`` over the volume's own stream view: it sees a partition,
an LV or a whole disk wherever it lies, and never a byte outside it (a read past the end is
cut short there).

What it writes, in the volume's coordinates placed through ``volume.placement``:

- ``f`` and ``d`` lines for every file's and directory's non-resident data runs, with their
  offsets inside the file, under every name TSK lists; NTFS alternate data streams as
  ``path:stream``, an HFS+ resource fork as ``path/..namedfork/rsrc``; NTFS resident data
  (``$DATA`` and a directory's ``$INDEX_ROOT``) as the value's bytes inside its MFT record;
  compressed and sparse runs name the stored ranges only; on FAT, exFAT, ISO9660 and HFS+
  runs are clipped to the file's size rounded up to the cluster (an NTFS run list ends at the
  allocated size, which is the file's);
- ``m`` lines for each filesystem's own structures (decoded by hand from its boot sector,
  volume descriptors or volume header), for NTFS's system files and each file's MFT record,
  and for HFS+'s special files (catalog, extents, attributes, allocation, startup) and journal;
- ``u unallocated`` from the filesystem's own allocation table (the FAT, the exFAT allocation
  bitmap, NTFS's ``$Bitmap``, the HFS+ allocation file), decoded with numpy; ``u
  unreferenced`` for what is neither claimed nor free; ``u fat-tail`` (``exfat-tail``,
  ``ntfs-tail``) for the sectors after the last whole cluster; ``u volume-slack`` after the
  filesystem's end.

pytsk3 has no block walk, so the allocation tables are read here, a chunk at a time: the
FAT and the exFAT bitmap from the volume, NTFS's ``$Bitmap`` and the HFS+ allocation file
through TSK.

Deleted entries TSK still lists are findings (a count and the first few paths); their space is
never claimed. Files TSK finds under its virtual ``$OrphanFiles`` directory whose metadata is
still allocated are listed as ``/$OrphanFiles/<name>``, as the ext layer lists its orphans.
An error inside TSK is a finding naming the structure; a filesystem TSK cannot open leaves its
partition line and a finding. TSK runs in a child process (:mod:`bmap.layers.isolate`): a crash
or a hang of its C code is a finding too, and the volume is mapped as one TSK refuses. What
its C code is known to trust (UFS counts and offsets, an ISO9660 root that is also its orphan
directory) is checked first and shown to it harmless (:func:`_ufs_shown_to_tsk`). The walk is
bounded: each directory is read once (by TSK's metadata address), at most :data:`MAX_DEPTH`
deep, at most one entry per 32 bytes of the volume, at most one run per block of it; names and
runs go to the builder in windows.

Registered in :data:`bmap.layers.registry.CONTENT_MAPPERS` for vfat, exfat, ntfs, iso9660,
hfsplus and ufs.
"""

from __future__ import annotations

import bisect
import collections
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytsk3

from bmap.errors import BUDGET_SOURCE, Finding, Severity
from bmap.images import RangeStream
from bmap.images.streams import MappedReader, PositionalReader
from bmap.layers import isolate
from bmap.layers.content import Volume
from bmap.layers.fswalk import ORPHAN_DIR, FilesystemWalk
from bmap.model.blockmap import MapBuilder, PathColumn
from bmap.model.intervals import subtract, union
from parsers import hfsplus, ufs
from parsers.errors import ParserError

Array = npt.NDArray[np.int64]

#: Names (with their runs) sent to the builder at a time.
NAME_WINDOW = 1 << 13
#: Directory levels walked at most: deeper ones are a finding (a hostile image can nest
#: without end, or loop through names TSK does not recognise as a loop).
MAX_DEPTH = 128
#: Deleted entries named in the finding; the rest are counted.
DELETED_SHOWN = 10
#: Runs per attribute taken at most (a run covers at least one block, so a volume of n blocks
#: has at most n runs worth taking; this bounds a hostile run list further).
MAX_RUNS = 1 << 22
#: Runs of the exFAT allocation bitmap kept to read it (it holds a bit per cluster: 512 MiB
#: at most, in as many runs as that has clusters at worst; a real one has a run or two).
MAX_BITMAP_RUNS = 1 << 16
#: Bytes of a FAT or an allocation bitmap decoded at a time.
TABLE_CHUNK = 1 << 20
#: Runs held before the window goes to the builder, whatever the names.
RUN_WINDOW = 1 << 16
#: Bytes of the MFT read at a time for resident values.
MFT_CHUNK = 1 << 18
#: The smallest directory entry of the formats here (FAT, exFAT): bounds the entries a volume
#: can really hold.
MIN_ENTRY = 32

_ALLOC = int(pytsk3.TSK_FS_META_FLAG_ALLOC)
_NAME_UNALLOC = int(pytsk3.TSK_FS_NAME_FLAG_UNALLOC)
_NONRES = int(pytsk3.TSK_FS_ATTR_NONRES)
_RES = int(pytsk3.TSK_FS_ATTR_RES)
_RUN_SKIP = int(pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE) | int(pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER)
_DIR = int(pytsk3.TSK_FS_META_TYPE_DIR)
_REG = int(pytsk3.TSK_FS_META_TYPE_REG)
_VIRT = (int(pytsk3.TSK_FS_META_TYPE_VIRT), int(pytsk3.TSK_FS_META_TYPE_VIRT_DIR))
_DATA_TYPES = (int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT), int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA))
_IDXROOT = int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_IDXROOT)
_IDXALLOC = int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_IDXALLOC)
#: NTFS attribute type names, for the ``path:name:$TYPE`` of other non-resident attributes.
_NTFS_TYPE_NAMES = {
    0x10: "$STANDARD_INFORMATION",
    0x20: "$ATTRIBUTE_LIST",
    0x30: "$FILE_NAME",
    0x40: "$OBJECT_ID",
    0x50: "$SECURITY_DESCRIPTOR",
    0x60: "$VOLUME_NAME",
    0x70: "$VOLUME_INFORMATION",
    0x80: "$DATA",
    0x90: "$INDEX_ROOT",
    0xA0: "$INDEX_ALLOCATION",
    0xB0: "$BITMAP",
    0xC0: "$REPARSE_POINT",
    0xD0: "$EA_INFORMATION",
    0xE0: "$EA",
    0x100: "$LOGGED_UTILITY_STREAM",
}
#: NTFS system files by MFT record number: the kind of their ``m`` lines.
_NTFS_SYSTEM = {
    0: "mft",
    1: "mft-mirror",
    2: "ntfs-log",
    3: "ntfs-volume",
    4: "ntfs-attrdef",
    6: "ntfs-bitmap",
    7: "ntfs-boot",
    8: "ntfs-badclus",
    9: "ntfs-secure",
    10: "ntfs-upcase",
    11: "ntfs-extend",
}
#: HFS+ special files by catalog node ID (TSK's inode numbers): the kind of their ``m`` lines.
_HFS_SYSTEM = {
    3: "hfs-extents",
    4: "hfs-catalog",
    5: "hfs-badblocks",
    6: "hfs-allocation",
    7: "hfs-startup",
    8: "hfs-attributes",
}
#: HFS+ journal files in the root directory (hidden from the Finder), by name.
_HFS_JOURNAL_FILES = {b".journal": "hfs-journal", b".journal_info_block": "hfs-journal-info"}
_HFS_DATA = (int(pytsk3.TSK_FS_ATTR_TYPE_HFS_DATA), int(pytsk3.TSK_FS_ATTR_TYPE_HFS_DEFAULT))
_HFS_RSRC = int(pytsk3.TSK_FS_ATTR_TYPE_HFS_RSRC)
_HFS_EXT_ATTR = int(pytsk3.TSK_FS_ATTR_TYPE_HFS_EXT_ATTR)
#: A resource fork's name, as macOS names it.
_HFS_RSRC_SUFFIX = b"/..namedfork/rsrc"
_COMP = int(pytsk3.TSK_FS_ATTR_COMP)
#: UFS: a file's indirect blocks, which TSK lists as an attribute of their own.
_UNIX_INDIR = int(pytsk3.TSK_FS_ATTR_TYPE_UNIX_INDIR)
#: NTFS attributes that are always resident and hold no data of the file's: skipped early.
_ALWAYS_RESIDENT = frozenset((0x10, 0x30, 0x60, 0x70))
_FAT_LABEL_SUFFIX = b"(Volume Label Entry)"

#: The classes of the objects a walk makes, by code.
_CLASSES: list[tuple[str, str]] = [
    ("d", "dir"),
    ("f", "file"),
    ("m", "mft-record"),
    ("m", "ntfs-attribute"),
    *(("m", kind) for kind in dict.fromkeys(_NTFS_SYSTEM.values())),
    ("m", "exfat-bitmap"),
    ("m", "exfat-upcase"),
    *(("m", kind) for kind in _HFS_SYSTEM.values()),
    *(("m", kind) for kind in _HFS_JOURNAL_FILES.values()),
    ("m", "hfs-xattr"),
    ("m", "ufs-indirect"),
]
_CODE = {cls: code for code, cls in enumerate(_CLASSES)}
_DIR_CODE, _FILE_CODE = _CODE["d", "dir"], _CODE["f", "file"]
_RECORD_CODE, _ATTR_CODE = _CODE["m", "mft-record"], _CODE["m", "ntfs-attribute"]
#: exFAT's own structures that TSK lists as files of the root directory.
_EXFAT_SPECIAL = {b"$ALLOC_BITMAP": "exfat-bitmap", b"$UPCASE_TABLE": "exfat-upcase"}


class TskError(Exception):
    """What TSK raised (pytsk3 raises ``IOError`` for everything), with where it was."""


class VolumeImage(pytsk3.Img_Info):  # type: ignore[misc]
    """A volume's stream as TSK's image: TSK never reads outside it. ``overlay`` maps byte
    offsets to bytes TSK is shown there instead of the volume's (a hostile field made
    harmless); the volume itself is never written."""

    def __init__(self, stream: RangeStream, overlay: dict[int, bytes] | None = None) -> None:
        self._stream = stream
        self._size = stream.size
        self._overlay = sorted((overlay or {}).items())
        if any(len(value) > _OVERLAY_PIECE for _, value in self._overlay):
            raise ValueError(f"an overlay piece is longer than {_OVERLAY_PIECE} bytes")
        self._overlay_at = [at for at, _ in self._overlay]
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size <= 0 or offset >= self._size:
            return b""
        data = self._stream.pread(offset, min(size, self._size - offset))
        if self._overlay:
            end = offset + len(data)
            first = bisect.bisect_left(self._overlay_at, offset - _OVERLAY_PIECE)
            patched = None
            for at, value in self._overlay[first:]:
                if at >= end:
                    break
                lo, hi = max(at, offset), min(at + len(value), end)
                if lo < hi:
                    patched = patched if patched is not None else bytearray(data)
                    patched[lo - offset : hi - offset] = value[lo - at : hi - at]
            if patched is not None:
                data = bytes(patched)
        return data

    def get_size(self) -> int:
        return self._size

    def close(self) -> None:
        """Nothing to close: the stream belongs to the volume."""


# -- each filesystem's own structures ------------------------------------------------------


@dataclass
class Layout:
    """What a filesystem's own headers say, in bytes from the volume's start."""

    cluster: int
    """The allocation unit: runs are clipped to an attribute's size rounded up to it."""
    fs_end: int
    """Where the filesystem ends (what follows is volume slack)."""
    structures: list[tuple[str, int, int]] = field(default_factory=list)
    """``(kind, start, end)`` of each structure, each its own line with offsets from 0."""
    free: tuple[Array, Array] | None = None
    """Free byte ranges from the allocation table (None: the format has none)."""
    tail: tuple[int, int] | None = None
    """FAT: sectors after the last whole cluster, inside the filesystem's size."""
    heap: int = 0
    """exFAT: where the cluster heap starts."""
    clusters: int = 0
    """exFAT: clusters in the heap."""
    directories: list[tuple[int, int]] = field(default_factory=list)
    """ISO9660: every directory's extent, from the path tables of every descriptor (the
    tree TSK does not read, Joliet's or the primary one, is named from these)."""
    after_walk: list[tuple[str, int, int]] = field(default_factory=list)
    """``(kind, start, end)`` named after the walk where no line holds them yet (HFS+: the
    special files' first extents and the journal, which TSK may also list as files)."""
    whole_blocks: tuple[int, int] | None = None
    """UFS: ``(block size, length)``: a file longer than the length (its direct blocks) ends in
    a whole block, not in fragments, so its runs are clipped to whole blocks."""
    msb_first: bool = False
    """The allocation bitmap numbers block 0 by the most significant bit of byte 0 (HFS+)."""
    path_entries: int = 0
    """ISO9660: entries of the longest path table (its directories, as a reader sees them)."""
    skip_root: bool = False
    """FAT12/16: the root directory is the fixed region ``fat-root-dir``, not a ``d`` line."""
    findings: list[tuple[Severity, int | None, str]] = field(default_factory=list)


def _u(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def _free_runs(free: npt.NDArray[np.bool_]) -> tuple[Array, Array]:
    """``[first, end)`` index runs of the True items."""
    edges = np.diff(np.concatenate(([0], free.view(np.int8), [0])))
    return np.flatnonzero(edges == 1).astype(np.int64), np.flatnonzero(edges == -1).astype(np.int64)


def _joined(starts: list[Array], ends: list[Array]) -> tuple[Array, Array]:
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return union(np.concatenate(starts), np.concatenate(ends))


def bitmap_free(
    read: Callable[[int, int], bytes], count: int, msb_first: bool = False
) -> tuple[Array, Array, int]:
    """Runs ``[first, end)`` of clear bits (LSB first, or MSB first) among the first ``count``
    bits of the bitmap ``read(offset, size)`` gives, read :data:`TABLE_CHUNK` bytes at a time;
    and how many bits it held (fewer than ``count`` where it is cut short)."""
    starts, ends = [], []
    done = 0
    while done < count:
        want = min(TABLE_CHUNK, -(-(count - done) // 8))
        data = read(done // 8, want)
        if not data:
            break
        bits = np.unpackbits(
            np.frombuffer(data, dtype=np.uint8), bitorder="big" if msb_first else "little"
        )
        bits = bits[: count - done]
        first, end = _free_runs(bits == 0)
        starts.append(first + done)
        ends.append(end + done)
        done += len(bits)
        if len(data) < want:
            break
    return (*_joined(starts, ends), done)


def fat_free(
    stream: RangeStream, fat_start: int, bits: int, entries: int
) -> tuple[Array, Array, int]:
    """Runs ``[first, end)`` of FAT entries (cluster numbers) from 2 to ``entries`` that hold
    0, read :data:`TABLE_CHUNK` bytes at a time; and how many entries the volume held."""
    per_chunk = TABLE_CHUNK * 8 // bits // 2 * 2  # even: FAT12 packs entries in pairs
    starts, ends = [], []
    done = 0
    while done < entries:
        count = min(per_chunk, entries - done)
        want = -(-count * bits // 8)
        raw = stream.pread(fat_start + done * bits // 8, want)
        if bits == 12:
            raw += bytes(-len(raw) % 3)  # the last entry may sit in a half-used group
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
            even = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
            odd = (b[:, 1] >> 4) | (b[:, 2] << 4)
            table = np.stack((even, odd), axis=1).reshape(-1)
        elif bits == 16:
            table = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2").astype(np.uint32)
        else:
            table = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<u4") & 0x0FFFFFFF
        table = table[: min(count, len(raw) * 8 // bits)]
        free = table == 0
        if done == 0:
            free[:2] = False  # entries 0 and 1 are no clusters
        first, end = _free_runs(free)
        starts.append(first + done)
        ends.append(end + done)
        done += len(table)
        if len(table) < count:
            break
    return (*_joined(starts, ends), done)


def fat_layout(stream: RangeStream) -> Layout:
    """FAT12/16/32 from the boot sector (fatgen103): reserved sectors with the boot sector,
    FSInfo and the backup boot sector, the FATs, the FAT12/16 root directory, free clusters
    from the first FAT."""
    boot = stream.pread(0, 512)
    if len(boot) < 512:
        raise TskError("fat-boot-sector at 0x0: truncated")
    bps = _u(boot, 11, 2)
    spc = boot[13]
    reserved = _u(boot, 14, 2)
    nfats = boot[16]
    root_entries = _u(boot, 17, 2)
    total = _u(boot, 19, 2) or _u(boot, 32, 4)
    fat_size = _u(boot, 22, 2) or _u(boot, 36, 4)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or reserved == 0:
        raise TskError("fat-boot-sector at 0x0: bad BIOS parameter block")
    fat32 = _u(boot, 22, 2) == 0
    root_sectors = -(-root_entries * 32 // bps)
    fat_start = reserved * bps
    root_start = fat_start + nfats * fat_size * bps
    data_start = root_start + root_sectors * bps
    fs_end = min(total * bps, stream.size)
    # Only the clusters inside the volume: a count is bounded by the volume's real size.
    clusters = max(0, (fs_end - data_start) // (spc * bps))
    cluster = spc * bps
    layout = Layout(cluster=cluster, fs_end=fs_end, skip_root=not fat32)
    if total * bps > stream.size:
        layout.findings.append(
            (
                Severity.ERROR,
                0,
                f"fat-boot-sector: the filesystem claims {total * bps:#x} bytes but the volume "
                f"holds {stream.size:#x}; what lies past the end is not read",
            )
        )
    structures = layout.structures
    structures.append(("fat-boot-sector", 0, bps))
    reserved_taken = [(0, bps)]
    if fat32:
        fsinfo = _u(boot, 48, 2)
        backup = _u(boot, 50, 2)
        if 0 < fsinfo < reserved:
            structures.append(("fat-fsinfo", fsinfo * bps, (fsinfo + 1) * bps))
            reserved_taken.append((fsinfo * bps, (fsinfo + 1) * bps))
        if 0 < backup < reserved:
            # The backup boot sector, and the FSInfo copy after it (mkfs.fat writes both).
            structures.append(("fat-boot-sector-backup", backup * bps, (backup + 1) * bps))
            reserved_taken.append((backup * bps, (backup + 1) * bps))
            if backup + fsinfo < reserved and fsinfo:
                at = (backup + fsinfo) * bps
                structures.append(("fat-fsinfo-backup", at, at + bps))
                reserved_taken.append((at, at + bps))
    rest = subtract(
        (np.array([0], np.int64), np.array([fat_start], np.int64)),
        (np.array([r[0] for r in reserved_taken]), np.array([r[1] for r in reserved_taken])),
    )
    for lo, hi in zip(rest[0].tolist(), rest[1].tolist()):
        structures.append(("fat-reserved", lo, hi))
    for i in range(nfats):
        lo = fat_start + i * fat_size * bps
        structures.append(("fat" if i == 0 else "fat-backup", lo, lo + fat_size * bps))
    if root_sectors:
        structures.append(("fat-root-dir", root_start, data_start))
    # Free clusters: entries 2 .. clusters + 1 of the first FAT that hold 0 (the FAT's own
    # size and the volume's bound what is read).
    # The FAT's width follows the cluster count the boot sector gives (fatgen103), not the
    # count a cut-short volume still holds.
    claimed_clusters = max(0, (total * bps - data_start) // (spc * bps))
    bits = 32 if fat32 else (16 if claimed_clusters >= 4085 else 12)
    entries = min(clusters + 2, fat_size * bps * 8 // bits)
    first, end, held = fat_free(stream, fat_start, bits, entries)
    if held < clusters + 2:
        layout.findings.append(
            (Severity.ERROR, fat_start, f"fat: holds {max(held - 2, 0)} of {clusters} clusters")
        )
    layout.free = (data_start + (first - 2) * cluster, data_start + (end - 2) * cluster)
    data_end = data_start + clusters * cluster
    if data_end < fs_end:
        layout.tail = (data_end, fs_end)
    return layout


def exfat_layout(stream: RangeStream) -> Layout:
    """exFAT from its boot sector: the boot region (12 sectors) and its backup, the FATs; the
    allocation bitmap and up-case table are files TSK lists (``$ALLOC_BITMAP``,
    ``$UPCASE_TABLE``), the free clusters come from the bitmap (:func:`exfat_free`)."""
    boot = stream.pread(0, 512)
    if len(boot) < 512:
        raise TskError("exfat-boot-region at 0x0: truncated")
    volume_length = _u(boot, 72, 8)
    fat_offset, fat_length = _u(boot, 80, 4), _u(boot, 84, 4)
    heap, count = _u(boot, 88, 4), _u(boot, 92, 4)
    bps_shift, spc_shift, nfats = boot[108], boot[109], boot[110]
    if not 9 <= bps_shift <= 12 or spc_shift > 25 - bps_shift:
        raise TskError("exfat-boot-region at 0x0: bad sector or cluster size")
    bps = 1 << bps_shift
    cluster = bps << spc_shift
    fs_end = min(volume_length * bps, stream.size)
    layout = Layout(cluster=cluster, fs_end=fs_end)
    layout.structures += [
        ("exfat-boot-region", 0, 12 * bps),
        ("exfat-boot-region-backup", 12 * bps, 24 * bps),
    ]
    for i in range(min(nfats, 2)):
        lo = (fat_offset + i * fat_length) * bps
        layout.structures.append(
            ("exfat-fat" if i == 0 else "exfat-fat-backup", lo, lo + fat_length * bps)
        )
    fat_end = (fat_offset + min(nfats, 2) * fat_length) * bps
    if fat_end < heap * bps:
        layout.structures.append(("exfat-reserved", fat_end, heap * bps))
    if 24 * bps < fat_offset * bps:
        layout.structures.append(("exfat-reserved", 24 * bps, fat_offset * bps))
    data_end = (heap + (count << spc_shift)) * bps
    if data_end < fs_end:
        layout.tail = (data_end, fs_end)
    layout.heap = heap * bps
    layout.clusters = count
    return layout


def ntfs_layout(stream: RangeStream, cluster: int) -> Layout:
    """NTFS: the boot sector's size, its backup copy in the sector after the filesystem; the
    rest are system files TSK lists, and the free clusters come from ``$Bitmap``."""
    boot = stream.pread(0, 512)
    if len(boot) < 512:
        raise TskError("ntfs-boot at 0x0: truncated")
    bps = _u(boot, 11, 2) or 512
    sectors = _u(boot, 40, 8)
    fs_end = min(sectors * bps, stream.size)
    layout = Layout(cluster=cluster, fs_end=fs_end)
    clusters_end = sectors * bps // cluster * cluster
    if clusters_end < fs_end:
        layout.tail = (clusters_end, fs_end)
    if sectors * bps + bps <= stream.size:
        layout.structures.append(("ntfs-boot-backup", sectors * bps, sectors * bps + bps))
        layout.fs_end = sectors * bps + bps
    return layout


_SEVERITY = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}


def hfs_layout(stream: RangeStream) -> Layout:
    """HFS+ and HFSX (:mod:`parsers.hfsplus`): the boot blocks, both volume headers and the
    reserved sector after the alternate one before the walk; the special files' first extents
    and the journal after it, where TSK did not list them; free blocks from the allocation
    file, read through TSK."""
    try:
        hfs = hfsplus.read_layout(stream.pread, stream.size)
    except ParserError as exc:
        raise TskError(str(exc)) from exc
    layout = Layout(cluster=hfs.block, fs_end=hfs.fs_end, msb_first=True)
    for kind, lo, hi in hfs.structures:
        if kind in ("hfs-journal", "hfs-journal-info"):
            layout.after_walk.append((kind, lo, hi))
        else:
            layout.structures.append((kind, lo, hi))
    for kind, ranges in hfs.special.values():
        layout.after_walk.extend((kind, lo, hi) for lo, hi in ranges)
    if stream.size > hfs.fs_end:
        # The alternate header and the sector after it lie past the last allocation block
        # when the volume is no whole number of blocks: they belong to the filesystem.
        ends = [hi for _, _, hi in hfs.structures]
        layout.fs_end = max([hfs.fs_end, *ends])
    layout.findings.extend((_SEVERITY[sev], off, msg) for sev, off, msg in hfs.findings)
    return layout


def ufs_layout(stream: RangeStream) -> Layout:
    """UFS1 (and UFS2, which TSK does not open) from :mod:`parsers.ufs`: the boot area, the
    superblock and its copies, each cylinder group's header and inode table, the summary area,
    and the free fragments of each group's bitmap."""
    try:
        layout = ufs.read_layout(stream.pread, stream.size)
    except ParserError as exc:
        raise TskError(str(exc)) from exc
    return _from_ufs(layout, stream.size)


def _from_ufs(layout: ufs.UfsLayout, size: int) -> Layout:
    out = Layout(
        cluster=layout.fragment,
        fs_end=min(layout.fs_end, size),
        structures=list(layout.structures),
        free=layout.free,
        # ffs_balloc: only a file that fits in its 12 direct blocks may end in fragments.
        whole_blocks=(layout.block, ufs.DIRECT_BLOCKS * layout.block),
    )
    out.findings.extend((_SEVERITY[sev], off, msg) for sev, off, msg in layout.findings)
    return out


def iso_layout(stream: RangeStream) -> Layout:
    """ISO9660: the system area, every volume descriptor up to the terminator, the path
    tables of the primary and supplementary descriptors."""
    block = 2048
    layout = Layout(cluster=block, fs_end=stream.size)
    layout.structures.append(("iso-system-area", 0, 16 * block))
    seen_tables: set[tuple[int, int]] = set()
    l_tables: list[tuple[int, int]] = []
    for n in range(16, 16 + 64):
        vd = stream.pread(n * block, block)
        if len(vd) < block or vd[1:6] != b"CD001":
            break
        layout.structures.append(("iso-volume-descriptor", n * block, (n + 1) * block))
        if vd[0] == 255:
            break
        if vd[0] in (1, 2):
            if n == 16 or vd[0] == 1:
                space = _u(vd, 80, 4) * _u(vd, 128, 2)
                if space:
                    layout.fs_end = min(stream.size, max(space, (n + 1) * block))
            table_size = _u(vd, 132, 4)
            for at in (140, 144):  # L table and its optional copy
                lba = _u(vd, at, 4)
                if lba:
                    seen_tables.add((lba, table_size))
            if _u(vd, 140, 4):
                l_tables.append((_u(vd, 140, 4), table_size))
            for at in (148, 152):  # M table (big-endian) and its optional copy
                lba = int.from_bytes(vd[at : at + 4], "big")
                if lba:
                    seen_tables.add((lba, table_size))
    for lba, size in sorted(seen_tables):
        lo = lba * block
        layout.structures.append(("iso-path-table", lo, lo + -(-size // block) * block))
    seen_dirs: set[int] = set()
    for lba, size in l_tables:
        entries = 0
        for extent in _path_table_extents(stream.pread(lba * block, min(size, stream.size))):
            entries += 1
            layout.path_entries = max(layout.path_entries, entries)
            if extent in seen_dirs or extent * block >= stream.size:
                continue
            seen_dirs.add(extent)
            dot = stream.pread(extent * block, 34)
            length = _u(dot, 10, 4) if len(dot) == 34 else 0
            length = min(-(-length // block) * block, stream.size - extent * block)
            if length > 0:
                layout.directories.append((extent * block, extent * block + length))
    return layout


def _path_table_extents(table: bytes) -> Iterator[int]:
    """The extent of each directory an L path table lists (ECMA-119 9.4); every step moves
    forward at least 8 bytes, so the walk ends inside the table."""
    at = 0
    while at + 8 <= len(table):
        name_len = table[at]
        if name_len == 0:
            return
        yield _u(table, at + 2, 4)
        at += 8 + name_len + (name_len & 1)


# -- the walk --------------------------------------------------------------------------------


@dataclass
class _Window:
    """Objects and runs collected for one batch to the builder: a PathColumn's columns."""

    prefixes: list[str] = field(default_factory=list)
    prefix_of: dict[str, int] = field(default_factory=dict)
    prefix: array[int] = field(default_factory=lambda: array("q"))
    names: bytearray = field(default_factory=bytearray)
    name_start: array[int] = field(default_factory=lambda: array("q"))
    name_len: array[int] = field(default_factory=lambda: array("q"))
    code: array[int] = field(default_factory=lambda: array("q"))
    inode: array[int] = field(default_factory=lambda: array("q"))
    # Runs: the object (its row in this window), start, end, offset inside it, claims.
    obj: array[int] = field(default_factory=lambda: array("q"))
    start: array[int] = field(default_factory=lambda: array("q"))
    end: array[int] = field(default_factory=lambda: array("q"))
    offset: array[int] = field(default_factory=lambda: array("q"))

    def add(self, code: int, prefix: str, name: bytes, inode: int) -> int:
        index = self.prefix_of.get(prefix)
        if index is None:
            index = self.prefix_of[prefix] = len(self.prefixes)
            self.prefixes.append(prefix)
        self.prefix.append(index)
        self.name_start.append(len(self.names))
        self.name_len.append(len(name))
        self.names += name
        self.code.append(code)
        self.inode.append(inode)
        return len(self.code) - 1

    def run(self, obj: int, start: int, end: int, offset: int) -> None:
        self.obj.append(obj)
        self.start.append(start)
        self.end.append(end)
        self.offset.append(offset)


def _np(values: array[int]) -> Array:
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)


class _Mapper(FilesystemWalk):
    """One filesystem's walk through TSK: the lines, claims, kinds and free-space wording of
    :class:`~bmap.layers.fswalk.FilesystemWalk`, the names and runs from TSK."""

    def __init__(
        self,
        fs: Any,
        kind: str,
        volume: Volume,
        builder: MapBuilder,
        layout: Layout | None = None,
    ) -> None:
        """``layout``: the filesystem's own layout where it was read already (UFS, ISO9660:
        before TSK was given the volume); else it is read when the walk runs."""
        super().__init__(volume, builder)
        self.preread = layout
        self.fs = fs
        self.kind = kind
        self.volume = volume
        self.size = volume.size
        # Without TSK (it cannot open the filesystem) only the layout is mapped: no runs.
        self.block = int(fs.info.block_size) if fs is not None else 512
        self.window = _Window()
        self.deleted = 0
        self.deleted_shown: list[str] = []
        # Files with data whose runs TSK left out (it drops what it rejects without an error).
        self.placed = False
        self.unplaced = 0
        self.unplaced_shown: list[str] = []
        self.orphans = 0
        self.outside = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_shown: dict[str, str] = {}
        self.entries = 0
        self.queue_cut = False
        # A volume of n bytes holds at most n / 32 directory entries: the walk stops there.
        self.max_entries = max(1024, self.size // MIN_ENTRY)
        self.layout: Layout | None = None
        self.mft_runs: tuple[list[int], list[int], list[int]] | None = None
        self.mft_record = 1024
        self._mft_chunk: tuple[int, bytes] = (0, b"")
        self.exfat_bitmap: list[tuple[int, int, int]] = []
        self.unit = self.block  # the allocation unit, once the layout is read
        self.most_runs = min(MAX_RUNS, self.size // max(self.block, 1) + 1)

    # -- output -----------------------------------------------------------------------------

    def finding(self, severity: Severity, offset: int | None, source: str, message: str) -> None:
        """A finding; ``offset`` is in the volume, the finding's on the disk."""
        disk_offset = None
        if offset is not None and self.volume.offset is not None:
            disk_offset = self.volume.offset + offset
        self.findings.append(Finding(severity, self.volume.disk, disk_offset, source, message))

    def tsk_error(self, structure: str, exc: BaseException) -> None:
        """An error inside TSK: counted per kind of structure, the first one quoted."""
        key = structure.split(" ", 1)[0]
        self.errors[key] += 1
        text = str(exc).strip()
        self.error_shown.setdefault(
            key, f"{structure}: {text.splitlines()[0] if text else type(exc).__name__}"
        )

    def flush(self) -> None:
        w = self.window
        if not len(w.code):
            return
        paths = PathColumn(
            w.prefixes,
            _np(w.prefix),
            bytes(w.names),
            _np(w.name_start),
            _np(w.name_len),
        )
        objs = self.builder.add_objects(_CLASSES, _np(w.code), self.device, paths, _np(w.inode))
        if len(w.obj):
            starts, ends = _np(w.start).copy(), _np(w.end).copy()
            self.emit(objs[_np(w.obj)], starts, ends, _np(w.offset).copy())
        self.window = _Window()

    # -- the walk ---------------------------------------------------------------------------

    def run(self) -> None:
        self.layout = self.read_layout()
        if self.layout is None:
            return
        self.unit = self.layout.cluster
        if self.kind == "ntfs" and self.fs is not None:
            self.read_mft_runs()
        for kind, lo, hi in self.layout.structures:
            lo, hi = max(0, lo), min(hi, self.size)
            if hi > lo:
                self.emit_kind(kind, np.array([lo], np.int64), np.array([hi], np.int64))
        if self.fs is not None:
            self.walk()
            self.flush()
        self.directory_records()
        self.structures_after_walk()
        self.report_walk()
        self.free_space()

    def directory_records(self) -> None:
        """ISO9660: the directory extents the path tables list that no ``d`` line names (the
        second tree of a Joliet image)."""
        layout = self.layout
        if layout is None or not layout.directories:
            return
        starts = np.array([d[0] for d in layout.directories], np.int64)
        ends = np.array([d[1] for d in layout.directories], np.int64)
        rest = subtract((starts, ends), self.claimed_union())
        self.emit_kind("iso-directory", rest[0], rest[1])

    def structures_after_walk(self) -> None:
        """The layout's structures that the walk may have named already (as TSK's files), each
        only where no line holds it yet."""
        layout = self.layout
        if layout is None or not layout.after_walk:
            return
        claimed = self.claimed_union()
        for kind, lo, hi in layout.after_walk:
            lo, hi = max(0, lo), min(hi, self.size)
            if hi > lo:
                rest = subtract((np.array([lo], np.int64), np.array([hi], np.int64)), claimed)
                self.emit_kind(kind, rest[0], rest[1])

    def read_layout(self) -> Layout | None:
        stream = self.volume.stream
        try:
            if self.preread is not None:
                layout = self.preread
            elif self.kind == "vfat":
                layout = fat_layout(stream)
            elif self.kind == "exfat":
                layout = exfat_layout(stream)
            elif self.kind == "ntfs":
                layout = ntfs_layout(stream, self.block)
            elif self.kind == "hfsplus":
                layout = hfs_layout(stream)
            elif self.kind == "ufs":
                layout = ufs_layout(stream)
            else:
                layout = iso_layout(stream)
        except TskError as exc:
            self.finding(Severity.ERROR, 0, self.device, str(exc))
            return None
        for severity, offset, message in layout.findings:
            self.finding(severity, offset, self.device, message)
        return layout

    def read_mft_runs(self) -> None:
        """Where ``$MFT``'s records lie: its data runs as (logical byte, physical byte, length)."""
        boot = self.volume.stream.pread(0, 512)
        per = int.from_bytes(boot[64:65], "little", signed=True)
        self.mft_record = (1 << -per) if per < 0 else per * self.block
        if not 256 <= self.mft_record <= 65536:
            self.mft_record = 1024
        logical, physical, length = array("q"), array("q"), array("q")
        try:
            mft = self.fs.open_meta(inode=0)
            for attr in mft:
                if int(attr.info.type) != _DATA_TYPES[1] or attr.info.name:
                    continue
                for run in attr:
                    if int(run.flags) & _RUN_SKIP:
                        continue
                    logical.append(run.offset * self.block)
                    physical.append(run.addr * self.block)
                    length.append(run.len * self.block)
        except OSError as exc:
            self.tsk_error("$MFT", exc)
        self.mft_runs = (logical.tolist(), physical.tolist(), length.tolist())

    def record_at(self, inode: int) -> list[tuple[int, int, int]] | None:
        """Where MFT record ``inode`` lies: ``(volume start, end, offset in the record)`` of
        each piece, one unless the record straddles two of ``$MFT``'s runs (a record is
        larger than a cluster of 512 bytes); None where ``$MFT`` does not reach all of it."""
        if self.mft_runs is None:
            return None
        logical, physical, length = self.mft_runs
        at = inode * self.mft_record
        end = at + self.mft_record
        i = bisect.bisect_right(logical, at) - 1
        pieces = []
        while at < end:
            if i < 0 or i >= len(logical) or not logical[i] <= at < logical[i] + length[i]:
                return None
            upto = min(end, logical[i] + length[i])
            start = physical[i] + at - logical[i]
            pieces.append((start, start + upto - at, at - inode * self.mft_record))
            at = upto
            i += 1
        return pieces

    def place_in_record(
        self, obj: int, pieces: list[tuple[int, int, int]], lo: int, hi: int
    ) -> None:
        """The record's bytes ``[lo, hi)`` as runs of ``obj``, through its pieces."""
        w = self.window
        for start, end, off in pieces:
            a, b = max(lo, off), min(hi, off + end - start)
            if a < b:
                w.run(obj, start + a - off, start + b - off, a - lo)

    def mft_bytes(self, lo: int, hi: int) -> bytes:
        """Volume bytes ``[lo, hi)`` of an MFT record, read :data:`MFT_CHUNK` bytes at a time
        (a directory's files have neighbouring records)."""
        chunk = self._mft_chunk
        if lo < chunk[0] or hi > chunk[0] + len(chunk[1]):
            start = lo // MFT_CHUNK * MFT_CHUNK
            chunk = self._mft_chunk = (start, self.volume.stream.pread(start, MFT_CHUNK))
        return chunk[1][lo - chunk[0] : hi - chunk[0]]

    def walk(self) -> None:
        fs = self.fs
        root = int(fs.info.root_inum)
        if _root_is_orphan_dir(fs):
            self.finding(
                Severity.ERROR,
                None,
                f"{self.volume.device} tsk",
                "The Sleuth Kit numbers no file but the root, whose number is also its virtual "
                "orphan directory's: it would deadlock opening it; no file is named",
            )
            return
        visited = {root}
        queue: collections.deque[tuple[int, str, int, bool]] = collections.deque()
        queue.append((root, "/", 0, False))
        self.map_root(root)
        orphan_dir_seen = False
        while queue and not self.queue_cut:
            addr, prefix, depth, orphan = queue.popleft()
            for entry, name_flags, name, meta in self.entries_of(addr, prefix):
                if name == b"." or name == b"..":
                    continue
                if name_flags & _NAME_UNALLOC or meta is None:
                    self.count_deleted(prefix + name.decode("utf-8", "surrogateescape"))
                    continue
                mtype = int(meta.type)
                if self.kind == "exfat" and depth == 0 and name in _EXFAT_SPECIAL:
                    self.map_entry(entry, prefix, name, int(meta.addr), mtype)
                    continue
                if mtype in _VIRT:
                    # Only NTFS has entries in use that no directory names (a FAT or exFAT
                    # entry is its file's metadata, and ISO9660 deletes nothing): elsewhere
                    # TSK's orphans are deleted entries, and finding them costs a scan of
                    # every directory again.
                    if (
                        name == b"$OrphanFiles"
                        and not orphan_dir_seen
                        and depth == 0
                        and self.kind == "ntfs"
                    ):
                        orphan_dir_seen = True
                        queue.append((int(meta.addr), ORPHAN_DIR + "/", depth + 1, True))
                    continue
                if not int(meta.flags) & _ALLOC:
                    self.count_deleted(prefix + name.decode("utf-8", "surrogateescape"))
                    continue
                if (
                    self.kind in ("vfat", "exfat")
                    and depth == 0
                    and name.endswith(_FAT_LABEL_SUFFIX)
                ):
                    continue
                if orphan:
                    self.orphans += 1
                inode = int(meta.addr)
                self.placed = False
                self.map_entry(entry, prefix, name, inode, mtype)
                # (Every NTFS file has an unnamed $DATA, even an empty one.)
                if mtype == _REG and not self.placed and (self.kind == "ntfs" or meta.size):
                    self.count_unplaced(prefix + name.decode("utf-8", "surrogateescape"))
                if len(self.window.obj) >= RUN_WINDOW or len(self.window.code) >= NAME_WINDOW:
                    self.flush()
                if mtype == _DIR and inode not in visited:
                    visited.add(inode)
                    path_text = prefix + name.decode("utf-8", "surrogateescape")
                    if depth + 1 >= MAX_DEPTH:
                        self.finding(
                            Severity.ERROR,
                            None,
                            self.device,
                            f"{path_text!r}: directories nested deeper than {MAX_DEPTH} "
                            "levels are not walked",
                        )
                        continue
                    queue.append((inode, path_text + "/", depth + 1, orphan))
            if len(self.window.code) >= NAME_WINDOW:
                self.flush()

    def count_unplaced(self, path: str) -> None:
        self.unplaced += 1
        if len(self.unplaced_shown) < DELETED_SHOWN:
            self.unplaced_shown.append(path)

    def count_deleted(self, path: str) -> None:
        self.deleted += 1
        if len(self.deleted_shown) < DELETED_SHOWN:
            self.deleted_shown.append(path)

    def entries_of(self, addr: int, prefix: str) -> Iterator[tuple[Any, int, bytes, Any | None]]:
        """``(entry, name flags, name, metadata or None)`` of each entry of a directory,
        bounded."""
        try:
            directory = self.fs.open_dir(inode=addr)
            for entry in directory:
                self.entries += 1
                if self.entries > self.max_entries:
                    self.finding(
                        Severity.ERROR,
                        None,
                        self.device,
                        f"more directory entries than the volume can hold "
                        f"({self.max_entries}): the walk stops at {prefix!r}",
                    )
                    self.queue_cut = True
                    return
                info = entry.info
                name = info.name
                if name is None:
                    continue
                yield entry, int(name.flags), bytes(name.name), info.meta
        except OSError as exc:
            self.tsk_error(f"directory {prefix!r} (inode {addr})", exc)

    def map_root(self, root: int) -> None:
        """The root directory's own data (and, on NTFS, its record)."""
        if self.layout is not None and self.layout.skip_root:
            return
        try:
            entry = self.fs.open_meta(inode=root)
        except OSError as exc:
            self.tsk_error("root directory", exc)
            return
        self.map_entry(entry, "", b"/", root, _DIR)

    def map_entry(self, entry: Any, prefix: str, name: bytes, inode: int, mtype: int) -> None:
        """Lines for one name: its attributes' runs, resident data and MFT record."""
        if self.kind == "ntfs":
            self.map_ntfs_entry(entry, prefix, name, inode, mtype)
            return
        if self.kind == "hfsplus":
            self.map_hfs_entry(entry, prefix, name, inode, mtype)
            return
        code = _DIR_CODE if mtype == _DIR else _FILE_CODE
        system = None
        if self.kind == "exfat" and prefix == "/" and name in _EXFAT_SPECIAL:
            system = _EXFAT_SPECIAL[name]
            code = _CODE["m", system]
        ufs_kind = self.kind == "ufs"
        try:
            for attr in entry:
                info = attr.info
                if int(info.flags) & _NONRES:
                    unit = self.unit
                    size = int(info.size)
                    whole = self.layout.whole_blocks if self.layout is not None else None
                    if whole is not None and size > whole[1]:
                        unit = whole[0]
                    limit = -(-size // unit) * unit
                    if ufs_kind and int(info.type) == _UNIX_INDIR:  # the file's indirect blocks
                        indirect = _CODE["m", "ufs-indirect"]
                        self.take_runs(attr, limit, indirect, prefix, name, inode, None)
                        continue
                    self.take_runs(attr, limit, code, prefix, name, inode, system)
        except OSError as exc:
            self.tsk_error(f"attributes of {prefix + name.decode('utf-8', 'replace')!r}", exc)

    def map_hfs_entry(self, entry: Any, prefix: str, name: bytes, inode: int, mtype: int) -> None:
        """HFS+: the data fork under the path, the resource fork as ``path/..namedfork/rsrc``,
        an extended attribute stored in fork data as ``path:name`` (``m hfs-xattr``); the
        special files and the journal files as their kinds. A compressed file's data is
        stored in its resource fork or the attributes file, named there: TSK's decompressed
        view of it is skipped."""
        system = _HFS_SYSTEM.get(inode)
        if system is None and prefix == "/" and name in _HFS_JOURNAL_FILES:
            system = _HFS_JOURNAL_FILES[name]
        try:
            for attr in entry:
                info = attr.info
                flags = int(info.flags)
                if flags & _COMP:
                    self.placed = True  # stored in the resource fork or attributes file
                    continue
                if not flags & _NONRES:
                    continue
                atype = int(info.type)
                if atype in _HFS_DATA:
                    suffix, code = b"", _FILE_CODE
                elif atype == _HFS_RSRC:
                    suffix, code = _HFS_RSRC_SUFFIX, _FILE_CODE
                elif atype == _HFS_EXT_ATTR:
                    suffix, code = b":" + bytes(info.name or b""), _CODE["m", "hfs-xattr"]
                else:
                    continue
                if system is not None:
                    code = _CODE["m", system]
                elif mtype == _DIR and atype in _HFS_DATA:
                    code = _DIR_CODE
                limit = -(-int(info.size) // self.unit) * self.unit
                self.take_runs(attr, limit, code, prefix, name + suffix, inode, system)
        except OSError as exc:
            self.tsk_error(f"attributes of {prefix + name.decode('utf-8', 'replace')!r}", exc)

    def map_ntfs_entry(self, entry: Any, prefix: str, name: bytes, inode: int, mtype: int) -> None:
        w = self.window
        system = _NTFS_SYSTEM.get(inode)
        if system is None and prefix.startswith("/$Extend/"):
            system = "ntfs-extend"
        record = self.record_at(inode)
        if record is not None:
            obj = w.add(_RECORD_CODE, prefix, name, inode)
            for start, end, off in record:
                w.run(obj, start, end, off)
        try:
            attrs = list(entry)
        except OSError as exc:
            self.tsk_error(f"attributes of {prefix + name.decode('utf-8', 'replace')!r}", exc)
            return
        record_bytes: bytes | None = None
        for attr in attrs:
            info = attr.info
            atype = int(info.type)
            if atype in _ALWAYS_RESIDENT:
                continue
            flags = int(info.flags)
            aname = bytes(info.name or b"")
            if atype == _DATA_TYPES[1]:
                suffix = b":" + aname if aname else b""
                if not aname:
                    self.placed = True
            elif atype in (_IDXALLOC, _IDXROOT) and aname == b"$I30":
                suffix = b""  # a directory's own index: the directory
            else:
                suffix = b":" + aname + b":" + _NTFS_TYPE_NAMES.get(atype, f"0x{atype:x}").encode()
            if system is not None:
                code = _CODE["m", system]
            elif atype == _DATA_TYPES[1]:
                code = _FILE_CODE  # a file's data, or a stream of a directory
            elif atype in (_IDXALLOC, _IDXROOT) and aname == b"$I30":
                code = _DIR_CODE
            else:
                code = _ATTR_CODE
            if flags & _NONRES:
                # A run list ends at the allocated size, which is the file's even past its
                # data size.
                self.take_runs(attr, 1 << 62, code, prefix, name + suffix, inode, None)
            elif flags & _RES and record is not None and atype in (_DATA_TYPES[1], _IDXROOT):
                if record_bytes is None:
                    record_bytes = b"".join(self.mft_bytes(lo, hi) for lo, hi, _ in record)
                value = _resident_value(record_bytes, atype, aname)
                if value is not None and value[1] > value[0]:
                    obj = w.add(code, prefix, name + suffix, inode)
                    self.placed = True
                    self.place_in_record(obj, record, value[0], value[1])

    def take_runs(
        self,
        attr: Any,
        limit: int,
        code: int,
        prefix: str,
        name: bytes,
        inode: int,
        system: str | None,
    ) -> None:
        """An attribute's stored runs inside ``limit`` bytes, as lines of one object (made
        with the first run: an attribute with none has no object); no more runs than the
        volume has blocks (each run holds one at least)."""
        w = self.window
        bs = self.block
        size = self.size
        most = self.most_runs
        obj = -1
        try:
            for n, run in enumerate(attr):
                if n >= most:
                    raise OSError(f"more than {most} runs")
                if int(run.flags) & _RUN_SKIP:
                    continue
                off = int(run.offset) * bs
                length = min(int(run.len) * bs, limit - off)
                if length <= 0:
                    continue
                lo = int(run.addr) * bs
                hi = lo + length
                if lo < 0 or hi > size:
                    self.outside += 1
                    hi = min(hi, size)
                    if hi <= lo:
                        continue
                if obj < 0:
                    obj = w.add(code, prefix, name, inode)
                    self.placed = True
                w.run(obj, lo, hi, off)
                if system == "exfat-bitmap" and len(self.exfat_bitmap) < MAX_BITMAP_RUNS:
                    self.exfat_bitmap.append((lo, hi, off))
        except OSError as exc:
            self.tsk_error(f"runs of {prefix + name.decode('utf-8', 'replace')!r}", exc)

    # -- after the walk ---------------------------------------------------------------------

    def report_walk(self) -> None:
        """What the walk counted: deleted, unplaced and orphan entries, runs cut, TSK errors."""
        if self.deleted:
            shown = ", ".join(repr(p) for p in self.deleted_shown)
            more = (
                f" and {self.deleted - len(self.deleted_shown)} more"
                if self.deleted > len(self.deleted_shown)
                else ""
            )
            self.finding(
                Severity.INFO,
                None,
                self.device,
                f"{self.deleted} deleted entries still listed (their space is not claimed): "
                f"{shown}{more}",
            )
        if self.unplaced:
            named = ", ".join(repr(p) for p in self.unplaced_shown)
            rest = self.unplaced - len(self.unplaced_shown)
            self.finding(
                Severity.WARNING,
                None,
                f"{self.device} tsk",
                f"{self.unplaced} files hold data The Sleuth Kit gives no place for (it drops "
                "runs it rejects: an entry claiming more than the volume holds, a run past its "
                f"end); their blocks are not named: {named}"
                + (f" and {rest} more" if rest > 0 else ""),
            )
        if self.orphans:
            self.finding(
                Severity.WARNING,
                None,
                self.device,
                f"{self.orphans} entries in use but named by no directory; listed under "
                f"{ORPHAN_DIR}",
            )
        if self.outside:
            self.finding(
                Severity.ERROR,
                None,
                self.device,
                f"{self.outside} data runs reach past the end of the volume (cut there)",
            )
        for key, count in self.errors.items():
            more = f" ({count} such errors)" if count > 1 else ""
            self.finding(Severity.ERROR, None, f"{self.device} tsk", self.error_shown[key] + more)

    def allocation_free(self) -> tuple[Array, Array] | None:
        """Free byte ranges from the allocation table read through TSK where the table is a
        file TSK lists (NTFS ``$Bitmap``, exFAT ``$ALLOC_BITMAP``)."""
        layout = self.layout
        assert layout is not None
        if layout.free is not None:
            return layout.free
        if self.fs is None:
            return None
        try:
            if self.kind == "ntfs":
                bitmap = self.fs.open_meta(inode=6)
                size = int(bitmap.info.meta.size)
                clusters = min(int(self.fs.info.block_count), self.size // self.block)

                def read(offset: int, want: int) -> bytes:
                    want = min(want, size - offset)
                    return bytes(bitmap.read_random(offset, want)) if want > 0 else b""

                first, end, held = bitmap_free(read, clusters)
                if held < clusters:
                    self.finding(
                        Severity.ERROR,
                        None,
                        f"{self.device} ntfs-bitmap",
                        f"$Bitmap holds {held} of {clusters} clusters; the rest are not named",
                    )
                return first * self.block, end * self.block
            if self.kind == "hfsplus":
                allocation = self.fs.open_meta(inode=6)
                size = min(int(allocation.info.meta.size), self.size)
                blocks = layout.fs_end // self.block

                def read_allocation(offset: int, want: int) -> bytes:
                    want = min(want, size - offset)
                    return bytes(allocation.read_random(offset, want)) if want > 0 else b""

                first, end, held = bitmap_free(read_allocation, blocks, msb_first=True)
                if held < blocks:
                    self.finding(
                        Severity.ERROR,
                        None,
                        f"{self.device} hfs-allocation",
                        f"the allocation file holds {held} of {blocks} blocks; the rest are "
                        "not named",
                    )
                return first * self.block, end * self.block
            if self.kind == "exfat":
                clusters = min(layout.clusters, max(0, self.size - layout.heap) // layout.cluster)
                stream: PositionalReader = self.volume.stream
                pieces = [(off, off + hi - lo, stream, lo) for lo, hi, off in self.exfat_bitmap]
                size = max((p[1] for p in pieces), default=0)
                reader = MappedReader(pieces, size)
                first, end, held = bitmap_free(reader.pread, clusters)
                if held < clusters:
                    self.finding(
                        Severity.ERROR,
                        None,
                        f"{self.device} exfat-bitmap",
                        f"the allocation bitmap holds {held} of {clusters} clusters; the rest "
                        "are not named",
                    )
                heap = layout.heap
                return heap + first * layout.cluster, heap + end * layout.cluster
        except OSError as exc:
            self.tsk_error("allocation bitmap", exc)
        return None

    def free_space(self) -> None:
        layout = self.layout
        assert layout is not None
        claimed = self.claimed_union()
        fs_end = min(layout.fs_end, self.size)
        free = self.allocation_free()
        if free is not None:
            free = (np.clip(free[0], 0, fs_end), np.clip(free[1], 0, fs_end))
            self.check_free(claimed, free, "allocation table")
            free = subtract(free, claimed)
            self.emit_kind("unallocated", free[0], free[1], type_="u", claim=False)
        else:
            free = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        rest = self.unreferenced(claimed, free, fs_end)
        if layout.tail is not None:
            tail = (
                np.array([layout.tail[0]], np.int64),
                np.array([min(layout.tail[1], fs_end)], np.int64),
            )
            tail = subtract(tail, claimed)
            self.emit_kind(
                {"vfat": "fat-tail"}.get(self.kind, f"{self.kind}-tail"),
                tail[0],
                tail[1],
                type_="u",
                claim=False,
            )
            rest = subtract(rest, tail)
        if free is not None and self.kind in ("vfat", "exfat") and len(rest[0]):
            # TSK drops a directory entry it finds unreasonable (one larger than the volume)
            # without a word; fsck would call its clusters lost.
            nbytes = int((rest[1] - rest[0]).sum())
            if nbytes:
                self.finding(
                    Severity.WARNING,
                    int(rest[0][0]),
                    self.device,
                    f"{nbytes:,} bytes in {len(rest[0]):,} ranges of clusters the "
                    f"{'FAT' if self.kind == 'vfat' else 'allocation bitmap'} calls in use "
                    "belong to no file The Sleuth Kit lists (lost chains, or entries it "
                    "dropped); they are u unreferenced",
                )
        self.emit_rest(rest, fs_end)


_ATTR_HEAD = struct.Struct("<IIBBH")  # type, length, non-resident, name length, name offset
_RESIDENT = struct.Struct("<IH")  # value length, value offset (at 16)


def _root_is_orphan_dir(fs: Any) -> bool:
    """Whether TSK's root directory has its virtual orphan directory's number (its last).
    Then (an ISO9660 path table it reads no directory from) opening the root looks for
    orphans by walking the tree from the root, under a lock TSK already holds: it would wait
    for itself forever."""
    return int(fs.info.root_inum) == int(fs.info.last_inum)


def _resident_value(record: bytes, atype: int, name: bytes) -> tuple[int, int] | None:
    """``[start, end)`` inside an MFT record of the resident attribute of ``atype`` and UTF-8
    ``name``; None where the record holds no such attribute (each step moves forward, so the
    walk ends inside the record)."""
    if len(record) < 48 or record[:4] != b"FILE":
        return None
    at = int.from_bytes(record[20:22], "little")
    want = name.decode("utf-8", "replace") if name else ""
    end = len(record)
    while at + 24 <= end:
        kind, length, nonresident, name_len, name_off = _ATTR_HEAD.unpack_from(record, at)
        if kind == 0xFFFFFFFF or length < 24 or at + length > end:
            return None
        if kind == atype and nonresident == 0:
            if name_len == 0:
                stored = ""
            else:
                raw = record[at + name_off : at + name_off + 2 * name_len]
                stored = raw.decode("utf-16-le", "replace")
            if stored == want:
                size, off = _RESIDENT.unpack_from(record, at + 16)
                lo = at + off
                return lo, min(lo + size, at + length)
        at += length
    return None


# -- the registry's entry points -----------------------------------------------------------


#: The TSK filesystem type asked for each content kind bmap gives TSK: TSK is never left to
#: detect a format by itself, so it only reads the one bmap identified and checked.
_TSK_TYPES = {
    "vfat": pytsk3.TSK_FS_TYPE_FAT_DETECT,
    "exfat": pytsk3.TSK_FS_TYPE_EXFAT,
    "ntfs": pytsk3.TSK_FS_TYPE_NTFS_DETECT,
    "iso9660": pytsk3.TSK_FS_TYPE_ISO9660_DETECT,
    "hfsplus": pytsk3.TSK_FS_TYPE_HFS_DETECT,
    "ufs": pytsk3.TSK_FS_TYPE_FFS_DETECT,
}


def open_filesystem(
    stream: RangeStream, overlay: dict[int, bytes] | None = None, kind: str | None = None
) -> Any:
    """TSK's view of the filesystem in ``stream`` (with ``overlay`` shown over it), read as
    ``kind`` (a content kind of :data:`_TSK_TYPES`; None: TSK detects it); raises
    :class:`TskError`."""
    fs_type = _TSK_TYPES.get(kind or "", pytsk3.TSK_FS_TYPE_DETECT)
    try:
        return pytsk3.FS_Info(VolumeImage(stream, overlay), offset=0, type=fs_type)
    except OSError as exc:
        raise TskError(str(exc).strip() or "TSK cannot open the filesystem") from exc


#: The CPU TSK may use on a volume, by the volume's real size: a floor, and seconds per GiB.
#: A FAT32 or NTFS of 100,000 files in 0.9 GiB maps in under 2 s; a hostile volume that
#: keeps TSK's C code looping (a run list built block by block for a 3 TiB file on 1 MiB)
#: is ended at the budget.
CPU_SECONDS = 60.0
CPU_SECONDS_PER_GIB = 60.0


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    """Map the FAT, exFAT, NTFS, ISO9660, HFS+ or UFS filesystem of ``volume`` into
    ``builder``; returns the findings. Where TSK cannot open the filesystem (UFS2, a damaged
    one) a finding says so, and what its own headers say is still mapped (its structures and,
    where the table is read without TSK, its free space); no file is named.

    TSK runs in a child process (:mod:`bmap.layers.isolate`): where its C code crashes, waits
    on itself, or uses more than :data:`CPU_SECONDS` plus :data:`CPU_SECONDS_PER_GIB` for each
    GiB of the volume, a finding says so and the volume is mapped as one TSK refuses."""
    budget = CPU_SECONDS + CPU_SECONDS_PER_GIB * volume.stream.size / (1 << 30)
    try:
        return isolate.run_isolated(
            lambda into: _map_volume(volume, into), builder, builder.temp_dir, budget
        )
    except isolate.Isolated as exc:
        what = {"overran": "ran too long", "failed": "could not pass on its work"}
        return _map_volume(
            volume, builder, f"it {what.get(exc.how, exc.how)} on this volume ({exc.why})"
        )


def _map_volume(volume: Volume, builder: MapBuilder, failed: str | None = None) -> list[Finding]:
    """:func:`map_volume` in this process; ``failed``: why TSK is not given the volume."""
    kind = volume.content.kind if volume.content is not None else "unknown"
    stream = volume.stream
    # The layouts TSK's safety depends on are read once, before TSK sees the volume.
    own: Layout | None = None
    overlay: dict[int, bytes] = {}
    shown: list[tuple[int, str]] = []
    refused = failed
    if kind == "ufs":
        try:
            raw = ufs.read_layout(stream.pread, stream.size)
        except ParserError as exc:
            # TSK's UFS code trusts every count it reads: it is not given a volume whose
            # superblock bmap cannot check (the walk reads it again and says why).
            refused = f"its superblock is not usable ({exc.reason})"
        else:
            own = _from_ufs(raw, stream.size)
            if refused is None:  # what TSK would be shown, where it is given the volume
                overlay, shown, refused = _ufs_shown_to_tsk(raw, stream)
    iso = _iso_of(stream)
    if kind == "iso9660":
        own = iso
    if refused is None and iso is not None:
        refused = _too_costly(iso)
    fs = None
    failure = refused
    if refused is None:
        try:
            fs = open_filesystem(stream, overlay, kind)
        except TskError as exc:
            failure = str(exc).splitlines()[0] if str(exc) else "cannot open"
    mapper = _Mapper(fs, kind, volume, builder, own)
    for offset, message in shown:
        mapper.finding(Severity.ERROR, offset, volume.device, message)
    try:
        mapper.run()
    except MemoryError:
        mapper.finding(
            Severity.ERROR,
            None,
            f"{volume.device} {BUDGET_SOURCE}",
            "ran out of memory while mapping the filesystem; what was mapped before stays",
        )
    if fs is not None:
        return mapper.findings
    inside = (
        "its files are not mapped; its structures are, from its own headers"
        if mapper.layout is not None
        else "it is not mapped inside"
    )
    opened = Finding(
        Severity.ERROR,
        volume.disk,
        volume.offset,
        f"{volume.device} tsk",
        f"The Sleuth Kit is not given the {kind} filesystem: {failure}; {inside}"
        if refused is not None
        else f"The Sleuth Kit cannot open the {kind} filesystem ({failure}); {inside}",
    )
    # Without a layout, the layout's own complaint says the same again.
    return [opened, *(mapper.findings if mapper.layout is not None else [])]


#: Inodes named one by one in findings before a count takes over.
_SHOWN_INODES = 16
#: ISO9660: TSK's open grows faster than the square of the path table's entries (10,000: 0.4 s,
#: 30,000: 5.5 s) and its directory read with the square of a directory's records (60,000:
#: 23 s). Past these, TSK is not given the volume: its structures are mapped, its files not.
ISO_MAX_PATH_ENTRIES = 16_384
ISO_MAX_DIRECTORY_BYTES = 16_384 * 34


def _iso_of(stream: RangeStream) -> Layout | None:
    """The ISO9660 layout of a volume that has ISO9660's descriptors, whatever detection
    called it (TSK finds the format by itself), or None."""
    if stream.pread(16 * 2048 + 1, 5) != b"CD001":
        return None
    try:
        return iso_layout(stream)
    except TskError:
        return None


def _too_costly(layout: Layout) -> str | None:
    """Why TSK should not be given this ISO9660 volume at all (its work would grow with the
    square of a count read from the volume), or None."""
    if layout.path_entries > ISO_MAX_PATH_ENTRIES:
        return (
            f"its path table lists {layout.path_entries:,} directories, more than "
            f"{ISO_MAX_PATH_ENTRIES:,}: The Sleuth Kit's reading of it grows faster than the "
            "square of that"
        )
    longest = max((hi - lo for lo, hi in layout.directories), default=0)
    if longest > ISO_MAX_DIRECTORY_BYTES:
        return (
            f"a directory of {longest:,} bytes holds up to {longest // 34:,} records, more than "
            f"{ISO_MAX_DIRECTORY_BYTES // 34:,}: The Sleuth Kit's reading of it grows with the "
            "square of that"
        )
    return None


#: Where TSK's ffs_open looks for a superblock, in its order, by magic alone: (byte offset,
#: UFS version). FreeBSD's order (:data:`parsers.ufs.SUPERBLOCK_OFFSETS`) differs.
_TSK_UFS_SUPERBLOCKS = ((65536, 2), (262144, 2), (8192, 1))
#: Byte offsets of fields TSK reads without checking: fs_ncg, fs_fragshift and fs_inopb in the
#: superblock, cg_iusedoff in a cylinder group header (cg_freeoff follows it).
_SB_NCG_AT, _SB_FRAGSHIFT_AT, _SB_INOPB_AT, _CG_MAPS_AT = 44, 96, 120, 92
#: The longest piece of an overlay (:class:`VolumeImage` looks this far back for one).
_OVERLAY_PIECE = 64
_M32 = 0xFFFFFFFF


def _ufs_shown_to_tsk(
    layout: ufs.UfsLayout, stream: RangeStream
) -> tuple[dict[int, bytes], list[tuple[int, str]], str | None]:
    """What TSK is shown of a UFS volume instead of the fields its C code trusts, a finding
    for each, and why TSK is not given the volume at all (or None).

    TSK's UFS code (ffs.c) indexes its buffers with counts and offsets read from the volume:

    - it reads the first superblock it finds by magic alone, in its own order: the one bmap
      checked must be the one it reads (others before it are hidden; where TSK would never
      reach bmap's, it is not given the volume);
    - fs_inopb divides and places an inode inside a block buffer: shown ``bsize / isize``;
      fs_fragshift places the inode's block: shown log2 of the fragments per block;
    - fs_ncg bounds the groups it loads: shown no more than the groups the volume holds;
    - a group header's cg_iusedoff and cg_freeoff place the inode and fragment maps in a
      one-block buffer, checked only against ``> bsize`` (a negative one, or one whose map
      runs past the block, reads outside it; and once a group fails that check its buffer
      stays cached unchecked): shown just past the header's fixed fields, the inode map all
      in use;
    - a block tree walked past the volume's size (:func:`parsers.ufs.tree_overruns`): the
      inode is shown shorter or empty.
    """
    sb = layout.superblock
    assert sb is not None
    order: Literal["little", "big"] = "little" if layout.byte_order == "<" else "big"
    overlay: dict[int, bytes] = {}
    shown: list[tuple[int, str]] = []
    magic_at = ufs.SUPERBLOCK_SIZE - 4
    for at, version in _TSK_UFS_SUPERBLOCKS:
        if (at, version) == (sb.offset, sb.version):
            break
        raw = stream.pread(at + magic_at, 4)
        magic = ufs.UFS2_MAGIC if version == 2 else ufs.UFS1_MAGIC
        if magic in (int.from_bytes(raw, "little"), int.from_bytes(raw, "big")):
            overlay[at + magic_at] = bytes(4)
            shown.append(
                (
                    at,
                    f"a UFS{version} superblock at {at:#x} that bmap does not read is hidden "
                    f"from The Sleuth Kit, which would read it before the one at {sb.offset:#x}",
                )
            )
    else:
        return (
            {},
            [],
            (
                f"its UFS{sb.version} superblock at {sb.offset:#x} is not where The Sleuth Kit "
                "looks for one"
            ),
        )

    def show(at: int, value: int, message: str) -> None:
        overlay[at] = (value & _M32).to_bytes(4, order)
        shown.append((at, message))

    isize = sb.inode_size
    if sb.inodes_per_block != sb.block_size // isize:
        show(
            sb.offset + _SB_INOPB_AT,
            sb.block_size // isize,
            f"ufs-superblock: {sb.inodes_per_block} inodes per block where a {sb.block_size}-"
            f"byte block holds {sb.block_size // isize}; The Sleuth Kit is shown "
            f"{sb.block_size // isize}",
        )
    shift = sb.frags_per_block.bit_length() - 1
    found = int.from_bytes(stream.pread(sb.offset + _SB_FRAGSHIFT_AT, 4), order, signed=True)
    if found != shift:
        show(
            sb.offset + _SB_FRAGSHIFT_AT,
            shift,
            f"ufs-superblock: a fragment shift of {found} where a block holds "
            f"{sb.frags_per_block} fragments; The Sleuth Kit, which places inodes with it, is "
            f"shown {shift}",
        )
    groups = layout.cylinder_groups
    if sb.num_cgs > groups:
        show(
            sb.offset + _SB_NCG_AT,
            groups,
            f"ufs-superblock: {sb.num_cgs} cylinder groups where the volume holds {groups}; "
            f"The Sleuth Kit is shown {groups}, and inodes past them are not named",
        )
    bsize, fsize = sb.block_size, sb.fragment_size
    inode_map, frag_map = -(-sb.inodes_per_group // 8), -(-sb.frags_per_group // 8)
    if ufs.CG_HEADER_SIZE + inode_map + frag_map > bsize:
        return (
            {},
            [],
            f"the maps of {sb.inodes_per_group} inodes and {sb.frags_per_group} fragments a "
            f"group holds do not fit its {bsize}-byte header block, which The Sleuth Kit "
            "reads them from",
        )
    # (field, what, map length, where TSK is shown it, how it reads there): a bad inode map is
    # shown all in use (so that no live file is hidden), a bad fragment map after it (TSK's
    # view of free fragments is not what bmap's free space comes from).
    maps = (
        (0, "inode", inode_map, ufs.CG_HEADER_SIZE, "every inode of the group in use"),
        (
            4,
            "fragment",
            frag_map,
            ufs.CG_HEADER_SIZE + inode_map,
            "the bytes there as its free fragments",
        ),
    )
    bad_groups = 0
    for cg in range(groups):
        # cgtod() as TSK computes it: cgbase and the stagger in 32-bit unsigned arithmetic.
        start = (sb.frags_per_group * cg) & _M32
        if sb.version == 1:
            start += (sb.cg_offset * (cg & ~sb.cg_mask & _M32)) & _M32
        header = (start + sb.cblkno) * fsize
        if header + bsize > stream.size:
            continue  # TSK's read of the block fails, and it says so
        raw = stream.pread(header + _CG_MAPS_AT, 8)
        for at, what, length, instead, reads in maps:
            offset = int.from_bytes(raw[at : at + 4], order, signed=True)
            if 0 <= offset <= bsize - length:
                continue
            bad_groups += 1
            field_at = header + _CG_MAPS_AT + at
            overlay[field_at] = instead.to_bytes(4, order)
            if what == "inode":
                for lo in range(0, length, _OVERLAY_PIECE):
                    piece = min(_OVERLAY_PIECE, length - lo)
                    overlay[header + instead + lo] = b"\xff" * piece
            if bad_groups <= _SHOWN_INODES:
                shown.append(
                    (
                        field_at,
                        f"ufs-cg {cg}: its {what} map of {length} bytes at {offset} lies outside "
                        f"its {bsize}-byte block; The Sleuth Kit is shown {reads}",
                    )
                )
    if bad_groups > _SHOWN_INODES:
        shown.append((0, f"{bad_groups - _SHOWN_INODES} more such maps"))
    overruns = ufs.tree_overruns(stream.pread, layout, stream.size)
    for n, over in enumerate(overruns):
        value = over.shown_size.to_bytes(8, order)
        overlay[over.size_offset] = value
        if n < _SHOWN_INODES:
            what = "empty" if over.shown_size == 0 else f"{over.shown_size} bytes long"
            shown.append(
                (
                    over.size_offset,
                    f"inode {over.inode}: {over.why}; The Sleuth Kit is shown it {what}, and "
                    "its blocks past that are not named",
                )
            )
    if len(overruns) > _SHOWN_INODES:
        shown.append((0, f"{len(overruns) - _SHOWN_INODES} more such inodes"))
    return overlay, shown, None


def _fs_type_name(code: int) -> str:
    """TSK's name of a filesystem type (``fat32``, ``ntfs``, ``iso9660``)."""
    for name in dir(pytsk3):
        if name.startswith("TSK_FS_TYPE_") and not name.endswith(("_DETECT", "_ENUM")):
            try:
                if int(getattr(pytsk3, name)) == code:
                    return name.removeprefix("TSK_FS_TYPE_").lower()
            except (TypeError, ValueError):
                continue
    return str(code)


def describe(stream: RangeStream, size: int) -> dict[str, Any] | None:
    """What TSK says of the filesystem, for ``bmap info``; None where it cannot open it (or is
    not given it: :func:`_too_costly`, or crashes on it: TSK runs in a child process, as for
    :func:`map_volume`)."""
    try:
        return isolate.run_isolated(lambda _: _describe(stream, size), MapBuilder(), None)
    except isolate.Isolated:
        return None


def _describe(stream: RangeStream, size: int) -> dict[str, Any] | None:
    iso = _iso_of(stream)
    if iso is not None and _too_costly(iso) is not None:
        return None
    try:
        fs = open_filesystem(stream)
    except TskError:
        return None
    info = fs.info
    kind = _fs_type_name(int(info.ftype))
    facts: dict[str, Any] = {"type": kind}
    try:
        if kind.startswith("fat"):
            layout: Layout | None = fat_layout(stream)
        elif kind == "exfat":
            layout = exfat_layout(stream)
        elif kind == "ntfs":
            layout = ntfs_layout(stream, int(info.block_size))
        else:
            layout = None
    except (TskError, ValueError):
        layout = None
    if layout is not None:
        facts["cluster_size"] = layout.cluster
        facts["size"] = layout.fs_end
        if layout.free is not None:
            free = int((layout.free[1] - layout.free[0]).sum())
            facts["used_bytes"] = max(0, layout.fs_end - free)
            facts["free_bytes"] = free
    else:
        facts["block_size"] = int(info.block_size)
        facts["size"] = int(info.block_size) * int(info.block_count)
    if kind.startswith("hfs"):
        raw = stream.pread(hfsplus.HEADER_OFFSET, hfsplus.HEADER_SIZE)
        if len(raw) == hfsplus.HEADER_SIZE:
            header = hfsplus.VOLUME_HEADER.parse(raw)
            facts["version"] = "HFSX" if header.signature == b"HX" else "HFS+"
            facts["files"], facts["folders"] = header.file_count, header.folder_count
            facts["free_bytes"] = min(header.free_blocks * header.block_size, facts["size"])
            facts["journaled"] = bool(header.attributes & hfsplus.JOURNALED)
            ident = hfsplus.volume_identifier(header.finder_info)
            if ident is not None:
                facts["volume_identifier"] = ident
    facts["reader"] = "The Sleuth Kit (pytsk3)"
    return facts
