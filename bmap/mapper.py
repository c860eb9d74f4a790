"""From images to a block map: the layers walked top-down, every byte accounted for.

Each layer reports its extents in its own device's coordinates and this module places them on
the disk. Today the layers are the disk and its partition table; filesystems and LVM plug in
below the partitions as their mappers land.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from bmap.blockmap import BlockMap, ImageInfo, MapBuilder
from bmap.errors import Finding, NotADiskError, Severity
from bmap.extmap import map_ext
from bmap.images import Image
from bmap.layout import Disk, detect_content, discover
from bmap.placement import Placement

#: Called as ``progress(done, total)`` in bytes of input handled; the CLI draws a bar with it.
Progress = Callable[[int, int], None]

_EXT_KINDS = {"ext2", "ext3", "ext4"}
#: Content kinds whose whole device is one structure of its own.
_WHOLE_DEVICE_KINDS = {"swap": "swap"}


def gaps(lo: int, hi: int, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` that no range in ``ranges`` covers, in order."""
    result = []
    pos = lo
    for start, end in sorted(ranges):
        start, end = max(start, lo), min(end, hi)
        if end <= start:
            continue
        if start > pos:
            result.append((pos, start))
        pos = max(pos, end)
    if pos < hi:
        result.append((pos, hi))
    return result


def map_disk(disk: Disk, builder: MapBuilder) -> None:
    """Add the lines of one disk's first level: ``v``, table structures, ``p``, gaps."""
    n = disk.number
    builder.add_object_extent("v", disk.device, n, 0, disk.size)
    for s in disk.structures:
        builder.add_object_extent(
            "m", s.device, n, s.offset, min(s.offset + s.size, disk.size), kind=s.kind
        )
    for p in disk.partitions:
        if p.mapped_size <= 0:
            continue
        builder.add_object_extent("p", p.device, n, p.offset, p.offset + p.mapped_size)
        _map_content(disk, builder, p.device, p.offset, p.mapped_size, p.content)
    if disk.scheme == "none":
        before = builder.extent_count()
        _map_content(disk, builder, disk.device, 0, disk.size, disk.content)
        kind = getattr(disk.content, "kind", None)
        if disk.recognised and kind != "LVM2_member" and builder.extent_count() == before:
            # A filesystem bmap cannot map inside (not supported yet, or too damaged): no
            # partition line covers it, so say that these bytes are not explained.
            builder.add_object_extent("u", disk.device, n, 0, disk.size, kind="unmapped")

    # What no partition or structure claims is unpartitioned: at the top, and inside each
    # extended partition around its EBRs and logical partitions.
    containers = [(disk.device, 0, disk.size)] + [
        (p.device, p.offset, p.offset + p.mapped_size) for p in disk.partitions if p.is_extended
    ]
    for device, lo, hi in containers:
        parent = None if device == disk.device else device
        used = [(s.offset, s.offset + s.size) for s in disk.structures if s.device == device]
        used += [
            (p.offset, p.offset + p.mapped_size) for p in disk.partitions if p.parent == parent
        ]
        if disk.scheme == "none" and parent is None and disk.recognised:
            continue
        for start, end in gaps(lo, hi, used):
            builder.add_object_extent("u", device, n, start, end, kind="unpartitioned")


def _map_content(
    disk: Disk, builder: MapBuilder, device: str, offset: int, size: int, content: object
) -> None:
    kind = getattr(content, "kind", None)
    if kind is None or kind == "unknown" or kind == "LVM2_member":
        return  # LVM2 PVs are mapped once all disks are known (map_lvm)
    if kind in _EXT_KINDS:
        stream = disk.image.stream().view(offset, size)
        stats = map_ext(
            stream, device, builder, Placement.contiguous(disk.number, offset, size), disk.number
        )
        disk.findings.extend(stats.findings)
        return
    if kind in _WHOLE_DEVICE_KINDS:
        builder.add_object_extent(
            "m", device, disk.number, offset, offset + size, kind=_WHOLE_DEVICE_KINDS[kind]
        )
        return
    disk.finding(
        Severity.INFO,
        offset,
        device,
        f"holds {kind}; mapping the inside of {kind} is not supported yet",
    )


def map_lvm(disks: list[Disk], builder: MapBuilder) -> None:
    """PVs on any disk, their volume groups, every LV and what is inside it."""
    if not any(
        content is not None and content.kind == "LVM2_member"
        for disk in disks
        for *_, content in disk.devices()
    ):
        return  # bmap.lvm and the LVM2 parser are not even imported
    from bmap.lvm import (
        assemble,
        find_pvs,
        lv_stream,
        map_lv_lines,
        map_pv_structures,
        placement_of,
    )

    pvs, findings = find_pvs(disks)
    views, more = assemble(pvs)
    for finding in findings + more:
        builder.add_finding(finding)
    for pv in pvs:
        map_pv_structures(pv, views, builder)
    for view in views:
        for finding in view.findings:
            builder.add_finding(finding)
        for lv in view.lvs:
            map_lv_lines(lv, builder)
            if not lv.map_contents or not lv.content_pieces or lv.size == 0:
                if lv.lv.visible and lv.missing_pv:
                    builder.add_finding(
                        Finding(
                            Severity.WARNING if lv.content_pieces else Severity.INFO,
                            view.disk,
                            None,
                            lv.device,
                            "not every part of this LV could be placed; its contents are "
                            "not mapped",
                        )
                    )
                continue
            stream = lv_stream(lv)
            content = detect_content(stream, lv.size)
            placement = placement_of(lv.content_pieces)
            if content.kind in _EXT_KINDS:
                stats = map_ext(stream, lv.device, builder, placement, view.disk)
                for finding in stats.findings:
                    builder.add_finding(finding)
            elif content.kind in _WHOLE_DEVICE_KINDS:
                obj = builder.add_object("m", lv.device, _WHOLE_DEVICE_KINDS[content.kind])
                placement.place(builder, obj, [0], [lv.size], [0])
            elif content.kind != "unknown" and lv.lv.visible:
                builder.add_finding(
                    Finding(
                        Severity.INFO,
                        view.disk,
                        None,
                        lv.device,
                        f"holds {content.kind}; mapping the inside of {content.kind} is not "
                        "supported yet",
                    )
                )


def sha256_of(image: Image, progress: Progress | None = None, chunk: int = 4 << 20) -> str:
    """SHA-256 of a whole image, read in chunks."""
    digest = hashlib.sha256()
    for offset in range(0, image.size, chunk):
        digest.update(image.pread(offset, chunk))
        if progress:
            progress(min(offset + chunk, image.size), image.size)
    return digest.hexdigest()


def map_disks(disks: Sequence[Disk], *, hashes: Sequence[str | None] | None = None) -> BlockMap:
    """Build the map of disks already discovered."""
    builder = MapBuilder()
    for disk in disks:
        if not disk.recognised:
            disk.finding(
                Severity.INFO,
                None,
                disk.device,
                "no partition table and no recognised content: mapped as unpartitioned",
            )
        map_disk(disk, builder)
    map_lvm(list(disks), builder)
    for disk in disks:
        for finding in disk.findings:
            builder.add_finding(finding)
    infos = [
        ImageInfo(d.number, str(d.image.path), d.size, hashes[i] if hashes else None)
        for i, d in enumerate(disks)
    ]
    return builder.build(infos)


def map_images(
    images: Sequence[Image],
    *,
    sector_size: int | None = None,
    with_sha256: bool = False,
    progress: Progress | None = None,
) -> BlockMap:
    """Map every image: the main job of ``bmap map``.

    Raises:
        NotADiskError: none of the images holds anything bmap recognises.
    """
    disks = [discover(image, sector_size) for image in images]
    if not any(d.recognised for d in disks):
        names = ", ".join(str(d.image.path) for d in disks)
        reason = _why_not_recognised(disks[0]) if len(disks) == 1 else ""
        raise NotADiskError(
            f"{names}: not a disk image: no partition table and no recognised content{reason}"
        )
    hashes = [sha256_of(d.image, progress) for d in disks] if with_sha256 else None
    return map_disks(disks, hashes=hashes)


def _why_not_recognised(disk: Disk) -> str:
    head = disk.image.pread(0, 1 << 20)
    if not head.strip(b"\0"):
        return f" (the first {len(head):#x} bytes are all zero)"
    if disk.size < 512:
        return f" (only {disk.size} bytes)"
    return ""


def findings_of(bmap: BlockMap, minimum: Severity = Severity.INFO) -> list[Finding]:
    return [f for f in bmap.findings if f.severity >= minimum]
