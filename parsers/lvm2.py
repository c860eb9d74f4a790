"""LVM2 physical volumes: the label, the PV header, the metadata areas and the metadata text.

References:
- lvm2's ``lib/format_text/layout.h`` and ``lib/label/label.h`` (the on-disk structures);
- lvm2's ``lib/config/config.c`` (the metadata's config language);
- libyal's "Logical Volume Manager (LVM) format" document.

The label (``LABELONE``) sits in one of the first four 512-byte sectors; the PV header after it
lists the data areas and the metadata areas. Each metadata area starts with a 512-byte
header whose ``raw_locn`` records point at the current metadata text inside the area's ring
buffer; a record can wrap around the ring's end. A checksum that does not match is damage:
the record is skipped and older records (in the other metadata area, or left in the ring)
stand in, each choice reported.

The metadata text is LVM's config language (sections, ``key = value``, lists, strings with
escapes, numbers, comments), read here by a tokenizer and a small recursive-descent parser.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import construct as cs

from parsers.errors import DamagedError, NotThisFormat, ParserError, TruncatedError
from parsers.stream import ReadSeek

SECTOR = 512
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
MDA_MAGIC = b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e"
MDA_HEADER_SIZE = 512
#: lvm2's own CRC32: the standard table, this initial value, no final inversion.
INITIAL_CRC = 0xF597A6CF
RAW_LOCN_IGNORED = 0x1
#: No real metadata text comes near this; a hostile raw_locn cannot make us read more.
MAX_METADATA = 64 * 1024 * 1024
MAX_LOCNS = 64

LabelHeader = cs.Struct(
    "id" / cs.Bytes(8) * '"LABELONE"',
    "sector_xl" / cs.Int64ul * "the sector this label is in",
    "crc_xl" / cs.Int32ul * "CRC of the rest of the sector, from offset_xl on",
    "offset_xl" / cs.Int32ul * "where the PV header starts, from the label's start",
    "type" / cs.Bytes(8) * '"LVM2 001"',
)

DiskLocn = cs.Struct(
    "offset" / cs.Int64ul * "bytes from the start of the device",
    "size" / cs.Int64ul * "bytes; 0 for a data area means to the end of the device",
)

PVHeaderStart = cs.Struct(
    "pv_uuid" / cs.Bytes(32) * "32 characters, no dashes",
    "device_size_xl" / cs.Int64ul * "bytes",
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


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """lvm2's ``calc_crc``: zlib's CRC32 without its pre- and post-inversion."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def format_uuid(raw: str) -> str:
    """LVM's 32-character UUID as LVM prints it: 6-4-4-4-4-4-6."""
    if len(raw) != 32:
        return raw
    parts = (6, 4, 4, 4, 4, 4, 6)
    out, pos = [], 0
    for n in parts:
        out.append(raw[pos : pos + n])
        pos += n
    return "-".join(out)


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


def _read(fh: ReadSeek, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def find_label(fh: ReadSeek, size: int) -> tuple[int, bytes]:
    """The label sector: ``(offset, 512 bytes)``.

    Raises:
        NotThisFormat: no LABELONE with type LVM2 001 in the first four sectors.
        DamagedError: a label whose CRC does not match.
    """
    for sector in range(4):
        offset = sector * SECTOR
        if offset + SECTOR > size:
            break
        data = _read(fh, offset, SECTOR)
        if len(data) < SECTOR or data[:8] != LABEL_ID:
            continue
        label = LabelHeader.parse(data)
        if label.type != LABEL_TYPE:
            continue
        if label.sector_xl != sector:
            raise DamagedError("pv-label", offset, f"says it is in sector {label.sector_xl}")
        crc = lvm_crc(data[20:])
        if crc != label.crc_xl:
            raise DamagedError(
                "pv-label",
                offset,
                f"CRC mismatch (stored {label.crc_xl:#010x}, computed {crc:#010x})",
            )
        return offset, data
    raise NotThisFormat("pv-label", 0, "no LVM2 label in the first four sectors")


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
    header = _read(fh, area.offset, MDA_HEADER_SIZE)
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
        text = _read(fh, where, first)
        wrapped = first < locn.size
        if wrapped:
            text += _read(fh, area.offset + MDA_HEADER_SIZE, locn.size - first)
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
    ring = _read(fh, ring_start, min(area.size - MDA_HEADER_SIZE, max(0, size - ring_start)))
    found = []
    for pos in range(0, len(ring), SECTOR):
        if not _RING_START.match(ring, pos):
            continue
        end = ring.find(b"\0", pos)
        end = len(ring) if end < 0 else end
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


# ---------------------------------------------------------------------------------------------
# The config language

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>[-+]?\d+(?:\.\d+)?(?![\w.]))
  | (?P<ident>[A-Za-z0-9_.+\-/:@]+)
  | (?P<punct>[={}\[\],])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(kind, value, offset)`` tokens; comments and white space dropped.

    Raises:
        DamagedError: a character that starts no token (an unterminated string, say).
    """
    tokens = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if not m:
            raise DamagedError(
                "lvm-metadata", None, f"unexpected {text[pos : pos + 10]!r} at text offset {pos}"
            )
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), pos))
        pos = m.end()
    return tokens


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.DOTALL)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def error(self, message: str) -> DamagedError:
        where = self.tokens[self.pos][2] if self.pos < len(self.tokens) else "the end"
        return DamagedError("lvm-metadata", None, f"{message} at text offset {where}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise self.error(f"expected {value or 'a token'}")
        self.pos += 1
        return token

    def section(self, closing: bool) -> dict[str, Any]:
        self.depth += 1
        if self.depth > 32:
            raise self.error("sections nested too deep")
        result: dict[str, Any] = {}
        while True:
            token = self.peek()
            if token is None:
                if closing:
                    raise self.error("missing }")
                break
            if token[1] == "}" and token[0] == "punct":
                if not closing:
                    raise self.error("unexpected }")
                self.pos += 1
                break
            kind, name, _ = self.take()
            if kind == "string":
                name = _unquote(name)  # a quoted key is a key like any other
            elif kind not in ("ident", "number"):
                raise self.error(f"unexpected {name!r}")
            nxt = self.take()
            if nxt[1] == "{":
                result[name] = self.section(closing=True)
            elif nxt[1] == "=":
                result[name] = self.value()
            else:
                raise self.error(f"expected = or {{ after {name!r}")
        self.depth -= 1
        return result

    def value(self) -> Any:
        kind, text, _ = self.take()
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            return float(text) if "." in text else int(text)
        if text == "[":
            items: list[Any] = []
            while True:
                token = self.peek()
                if token is None:
                    raise self.error("missing ]")
                if token[1] == "]":
                    self.pos += 1
                    return items
                items.append(self.value())
                token = self.peek()
                if token is not None and token[1] == ",":
                    self.pos += 1
        if kind == "ident":
            return text  # a bare word: kept as it is
        raise self.error(f"unexpected {text!r}")


def parse_config(text: str) -> dict[str, Any]:
    """LVM's config language to nested dicts, lists, strings and numbers. Unknown keys are
    kept; the order of keys is the text's.

    Raises:
        DamagedError: text that does not follow the grammar.
    """
    return _Parser(tokenize(text)).section(closing=False)


# ---------------------------------------------------------------------------------------------
# The volume group described by a metadata record


@dataclass(frozen=True)
class PVRef:
    name: str
    """The metadata's own name for the PV (``pv0``)."""
    uuid: str
    pe_start: int
    """Bytes from the start of the PV device to its first extent."""
    pe_count: int
    device_hint: str
    dev_size: int


@dataclass(frozen=True)
class Stripe:
    pv: str
    """PV name (``pv0``) or, for mirror/raid legs, a sub-LV name."""
    start_extent: int


@dataclass(frozen=True)
class Segment:
    start_extent: int
    extent_count: int
    type: str
    stripe_size: int
    """Bytes (0 for linear)."""
    stripes: tuple[Stripe, ...]
    raw: dict[str, Any]


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    uuid: str
    status: tuple[str, ...]
    segments: tuple[Segment, ...]
    visible: bool
    raw: dict[str, Any]

    @property
    def extent_count(self) -> int:
        return max((s.start_extent + s.extent_count for s in self.segments), default=0)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    seqno: int
    extent_size: int
    """Bytes."""
    pvs: tuple[PVRef, ...]
    lvs: tuple[LogicalVolume, ...]


def _int(section: dict[str, Any], key: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DamagedError("lvm-metadata", None, f"{key} is not a number: {value!r}")
    return value


def volume_group(record: MetadataRecord) -> VolumeGroup:
    """The VG of one metadata record.

    Raises:
        DamagedError: a field a VG needs is missing or of the wrong kind.
    """
    vg = record.config[record.vg_name]
    extent_size = _int(vg, "extent_size") * SECTOR
    if extent_size <= 0:
        raise DamagedError("lvm-metadata", record.offset, "extent size 0")
    pvs = []
    for name, pv in (vg.get("physical_volumes") or {}).items():
        if not isinstance(pv, dict):
            continue
        pvs.append(
            PVRef(
                name=name,
                uuid=str(pv.get("id", "")),
                pe_start=_int(pv, "pe_start", 0) * SECTOR,
                pe_count=_int(pv, "pe_count", 0),
                device_hint=str(pv.get("device", "")),
                dev_size=_int(pv, "dev_size", 0) * SECTOR,
            )
        )
    lvs = []
    for name, lv in (vg.get("logical_volumes") or {}).items():
        if not isinstance(lv, dict):
            continue
        segments = []
        for key, seg in lv.items():
            if not (key.startswith("segment") and isinstance(seg, dict)):
                continue
            stripes_raw = (
                seg.get("stripes")
                or seg.get("mirrors")
                or seg.get("raids")
                or seg.get("raid0_lvs")
                or []
            )
            stripes = []
            if isinstance(stripes_raw, list):
                step = 2 if "stripes" in seg or "mirrors" in seg else 1
                items = stripes_raw
                for i in range(0, len(items) - step + 1, step):
                    target = str(items[i])
                    offset = items[i + 1] if step == 2 and isinstance(items[i + 1], int) else 0
                    stripes.append(Stripe(target, offset))
            segments.append(
                Segment(
                    start_extent=_int(seg, "start_extent", 0),
                    extent_count=_int(seg, "extent_count", 0),
                    type=str(seg.get("type", "")),
                    stripe_size=_int(seg, "stripe_size", 0) * SECTOR if "stripe_size" in seg else 0,
                    stripes=tuple(stripes),
                    raw=seg,
                )
            )
        status = tuple(str(s) for s in lv.get("status", []) if isinstance(s, str))
        lvs.append(
            LogicalVolume(
                name=name,
                uuid=str(lv.get("id", "")),
                status=status,
                segments=tuple(sorted(segments, key=lambda s: s.start_extent)),
                visible="VISIBLE" in status,
                raw=lv,
            )
        )
    return VolumeGroup(
        name=record.vg_name,
        uuid=str(vg.get("id", "")),
        seqno=record.seqno,
        extent_size=extent_size,
        pvs=tuple(pvs),
        lvs=tuple(lvs),
    )
