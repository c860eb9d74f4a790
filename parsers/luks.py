"""LUKS1 and LUKS2 headers: a LUKS volume named as blkid does, and its layout (header copies,
keyslot areas, encrypted data) as ``cryptsetup luksDump`` shows it.

- LUKS1: https://gitlab.com/cryptsetup/cryptsetup/-/wikis/LUKS-standard/on-disk-format.pdf
- LUKS2: https://gitlab.com/cryptsetup/LUKS2-docs/-/blob/main/luks2_doc_wip.pdf
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import construct as cs

from parsers.errors import (
    DamagedError,
    NotThisFormat,
    ParserError,
    TruncatedError,
    UnsupportedError,
)
from parsers.probe import Content, ProbeReader, c_label
from parsers.stream import ReadSeek

LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS2_SECONDARY_MAGIC = b"SKUL\xba\xbe"
# Where a LUKS2 secondary header may sit (its offset equals the primary's header size).
LUKS2_SECONDARY_OFFSETS = (
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
)  # fmt: skip

LUKS1_PHDR = cs.Struct(
    "magic" / cs.Bytes(6) * "LUKS\\xba\\xbe",
    "version" / cs.Int16ub * "1",
    "cipher_name" / cs.Bytes(32),
    "cipher_mode" / cs.Bytes(32),
    "hash_spec" / cs.Bytes(32),
    "payload_offset" / cs.Int32ub * "start of the encrypted data, in 512-byte sectors",
    "key_bytes" / cs.Int32ub,
    "mk_digest" / cs.Bytes(20),
    "mk_digest_salt" / cs.Bytes(32),
    "mk_digest_iterations" / cs.Int32ub,
    "uuid" / cs.Bytes(40) * "UUID as a NUL-terminated string",
)

LUKS2_BINARY_HEADER = cs.Struct(
    "magic" / cs.Bytes(6) * "LUKS\\xba\\xbe (primary) or SKUL\\xba\\xbe (secondary)",
    "version" / cs.Int16ub * "2",
    "hdr_size" / cs.Int64ub * "binary header plus JSON area, in bytes",
    "seqid" / cs.Int64ub * "increased on every update",
    "label" / cs.Bytes(48) * "NUL-terminated label",
    "checksum_alg" / cs.Bytes(32),
    "salt" / cs.Bytes(64),
    "uuid" / cs.Bytes(40) * "UUID as a NUL-terminated string",
    "subsystem" / cs.Bytes(48),
    "hdr_offset" / cs.Int64ub * "offset of this header from the device start",
    cs.Padding(184),
    "csum" / cs.Bytes(64),
)


def _luks_content(raw: bytes, offset: int) -> Content:
    header = LUKS2_BINARY_HEADER.parse(raw)
    if header.version == 1:
        phdr = LUKS1_PHDR.parse(raw)
        return Content("crypto_LUKS", "1", None, c_label(phdr.uuid), None, offset_in_device=offset)
    label = c_label(header.label) if header.version == 2 else None
    uuid = c_label(header.uuid) if header.version == 2 else None
    return Content("crypto_LUKS", str(header.version), label, uuid, None, offset_in_device=offset)


def probe(dev: ProbeReader) -> Content:
    """LUKS: the primary header at 0, or a LUKS2 secondary header at a known offset."""
    raw = dev.read("luks-header", 0, LUKS2_BINARY_HEADER.sizeof())
    header = LUKS2_BINARY_HEADER.parse(raw)
    if header.magic == LUKS_MAGIC and (header.version != 2 or header.hdr_offset == 0):
        return _luks_content(raw, 0)
    for offset in LUKS2_SECONDARY_OFFSETS:
        try:
            raw = dev.read("luks2-secondary-header", offset, LUKS2_BINARY_HEADER.sizeof())
        except TruncatedError:
            break
        header = LUKS2_BINARY_HEADER.parse(raw)
        if header.magic != LUKS2_SECONDARY_MAGIC:
            continue
        if header.version == 2 and header.hdr_offset != offset:
            continue
        return _luks_content(raw, offset)
    raise NotThisFormat("luks-header", 0, "no LUKS magic")


# -- the layout: header copies, keyslot areas, data segments ------------------------------

LUKS1_KEYSLOT = cs.Struct(
    "active" / cs.Int32ub * "0x00AC71F3 enabled, 0x0000DEAD disabled",
    "iterations" / cs.Int32ub,
    "salt" / cs.Bytes(32),
    "key_material_offset" / cs.Int32ub * "in 512-byte sectors",
    "stripes" / cs.Int32ub * "anti-forensic stripes",
)
LUKS1_KEYSLOTS = 8
LUKS1_KEYSLOT_ACTIVE = 0x00AC71F3
LUKS1_KEYSLOT_INACTIVE = 0x0000DEAD
#: The LUKS1 header: the phdr, then the eight keyslot descriptors.
LUKS1_HEADER_SIZE = LUKS1_PHDR.sizeof() + LUKS1_KEYSLOTS * LUKS1_KEYSLOT.sizeof()
SECTOR = 512
#: The binary part of a LUKS2 header; the JSON area follows it, to ``hdr_size``.
LUKS2_BINARY_SIZE = 4096
#: The largest LUKS2 header (binary header and JSON area) the specification allows.
LUKS2_MAX_HEADER = 4 << 20
#: The specification's limit on LUKS2 keyslots (and we take no more segments than that).
LUKS2_MAX_KEYSLOTS = 32
#: Digits of an offset or size in the JSON ("a string of a decimal uint64").
_MAX_DIGITS = 20


@dataclass(frozen=True)
class Area:
    """A range of the LUKS device: ``[offset, offset + size)`` bytes."""

    name: str
    """``"primary"`` / ``"secondary"`` for a header, the keyslot number, the segment number."""
    offset: int
    size: int | None
    """None: to the end of the device (a LUKS2 segment of size ``"dynamic"``)."""


@dataclass(frozen=True)
class LuksLayout:
    """Where a LUKS device keeps what: what ``bmap map`` names and ``bmap info`` shows.

    ``problems`` hold damage found on the way (a header copy with a bad checksum, a keyslot
    past the device); the layout is what could still be trusted.
    """

    version: int
    uuid: str | None
    label: str | None
    cipher: str
    """As ``cryptsetup luksDump`` words it: ``aes-xts-plain64``."""
    key_bits: int | None
    headers: tuple[Area, ...]
    """Every header copy found (a LUKS2 copy whose checksum fails is named, not used)."""
    keyslots: tuple[Area, ...]
    """The keyslot areas in use (LUKS1: enabled slots; LUKS2: the keyslots in the JSON)."""
    disabled_keyslots: tuple[Area, ...]
    """LUKS1's disabled slots, whose areas cryptsetup still lays out (and may hold wiped or
    old key material)."""
    segments: tuple[Area, ...]
    """The encrypted data."""
    problems: tuple[ParserError, ...] = ()


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def read_layout(fh: ReadSeek, size: int) -> LuksLayout:
    """The layout of the LUKS device in ``fh`` (``size`` bytes): LUKS1, or LUKS2 from the
    newer of its two header copies whose checksum holds.

    Raises:
        NotThisFormat: no LUKS header at 0 (or, LUKS2, at a secondary's place).
        DamagedError: a LUKS2 device with no usable header copy.
    """
    head = _read(fh, 0, min(LUKS2_BINARY_SIZE, size))
    if len(head) >= LUKS2_BINARY_HEADER.sizeof() and head[:6] == LUKS_MAGIC:
        version = int.from_bytes(head[6:8], "big")
        if version == 1:
            return _luks1(fh, size, head)
    return _luks2(fh, size)


def _read(fh: ReadSeek, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(max(0, length))


def _luks1(fh: ReadSeek, size: int, head: bytes) -> LuksLayout:
    if len(head) < LUKS1_HEADER_SIZE:
        raise TruncatedError("luks-header", 0, f"a LUKS1 header needs {LUKS1_HEADER_SIZE} bytes")
    phdr = LUKS1_PHDR.parse(head)
    problems: list[ParserError] = []
    slots = cs.Array(LUKS1_KEYSLOTS, LUKS1_KEYSLOT).parse(head[LUKS1_PHDR.sizeof() :])
    # The key material of one slot: the master key split into `stripes` stripes.
    active: list[Area] = []
    disabled: list[Area] = []
    for number, slot in enumerate(slots):
        if slot.active not in (LUKS1_KEYSLOT_ACTIVE, LUKS1_KEYSLOT_INACTIVE):
            problems.append(
                DamagedError(
                    "luks-keyslot",
                    LUKS1_PHDR.sizeof() + number * LUKS1_KEYSLOT.sizeof(),
                    f"keyslot {number}: state {slot.active:#010x} is neither enabled nor disabled",
                )
            )
            continue
        area = Area(
            str(number),
            slot.key_material_offset * SECTOR,
            -(-phdr.key_bytes * slot.stripes // SECTOR) * SECTOR,
        )
        if slot.key_material_offset == 0 or slot.stripes == 0:
            if slot.active == LUKS1_KEYSLOT_ACTIVE:
                problems.append(
                    DamagedError("luks-keyslot", None, f"keyslot {number}: enabled, no area")
                )
            continue
        (active if slot.active == LUKS1_KEYSLOT_ACTIVE else disabled).append(area)
    cipher = f"{_text(phdr.cipher_name)}-{_text(phdr.cipher_mode)}"
    return LuksLayout(
        version=1,
        uuid=c_label(phdr.uuid),
        label=None,
        cipher=cipher,
        key_bits=phdr.key_bytes * 8,
        headers=(Area("primary", 0, LUKS1_HEADER_SIZE),),
        keyslots=tuple(active),
        disabled_keyslots=tuple(disabled),
        segments=(Area("0", phdr.payload_offset * SECTOR, None),),
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class _Copy:
    offset: int
    hdr_size: int
    seqid: int
    metadata: dict[str, Any]
    label: str | None
    uuid: str | None


def _luks2(fh: ReadSeek, size: int) -> LuksLayout:
    problems: list[ParserError] = []
    copies: list[_Copy] = []
    # Every copy whose magic and size hold is named, even one whose checksum fails.
    named: list[Area] = []
    places = [0, *LUKS2_SECONDARY_OFFSETS]
    found_any = False
    for offset in places:
        if offset + LUKS2_BINARY_SIZE > size:
            break
        raw = _read(fh, offset, LUKS2_BINARY_SIZE)
        header = LUKS2_BINARY_HEADER.parse(raw)
        want = LUKS_MAGIC if offset == 0 else LUKS2_SECONDARY_MAGIC
        if header.magic != want or header.version != 2:
            continue
        found_any = True
        where = "luks2-header" if offset == 0 else "luks2-secondary-header"
        if header.hdr_offset != offset:
            problems.append(DamagedError(where, offset, f"says it lies at {header.hdr_offset:#x}"))
            continue
        if not LUKS2_BINARY_SIZE < header.hdr_size <= LUKS2_MAX_HEADER or header.hdr_size % 4096:
            problems.append(DamagedError(where, offset, f"header size {header.hdr_size:#x}"))
            continue
        if offset + header.hdr_size > size:
            problems.append(TruncatedError(where, offset, "runs past the end of the device"))
            continue
        named.append(Area("primary" if offset == 0 else "secondary", offset, header.hdr_size))
        area = _read(fh, offset, header.hdr_size)
        algorithm = _text(header.checksum_alg)
        if algorithm != "sha256":
            problems.append(
                UnsupportedError(where, offset, f"checksum algorithm {algorithm!r} not checked")
            )
        else:
            blank = area[:0x1C0] + bytes(64) + area[0x200:]
            if hashlib.sha256(blank).digest() != bytes(header.csum[:32]):
                problems.append(DamagedError(where, offset, "checksum mismatch; copy not used"))
                continue
        try:
            text = area[LUKS2_BINARY_SIZE:].split(b"\0", 1)[0].decode("utf-8")
            metadata = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:80]
            problems.append(DamagedError(where, offset, f"JSON area unreadable: {reason}"))
            continue
        if not isinstance(metadata, dict):
            problems.append(DamagedError(where, offset, "JSON area is not an object"))
            continue
        copies.append(
            _Copy(
                offset,
                header.hdr_size,
                header.seqid,
                metadata,
                c_label(header.label),
                c_label(header.uuid),
            )
        )
    if not copies:
        if not found_any:
            raise NotThisFormat("luks-header", 0, "no LUKS magic")
        first = problems[0] if problems else None
        raise DamagedError(
            "luks2-header", 0, f"no usable header copy ({first.reason if first else 'none'})"
        )
    best = max(copies, key=lambda c: c.seqid)
    headers = tuple(named)
    if len(copies) == 2 and copies[0].seqid != copies[1].seqid:
        problems.append(
            DamagedError(
                "luks2-header",
                None,
                f"the copies differ (seqid {copies[0].seqid} and {copies[1].seqid}); "
                f"the newer, at {best.offset:#x}, is used",
            )
        )
    keyslots, cipher, key_bits = _areas(best.metadata, "keyslots", problems)
    segments, seg_cipher, _ = _areas(best.metadata, "segments", problems)
    return LuksLayout(
        version=2,
        uuid=best.uuid,
        label=best.label,
        cipher=seg_cipher or cipher or "unknown",
        key_bits=key_bits,
        headers=headers,
        keyslots=keyslots,
        disabled_keyslots=(),
        segments=segments,
        problems=tuple(problems),
    )


def _number(value: object) -> int | None:
    """A LUKS2 JSON number: a string of at most 20 decimal digits (or a JSON integer) that
    fits in int64; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= _MAX_DIGITS and value.isdigit():
        number = int(value)
    else:
        return None
    return number if 0 <= number < 1 << 63 else None


def _areas(
    metadata: dict[str, Any], section: str, problems: list[ParserError]
) -> tuple[tuple[Area, ...], str | None, int | None]:
    """The areas of the JSON's ``keyslots`` (their ``area``) or ``segments``, with the
    first one's cipher and key size."""
    entries = metadata.get(section)
    if not isinstance(entries, dict):
        problems.append(DamagedError(f"luks2-{section}", None, "missing or not an object"))
        return (), None, None
    areas: list[Area] = []
    cipher: str | None = None
    key_bits: int | None = None
    if len(entries) > LUKS2_MAX_KEYSLOTS:
        problems.append(
            DamagedError(
                f"luks2-{section}",
                None,
                f"{len(entries)} entries; the first {LUKS2_MAX_KEYSLOTS} are used",
            )
        )
    for name, entry in list(entries.items())[:LUKS2_MAX_KEYSLOTS]:
        place = entry.get("area") if section == "keyslots" and isinstance(entry, dict) else entry
        if not isinstance(place, dict):
            problems.append(DamagedError(f"luks2-{section}", None, f"{name!r}: not an object"))
            continue
        offset = _number(place.get("offset"))
        length = None if place.get("size") == "dynamic" else _number(place.get("size"))
        if offset is None or (length is None and place.get("size") != "dynamic"):
            problems.append(
                DamagedError(f"luks2-{section}", None, f"{name!r}: offset or size unreadable")
            )
            continue
        areas.append(Area(str(name)[:64], offset, length))
        encryption = place.get("encryption")
        if cipher is None and isinstance(encryption, str):
            cipher = encryption[:64]
        bytes_ = _number(entry.get("key_size")) if isinstance(entry, dict) else None
        if key_bits is None and bytes_ is not None and bytes_ < 1 << 16:
            key_bits = bytes_ * 8
    return tuple(areas), cipher, key_bits
