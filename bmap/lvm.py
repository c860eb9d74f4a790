"""The LVM layer: physical volumes found on any disk, assembled into volume groups, and every
logical volume placed on the disks.

A PV is any partition (or whole disk) whose content is ``LVM2_member``. PVs are matched to the
volume group's metadata by PV UUID, whichever image holds them, so a VG may span disks. Each
LV's segments become *pieces*: contiguous ranges of the LV that lie at one place of one PV (a
striped segment gives one piece per chunk). The pieces are the LV's ``l`` lines, the
:class:`~bmap.placement.Placement` that puts what is inside the LV on the disks, and the
stream that reads the LV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bmap.blockmap import MapBuilder
from bmap.errors import Finding, Severity
from bmap.images import MappedReader, RangeStream
from bmap.intervals import subtract, union
from bmap.layout import Disk
from bmap.placement import Placement, Segment
from parsers import lvm2
from parsers.errors import ParserError

#: Mirror and RAID legs nest; a hostile metadata text could make them a cycle.
MAX_LEG_DEPTH = 8
#: Segment types whose contents bmap places on the disks.
_STRIPED = {"striped", "linear"}
_PLACED = _STRIPED | {"mirror", "raid1", "raid0", "raid0_meta", "thin-pool"}
_MIRRORED = {"mirror", "raid1"}
#: Striped across sub-LVs (raid0 and raid0_meta keep their stripes in rimage LVs).
_SUB_STRIPED = {"raid0", "raid0_meta"}


@dataclass
class PVDevice:
    """A PV found on a disk."""

    disk: Disk
    device: str
    """``/dev/sda2``, or ``/dev/sdb`` for a whole-disk PV."""
    offset: int
    """Where the PV device starts on its disk."""
    size: int
    label: lvm2.PVLabel

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
    lv: lvm2.LogicalVolume
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
        return not self.complete and all(t in _PLACED for t in self.types)


@dataclass
class VGView:
    vg: lvm2.VolumeGroup
    record: lvm2.MetadataRecord
    disk: int
    """The disk whose PV held the metadata used (for findings)."""
    pvs: dict[str, PVDevice | None]
    lvs: list[LVView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def find_pvs(disks: list[Disk]) -> tuple[list[PVDevice], list[Finding]]:
    """Every PV on the disks (partitions and whole disks whose content is an LVM2 PV)."""
    found: list[PVDevice] = []
    findings: list[Finding] = []
    for disk in disks:
        for device, offset, size, content in disk.devices():
            if content is None or content.kind != "LVM2_member":
                continue
            stream = disk.image.stream().view(offset, size)
            try:
                label = lvm2.read_pv(stream, size)
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
    by_vg: dict[str, list[tuple[lvm2.MetadataRecord, PVDevice]]] = {}
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
            vg = lvm2.volume_group(record)
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


def _place_lvs(view: VGView) -> None:
    vg = view.vg
    by_name = {lv.name: lv for lv in vg.lvs}
    refs = {ref.name: ref for ref in vg.pvs}
    cache: dict[str, tuple[list[Piece], bool, list[str]]] = {}
    legs_of: dict[str, tuple[str | None, list[str]]] = {}

    def own(lv: lvm2.LogicalVolume, depth: int) -> tuple[list[Piece], bool, list[str]]:
        if lv.name in cache:
            return cache[lv.name]
        if depth > MAX_LEG_DEPTH:
            return [], False, ["nested too deep"]
        pieces: list[Piece] = []
        complete = True
        types = []
        es = vg.extent_size
        for seg in lv.segments:
            types.append("linear" if seg.type == "striped" and len(seg.stripes) == 1 else seg.type)
            seg_start = seg.start_extent * es
            seg_len = seg.extent_count * es
            if seg.type in _STRIPED:
                got = _striped_pieces(seg, seg_start, seg_len, es, refs, view.pvs)
                if got is None:
                    complete = False
                else:
                    pieces += got
            elif seg.type in _SUB_STRIPED:
                stripe_legs: list[list[Piece] | None] = []
                for name in (s.pv for s in seg.stripes if "_rmeta_" not in s.pv):
                    sub_lv = by_name.get(name)
                    leg_result = own(sub_lv, depth + 1) if sub_lv is not None else None
                    stripe_legs.append(
                        leg_result[0] if leg_result is not None and leg_result[1] else None
                    )
                placed = _sub_striped_pieces(seg, seg_start, seg_len, stripe_legs)
                if placed is None:
                    complete = False
                else:
                    pieces += placed
            elif seg.type == "thin-pool":
                # The pool's bytes are its data sub-LV's; what they hold are thin blocks.
                data = by_name.get(str(seg.raw.get("pool", "")))
                data_result = own(data, depth + 1) if data is not None else None
                if data_result is not None and data_result[1]:
                    pieces += [
                        Piece(seg_start + p.lv_start, seg_start + p.lv_end, p.pv, p.pv_offset)
                        for p in data_result[0]
                    ]
                else:
                    complete = False
            elif seg.type in _MIRRORED:
                legs = [s.pv for s in seg.stripes if seg.type == "mirror" or "_rimage_" in s.pv]
                chosen = None
                chosen_name = None
                for leg in legs:
                    sub = by_name.get(leg)
                    if sub is None:
                        continue
                    leg_pieces, leg_complete, _ = own(sub, depth + 1)
                    if leg_complete:
                        chosen, chosen_name = leg_pieces, leg
                        break
                legs_of[lv.name] = (chosen_name, legs)
                if chosen is None:
                    complete = False
                else:
                    for p in chosen:
                        if p.lv_start < seg_len:
                            pieces.append(
                                Piece(
                                    seg_start + p.lv_start,
                                    seg_start + min(p.lv_end, seg_len),
                                    p.pv,
                                    p.pv_offset,
                                )
                            )
            else:
                complete = False
        cache[lv.name] = (pieces, complete, types)
        return cache[lv.name]

    for lv in vg.lvs:
        pieces, complete, types = own(lv, 0)
        # Composite LVs' bytes belong to their sub-LVs, which have lines of their own.
        composite = any(t in _MIRRORED | _SUB_STRIPED | {"thin-pool"} for t in types)
        view.lvs.append(
            LVView(
                lv=lv,
                device=f"/dev/{vg.name}/{lv.name}",
                size=lv.extent_count * vg.extent_size,
                own_pieces=[] if composite else pieces,
                content_pieces=pieces,
                complete=complete,
                types=types,
                # Hidden sub-LVs (legs, stripes, pool data) hold parts or copies of another
                # LV's contents: those are mapped once, through that LV.
                map_contents=complete and lv.visible and "thin-pool" not in types,
            )
        )
        device = f"/dev/{vg.name}/{lv.name}"
        for message in _notes(lv, legs_of.get(lv.name)):
            view.findings.append(Finding(Severity.INFO, view.disk, None, device, message))


def _notes(lv: lvm2.LogicalVolume, legs: tuple[str | None, list[str]] | None) -> list[str]:
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
        elif seg.type not in _PLACED:
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
    seg: lvm2.Segment, seg_start: int, seg_len: int, legs: list[list[Piece] | None]
) -> list[Piece] | None:
    """raid0: chunk k of the segment is chunk k // n of sub-LV k % n."""
    n = len(legs)
    chunk = seg.stripe_size
    if n == 0 or chunk <= 0 or any(leg is None for leg in legs):
        return None
    pieces: list[Piece] = []
    for k in range(-(-seg_len // chunk)):
        leg = legs[k % n]
        assert leg is not None
        leg_start = (k // n) * chunk
        size = min(chunk, seg_len - k * chunk)
        pieces += _through(leg, leg_start, leg_start + size, seg_start + k * chunk)
    return pieces


def _striped_pieces(
    seg: lvm2.Segment,
    seg_start: int,
    seg_len: int,
    es: int,
    refs: dict[str, lvm2.PVRef],
    pvs: dict[str, PVDevice | None],
) -> list[Piece] | None:
    """Pieces of a linear or striped segment; None when a stripe's PV is missing."""
    stripes = seg.stripes
    if not stripes:
        return None
    devices = []
    for stripe in stripes:
        ref = refs.get(stripe.pv)
        dev = pvs.get(stripe.pv)
        if ref is None or dev is None:
            return None
        devices.append((dev, ref.pe_start + stripe.start_extent * es))
    n = len(stripes)
    if n == 1:
        dev, base = devices[0]
        return [Piece(seg_start, seg_start + seg_len, dev, base)]
    chunk = seg.stripe_size
    if chunk <= 0:
        return None
    pieces = []
    chunks = -(-seg_len // chunk)
    for k in range(chunks):
        dev, base = devices[k % n]
        start = seg_start + k * chunk
        pieces.append(
            Piece(start, min(start + chunk, seg_start + seg_len), dev, base + (k // n) * chunk)
        )
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
        base + label.label_offset + lvm2.SECTOR,
        kind="pv-label",
    )
    used = [(label.label_offset, label.label_offset + lvm2.SECTOR)]
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
