"""What a disk holds at the top: its partition table, its partitions and what each contains.

:func:`discover` reads one image and returns a :class:`Disk`: the table (GPT, MBR or none),
the partitions in disk coordinates numbered as Linux numbers them, the byte ranges of the
table structures, and the content of every partition detected by its signature. Damage that
does not stop the discovery becomes a :class:`~bmap.errors.Finding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bmap.errors import Finding, Severity
from bmap.images import DiskImage, RangeStream
from bmap.layers.content import describe_content, detect_content
from parsers import gpt as gptmod
from parsers import mbr as mbrmod
from parsers.errors import NotThisFormat, ParserError
from parsers.probe import Content

#: Contents that are a partition table's business, not a filesystem's, at offset 0 of a disk.
_BOOT_SECTOR_CONTENT = frozenset({"vfat", "ntfs", "exfat"})


def disk_device(number: int) -> str:
    """The Linux name of the ``number``-th disk: 1 -> /dev/sda, 27 -> /dev/sdaa."""
    if number < 1:
        raise ValueError(f"disk numbers start at 1, not {number}")
    letters = ""
    n = number
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return f"/dev/sd{letters}"


@dataclass(frozen=True)
class Structure:
    """A partition-table structure on the disk (``mbr``, ``ebr``, ``gpt-header``, ...)."""

    kind: str
    offset: int
    size: int
    device: str
    """The device the structure belongs to: the disk, or the extended partition for an EBR."""


@dataclass
class Partition:
    """One partition, in disk coordinates.

    ``size`` is what the table says; ``mapped_size`` is what the image really holds of it
    (smaller when the image is truncated).
    """

    number: int
    device: str
    offset: int
    size: int
    mapped_size: int
    type_id: str
    """``83`` (MBR, hex as sfdisk prints it) or the type GUID (GPT, uppercase)."""
    type_name: str
    name: str | None = None
    uuid: str | None = None
    bootable: bool = False
    attributes: int = 0
    is_extended: bool = False
    is_logical: bool = False
    parent: str | None = None
    """For a logical partition: the device of the extended partition that holds it."""
    overlaps: str | None = None
    """The device of an earlier partition (of the same level) this one overlaps: its contents
    are those bytes again, so they are not detected nor mapped a second time."""
    content: Content | None = None
    filesystem: dict[str, Any] | None = None
    """What the filesystem's own superblock says, for ``bmap info`` (where its content mapper
    describes it: ext2/3/4 today)."""

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class Disk:
    """One image and what its first level holds."""

    image: DiskImage
    number: int
    device: str
    size: int
    sector_size: int
    scheme: str
    """``gpt``, ``mbr`` or ``none`` (the disk itself holds the content)."""
    partitions: list[Partition] = field(default_factory=list)
    structures: list[Structure] = field(default_factory=list)
    content: Content | None = None
    """Content of the whole disk when there is no partition table."""
    filesystem: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    disk_id: str | None = None
    """GPT disk GUID, or the MBR disk signature as sfdisk prints it (``0x1234abcd``)."""
    table_source: str | None = None
    """For GPT: ``primary`` or ``backup``."""
    gpt_first_usable: int | None = None
    gpt_last_usable: int | None = None
    """Inclusive byte range of the GPT usable area (first byte, last byte)."""

    @property
    def recognised(self) -> bool:
        """Whether bmap found anything it knows on this disk (a table it could not use counts:
        its structures and findings are the map)."""
        if self.scheme != "none" or self.structures:
            return True
        return self.content is not None and self.content.kind != "unknown"

    def devices(self) -> list[tuple[str, int, int, Content | None]]:
        """``(device, offset, size, content)`` of every device of this disk that can hold
        content: each partition with bytes on the disk, or the whole disk without a table."""
        places = [
            (p.device, p.offset, p.mapped_size, p.content)
            for p in self.partitions
            if p.mapped_size > 0
        ]
        if self.scheme == "none":
            places.append((self.device, 0, self.size, self.content))
        return places

    def stream(self) -> RangeStream:
        return self.image.stream()

    def partition_stream(self, part: Partition) -> RangeStream:
        return self.image.stream().view(part.offset, part.mapped_size)

    def finding(self, severity: Severity, offset: int | None, source: str, message: str) -> None:
        self.findings.append(Finding(severity, self.number, offset, source, message))

    def parser_finding(self, exc: ParserError, severity: Severity = Severity.WARNING) -> None:
        self.findings.append(Finding.from_parser_error(exc, self.number, severity))


def discover(image: DiskImage, sector_size: int | None = None) -> Disk:
    """Read the partition table of ``image`` and detect what every partition holds.

    Args:
        image: an open image.
        sector_size: force a logical sector size; by default the GPT header's place decides,
            then the block device's own size, then 512.

    The order of the checks: a GPT (header at LBA 1 for 512- or 4096-byte sectors, or a backup
    at the end); an MBR whose entries are plausible; content at offset 0 (a whole-disk
    filesystem or PV); else nothing is recognised and the disk is one unknown device.
    """
    device = disk_device(image.number)
    stream = image.stream()
    gpt_sector_size = gptmod.probe_sector_size(stream, image.size)
    ss = sector_size or gpt_sector_size or image.sector_size or 512
    disk = Disk(image, image.number, device, image.size, ss, "none")

    mbr: mbrmod.MBR | None = None
    mbr_error: ParserError | None = None
    try:
        mbr = mbrmod.MBR(stream, image.size, ss)
    except ParserError as exc:
        mbr_error = exc

    table = None
    if sector_size or gpt_sector_size:
        try:
            table = gptmod.GPT(stream, image.size, ss)
        except NotThisFormat:
            table = None
        except ParserError as exc:
            disk.parser_finding(exc, Severity.ERROR)
    if table is not None:
        _fill_gpt(disk, table, mbr)
    elif mbr is not None and mbr.primary and not mbr.is_protective:
        head = detect_content(stream, image.size)
        if head.kind in _BOOT_SECTOR_CONTENT and not _plausible_mbr(mbr, image.size):
            disk.content = head
        else:
            if head.kind in _BOOT_SECTOR_CONTENT:
                disk.finding(
                    Severity.INFO, 0, "mbr", f"sector 0 also looks like a {head.kind} boot sector"
                )
            _fill_mbr(disk, mbr)
    else:
        if mbr is not None and mbr.is_protective:
            disk.finding(
                Severity.ERROR,
                0,
                "mbr",
                "protective MBR of a GPT disk, but no usable GPT header was found",
            )
            # A GPT disk whose table cannot be used is still a GPT disk: its protective MBR and
            # the headers that carry the signature are named, the rest is unpartitioned.
            disk.structures.append(Structure("mbr", 0, min(ss, disk.size), disk.device))
            for kind, at in (("gpt-header", ss), ("gpt-backup-header", image.size - ss)):
                if at >= ss and gptmod.has_signature(stream, at):
                    disk.structures.append(Structure(kind, at, ss, disk.device))
        disk.content = detect_content(stream, image.size)
        if image.size < mbrmod.SECTOR_SIZE and mbr_error is not None:
            disk.finding(
                Severity.INFO,
                0,
                "disk",
                f"only {image.size} bytes: too small for a partition table",
            )
    _check_overlaps(disk)
    for part in disk.partitions:
        if not part.is_extended and part.mapped_size > 0 and part.overlaps is None:
            stream = disk.partition_stream(part)
            part.content = detect_content(stream, part.mapped_size)
            part.filesystem = describe_content(stream, part.mapped_size, part.content)
    if disk.scheme == "none" and disk.content is not None:
        disk.filesystem = describe_content(stream, disk.size, disk.content)
    return disk


def _plausible_mbr(mbr: mbrmod.MBR, disk_size: int) -> bool:
    """Entries a partitioning tool could have written: on the disk and after sector 0."""
    for p in mbr.primary:
        if p.start_lba == 0 or (p.start_lba + p.num_sectors) * mbr.sector_size > disk_size * 2:
            return False
    return True


def _add_partition(disk: Disk, part: Partition) -> None:
    """Clip a partition to the image, saying so when the image is shorter than the table."""
    if part.offset >= disk.size:
        part.mapped_size = 0
        disk.finding(
            Severity.ERROR,
            part.offset,
            part.device,
            f"starts at {part.offset:#x}, past the end of the image ({disk.size:#x}); "
            "nothing of it can be mapped",
        )
    elif part.end > disk.size:
        part.mapped_size = disk.size - part.offset
        disk.finding(
            Severity.ERROR,
            part.offset,
            part.device,
            f"runs {part.end - disk.size:#x} bytes past the end of the image "
            f"(ends at {part.end:#x}, image size {disk.size:#x}); truncated image?",
        )
    disk.partitions.append(part)


def _fill_gpt(disk: Disk, table: gptmod.GPT, mbr: mbrmod.MBR | None) -> None:
    ss = disk.sector_size
    disk.scheme = "gpt"
    disk.disk_id = table.header.disk_guid
    disk.table_source = table.source
    disk.gpt_first_usable = table.header.first_usable_lba * ss
    disk.gpt_last_usable = (table.header.last_usable_lba + 1) * ss - 1
    if mbr is not None:
        disk.structures.append(Structure("mbr", 0, min(ss, disk.size), disk.device))
        if not mbr.is_protective:
            disk.finding(
                Severity.WARNING, 0, "mbr", "GPT disk without a protective (0xEE) MBR entry"
            )
        elif mbr.is_hybrid:
            disk.finding(
                Severity.INFO,
                0,
                "mbr",
                "hybrid MBR: it lists partitions beside the GPT; the GPT is used",
            )
    else:
        disk.finding(Severity.WARNING, 0, "mbr", "GPT disk without a valid MBR in sector 0")
    for kind, loc in table.structures:
        disk.structures.append(Structure(kind, loc.offset, loc.size, disk.device))
    for problem in table.problems:
        disk.parser_finding(problem, Severity.WARNING)
    for p in table.partitions:
        offset = p.first_lba * ss
        size = max(0, p.num_sectors) * ss
        _add_partition(
            disk,
            Partition(
                number=p.number,
                device=f"{disk.device}{p.number}",
                offset=offset,
                size=size,
                mapped_size=size,
                type_id=p.type_guid,
                type_name=p.type_name,
                name=p.name,
                uuid=p.unique_guid,
                attributes=p.attributes,
                bootable=bool(p.attributes & 0x4),
            ),
        )


def _fill_mbr(disk: Disk, mbr: mbrmod.MBR) -> None:
    ss = disk.sector_size
    disk.scheme = "mbr"
    disk.disk_id = f"0x{mbr.disk_signature:08x}"
    disk.structures.append(Structure("mbr", 0, mbrmod.SECTOR_SIZE, disk.device))
    extended_device: dict[int, str] = {}
    for p in mbr.primary:
        device = f"{disk.device}{p.number}"
        if p.is_extended:
            extended_device[p.number] = device
        size = p.num_sectors * ss
        _add_partition(
            disk,
            Partition(
                number=p.number,
                device=device,
                offset=p.start_lba * ss,
                size=size,
                mapped_size=size,
                type_id=f"{p.type_id:x}",
                type_name=p.type_name,
                bootable=p.bootable,
                is_extended=p.is_extended,
            ),
        )
    chain = mbr.chain
    for ebr in chain.ebrs:
        disk.structures.append(
            Structure("ebr", ebr.offset, mbrmod.SECTOR_SIZE, extended_device[ebr.extended_number])
        )
    for problem in chain.problems:
        disk.parser_finding(problem, Severity.ERROR)
    for p in chain.logical:
        size = p.num_sectors * ss
        parent = next(
            (d for n, d in extended_device.items() if _ebr_in(chain, p.table_offset, n)), None
        )
        _add_partition(
            disk,
            Partition(
                number=p.number,
                device=f"{disk.device}{p.number}",
                offset=p.start_lba * ss,
                size=size,
                mapped_size=size,
                type_id=f"{p.type_id:x}",
                type_name=p.type_name,
                bootable=p.bootable,
                is_logical=True,
                parent=parent,
            ),
        )


def _ebr_in(chain: mbrmod.ExtendedChain, table_offset: int, extended_number: int) -> bool:
    return any(
        e.offset == table_offset and e.extended_number == extended_number for e in chain.ebrs
    )


def _check_overlaps(disk: Disk) -> None:
    """Partitions at the same level must not overlap; a logical must sit in its container."""
    levels: dict[str | None, list[Partition]] = {}
    for p in disk.partitions:
        levels.setdefault(p.parent, []).append(p)
    for parts in levels.values():
        parts = sorted(parts, key=lambda q: q.offset)
        reach: Partition | None = None  # of the partitions so far, the one that ends last
        for b in parts:
            if reach is not None and b.offset < reach.end and b.size > 0:
                b.overlaps = reach.device
                disk.finding(
                    Severity.ERROR,
                    b.offset,
                    b.device,
                    f"overlaps {reach.device} by {min(reach.end, b.end) - b.offset:#x} bytes; "
                    "what it holds is not mapped a second time",
                )
            if reach is None or b.end > reach.end:
                reach = b
