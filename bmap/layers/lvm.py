"""The LVM layer: physical volumes found on any disk, assembled into volume groups, and every
logical volume placed on the disks.

A PV is any partition (or whole disk) whose content is ``LVM2_member``. PVs are matched to the
volume group's metadata by PV UUID, whichever image holds them, so a VG may span disks. Each
LV's segments become *pieces*: contiguous ranges of the LV that lie at one place of one PV (a
striped segment gives one piece per chunk). The pieces are the LV's ``l`` lines, the
:class:`~bmap.layers.placement.Placement` that puts what is inside the LV on the disks, and
the stream that reads the LV. Each segment type is placed by one small function, picked from
:data:`_SEGMENT_PLACERS`.

Registered in :data:`bmap.layers.registry.VOLUME_MANAGERS` for ``LVM2_member`` devices: the
mapper calls :func:`map_disks` once, with every disk, and this module hands each LV it places
back to the mapper to map what the LV holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bmap.errors import Finding, Severity
from bmap.images import MappedReader, RangeStream
from bmap.layers.content import Volume, detect_content
from bmap.layers.partitions import Disk
from bmap.layers.placement import Placement, Segment
from bmap.layers.registry import MapContent
from bmap.model.blockmap import MapBuilder
from bmap.model.intervals import subtract, union
from parsers.errors import ParserError
from parsers.lvm2.label import SECTOR
from parsers.lvm2.metadata import MAX_VALUE, LogicalVolume, VolumeGroup, volume_group
from parsers.lvm2.metadata import Segment as LVMSegment
from parsers.lvm2.pv import MetadataRecord, PVLabel, read_pv

#: Mirror and RAID legs nest; a hostile metadata text could make them a cycle.
MAX_LEG_DEPTH = 8


@dataclass
class PVDevice:
    """A PV found on a disk."""

    disk: Disk
    device: str
    """``/dev/sda2``, or ``/dev/sdb`` for a whole-disk PV."""
    offset: int
    """Where the PV device starts on its disk."""
    size: int
    label: PVLabel

    def stream(self) -> RangeStream:
        return self.disk.image.stream().view(self.offset, self.size)


@dataclass
class Piece:
    """LV bytes ``[lv_start, lv_end)`` lie on ``pv`` from ``pv_offset`` on."""

    lv_start: int
    lv_end: int
    pv: PVDevice
    pv_offset: int


@dataclass
class LVView:
    lv: LogicalVolume
    device: str
    size: int
    own_pieces: list[Piece]
    """Ranges this LV occupies itself (linear and striped segments)."""
    content_pieces: list[Piece]
    """Where the LV's contents are read from (the first complete leg for mirrors)."""
    complete: bool
    """Every byte of the LV is on a PV that was found, in a segment type bmap places."""
    types: list[str]
    map_contents: bool = True
    """Whether what the LV holds is a volume to map (not a thin pool's data area)."""

    @property
    def missing_pv(self) -> bool:
        """Incomplete only because a PV it lies on was not given."""
        return not self.complete and all(t in _SEGMENT_PLACERS for t in self.types)


@dataclass
class VGView:
    vg: VolumeGroup
    record: MetadataRecord
    disk: int
    """The disk whose PV held the metadata used (for findings)."""
    pvs: dict[str, PVDevice | None]
    lvs: list[LVView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def find_pvs(disks: Sequence[Disk]) -> tuple[list[PVDevice], list[Finding]]:
    """Every PV on the disks (partitions and whole disks whose content is an LVM2 PV)."""
    found: list[PVDevice] = []
    findings: list[Finding] = []
    for disk in disks:
        for device, offset, size, content in disk.devices():
            if content is None or content.kind != "LVM2_member":
                continue
            stream = disk.image.stream().view(offset, size)
            try:
                label = read_pv(stream, size)
            except ParserError as exc:
                findings.append(
                    Finding(
                        Severity.ERROR,
                        disk.number,
                        offset + (exc.offset or 0),
                        device,
                        f"LVM2 PV unreadable: {exc}",
                    )
                )
                continue
            for problem in label.problems:
                severity = Severity.WARNING
                findings.append(
                    Finding(
                        severity,
                        disk.number,
                        None if problem.offset is None else offset + problem.offset,
                        f"{device} {problem.structure}",
                        problem.reason,
                    )
                )
            found.append(PVDevice(disk, device, offset, size, label))
    return found, findings


def assemble(pvs: list[PVDevice]) -> tuple[list[VGView], list[Finding]]:
    """Volume groups from the newest metadata any of their PVs holds."""
    findings: list[Finding] = []
    by_vg: dict[str, list[tuple[MetadataRecord, PVDevice]]] = {}
    for pv in pvs:
        if pv.label.metadata is None:
            continue
        record = pv.label.metadata
        vg_id = str(record.config[record.vg_name].get("id", record.vg_name))
        by_vg.setdefault(vg_id, []).append((record, pv))
    by_uuid = {pv.label.uuid: pv for pv in pvs}
    views = []
    for records in by_vg.values():
        record, holder = max(records, key=lambda r: r[0].seqno)
        try:
            vg = volume_group(record)
        except ParserError as exc:
            findings.append(
                Finding(
                    Severity.ERROR,
                    holder.disk.number,
                    None,
                    holder.device,
                    f"volume group metadata unusable: {exc}",
                )
            )
            continue
        stale = sorted({pv.device for r, pv in records if r.seqno < record.seqno})
        if stale:
            findings.append(
                Finding(
                    Severity.WARNING,
                    holder.disk.number,
                    None,
                    f"/dev/{vg.name}",
                    f"older metadata (not used) on {', '.join(stale)}",
                )
            )
        view = VGView(
            vg, record, holder.disk.number, {ref.name: by_uuid.get(ref.uuid) for ref in vg.pvs}
        )
        for ref in vg.pvs:
            if view.pvs[ref.name] is None:
                view.findings.append(
                    Finding(
                        Severity.ERROR,
                        holder.disk.number,
                        None,
                        f"/dev/{vg.name}",
                        f"PV {ref.name} (UUID {ref.uuid}, last seen as {ref.device_hint}) is on "
                        "none of the images given; what lies on it is not mapped",
                    )
                )
        _place_lvs(view)
        views.append(view)
    return views, findings


@dataclass
class _Placed:
    """Where one LV's bytes are: its pieces, whether they are all of it, its segment types."""

    pieces: list[Piece]
    complete: bool
    types: list[str]


class _Placer:
    """Places the LVs of one volume group. Each segment is placed by the function of its type
    (:data:`_SEGMENT_PLACERS`); a segment built on sub-LVs (mirror legs, raid images, a thin
    pool's data) places them first, each once, at most :data:`MAX_LEG_DEPTH` deep."""

    def __init__(self, view: VGView) -> None:
        self.view = view
        self.extent_size = view.vg.extent_size
        self.by_name = {lv.name: lv for lv in view.vg.lvs}
        self.refs = {ref.name: ref for ref in view.vg.pvs}
        self.placed: dict[str, _Placed] = {}
        self.legs_of: dict[str, tuple[str | None, list[str]]] = {}
        """LV name -> (the mirror leg its contents are read through, all its legs)."""
        self.cut_short: dict[str, list[str]] = {}
        """LV name -> why parts of it were not placed although its PVs are there (a segment
        past the end of its PV, a stripe size lvm2 never writes)."""

    def lv(self, lv: LogicalVolume, depth: int = 0) -> _Placed:
        known = self.placed.get(lv.name)
        if known is not None:
            return known
        if depth > MAX_LEG_DEPTH:
            return _Placed([], False, ["nested too deep"])
        placed = _Placed([], True, [])
        es = self.extent_size
        for seg in lv.segments:
            placed.types.append(display_type(seg))
            if (seg.start_extent + seg.extent_count) * es > MAX_VALUE:
                # Each number is in range, their product is not: no device is that large.
                self.cut(lv, seg, "it ends past the largest offset a device can have")
                placed.complete = False
                continue
            place = _SEGMENT_PLACERS.get(seg.type)
            pieces = None
            if place is not None:
                pieces = place(self, lv, seg, seg.start_extent * es, seg.extent_count * es, depth)
            if pieces is None:
                placed.complete = False
            else:
                placed.pieces += pieces
        if lv.name in self.cut_short:
            placed.complete = False
        self.placed[lv.name] = placed
        return placed

    def cut(self, lv: LogicalVolume, seg: LVMSegment, why: str) -> None:
        self.cut_short.setdefault(lv.name, []).append(
            f"segment at extent {seg.start_extent} ({seg.extent_count} extents): {why}"
        )

    def sub_lv(self, name: str, depth: int) -> list[Piece] | None:
        """The pieces of sub-LV ``name``, or None when it is missing or not all placed."""
        sub = self.by_name.get(name)
        if sub is None:
            return None
        placed = self.lv(sub, depth + 1)
        return placed.pieces if placed.complete else None


SegmentPlacer = Callable[[_Placer, LogicalVolume, LVMSegment, int, int, int], "list[Piece] | None"]
"""``(placer, lv, segment, segment start, segment length, depth)`` -> the segment's pieces
(bytes of the LV), or None when it cannot be placed."""


def _place_striped(
    placer: _Placer, lv: LogicalVolume, seg: LVMSegment, start: int, size: int, depth: int
) -> list[Piece] | None:
    """linear and striped: straight onto the PVs, as far as each PV reaches."""
    return _striped_pieces(placer, lv, seg, start, size)


def _place_raid0(
    placer: _Placer, lv: LogicalVolume, seg: LVMSegment, start: int, size: int, depth: int
) -> list[Piece] | None:
    """raid0 and raid0_meta: striped across the rimage sub-LVs."""
    legs = [placer.sub_lv(s.pv, depth) for s in seg.stripes if "_rmeta_" not in s.pv]
    return _sub_striped_pieces(seg, start, size, legs)


def _place_thin_pool(
    placer: _Placer, lv: LogicalVolume, seg: LVMSegment, start: int, size: int, depth: int
) -> list[Piece] | None:
    """A thin pool's bytes are its data sub-LV's; what they hold are thin blocks."""
    data = placer.sub_lv(str(seg.raw.get("pool", "")), depth)
    if data is None:
        return None
    return [Piece(start + p.lv_start, start + p.lv_end, p.pv, p.pv_offset) for p in data]


def _place_mirrored(
    placer: _Placer, lv: LogicalVolume, seg: LVMSegment, start: int, size: int, depth: int
) -> list[Piece] | None:
    """mirror and raid1: the contents through the first complete leg."""
    legs = [s.pv for s in seg.stripes if seg.type == "mirror" or "_rimage_" in s.pv]
    chosen: list[Piece] | None = None
    chosen_name = None
    for leg in legs:
        chosen = placer.sub_lv(leg, depth)
        if chosen is not None:
            chosen_name = leg
            break
    placer.legs_of[lv.name] = (chosen_name, legs)
    if chosen is None:
        return None
    return [
        Piece(start + p.lv_start, start + min(p.lv_end, size), p.pv, p.pv_offset)
        for p in chosen
        if p.lv_start < size
    ]


#: Segment type -> how it is placed; a type not here cannot be placed (thin, snapshot, raid4-6).
_SEGMENT_PLACERS: dict[str, SegmentPlacer] = {
    "striped": _place_striped,
    "linear": _place_striped,
    "raid0": _place_raid0,
    "raid0_meta": _place_raid0,
    "thin-pool": _place_thin_pool,
    "mirror": _place_mirrored,
    "raid1": _place_mirrored,
}
#: Segment types whose LV's bytes belong to sub-LVs, which have lines of their own.
_COMPOSITE = {"mirror", "raid1", "raid0", "raid0_meta", "thin-pool"}


def display_type(seg: LVMSegment) -> str:
    """The segment type as ``lvs`` shows it: a one-stripe "striped" segment is linear."""
    return "linear" if seg.type == "striped" and len(seg.stripes) == 1 else seg.type


def _place_lvs(view: VGView) -> None:
    placer = _Placer(view)
    vg = view.vg
    for lv in vg.lvs:
        placed = placer.lv(lv)
        device = f"/dev/{vg.name}/{lv.name}"
        composite = any(t in _COMPOSITE for t in placed.types)
        view.lvs.append(
            LVView(
                lv=lv,
                device=device,
                size=min(lv.extent_count * vg.extent_size, MAX_VALUE),
                own_pieces=[] if composite else placed.pieces,
                content_pieces=placed.pieces,
                complete=placed.complete,
                types=placed.types,
                # Hidden sub-LVs (legs, stripes, pool data) hold parts or copies of another
                # LV's contents: those are mapped once, through that LV.
                map_contents=placed.complete and lv.visible and "thin-pool" not in placed.types,
            )
        )
        for message in _notes(lv, placer.legs_of.get(lv.name)):
            view.findings.append(Finding(Severity.INFO, view.disk, None, device, message))
        for message in placer.cut_short.get(lv.name, []):
            view.findings.append(Finding(Severity.WARNING, view.disk, None, device, message))
    _overlapping(view)


def _overlapping(view: VGView) -> None:
    """LVs whose own pieces overlap on a PV (another LV's, or their own): each such LV gets a
    finding and its contents are not mapped, so every byte's contents are mapped once (a
    crafted VG may point thousands of LVs at one filesystem). In each PV's ranges sorted by
    offset (then by the LVs' order in the metadata), a piece that starts before an earlier
    piece has ended marks its LV."""
    rows = [
        (id(p.pv), p.pv_offset, p.pv_offset + p.lv_end - p.lv_start, i)
        for i, lv in enumerate(view.lvs)
        for p in lv.own_pieces
    ]
    if len(rows) < 2:
        return
    table = np.array(rows, dtype=object)
    pv_key = np.unique(table[:, 0].astype(np.int64), return_inverse=True)[1].reshape(-1)
    start, end, owner = (table[:, c].astype(np.int64) for c in (1, 2, 3))
    order = np.lexsort((owner, start, pv_key))
    pv_key, start, end, owner = pv_key[order], start[order], end[order], owner[order]
    marked: set[int] = set()
    for group in np.split(np.arange(len(order)), np.flatnonzero(np.diff(pv_key)) + 1):
        ends = end[group]
        before = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(ends)[:-1]))
        marked.update(owner[group][start[group] < before].tolist())
    for i in sorted(marked):
        lv = view.lvs[i]
        lv.map_contents = False
        view.findings.append(
            Finding(
                Severity.WARNING,
                view.disk,
                None,
                lv.device,
                "its extents overlap another LV's (or its own) on a PV: its contents are not "
                "mapped a second time",
            )
        )


def _notes(lv: LogicalVolume, legs: tuple[str | None, list[str]] | None) -> list[str]:
    """What an analyst should know about an LV whose segments are not plain extents."""
    notes = []
    if legs is not None:
        chosen, names = legs
        others = [n for n in names if n != chosen]
        if chosen is None:
            notes.append(f"no complete leg among {', '.join(names)}: contents not mapped")
        else:
            notes.append(
                f"contents mapped through leg {chosen}"
                + (f"; {', '.join(others)} hold copies of the same data" if others else "")
            )
    for seg in lv.segments:
        raw = seg.raw
        if seg.type == "thin-pool":
            notes.append(
                f"thin pool: data in {raw.get('pool')}, metadata in {raw.get('metadata')} "
                "(both mapped as their own LVs); the thin volumes' blocks are not mapped yet"
            )
        elif seg.type == "thin":
            notes.append(
                f"thin volume in pool {raw.get('thin_pool')} (device id {raw.get('device_id')}): "
                "its blocks are not mapped yet (they need the pool's metadata btrees)"
            )
        elif seg.type == "snapshot":
            notes.append(
                f"snapshot of origin {raw.get('origin')}; its copy-on-write area is LV "
                f"{raw.get('cow_store')} (chunk size {raw.get('chunk_size')} sectors)"
            )
        elif seg.type not in _SEGMENT_PLACERS:
            notes.append(
                f"segment type {seg.type}: its contents are not mapped yet (its sub-volumes "
                "are mapped as their own LVs)"
            )
    return list(dict.fromkeys(notes))


def _through(leg: list[Piece], start: int, end: int, lv_start: int) -> list[Piece]:
    """The part ``[start, end)`` of a sub-LV, as pieces of the parent starting at
    ``lv_start``."""
    out = []
    for p in leg:
        lo, hi = max(p.lv_start, start), min(p.lv_end, end)
        if lo < hi:
            out.append(
                Piece(
                    lv_start + lo - start,
                    lv_start + hi - start,
                    p.pv,
                    p.pv_offset + lo - p.lv_start,
                )
            )
    return out


def _sub_striped_pieces(
    seg: LVMSegment, seg_start: int, seg_len: int, legs: list[list[Piece] | None]
) -> list[Piece] | None:
    """raid0: chunk k of the segment is chunk k // n of sub-LV k % n."""
    n = len(legs)
    chunk = seg.stripe_size
    if n == 0 or chunk < MIN_STRIPE or chunk & (chunk - 1) or any(leg is None for leg in legs):
        return None
    pieces: list[Piece] = []
    # No row past the longest leg's placed end (the legs are already cut at their PVs' ends).
    reach = max((p.lv_end for leg in legs if leg for p in leg), default=0)
    for k in range(min(-(-seg_len // chunk), -(-reach // chunk) * n)):
        leg = legs[k % n]
        assert leg is not None
        leg_start = (k // n) * chunk
        size = min(chunk, seg_len - k * chunk)
        pieces += _through(leg, leg_start, leg_start + size, seg_start + k * chunk)
    return pieces


MIN_STRIPE = 4096
"""lvm2 never writes a stripe size below a page (``STRIPE_SIZE_MIN``), nor one that is not a
power of two; such a segment is damage, not thousands of 512-byte pieces."""


def _striped_pieces(
    placer: _Placer, lv: LogicalVolume, seg: LVMSegment, seg_start: int, seg_len: int
) -> list[Piece] | None:
    """Pieces of a linear or striped segment, each on its PV and cut at the PV's end; None
    when a stripe's PV is missing. The chunks looked at grow with the PVs' real size, never
    with the segment's claimed extent count."""
    stripes = seg.stripes
    if not stripes:
        return None
    devices = []
    for stripe in stripes:
        ref = placer.refs.get(stripe.pv)
        dev = placer.view.pvs.get(stripe.pv)
        if ref is None or dev is None:
            return None
        devices.append((dev, ref.pe_start + stripe.start_extent * placer.extent_size))
    # Bytes of each stripe's PV from where the stripe starts on it to the PV's end.
    room = [max(0, dev.size - base) for dev, base in devices]
    n = len(stripes)
    if n == 1:
        (dev, base), length = devices[0], min(seg_len, room[0])
        if length < seg_len:
            placer.cut(lv, seg, f"{seg_len - length} of its {seg_len} bytes lie past the PV's end")
        return [Piece(seg_start, seg_start + length, dev, base)] if length else []
    chunk = seg.stripe_size
    if chunk < MIN_STRIPE or chunk & (chunk - 1):
        placer.cut(lv, seg, f"stripe size {chunk} bytes (lvm2 writes powers of two from 4 KiB)")
        return []
    pieces = []
    # Chunk k lies on stripe k % n at row k // n; no row past the fullest stripe's room.
    chunks = min(-(-seg_len // chunk), -(-max(room) // chunk) * n)
    for k in range(chunks):
        dev, base = devices[k % n]
        row_start = (k // n) * chunk
        start = seg_start + k * chunk
        length = min(chunk, seg_start + seg_len - start, room[k % n] - row_start)
        if length > 0:
            pieces.append(Piece(start, start + length, dev, base + row_start))
    placed = sum(p.lv_end - p.lv_start for p in pieces)
    if placed < seg_len:
        placer.cut(lv, seg, f"{seg_len - placed} of its {seg_len} bytes lie past its PVs' ends")
    return pieces


def placement_of(pieces: list[Piece]) -> Placement:
    return Placement(
        [Segment(p.lv_start, p.lv_end, p.pv.disk.number, p.pv.offset + p.pv_offset) for p in pieces]
    )


def lv_stream(lv: LVView) -> RangeStream:
    reader = MappedReader(
        [
            (p.lv_start, p.lv_end, p.pv.disk.image, p.pv.offset + p.pv_offset)
            for p in lv.content_pieces
        ],
        lv.size,
    )
    return reader.stream()


def map_pv_structures(pv: PVDevice, views: list[VGView], builder: MapBuilder) -> None:
    """``pv-label``, the metadata areas, free extents and the PV's unused bytes."""
    n, base = pv.disk.number, pv.offset
    label = pv.label
    builder.add_object_extent(
        "m",
        pv.device,
        n,
        base + label.label_offset,
        base + label.label_offset + SECTOR,
        kind="pv-label",
    )
    used = [(label.label_offset, label.label_offset + SECTOR)]
    for i, area in enumerate(label.metadata_areas):
        end = min(area.offset + area.size, pv.size)
        kind = "lvm-metadata" if i == 0 else "lvm-metadata-backup"
        builder.add_object_extent("m", pv.device, n, base + area.offset, base + end, kind=kind)
        used.append((area.offset, end))
    extents: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []
    for view in views:
        for ref in view.vg.pvs:
            if view.pvs.get(ref.name) is pv:
                extents.append(
                    (ref.pe_start, min(ref.pe_start + ref.pe_count * view.vg.extent_size, pv.size))
                )
                for lv in view.lvs:
                    taken += [
                        (p.pv_offset, p.pv_offset + (p.lv_end - p.lv_start))
                        for p in lv.own_pieces
                        if p.pv is pv
                    ]

    def arr(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray([a for a, _ in pairs], dtype=np.int64),
            np.asarray([b for _, b in pairs], dtype=np.int64),
        )

    free = subtract(arr(extents), arr(taken)) if extents else arr([])
    if len(free[0]):
        obj = builder.add_object("u", pv.device, "free-extents")
        builder.add_extents(obj, n, free[0] + base, free[1] + base)
    rest = subtract(arr([(0, pv.size)]), union(*arr(used + extents)))
    if len(rest[0]):
        obj = builder.add_object("u", pv.device, "pv-unused")
        builder.add_extents(obj, n, rest[0] + base, rest[1] + base)


def map_lv_lines(lv: LVView, builder: MapBuilder) -> None:
    """``l`` lines: every contiguous physical range of the LV, with its offset in the LV."""
    pieces = lv.own_pieces or lv.content_pieces
    if not pieces:
        return
    obj = builder.add_object("l", lv.device)
    by_disk: dict[int, list[Piece]] = {}
    for p in pieces:
        by_disk.setdefault(p.pv.disk.number, []).append(p)
    for disk, ps in by_disk.items():
        builder.add_extents(
            obj,
            disk,
            [p.pv.offset + p.pv_offset for p in ps],
            [p.pv.offset + p.pv_offset + (p.lv_end - p.lv_start) for p in ps],
            [p.lv_start for p in ps],
        )


def lv_volume(view: VGView, lv: LVView) -> Volume:
    """An LV as a volume to map the inside of (its contents read through its content pieces)."""
    stream = lv_stream(lv)
    return Volume(
        device=lv.device,
        disk=view.disk,
        offset=None,
        stream=stream,
        placement=placement_of(lv.content_pieces),
        content=detect_content(stream, lv.size),
    )


def map_disks(disks: Sequence[Disk], builder: MapBuilder, map_content: MapContent) -> list[Finding]:
    """PVs on any of the disks, their volume groups, every LV's lines and, through
    ``map_content``, what is inside each LV. Returns the findings in the order met."""
    pvs, findings = find_pvs(disks)
    views, more = assemble(pvs)
    findings += more
    for pv in pvs:
        map_pv_structures(pv, views, builder)
    for view in views:
        findings += view.findings
        stage = f"volume group {view.vg.name}: logical volumes"
        for done, lv in enumerate(view.lvs, 1):
            map_lv_lines(lv, builder)
            if lv.map_contents and lv.content_pieces and lv.size:
                findings += map_content(lv_volume(view, lv))
            elif lv.lv.visible and lv.missing_pv:
                findings.append(
                    Finding(
                        Severity.WARNING if lv.content_pieces else Severity.INFO,
                        view.disk,
                        None,
                        lv.device,
                        "not every part of this LV could be placed; its contents are not mapped",
                    )
                )
            builder.progress(stage, done, len(view.lvs))
    return findings
