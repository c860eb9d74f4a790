"""LUKS1 and LUKS2 volumes: the header copies, the keyslot areas and the encrypted data.

Registered in :data:`bmap.layers.registry.CONTENT_MAPPERS` for the ``crypto_LUKS`` content
kind. Nothing is decrypted: the encrypted data is one ``m luks-payload`` object, and what it
holds is not mapped. The layout comes from :func:`parsers.luks.read_layout`, as ``cryptsetup
luksDump`` reads it:

- ``m luks-header``: the LUKS1 header (the phdr and the eight keyslot descriptors), or each
  LUKS2 header copy (binary header and JSON area; a copy whose checksum fails is named, and
  its metadata not used);
- ``m luks-keyslots``: the key material of each keyslot in use (LUKS1: the enabled slots;
  LUKS2: the keyslots of the JSON metadata);
- ``m luks-keyslots-disabled``: LUKS1's disabled slots, whose areas cryptsetup still lays
  out (wiped when a key is removed, but worth a look);
- ``m luks-payload``: each data segment;
- ``u luks-unused``: the rest of the space before the data (alignment, the unused part of
  LUKS2's keyslots area);
- ``u volume-slack``: bytes after a LUKS2 segment of fixed size.

Every area is cut at the end of the device, and bytes two areas claim are named once, by the
first (headers, then keyslots, then data), with a finding.
"""

from __future__ import annotations

from typing import Any

from bmap.errors import Finding, Severity
from bmap.layers.content import Volume
from bmap.model.blockmap import NO_OFFSET, MapBuilder
from bmap.model.units import human_size
from parsers.errors import ParserError
from parsers.luks import Area, LuksLayout, read_layout


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    """The LUKS volume's header copies, keyslot areas and data as lines; findings for damage."""
    findings: list[Finding] = []

    def finding(severity: Severity, offset: int | None, source: str, message: str) -> None:
        at = None if offset is None or volume.offset is None else volume.offset + offset
        findings.append(Finding(severity, volume.disk, at, f"{volume.device} {source}", message))

    try:
        layout = read_layout(volume.stream, volume.size)
    except ParserError as exc:
        finding(Severity.ERROR, exc.offset, exc.structure, f"{exc.reason}; not mapped inside")
        return findings
    for problem in layout.problems:
        finding(Severity.WARNING, problem.offset, problem.structure, problem.reason)

    size = volume.size
    claimed: list[tuple[int, int]] = []  # sorted, disjoint

    def claim(kind: str, areas: tuple[Area, ...], type_: str = "m") -> None:
        """Lines of ``kind`` over ``areas``, less what is named already; an ``m`` area that
        meets one named before is a finding (the ``u`` kinds fill what is left)."""
        starts: list[int] = []
        ends: list[int] = []
        for area in areas:
            end = size if area.size is None else min(size, area.offset + area.size)
            if area.offset >= size:
                finding(
                    Severity.ERROR,
                    None,
                    kind,
                    f"{area.name}: at {area.offset:#x}, past the device's end ({size:#x})",
                )
                continue
            if area.size is not None and area.offset + area.size > size:
                finding(
                    Severity.ERROR,
                    area.offset,
                    kind,
                    f"{area.name}: {human_size(area.size)} at {area.offset:#x} runs past the "
                    f"device's end; cut there",
                )
            for lo, hi in _unclaimed(claimed, area.offset, end):
                if type_ == "m" and (lo, hi) != (area.offset, end):
                    finding(
                        Severity.WARNING,
                        area.offset,
                        kind,
                        f"{area.name}: overlaps another LUKS area; its bytes are named once",
                    )
                starts.append(lo)
                ends.append(hi)
                _add(claimed, lo, hi)
        if starts:
            obj = builder.add_object(type_, volume.device, kind)
            offsets = [0] * len(starts) if type_ == "m" else [NO_OFFSET] * len(starts)
            volume.placement.place(builder, obj, starts, ends, offsets)

    claim("luks-header", layout.headers)
    claim("luks-keyslots", layout.keyslots)
    claim("luks-keyslots-disabled", layout.disabled_keyslots)
    claim("luks-payload", layout.segments)
    # The rest before the data, and after it.
    data = min((a.offset for a in layout.segments if a.offset < size), default=size)
    claim("luks-unused", (Area("unused", 0, data),), "u")
    claim("volume-slack", (Area("slack", 0, size),), "u")
    return findings


def _unclaimed(claimed: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` no range of ``claimed`` covers."""
    out = []
    at = start
    for lo, hi in claimed:
        if hi <= at or lo >= end:
            continue
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < end:
        out.append((at, end))
    return out


def _add(claimed: list[tuple[int, int]], start: int, end: int) -> None:
    claimed.append((start, end))
    claimed.sort()


def describe(stream: Any, size: int) -> dict[str, Any] | None:
    """What ``bmap info`` shows of a LUKS volume: version, cipher, keyslots, data offset
    (what ``cryptsetup luksDump`` shows; no key material)."""
    try:
        layout = read_layout(stream, size)
    except ParserError:
        return None
    return _facts(layout)


def _facts(layout: LuksLayout) -> dict[str, Any]:
    return {
        "type": f"LUKS{layout.version}",
        "cipher": layout.cipher,
        "key_bits": layout.key_bits,
        "keyslots": len(layout.keyslots),
        "keyslot_numbers": [a.name for a in layout.keyslots],
        "data_offset": min((a.offset for a in layout.segments), default=None),
        "header_copies": len(layout.headers),
    }
