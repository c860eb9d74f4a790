"""From images to a block map: the layers walked top-down, every byte accounted for.

For each disk, its first level (:func:`map_disk`): the whole disk, the partition table's
structures, the partitions, and the gaps between them; then what each partition (or the whole
disk, without a table) holds, through the content mapper registered for its kind. Then every
volume manager (LVM) gets all the disks at once, places its volumes and hands each back to
:func:`map_content`. The walk knows no filesystem and no volume manager by name: it reads
the tables of :mod:`bmap.layers.registry`.

Each layer reports its extents in its own device's coordinates and places them on the disks
through the device's :class:`~bmap.layers.placement.Placement`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence

from bmap.errors import Finding, NotADiskError, Severity
from bmap.images import DiskImage
from bmap.layers import registry
from bmap.layers.content import Volume
from bmap.layers.partitions import Disk, discover
from bmap.layers.placement import Placement
from bmap.model.blockmap import BlockMap, ImageInfo, MapBuilder
from parsers.probe import Content

#: Called as ``progress(stage, done, total)`` while long work goes on: ``stage`` names the work
#: (``hashing disk 1``, ``/dev/sda1: inode tables``, ...), ``done`` of ``total`` in its own
#: unit (bytes, groups, names), non-decreasing within a stage and reaching ``total`` at its
#: end. The CLI draws a bar with it (a terminal only).
Progress = Callable[[str, int, int], None]
#: The memory budget of a map unless told otherwise: fits a machine of 2 GiB beside its system.
DEFAULT_MEMORY_LIMIT = 1536 << 20


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


def map_content(
    volume: Volume, builder: MapBuilder, claimed: Collection[str] = ()
) -> list[Finding]:
    """What ``volume`` holds, mapped by the content mapper registered for its kind; a kind no
    mapper takes is a finding. Kinds in ``claimed`` are left to a volume manager."""
    content = volume.content
    if content is None or content.kind == "unknown" or content.kind in claimed:
        return []
    kind = content.kind
    mapper = registry.content_mapper(kind)
    if mapper is not None:
        return mapper.map_volume(volume, builder)
    return [
        Finding(
            Severity.INFO,
            volume.disk,
            volume.offset,
            volume.device,
            f"holds {kind}; mapping the inside of {kind} is not supported yet",
        )
    ]


def _volume(disk: Disk, device: str, offset: int, size: int, content: Content | None) -> Volume:
    """A partition (or the whole disk) as a volume: one range of its disk."""
    return Volume(
        device=device,
        disk=disk.number,
        offset=offset,
        stream=disk.image.stream().view(offset, size),
        placement=Placement.contiguous(disk.number, offset, size),
        content=content,
    )


def map_disk(disk: Disk, builder: MapBuilder) -> None:
    """Add the lines of one disk's first level and of what its partitions hold: ``v``, table
    structures, ``p``, the contents, the gaps. Findings go to ``disk.findings``."""
    n = disk.number
    claimed = registry.managed_kinds()
    builder.add_object_extent("v", disk.device, n, 0, disk.size)
    for s in disk.structures:
        builder.add_object_extent(
            "m", s.device, n, s.offset, min(s.offset + s.size, disk.size), kind=s.kind
        )
    for p in disk.partitions:
        if p.mapped_size <= 0:
            continue
        builder.add_object_extent("p", p.device, n, p.offset, p.offset + p.mapped_size)
        if p.content is not None:  # None: nothing there, or the bytes of an earlier partition
            volume = _volume(disk, p.device, p.offset, p.mapped_size, p.content)
            disk.findings.extend(map_content(volume, builder, claimed))
    if disk.scheme == "none":
        before = builder.extent_count()
        volume = _volume(disk, disk.device, 0, disk.size, disk.content)
        disk.findings.extend(map_content(volume, builder, claimed))
        kind = getattr(disk.content, "kind", None)
        table_structures = bool(disk.structures)  # a table bmap could not use: gaps below
        if (
            disk.recognised
            and not table_structures
            and kind not in claimed
            and builder.extent_count() == before
        ):
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
        if disk.scheme == "none" and parent is None and disk.recognised and not disk.structures:
            continue
        for start, end in gaps(lo, hi, used):
            builder.add_object_extent("u", device, n, start, end, kind="unpartitioned")


def map_volume_managers(disks: Sequence[Disk], builder: MapBuilder) -> list[Finding]:
    """Every volume manager whose kind of device is on some disk, given all the disks; the
    volumes it makes are mapped inside through :func:`map_content`."""
    findings: list[Finding] = []
    kinds = {
        content.kind for disk in disks for *_, content in disk.devices() if content is not None
    }
    for entry in registry.VOLUME_MANAGERS:
        if kinds.isdisjoint(entry.kinds):
            continue  # its module is not even imported
        manager = registry.volume_manager(entry)
        findings += manager.map_disks(disks, builder, lambda v: map_content(v, builder))
    return findings


def sha256_of(image: DiskImage, progress: Progress | None = None, chunk: int = 4 << 20) -> str:
    """SHA-256 of a whole image, read in chunks."""
    digest = hashlib.sha256()
    for offset in range(0, image.size, chunk):
        digest.update(image.pread(offset, chunk))
        if progress:
            progress(f"hashing disk {image.number}", min(offset + chunk, image.size), image.size)
    return digest.hexdigest()


def map_disks(
    disks: Sequence[Disk],
    *,
    hashes: Sequence[str | None] | None = None,
    progress: Progress | None = None,
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    temp_dir: str | None = None,
    spill_lines: int | None = None,
) -> BlockMap:
    """Build the map of disks already discovered; the layers report their long work to
    ``progress`` (see :data:`Progress`) and keep within ``memory_limit`` bytes (None: no
    limit), leaving out with a finding what would not fit. Lines past the builder's share
    of the budget (or past ``spill_lines``) go to sorted runs in ``temp_dir``
    (:class:`~bmap.model.blockmap.MapBuilder`)."""
    builder = MapBuilder(progress, memory_limit, spill_lines=spill_lines, temp_dir=temp_dir)
    for disk in disks:
        if not disk.recognised:
            disk.finding(
                Severity.INFO,
                None,
                disk.device,
                "no partition table and no recognised content: mapped as unpartitioned",
            )
        map_disk(disk, builder)
    for finding in map_volume_managers(disks, builder):
        builder.add_finding(finding)
    for disk in disks:
        for finding in disk.findings:
            builder.add_finding(finding)
        for finding in disk.image.findings:  # damage the container's reader met
            builder.add_finding(finding)
    return builder.build(
        [image_info(d.image, hashes[i] if hashes else None) for i, d in enumerate(disks)]
    )


def image_info(image: DiskImage, sha256: str | None = None) -> ImageInfo:
    """The map header's record of one image: its path, virtual size, format and chain."""
    container = image.container
    chain = () if container is None else tuple((c.role, c.format, c.path) for c in container.chain)
    return ImageInfo(image.number, str(image.path), image.size, sha256, image.format, chain)


def map_images(
    images: Sequence[DiskImage],
    *,
    sector_size: int | None = None,
    with_sha256: bool = False,
    progress: Progress | None = None,
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    temp_dir: str | None = None,
    spill_lines: int | None = None,
) -> BlockMap:
    """Map every image: the main job of ``bmap map``.

    ``memory_limit`` is the memory budget in bytes (default :data:`DEFAULT_MEMORY_LIMIT`;
    None for none): a filesystem whose mapping would need more than is left of it is not
    mapped inside, and a finding says so (exit 9 in the CLI). The map's lines past an eighth
    of it (or past ``spill_lines``) are spilled to sorted runs in ``temp_dir`` (None: the
    system's temporary directory) and merged when the map is built.

    Raises:
        NotADiskError: none of the images holds anything bmap recognises.
    """
    disks = [discover(image, sector_size) for image in images]
    if not any(d.recognised for d in disks):
        names = ", ".join(str(d.image.path) for d in disks)
        reason = _why_not_recognised(disks[0]) if len(disks) == 1 else ""
        damage = [f for d in disks for f in d.image.findings]
        if damage:  # the container's reader met damage: that, not the disk, may be why
            reason += f" (and the container is damaged: {damage[0].source}: {damage[0].message})"
        raise NotADiskError(
            f"{names}: not a disk image: no partition table and no recognised content{reason}"
        )
    hashes = [sha256_of(d.image, progress) for d in disks] if with_sha256 else None
    return map_disks(
        disks,
        hashes=hashes,
        progress=progress,
        memory_limit=memory_limit,
        temp_dir=temp_dir,
        spill_lines=spill_lines,
    )


def _why_not_recognised(disk: Disk) -> str:
    head = disk.image.pread(0, 1 << 20)
    if not head.strip(b"\0"):
        return f" (the first {len(head):#x} bytes are all zero)"
    if disk.size < 512:
        return f" (only {disk.size} bytes)"
    return ""
