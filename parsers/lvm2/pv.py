"""An LVM2 PV's header, its metadata areas, and the metadata records in their rings.

Each metadata area starts with a 512-byte header whose ``raw_locn`` records point at the
current metadata text inside the area's ring buffer; a record can wrap around the ring's end.
A checksum that does not match is damage: the record is skipped and older records (in the
other metadata area, or left in the ring) stand in, each choice reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import construct as cs

from parsers.errors import DamagedError, ParserError, TruncatedError
from parsers.lvm2.label import (
    SECTOR,
    LabelHeader,
    PVHeaderStart,
    find_label,
    format_uuid,
    lvm_crc,
    read_at,
)
from parsers.lvm2.metadata import parse_config
from parsers.stream import ReadSeek

MDA_MAGIC = b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e"
MDA_HEADER_SIZE = 512
RAW_LOCN_IGNORED = 0x1
#: No real metadata text comes near this; a hostile raw_locn cannot make us read more.
MAX_METADATA = 64 * 1024 * 1024
MAX_LOCNS = 64

DiskLocn = cs.Struct(
    "offset" / cs.Int64ul * "bytes from the start of the device",
    "size" / cs.Int64ul * "bytes; 0 for a data area means to the end of the device",
)

MDAHeader = cs.Struct(
    "checksum_xl" / cs.Int32ul * "CRC of the rest of the 512-byte header",
    "magic" / cs.Bytes(16),
    "version" / cs.Int32ul * "1",
    "start" / cs.Int64ul * "the area's offset on the device",
    "size" / cs.Int64ul * "the area's size, header included",
)

RawLocn = cs.Struct(
    "offset" / cs.Int64ul * "bytes from the area's start",
    "size" / cs.Int64ul * "bytes of text",
    "checksum" / cs.Int32ul * "CRC of the text",
    "flags" / cs.Int32ul * "1: ignored",
)


@dataclass(frozen=True)
class Area:
    """A data or metadata area of a PV, in bytes of the PV device."""

    offset: int
    size: int


@dataclass(frozen=True)
class MetadataRecord:
    """One metadata text found in a metadata area."""

    area: int
    """Index of the metadata area (0 or 1)."""
    offset: int
    """Byte offset of the text's first byte on the device."""
    size: int
    wrapped: bool
    text: str
    seqno: int
    vg_name: str
    config: dict[str, Any]


@dataclass
class PVLabel:
    """What one PV says about itself."""

    label_offset: int
    """Byte offset of the label sector on the device."""
    uuid: str
    """Dashed, as LVM prints it."""
    device_size: int
    data_areas: list[Area]
    metadata_areas: list[Area]
    records: list[MetadataRecord] = field(default_factory=list)
    """Valid metadata records, newest (highest seqno) first."""
    problems: list[ParserError] = field(default_factory=list)

    @property
    def metadata(self) -> MetadataRecord | None:
        return self.records[0] if self.records else None


def _locns(data: bytes, pos: int, limit: int) -> tuple[list[Area], int]:
    areas: list[Area] = []
    for _ in range(MAX_LOCNS):
        if pos + 16 > limit:
            break
        locn = DiskLocn.parse(data[pos : pos + 16])
        pos += 16
        if locn.offset == 0 and locn.size == 0:
            return areas, pos
        areas.append(Area(locn.offset, locn.size))
    raise DamagedError("pv-header", None, "area list not terminated")


def read_pv(fh: ReadSeek, size: int) -> PVLabel:
    """Read a PV's label, header, metadata areas and every valid metadata record.

    Raises:
        NotThisFormat: not an LVM2 PV.
        DamagedError: the label or PV header is damaged.
    """
    label_offset, sector = find_label(fh, size)
    label = LabelHeader.parse(sector)
    pos = label.offset_xl
    if not 32 <= pos <= SECTOR - 40:
        raise DamagedError("pv-header", label_offset, f"header offset {pos} out of range")
    head = PVHeaderStart.parse(sector[pos : pos + 40])
    try:
        uuid = head.pv_uuid.decode("ascii")
    except UnicodeDecodeError:
        raise DamagedError("pv-header", label_offset + pos, "UUID is not ASCII") from None
    data_areas, pos = _locns(sector, pos + 40, SECTOR)
    metadata_areas, pos = _locns(sector, pos, SECTOR)
    pv = PVLabel(label_offset, format_uuid(uuid), head.device_size_xl, data_areas, metadata_areas)
    for index, area in enumerate(metadata_areas):
        try:
            pv.records.extend(_read_area(fh, size, area, index, pv.problems))
        except ParserError as exc:
            pv.problems.append(exc)
    pv.records.sort(key=lambda r: -r.seqno)
    return pv


def _read_area(
    fh: ReadSeek, size: int, area: Area, index: int, problems: list[ParserError]
) -> list[MetadataRecord]:
    kind = "lvm-metadata" if index == 0 else "lvm-metadata-backup"
    if area.offset + MDA_HEADER_SIZE > size or area.size < MDA_HEADER_SIZE:
        raise TruncatedError(kind, area.offset, "metadata area outside the device")
    header = read_at(fh, area.offset, MDA_HEADER_SIZE)
    mda = MDAHeader.parse(header)
    if mda.magic != MDA_MAGIC:
        raise DamagedError(kind, area.offset, "no metadata area magic")
    crc = lvm_crc(header[4:])
    if crc != mda.checksum_xl:
        raise DamagedError(
            kind,
            area.offset,
            f"header CRC mismatch (stored {mda.checksum_xl:#010x}, computed {crc:#010x})",
        )
    ring = area.size - MDA_HEADER_SIZE
    records = []
    damaged: set[int] = set()
    pos = 40
    for _ in range(MAX_LOCNS):
        locn = RawLocn.parse(header[pos : pos + 24])
        pos += 24
        if (locn.offset == 0 and locn.size == 0) or pos > MDA_HEADER_SIZE:
            break
        if locn.flags & RAW_LOCN_IGNORED:
            continue
        where = area.offset + locn.offset
        if not MDA_HEADER_SIZE <= locn.offset < area.size or not 0 < locn.size <= min(
            ring, MAX_METADATA
        ):
            problems.append(
                DamagedError(
                    kind,
                    area.offset,
                    f"metadata record at {locn.offset:#x}+{locn.size:#x} out of range",
                )
            )
            continue
        first = min(locn.size, area.size - locn.offset)
        text = read_at(fh, where, first)
        wrapped = first < locn.size
        if wrapped:
            text += read_at(fh, area.offset + MDA_HEADER_SIZE, locn.size - first)
        crc = lvm_crc(text)
        if crc != locn.checksum:
            damaged.add(where)
            problems.append(
                DamagedError(
                    kind,
                    where,
                    f"metadata text CRC mismatch (stored {locn.checksum:#010x}, computed "
                    f"{crc:#010x}); this record is not used",
                )
            )
            continue
        try:
            records.append(_record(text, index, where, locn.size, wrapped))
        except ParserError as exc:
            problems.append(type(exc)(kind, where, exc.reason))
    if not records:
        # The current record is damaged: older ones usually survive in the ring, each
        # written at a 512-byte boundary and ended by a NUL. They carry no checksum of their
        # own, so they count only when they parse as a whole volume group.
        records = [r for r in _scan_ring(fh, size, area, index) if r.offset not in damaged]
        if records:
            newest = max(records, key=lambda r: r.seqno)
            problems.append(
                DamagedError(
                    kind,
                    area.offset,
                    f"no valid current metadata record; an older record (seqno "
                    f"{newest.seqno}) found in the ring at {newest.offset:#x} is used",
                )
            )
    return records


_RING_START = re.compile(rb"[A-Za-z0-9_.+\-]+ \{\n")


def _scan_ring(fh: ReadSeek, size: int, area: Area, index: int) -> list[MetadataRecord]:
    ring_start = area.offset + MDA_HEADER_SIZE
    ring = read_at(fh, ring_start, min(area.size - MDA_HEADER_SIZE, max(0, size - ring_start)))
    found = []
    starts = [pos for pos in range(0, len(ring), SECTOR) if _RING_START.match(ring, pos)]
    # A record ends at its NUL, and never runs into the next record's start: lvm2 writes a
    # record's top-level ``name {`` line only at its beginning, so a candidate that reaches
    # the next one was overwritten. Each byte of the ring is parsed at most once.
    for pos, following in zip(starts, [*starts[1:], len(ring)]):
        end = ring.find(b"\0", pos, following)
        end = following if end < 0 else end
        try:
            found.append(_record(ring[pos:end], index, ring_start + pos, end - pos, False))
        except ParserError:
            continue
    return found


def _record(raw: bytes, area: int, offset: int, size: int, wrapped: bool) -> MetadataRecord:
    text = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
    config = parse_config(text)
    vgs = [k for k, v in config.items() if isinstance(v, dict) and "seqno" in v]
    if len(vgs) != 1:
        raise DamagedError("lvm-metadata", offset, f"{len(vgs)} volume groups in one record")
    seqno = config[vgs[0]]["seqno"]
    if not isinstance(seqno, int):
        raise DamagedError("lvm-metadata", offset, "seqno is not a number")
    return MetadataRecord(area, offset, size, wrapped, text, seqno, vgs[0], config)
