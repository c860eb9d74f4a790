"""bmaptool's XML block map (format 2.0), written from a map: flash only what is used.

bmaptool (https://github.com/yoctoproject/bmaptool, Debian's ``bmap-tools``) copies an image
to a disk by writing only the block ranges its ``.bmap`` XML lists, and checks each range's
sha256 as it goes. ``bmaptool create`` lists the blocks of the image file that are not holes:
it cannot tell a filesystem's free block full of old bytes from a used one. A bmap map can,
so this writer lists every block that holds something and leaves out what the filesystems'
own allocation structures call free (docs/bmaptool.md).

Which ``u`` kinds are left out (:func:`mapped_blocks`):

- :data:`FREE_KINDS` (``unallocated``, ``free-extents``): always; their allocation structures
  (bitmaps, FAT, free-space B+trees, LVM's metadata) say nothing holds them.
- :data:`SPARE_KINDS` (``unpartitioned``, ``volume-slack``, ``pv-unused``, ``luks-unused`` and
  the ``*-tail`` kinds): kept, since something bmap does not read may live there (a BIOS boot
  loader in the gap after the MBR, a RAID superblock after a filesystem's end), except where
  they are holes of the image file: those read as zeros and bmaptool's own map skips them.
- every other ``u`` kind (``unreferenced``, ``cluster-slack``, ``unmapped``, and any kind
  added later): kept, holes or not. The allocation structures call ``unreferenced`` and
  ``cluster-slack`` used, and ``unmapped`` is content bmap does not read.

A block is listed when any of its bytes is; a block that a ``d``, ``f`` or ``m`` line or a
kept ``u`` line touches is never left out, whatever else covers it.

The XML is byte for byte what ``bmaptool create`` 3.6 writes (``BmapCreate.py``): the same
comments, the same padding of the mapped-count fields (which bmaptool patches in place), a
single block as ``N`` and a run as ``FIRST-LAST``, and ``BmapFileChecksum`` the sha256 of the
file written with that field as 64 ``0``. With ``keep_free`` the ranges are bmaptool's own
(every block that is not a hole of the image file), so the file equals ``bmaptool create``'s
for an image whose holes FIEMAP and SEEK_DATA report alike.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import numpy as np
import numpy.typing as npt

from bmap.errors import BmapError, ExitCode
from bmap.model.blockmap import TYPE_CODE, BlockMap
from bmap.model.intervals import subtract, union

Array = npt.NDArray[np.int64]

#: bmaptool's version of the format this module writes.
BMAP_VERSION = "2.0"
#: The block size of the ranges (bmaptool takes its host filesystem's, 4096 nearly always).
BLOCK_SIZE = 4096
#: ``u`` kinds that are left out: what an allocation structure calls free.
FREE_KINDS = frozenset({"unallocated", "free-extents"})
#: ``u`` kinds that are left out only where they are holes of the image file.
SPARE_KINDS = frozenset(
    {
        "unpartitioned",
        "volume-slack",
        "pv-unused",
        "luks-unused",
        "fat-tail",
        "exfat-tail",
        "ntfs-tail",
    }
)
#: Bytes read at a time for the range checksums.
CHUNK = 1 << 20
#: Ranges whose lines are held before they go to the output.
_RANGE_BATCH = 1 << 12

_CHECKSUM_TYPE = "sha256"
_CHECKSUM_LEN = 64


class BmaptoolExportError(BmapError):
    """A map or an image that bmaptool cannot flash (several disks, a container)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class BmaptoolSummary:
    """What a written bmaptool XML says: sizes and counts as in its header."""

    image_size: int
    block_size: int
    blocks_count: int
    mapped_blocks: int
    ranges: int


def check_exportable(bmap: BlockMap) -> None:
    """Refuse a map bmaptool cannot flash: one raw disk only.

    Raises:
        BmaptoolExportError: naming what is wrong.
    """
    if len(bmap.images) != 1:
        raise BmaptoolExportError(
            f"--format bmaptool: bmaptool flashes one image; this map has {len(bmap.images)} "
            "disks (map each image on its own)"
        )
    info = bmap.images[0]
    if info.format != "raw":
        raise BmaptoolExportError(
            f"--format bmaptool: {info.path} is {info.format}; bmaptool copies the image "
            "file's own bytes, so give it a raw image (qemu-img convert -O raw, ewfexport -f raw)"
        )


def to_block_ranges(starts: Array, ends: Array, block_size: int) -> tuple[Array, Array]:
    """Half-open byte ranges -> bmaptool's inclusive block ranges ``(first, last)``, sorted and
    merged (touching runs become one): a block is in when any of its bytes is.

    >>> [a.tolist() for a in to_block_ranges(np.array([0, 5000]), np.array([1, 8192]), 4096)]
    [[0], [1]]
    """
    s, e = union(starts, ends)
    if len(s) == 0:
        return s, e
    first = s // block_size
    last = (e - 1) // block_size
    # Runs that share or touch a block merge: union of [first, last + 1).
    first, stop = union(first, last + 1)
    return first, stop - 1


#: ``FS_IOC_FIEMAP`` and its structures (linux/fiemap.h): the header, then the extents.
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_HEAD = struct.Struct("=QQLLLL")  # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQQQLLLL")  # logical, physical, length, 2 reserved, flags, 3
_FIEMAP_BATCH = 512


def data_runs(fh: IO[bytes], size: int) -> tuple[Array, Array]:
    """The byte ranges of the image file that are not holes, as bmaptool finds them: FIEMAP
    (with its sync flag, so pending writes count; preallocated extents count as data), else
    SEEK_DATA / SEEK_HOLE; the whole file where neither tells (a block device)."""
    try:
        return _fiemap_runs(fh.fileno(), size)
    except OSError:
        pass
    try:
        return _seek_runs(fh.fileno(), size)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ESPIPE, errno.ENOTTY):
            raise
    return np.array([0], np.int64), np.array([size], np.int64)


def _fiemap_runs(fd: int, size: int) -> tuple[Array, Array]:
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    flags = _FIEMAP_FLAG_SYNC
    while pos < size:  # each turn moves past at least one extent: bounded by the extents
        request = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEAD.pack_into(request, 0, pos, size - pos, flags, 0, _FIEMAP_BATCH, 0)
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, request)
        flags = 0  # synced once
        mapped = _FIEMAP_HEAD.unpack_from(request, 0)[3]
        if mapped == 0:
            break
        last_flags = 0
        for i in range(min(mapped, _FIEMAP_BATCH)):
            logical, _, length, _, _, last_flags, _, _, _ = _FIEMAP_EXTENT.unpack_from(
                request, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size
            )
            start, end = max(logical, pos), min(logical + length, size)
            if end > start:
                starts.append(start)
                ends.append(end)
            pos = max(pos, logical + length)
        if last_flags & _FIEMAP_EXTENT_LAST:
            break
    return union(np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))


def _seek_runs(fd: int, size: int) -> tuple[Array, Array]:
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    while pos < size:  # each turn moves past one data run: bounded by the file's runs
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole from pos to the end
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            break
        starts.append(start)
        ends.append(end)
        pos = end
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _classified_lines(bmap: BlockMap, disk: int) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Disk ``disk``'s byte runs: ``(used, free, spare)`` pairs of (starts, ends), each a
    union. Used: ``d``, ``f``, ``m`` lines and the ``u`` lines of kinds always kept."""
    kinds = np.empty(len(bmap.objects), dtype=object)
    kinds[:] = bmap.objects.kinds
    u_code, container_codes = TYPE_CODE["u"], [TYPE_CODE[t] for t in "vpl"]
    used: list[tuple[Array, Array]] = []
    free: list[tuple[Array, Array]] = []
    spare: list[tuple[Array, Array]] = []
    for part in bmap.parts(1 << 16):
        on_disk = bmap.disk[part] == disk
        if not on_disk.any():
            continue
        codes = bmap.type_code[part][on_disk]
        starts, ends = bmap.start[part][on_disk], bmap.end[part][on_disk]
        objs = bmap.obj[part][on_disk]
        is_u = codes == u_code
        content = ~is_u & ~np.isin(codes, container_codes)
        line_kind = kinds[objs[is_u]]
        u_starts, u_ends = starts[is_u], ends[is_u]
        is_free = np.isin(line_kind, list(FREE_KINDS)) if len(line_kind) else np.zeros(0, bool)
        is_spare = np.isin(line_kind, list(SPARE_KINDS)) if len(line_kind) else np.zeros(0, bool)
        kept = ~is_free & ~is_spare
        used.append(union(starts[content], ends[content]))
        used.append(union(u_starts[kept], u_ends[kept]))
        free.append(union(u_starts[is_free], u_ends[is_free]))
        spare.append(union(u_starts[is_spare], u_ends[is_spare]))

    def joined(runs: list[tuple[Array, Array]]) -> tuple[Array, Array]:
        if not runs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return union(np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs]))

    return (*joined(used), *joined(free), *joined(spare))


def mapped_blocks(
    bmap: BlockMap,
    data: tuple[Array, Array],
    *,
    keep_free: bool = False,
    block_size: int = BLOCK_SIZE,
    disk: int = 1,
) -> tuple[Array, Array]:
    """The inclusive block ranges ``(first, last)`` to list for disk ``disk`` of ``bmap``,
    given the image file's data runs ``data`` (:func:`data_runs`).

    ``keep_free``: bmaptool's own rule, every block that holds a byte of ``data``. Otherwise
    every block but those wholly inside bytes the map calls free (module docstring).
    """
    size = bmap.images[disk - 1].size
    if keep_free:
        return to_block_ranges(*data, block_size)
    used_s, used_e, free_s, free_e, spare_s, spare_e = _classified_lines(bmap, disk)
    holes_in_spare = subtract((spare_s, spare_e), data)
    drop_s, drop_e = subtract(
        (np.concatenate((free_s, holes_in_spare[0])), np.concatenate((free_e, holes_in_spare[1]))),
        (used_s, used_e),
    )
    drop_s, drop_e = np.clip(drop_s, 0, size), np.clip(drop_e, 0, size)
    # Blocks wholly inside a dropped run; the image's last, partial block counts as whole
    # when the run reaches the image's end.
    first_whole = -(-drop_s // block_size)
    stop_whole = np.where(drop_e >= size, -(-size // block_size), drop_e // block_size)
    keep = stop_whole > first_whole
    blocks = -(-size // block_size)
    dropped = (first_whole[keep], stop_whole[keep])
    everything = (np.array([0], np.int64), np.array([blocks], np.int64))
    first, stop = subtract(everything, dropped)
    return first, stop - 1


def human_size(size: int) -> str:
    """A byte count as bmaptool writes it in its comments (``BmapHelpers.human_size``)."""
    if size == 1:
        return "1 byte"
    if size < 512:
        return f"{size} bytes"
    value = float(size)
    for modifier in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024:
            return f"{value:.1f} {modifier}"
    return f"{value:.1f} EiB"


_HEADER = """\
<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

<bmap version="{version}">
    <!-- Image size in bytes: {image_human} -->
    <ImageSize> {image_size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {block_size} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: {mapped_comment}   -->
    <MappedBlocksCount> {mapped} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> {checksum_type} </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> """

_AFTER_CHECKSUM = """ </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this blocks range. -->
    <BlockMap>
"""

_FOOTER = "    </BlockMap>\n</bmap>\n"


def _header(image_size: int, block_size: int, blocks: int, mapped: int) -> str:
    image_human = human_size(image_size)
    # bmaptool writes blanks as wide as the longest value, then the values over them.
    comment = f"{human_size(mapped * block_size)} or {mapped * 100.0 / blocks:.1f}%"
    return _HEADER.format(
        version=BMAP_VERSION,
        image_human=image_human,
        image_size=image_size,
        block_size=block_size,
        blocks=blocks,
        mapped_comment=comment.ljust(len(image_human) + len(" or ") + len("100.0%")),
        mapped=str(mapped).ljust(len(str(blocks))),
        checksum_type=_CHECKSUM_TYPE,
    )


def range_checksums(
    fh: IO[bytes], first: Array, last: Array, block_size: int, image_size: int
) -> Iterator[str]:
    """The sha256 of each range's bytes, read once in order, :data:`CHUNK` at a time (the
    last block clipped at the image's end)."""
    fd = fh.fileno()
    for a, b in zip(first.tolist(), last.tolist()):
        digest = hashlib.sha256()
        pos, end = a * block_size, min((b + 1) * block_size, image_size)
        while pos < end:
            chunk = os.pread(fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise OSError(errno.EIO, f"image ends at {pos:#x}, before {end:#x}")
            digest.update(chunk)
            pos += len(chunk)
        yield digest.hexdigest()


def _write_xml(
    out: BinaryIO, fh: IO[bytes], first: Array, last: Array, image_size: int, block_size: int
) -> BmaptoolSummary:
    """Write the XML to a seekable binary ``out`` at its start and patch its checksum in."""
    blocks = -(-image_size // block_size)
    mapped = int((last - first + 1).sum())
    base = out.tell()
    header = _header(image_size, block_size, blocks, mapped).encode("ascii")
    file_digest = hashlib.sha256()

    def put(data: bytes) -> None:
        out.write(data)
        file_digest.update(data)

    put(header)
    put(b"0" * _CHECKSUM_LEN + _AFTER_CHECKSUM.encode("ascii"))
    lines: list[str] = []
    checksums = range_checksums(fh, first, last, block_size, image_size)
    for a, b, checksum in zip(first.tolist(), last.tolist(), checksums):
        span = f"{a}-{b}" if a != b else f"{a}"
        lines.append(f'        <Range chksum="{checksum}"> {span} </Range>\n')
        if len(lines) >= _RANGE_BATCH:
            put("".join(lines).encode("ascii"))
            lines = []
    put("".join(lines).encode("ascii"))
    put(_FOOTER.encode("ascii"))
    end = out.tell()
    out.seek(base + len(header))
    out.write(file_digest.hexdigest().encode("ascii"))
    out.seek(end)
    return BmaptoolSummary(image_size, block_size, blocks, mapped, len(first))


def write_bmaptool(
    bmap: BlockMap,
    image: str | os.PathLike[str] | IO[bytes],
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    keep_free: bool = False,
    block_size: int = BLOCK_SIZE,
) -> BmaptoolSummary:
    """Write bmaptool's XML for the one raw disk of ``bmap``, whose bytes are ``image``.

    Args:
        bmap: the map of that image alone.
        image: the image's path or a binary file open on it; it is only read.
        out: a path, or a text or binary stream (stdout); a stream gets the file once it is
            whole, since its checksum is known only at the end.
        keep_free: list every block that is not a hole of the image file (bmaptool's own
            rule) instead of leaving out what the map calls free.
        block_size: bmaptool's block size.

    Raises:
        BmaptoolExportError: the map is not of one raw image, or the image is not its size.
    """
    check_exportable(bmap)
    size = bmap.images[0].size
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as fh:
            return write_bmaptool(bmap, fh, out, keep_free=keep_free, block_size=block_size)
    actual = os.fstat(image.fileno())
    if actual.st_size not in (0, size):  # a block device's st_size is 0
        raise BmaptoolExportError(
            f"--format bmaptool: the image is {actual.st_size} bytes, the map says {size}"
        )
    first, last = mapped_blocks(
        bmap, data_runs(image, size), keep_free=keep_free, block_size=block_size
    )
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w+b") as dest:
            return _write_xml(dest, image, first, last, size, block_size)
    with tempfile.TemporaryFile() as spool:
        summary = _write_xml(spool, image, first, last, size, block_size)
        spool.seek(0)
        for chunk in iter(lambda: spool.read(CHUNK), b""):
            if isinstance(out, io.TextIOBase):
                out.write(chunk.decode("ascii"))
            else:
                cast("IO[bytes]", out).write(chunk)
        return summary
