"""HFS+ and HFSX: the volume header, its fork records, the journal info block, and what
libblkid reads for LABEL and UUID.

Apple's Technical Note TN1150 (HFS Plus Volume Format) is the reference. All numbers are
big-endian. The volume header lies 1024 bytes from the volume's start and its copy (the
"alternate volume header") 1024 bytes from the volume's end; both are 512 bytes. Allocation
blocks count from the volume's start, so block 0 holds the boot blocks and the header.

:func:`read_layout` is what the Sleuth Kit layer needs beside TSK's own walk: where the headers,
the special files' first extents and the journal lie, each bounded by the volume's real size.
The special files' overflow extents come from TSK's runs of their catalog records (3 to 8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import construct as cs

from parsers.errors import DamagedError, NotThisFormat, TruncatedError, UnsupportedError
from parsers.probe import Content, ProbeReader, is_power_of_2, read_struct, utf16_label

HEADER_OFFSET = 1024
HEADER_SIZE = 512
SIGNATURES = {b"H+": 4, b"HX": 5}
#: kHFSVolumeJournaledBit.
JOURNALED = 1 << 13
#: JournalInfoBlock flags: the journal lies in this volume / on another device.
JOURNAL_IN_FS = 1
JOURNAL_ON_OTHER_DEVICE = 2

EXTENT = cs.Struct("start_block" / cs.Int32ub, "block_count" / cs.Int32ub)

FORK_DATA = cs.Struct(
    "logical_size" / cs.Int64ub,
    "clump_size" / cs.Int32ub,
    "total_blocks" / cs.Int32ub,
    "extents" / cs.Array(8, EXTENT),
)

VOLUME_HEADER = cs.Struct(
    "signature" / cs.Bytes(2) * "H+ or HX",
    "version" / cs.Int16ub * "4 (HFS+) or 5 (HFSX)",
    "attributes" / cs.Int32ub,
    "last_mounted_version" / cs.Bytes(4),
    "journal_info_block" / cs.Int32ub * "allocation block of the JournalInfoBlock",
    "create_date" / cs.Int32ub,
    "modify_date" / cs.Int32ub,
    "backup_date" / cs.Int32ub,
    "checked_date" / cs.Int32ub,
    "file_count" / cs.Int32ub,
    "folder_count" / cs.Int32ub,
    "block_size" / cs.Int32ub * "allocation block size, a power of 2, >= 512",
    "total_blocks" / cs.Int32ub,
    "free_blocks" / cs.Int32ub,
    "next_allocation" / cs.Int32ub,
    "rsrc_clump_size" / cs.Int32ub,
    "data_clump_size" / cs.Int32ub,
    "next_catalog_id" / cs.Int32ub,
    "write_count" / cs.Int32ub,
    "encodings_bitmap" / cs.Int64ub,
    "finder_info" / cs.Bytes(32) * "bytes 24..31: the 64-bit volume identifier",
    "allocation_file" / FORK_DATA,
    "extents_file" / FORK_DATA,
    "catalog_file" / FORK_DATA,
    "attributes_file" / FORK_DATA,
    "startup_file" / FORK_DATA,
)
assert VOLUME_HEADER.sizeof() == HEADER_SIZE

JOURNAL_INFO_BLOCK = cs.Struct(
    "flags" / cs.Int32ub,
    "device_signature" / cs.Bytes(32),
    "offset" / cs.Int64ub * "bytes from the volume's start",
    "size" / cs.Int64ub,
)

NODE_DESCRIPTOR = cs.Struct(
    "forward_link" / cs.Int32ub,
    "backward_link" / cs.Int32ub,
    "kind" / cs.Int8sb * "-1 leaf, 0 index, 1 header, 2 map",
    "height" / cs.Int8ub,
    "num_records" / cs.Int16ub,
    cs.Padding(2),
)

HEADER_RECORD = cs.Struct(
    "tree_depth" / cs.Int16ub,
    "root_node" / cs.Int32ub,
    "leaf_records" / cs.Int32ub,
    "first_leaf_node" / cs.Int32ub,
    "last_leaf_node" / cs.Int32ub,
    "node_size" / cs.Int16ub,
)

_LEAF = -1
_ROOT_PARENT_ID = 1

#: The special files in the volume header, by their catalog node IDs (TSK's inode numbers).
SPECIAL_FILES = {
    3: ("extents_file", "hfs-extents"),
    4: ("catalog_file", "hfs-catalog"),
    6: ("allocation_file", "hfs-allocation"),
    7: ("startup_file", "hfs-startup"),
    8: ("attributes_file", "hfs-attributes"),
}


def _plausible(header: cs.Container) -> bool:
    return (
        header.signature in SIGNATURES
        and header.version == SIGNATURES[header.signature]
        and is_power_of_2(header.block_size)
        and 512 <= header.block_size <= 1 << 24
        and header.total_blocks > 0
    )


def volume_identifier(finder_info: bytes) -> str | None:
    """The 64-bit volume identifier (Finder info bytes 24..31) in hex; None where it is zero.

    Not blkid's UUID: libblkid hashes this identifier with MD5 and a fixed namespace (Apple's
    rule), but the values Debian 12's blkid prints could not be reproduced from its source
    (tests/bmap/layers/test_hfs_map.py keeps the difference visible), so no UUID is claimed.
    """
    ident = finder_info[24:32]
    return ident.hex() if any(ident) else None


def _label(dev: ProbeReader, header: cs.Container) -> str | None:
    """The root folder's name, the key of the catalog's first leaf record (libblkid's way:
    the header node of the catalog's first extent, then the first leaf node, looked up in
    the catalog's eight extents)."""
    block = header.block_size
    extents = header.catalog_file.extents
    first = extents[0]
    if first.block_count == 0:
        return None
    head = dev.read("hfs-catalog", first.start_block * block, 14 + HEADER_RECORD.sizeof())
    record = HEADER_RECORD.parse(head[14:])
    if record.leaf_records == 0 or not 512 <= record.node_size <= 32768:
        return None
    leaf_block = record.first_leaf_node * record.node_size // block
    for extent in extents:
        if extent.block_count == 0:
            return None
        if leaf_block < extent.block_count:
            break
        leaf_block -= extent.block_count
    else:
        return None
    node = dev.read(
        "hfs-catalog", (extent.start_block + leaf_block) * block, min(record.node_size, 14 + 520)
    )
    descriptor = NODE_DESCRIPTOR.parse(node)
    if descriptor.num_records == 0 or descriptor.kind != _LEAF or len(node) < 22:
        return None
    parent = int.from_bytes(node[16:20], "big")
    length = int.from_bytes(node[20:22], "big")
    if parent != _ROOT_PARENT_ID or length > 255:
        return None
    return utf16_label(node[22 : 22 + 2 * length], "utf-16-be")


def probe(dev: ProbeReader) -> Content:
    """HFS+ or HFSX: "H+" (version 4) or "HX" (version 5) at 1024, big-endian. TYPE
    ``hfsplus`` for both, as blkid says; no VERSION, and no UUID (:func:`volume_identifier`)."""
    header = read_struct(VOLUME_HEADER, dev, "hfs-volume-header", HEADER_OFFSET)
    if header.signature not in SIGNATURES:
        raise NotThisFormat("hfs-volume-header", HEADER_OFFSET, "no H+ or HX signature")
    if not _plausible(header):
        raise NotThisFormat("hfs-volume-header", HEADER_OFFSET, "geometry not plausible")
    try:
        label = _label(dev, header)
    except (TruncatedError, UnsupportedError, cs.ConstructError):
        label = None
    return Content("hfsplus", None, label, None, header.total_blocks * header.block_size)


# -- the layout the TSK layer maps ------------------------------------------------------------


@dataclass
class HfsLayout:
    """Where an HFS+ volume's own structures lie, in bytes from the volume's start."""

    block: int
    """The allocation block size."""
    fs_end: int
    """``total_blocks * block``, cut at the volume's end."""
    journaled: bool
    structures: list[tuple[str, int, int]] = field(default_factory=list)
    """``(kind, start, end)``: ``hfs-boot-blocks``, ``hfs-volume-header``,
    ``hfs-volume-header-backup``, ``hfs-reserved``, ``hfs-journal-info``, ``hfs-journal``."""
    special: dict[int, tuple[str, list[tuple[int, int]]]] = field(default_factory=dict)
    """Catalog node ID -> (kind, the byte ranges of the header's eight extents)."""
    allocation_size: int = 0
    """Bytes of the allocation file (a bit per allocation block, the most significant bit
    of byte 0 for block 0)."""
    findings: list[tuple[str, int | None, str]] = field(default_factory=list)
    """``(severity, offset, message)``: ``error``, ``warning`` or ``info``."""


def read_layout(read: Callable[[int, int], bytes], size: int) -> HfsLayout:
    """The layout of the HFS+ volume whose bytes ``read(offset, length)`` gives (short at the
    end), ``size`` bytes long. Raises a ParserError where the volume header is unusable."""
    raw = read(HEADER_OFFSET, HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise TruncatedError("hfs-volume-header", HEADER_OFFSET, "truncated")
    header = VOLUME_HEADER.parse(raw)
    if not _plausible(header):
        raise DamagedError("hfs-volume-header", HEADER_OFFSET, "not an HFS+ volume header")
    block = header.block_size
    claimed = header.total_blocks * block
    layout = HfsLayout(
        block=block, fs_end=min(claimed, size), journaled=bool(header.attributes & JOURNALED)
    )
    findings = layout.findings
    if claimed > size:
        findings.append(
            (
                "error",
                HEADER_OFFSET,
                f"the volume header claims {claimed} bytes but the volume holds {size}; "
                "blocks past the end are not read",
            )
        )
    structures = layout.structures
    structures.append(("hfs-boot-blocks", 0, HEADER_OFFSET))
    structures.append(("hfs-volume-header", HEADER_OFFSET, HEADER_OFFSET + HEADER_SIZE))
    # The alternate header lies 1024 bytes from the end of the volume (TN1150), which may be
    # past the last whole allocation block; some writers put it at the end of the blocks.
    backup = None
    for end in dict.fromkeys((size, layout.fs_end)):
        at = end - HEADER_OFFSET
        if at >= HEADER_OFFSET + HEADER_SIZE and read(at, 2) in SIGNATURES:
            backup = at
            break
    if backup is None:
        findings.append(
            (
                "warning",
                size - HEADER_OFFSET,
                "no alternate volume header 1024 bytes before the end of the volume",
            )
        )
    else:
        structures.append(("hfs-volume-header-backup", backup, backup + HEADER_SIZE))
        structures.append(("hfs-reserved", backup + HEADER_SIZE, backup + HEADER_OFFSET))
    for cnid, (name, kind) in SPECIAL_FILES.items():
        fork = header[name]
        ranges = []
        for extent in fork.extents:
            if extent.block_count == 0:
                break
            lo = extent.start_block * block
            hi = min(lo + extent.block_count * block, layout.fs_end)
            if hi > lo:
                ranges.append((lo, hi))
        if ranges:
            layout.special[cnid] = (kind, ranges)
    layout.allocation_size = min(header.allocation_file.logical_size, size)
    if layout.journaled:
        _journal(read, header, layout)
    return layout


def _journal(read: Callable[[int, int], bytes], header: cs.Container, layout: HfsLayout) -> None:
    """The journal info block and the journal it names (when inside this volume)."""
    block = layout.block
    at = header.journal_info_block * block
    if at + block > layout.fs_end or at < HEADER_OFFSET + HEADER_SIZE:
        layout.findings.append(
            ("error", HEADER_OFFSET, f"the journal info block at {at:#x} is outside the volume")
        )
        return
    raw = read(at, JOURNAL_INFO_BLOCK.sizeof())
    if len(raw) < JOURNAL_INFO_BLOCK.sizeof():
        return
    info = JOURNAL_INFO_BLOCK.parse(raw)
    layout.structures.append(("hfs-journal-info", at, at + block))
    if info.flags & JOURNAL_ON_OTHER_DEVICE:
        layout.findings.append(
            ("info", at, "the journal lies on another device; it is not mapped here")
        )
        return
    if not info.flags & JOURNAL_IN_FS:
        return
    lo, hi = info.offset, info.offset + info.size
    if info.size == 0 or (lo < at + block and hi > at) or hi > layout.fs_end:
        layout.findings.append(
            ("error", at, f"the journal [{lo:#x}, {hi:#x}) is outside the volume or overlaps")
        )
        hi = min(hi, layout.fs_end)
        if hi <= lo or (lo < at + block and hi > at):
            return
    layout.structures.append(("hfs-journal", lo, hi))
