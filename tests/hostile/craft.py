"""Crafted hostile inputs: real images (made by the real tools) rewritten as an attacker would.

Every structure that carries a checksum keeps a valid one: the GPT header and entry-array
CRC32, the LVM2 label CRC, the metadata-area header checksum and each ``raw_locn``'s checksum
of the metadata text (lvm2's own CRC32: zlib's table, initial value 0xf597a6cf, no final
inversion), the ext4 superblock's crc32c where ``metadata_csum`` is on, the exFAT boot
region's checksum sector and each file's entry-set checksum, each NTFS MFT record's update
sequence array (the fixups). What is absurd is the contents: counts past int64, 2^40 extents on
a 28 MiB PV, 65,536 GPT entries, two million block groups on 64 MiB, FAT chains and ISO9660
directories that loop, NTFS runs at 4 PiB, ...

The checksum code here is written from the formats (lvm2's ``lib/format_text/layout.h``, the
UEFI spec, the ext4 wiki, the exFAT specification), not taken from bmap, and each one is first
checked against the checksum the real tool wrote into the base image. The FAT, exFAT, NTFS,
ISO9660 and UFS bases are the images of :mod:`tests.tsk_images` (mkfs.vfat and mtools,
mkfs.exfat and exfat-fuse, mkntfs and ntfs-3g, genisoimage, makefs).

Each case is a function ``case(bases, out) -> Case``: it builds its input under ``out`` from
the base images of ``bases`` (copied first; the bases are never written) and says which bmap
command to run on it. :data:`CASES` lists them by name.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

SECTOR = 512
KiB = 1024
MiB = 1024 * KiB
INT64_MAX = (1 << 63) - 1

# --------------------------------------------------------------------------------------------
# what a case is


@dataclass
class Case:
    """One crafted input and the bmap command to run on it."""

    name: str
    argv: list[str]
    """Arguments after ``python -m bmap``."""
    inputs: list[Path]
    """Files bmap reads; their sha256 must not change."""
    map_images: list[Path] = field(default_factory=list)
    """For ``bmap map``: the images, disk 1, 2, ...; every map line must lie inside its disk."""
    map_out: Path | None = None
    """The text map ``bmap map`` writes."""
    expect_exit: tuple[int, ...] | None = None
    """Exit codes the documentation prescribes for this input, where it does."""
    note: str = ""
    expect_findings: tuple[str, ...] = ()
    """Text each of which some finding line of the map must hold (bmap saw the damage and
    said what it did about it)."""
    expect_objects: tuple[str, ...] = ()
    """Paths the map must still name (the damage did not hide them)."""


class Bases(Protocol):
    """The real base images, made by the real tools (read only: copy before changing)."""

    def gpt512(self) -> Path: ...

    def lvm_whole(self) -> Path: ...

    def lvm_two(self) -> tuple[Path, Path]: ...

    def lvm_big_mda(self) -> Path: ...

    def tsk(self, name: str) -> Path:
        """An image of tests/tsk_images.py (``fat32``, ``exfat``, ``ntfs``, ``iso``, ...)."""
        ...


def copy_image(src: Path, out: Path, name: str | None = None) -> Path:
    """A writable sparse copy of ``src`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    dst = out / (name or src.name)
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    dst.chmod(0o644)
    return dst


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def map_case(name: str, images: list[Path], out: Path, note: str = "") -> Case:
    out_map = out / f"{name}.bmap"
    return Case(
        name=name,
        argv=["map", *map(str, images), "-o", str(out_map)],
        inputs=list(images),
        map_images=list(images),
        map_out=out_map,
        note=note,
    )


# --------------------------------------------------------------------------------------------
# LVM2: label, metadata areas, metadata text

LVM_CRC_INITIAL = 0xF597A6CF
LABEL_ID = b"LABELONE"
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
MDA_HEADER = 512
RAW_LOCN_AT = 40  # after checksum(4) magic(16) version(4) start(8) size(8)


def lvm_crc(data: bytes, initial: int = LVM_CRC_INITIAL) -> int:
    """lvm2's ``calc_crc``: the standard CRC32 table, seeded with ``initial``, no final
    inversion (zlib inverts on the way in and out, so undo both)."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _label(img: Path, pv_offset: int) -> tuple[int, bytes]:
    for n in range(4):
        data = _read(img, pv_offset + n * SECTOR, SECTOR)
        if data[:8] == LABEL_ID:
            (stored,) = struct.unpack_from("<I", data, 16)
            if lvm_crc(data[20:]) != stored:
                raise AssertionError(f"{img}: our LVM crc disagrees with the label's")
            return pv_offset + n * SECTOR, data
    raise AssertionError(f"{img}: no LVM label at {pv_offset:#x}")


def pv_metadata_areas(img: Path, pv_offset: int = 0) -> list[tuple[int, int]]:
    """``(offset, size)`` of each metadata area, in bytes of the image."""
    _, label = _label(img, pv_offset)
    (pos,) = struct.unpack_from("<I", label, 20)
    pos += 40  # uuid[32], device_size
    areas: list[list[tuple[int, int]]] = [[], []]
    for which in (0, 1):
        while True:
            off, size = struct.unpack_from("<QQ", label, pos)
            pos += 16
            if off == 0 and size == 0:
                break
            areas[which].append((pv_offset + off, size))
    return areas[1]


def current_text(img: Path, pv_offset: int = 0) -> str:
    """The metadata text ``raw_locn[0]`` of the first metadata area points at (not wrapped)."""
    area, _ = pv_metadata_areas(img, pv_offset)[0]
    header = _read(img, area, MDA_HEADER)
    if header[4:20] != MDA_MAGIC or lvm_crc(header[4:]) != struct.unpack_from("<I", header)[0]:
        raise AssertionError(f"{img}: our LVM crc disagrees with the metadata area header's")
    offset, size, checksum, _ = struct.unpack_from("<QQII", header, RAW_LOCN_AT)
    text = _read(img, area + offset, size)
    if lvm_crc(text) != checksum:
        raise AssertionError(f"{img}: our LVM crc disagrees with raw_locn's")
    return text.rstrip(b"\0").decode()


def write_metadata(
    img: Path,
    text: str | bytes,
    pv_offset: int = 0,
    *,
    good_checksum: bool = True,
    ring_fill: bytes | None = None,
) -> None:
    """Put ``text`` in every metadata area of the PV as the only current record: written at
    the ring's start (``mda + 512``), ``raw_locn[0]`` pointing at it with its size and CRC (a
    wrong CRC unless ``good_checksum``), the other raw_locns cleared, the header's own
    checksum recomputed. ``ring_fill`` first fills the whole ring with that pattern."""
    data = (text.encode() if isinstance(text, str) else text) + b"\0"
    for area, size in pv_metadata_areas(img, pv_offset):
        ring = size - MDA_HEADER
        if ring_fill is None and len(data) > ring:
            raise ValueError(f"{len(data)} bytes of metadata do not fit a {ring}-byte ring")
        header = bytearray(_read(img, area, MDA_HEADER))
        if ring_fill is not None:
            fill = (ring_fill * (ring // len(ring_fill) + 1))[:ring]
            _write(img, area + MDA_HEADER, fill)
            record = fill
        else:
            _write(img, area + MDA_HEADER, data)
            record = data
        crc = lvm_crc(record)
        if not good_checksum:
            crc ^= 1
        locns = struct.pack("<QQII", MDA_HEADER, len(record), crc, 0) + bytes(24)
        header[RAW_LOCN_AT : RAW_LOCN_AT + len(locns)] = locns
        struct.pack_into("<I", header, 0, lvm_crc(bytes(header[4:])))
        _write(img, area, bytes(header))


def _section_span(text: str, name: str) -> tuple[int, int]:
    """``[start, end)`` of the body of the first ``name {`` section (between the braces)."""
    m = re.search(rf"(?m)^{re.escape(name)} \{{\n", text)
    if not m:
        raise AssertionError(f"no section {name}")
    depth, pos = 1, m.end()
    while depth:
        c = text[pos]
        depth += c == "{"
        depth -= c == "}"
        pos += 1
    return m.end(), pos - 1


def set_lvs(text: str, body: str) -> str:
    """Replace the body of ``logical_volumes { ... }``."""
    start, end = _section_span(text, "logical_volumes")
    return text[:start] + "\n" + body + text[end:]


def set_field(text: str, key: str, value: str | int, section: str | None = None) -> str:
    """Set the first ``key = ...`` (inside ``section`` when given)."""
    lo, hi = _section_span(text, section) if section else (0, len(text))
    part, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text[lo:hi], count=1)
    if n != 1:
        raise AssertionError(f"no {key} in {section or 'the text'}")
    return text[:lo] + part + text[hi:]


def get_int(text: str, key: str) -> int:
    m = re.search(rf"(?m)^{re.escape(key)} = (\d+)$", text)
    if not m:
        raise AssertionError(f"no {key}")
    return int(m.group(1))


def lvm_id(n: int) -> str:
    """An id in LVM's 6-4-4-4-4-4-6 form."""
    raw = f"hostLV{n:026d}"
    parts, pos, out = (6, 4, 4, 4, 4, 4, 6), 0, []
    for k in parts:
        out.append(raw[pos : pos + k])
        pos += k
    return "-".join(out)


def segment(
    n: int,
    start: int | str,
    count: int | str,
    stripes: list[tuple[str, int | str]],
    stripe_size: int | str | None = None,
) -> str:
    lines = [
        f"segment{n} {{",
        f"start_extent = {start}",
        f"extent_count = {count}",
        "",
        'type = "striped"',
        f"stripe_count = {len(stripes)}",
    ]
    if stripe_size is not None:
        lines.append(f"stripe_size = {stripe_size}")
    lines += ["", "stripes = [", ",\n".join(f'"{pv}", {pe}' for pv, pe in stripes), "]", "}"]
    return "\n".join(lines) + "\n"


def lv(name: str, n: int, segments: list[str], extra: str = "") -> str:
    head = (
        f"{name} {{\n"
        f'id = "{lvm_id(n)}"\n'
        'status = ["READ", "WRITE", "VISIBLE"]\n'
        "flags = []\n"
        f"{extra}"
        f"segment_count = {len(segments)}\n\n"
    )
    return head + "\n".join(segments) + "}\n\n"


def _lvm_text_case(
    name: str,
    bases: Bases,
    out: Path,
    edit: Callable[[str], str],
    note: str = "",
    base: str = "whole",
    **write_args: object,
) -> Case:
    """Copy an LVM base image, rewrite its metadata text with ``edit``, map it."""
    if base == "two":
        images = [copy_image(p, out, f"disk{i}.img") for i, p in enumerate(bases.lvm_two(), 1)]
    elif base == "big":
        images = [copy_image(bases.lvm_big_mda(), out)]
    else:
        images = [copy_image(bases.lvm_whole(), out)]
    text = edit(current_text(images[0]))
    for img in images:
        write_metadata(img, text, **write_args)  # type: ignore[arg-type]
    return map_case(name, images, out, note)


# --------------------------------------------------------------------------------------------
# the LVM cases (base lvm_whole: VG vgw, 4 MiB extents, pv0 with 7 PE, lv1 on PE 0-2 with an
# ext4 inside; two metadata areas, both rewritten)

HUGE = "99999999999999999999999"  # 23 digits, past 2^64


def lvm_huge_counts(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        text = set_field(text, "extent_size", HUGE)
        text = set_field(text, "pe_start", HUGE, "pv0")
        text = set_field(text, "pe_count", HUGE, "pv0")
        return set_lvs(text, lv("lv1", 1, [segment(1, HUGE, HUGE, [("pv0", HUGE)])]))

    return _lvm_text_case("lvm_huge_counts", bases, out, edit, "23-digit counts everywhere")


def lvm_int64_edge(bases: Bases, out: Path) -> Case:
    """Values each inside int64 (even once scaled by 512), whose sums and products are not."""
    big_sectors = INT64_MAX // SECTOR

    def edit(text: str) -> str:
        text = set_field(text, "extent_size", big_sectors)
        text = set_field(text, "pe_start", big_sectors, "pv0")
        text = set_field(text, "pe_count", INT64_MAX, "pv0")
        seg = segment(1, INT64_MAX, INT64_MAX, [("pv0", INT64_MAX)])
        return set_lvs(text, lv("lv1", 1, [seg]))

    return _lvm_text_case("lvm_int64_edge", bases, out, edit, "int64 max values, sums overflow")


def lvm_overlapping_segments(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        body = (
            lv("lv1", 1, [segment(1, 0, 3, [("pv0", 0)]), segment(2, 3, 3, [("pv0", 0)])])
            + lv("lv2", 2, [segment(1, 0, 3, [("pv0", 1)])])
            + lv("lv3", 3, [segment(1, 0, 7, [("pv0", 0)])])
        )
        return set_lvs(text, body)

    return _lvm_text_case(
        "lvm_overlapping_segments", bases, out, edit, "3 LVs / 2 segments over PE 0-2"
    )


def lvm_nested_lists(bases: Bases, out: Path) -> Case:
    depth = 100_000

    def edit(text: str) -> str:
        tags = "tags = " + "[" * depth + "]" * depth + "\n"
        return set_lvs(text, lv("lv1", 1, [segment(1, 0, 3, [("pv0", 0)])], extra=tags))

    return _lvm_text_case("lvm_nested_lists", bases, out, edit, "a list nested 100,000 deep")


def lvm_long_number(bases: Bases, out: Path) -> Case:
    digits = "7" * 5000

    def edit(text: str) -> str:
        return set_lvs(text, lv("lv1", 1, [segment(1, 0, digits, [("pv0", 0)])]))

    return _lvm_text_case("lvm_long_number", bases, out, edit, "extent_count of 5,000 digits")


def lvm_lv_dwarfs_pv(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        return set_lvs(text, lv("lv1", 1, [segment(1, 0, 1 << 40, [("pv0", 0)])]))

    return _lvm_text_case("lvm_lv_dwarfs_pv", bases, out, edit, "2^40 extents on a 7-PE PV")


def lvm_negative_pe_start(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        return set_field(text, "pe_start", -1, "pv0")

    return _lvm_text_case("lvm_negative_pe_start", bases, out, edit, "pe_start = -1")


def lvm_negative_extents(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        text = set_field(text, "pe_count", -7, "pv0")
        return set_lvs(text, lv("lv1", 1, [segment(1, -5, 3, [("pv0", -2)])]))

    return _lvm_text_case(
        "lvm_negative_extents", bases, out, edit, "pe_count -7, start_extent -5, stripe PE -2"
    )


def lvm_stripes_1_sector(bases: Bases, out: Path) -> Case:
    """Base lvm_two: two 16 MiB PVs of 7 x 2 MiB extents; one LV striped over both with a
    stripe size of one sector and 2^20 extents."""

    def edit(text: str) -> str:
        seg = segment(1, 0, 1 << 20, [("pv0", 0), ("pv1", 0)], stripe_size=1)
        return set_lvs(text, lv("striped", 1, [seg]))

    return _lvm_text_case(
        "lvm_stripes_1_sector", bases, out, edit, "2 stripes of 512 B, 2^20 extents", base="two"
    )


# -- base lvm_big_mda: a PV made by pvcreate --metadatasize 16m (see build_lvm_big_mda)


def lvm_8mb_string(bases: Bases, out: Path) -> Case:
    def edit(text: str) -> str:
        host = 'creation_host = "' + "A" * (8 * MiB) + '"\n'
        return set_lvs(text, lv("lv1", 1, [segment(1, 0, 1, [("pv0", 0)])], extra=host))

    return _lvm_text_case("lvm_8mb_string", bases, out, edit, "an 8 MiB quoted string", base="big")


def _damaged_ring(name: str, bases: Bases, out: Path, sector: Callable[[bytes], bytes]) -> Case:
    """The whole 16 MiB ring of the big-mda base: every 512-byte sector starts a record
    (``vgb {``) that never ends (no NUL: ``sector(b"vgb {\\n")``); the current record's checksum
    is wrong, so the ring is scanned for older records."""
    vg = current_text(bases.lvm_big_mda()).split(" ", 1)[0]
    pattern = sector(f"{vg} {{\n".encode())
    assert len(pattern) == SECTOR
    return _lvm_text_case(
        name,
        bases,
        out,
        lambda text: text,
        "32k broken records in a 16 MiB ring, bad current checksum",
        base="big",
        good_checksum=False,
        ring_fill=pattern,
    )


def lvm_damaged_ring(bases: Bases, out: Path) -> Case:
    """Each broken record: the VG's name, then 506 ``{`` (one token each)."""
    return _damaged_ring("lvm_damaged_ring", bases, out, lambda head: head.ljust(SECTOR, b"{"))


def lvm_damaged_ring_names(bases: Bases, out: Path) -> Case:
    """Each broken record: ``vgb {``, ``id = "`` and a string that never ends."""
    return _damaged_ring(
        "lvm_damaged_ring_names",
        bases,
        out,
        lambda head: (head + b'id = "').ljust(SECTOR, b"x"),
    )


def lvm_20000_lvs(bases: Bases, out: Path) -> Case:
    """20,000 linear LVs of one extent each; extents of 2 sectors so that they fit the PV."""
    count = 20_000

    def edit(text: str) -> str:
        pe_start = get_int(text, "pe_start")
        dev_size = get_int(text, "dev_size")
        text = set_field(text, "extent_size", 2)
        text = set_field(text, "pe_count", (dev_size - pe_start) // 2, "pv0")
        body = "".join(lv(f"lv{i}", i, [segment(1, 0, 1, [("pv0", i)])]) for i in range(count))
        return set_lvs(text, body)

    return _lvm_text_case("lvm_20000_lvs", bases, out, edit, "20,000 one-extent LVs", base="big")


def build_lvm_big_mda(folder: Path) -> Path:
    """A 48 MiB whole-disk PV with a 16 MiB metadata area (``pvcreate --metadatasize 16m``),
    VG ``vgb`` (1 MiB extents), LV ``lv1`` of one extent: made by the real lvm tools on a
    loop device (``tests.lvm_truth.LvmSession`` detaches it on every path)."""
    from tests.lvm_truth import LvmSession, PvPlace

    disk = folder / "disk.img"
    with open(disk, "wb") as fh:
        fh.truncate(48 * MiB)
    with LvmSession() as s:
        dev = s.attach(PvPlace(disk, 0, 48 * MiB, None, 1), read_only=False)
        s.run("pvcreate", "--norestorefile", "--metadatasize", "16m", dev)
        s.run("vgcreate", "-s", "1m", "vgb", dev)
        s.run("lvcreate", "-an", "-Zn", "-l", "1", "-n", "lv1", "vgb")
    disk.chmod(0o444)
    return disk


# --------------------------------------------------------------------------------------------
# GPT (base gpt-512: 32 MiB, 512-byte sectors, 128 entries at LBA 2; p2 = ext4 root at LBA
# 18432-43007; a 1 MiB gap at LBA 43008-45055)

GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
LINUX_FS = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4").bytes_le


def gpt_headers(img: Path) -> tuple[list, list]:
    """The primary and backup header fields (lists, CRC checked with our CRC)."""
    size = img.stat().st_size
    out = []
    for lba in (1, size // SECTOR - 1):
        raw = _read(img, lba * SECTOR, SECTOR)
        fields = list(GPT_HEADER.unpack_from(raw))
        check = bytearray(raw[: fields[2]])
        check[16:20] = bytes(4)
        if fields[0] != b"EFI PART" or zlib.crc32(check) != fields[3]:
            raise AssertionError(f"{img}: our CRC disagrees with the GPT header at LBA {lba}")
        out.append(fields)
    return out[0], out[1]


# field indexes in GPT_HEADER
_H_CRC, _CUR, _BACKUP, _FIRST, _LAST, _ENTRIES_LBA, _NUM, _ESIZE, _ECRC = (
    3,
    5,
    6,
    7,
    8,
    10,
    11,
    12,
    13,
)


def write_gpt_header(img: Path, fields: list) -> None:
    fields = list(fields)
    fields[_H_CRC] = 0
    fields[_H_CRC] = zlib.crc32(GPT_HEADER.pack(*fields)[: fields[2]])
    raw = GPT_HEADER.pack(*fields)
    _write(img, fields[_CUR] * SECTOR, raw + bytes(SECTOR - len(raw)))


def gpt_entry(first: int, last: int, n: int, type_guid: bytes = LINUX_FS) -> bytes:
    unique = uuid.UUID(int=(0x686F7374 << 96) | n).bytes_le
    name = f"hostile {n}".encode("utf-16-le")
    return type_guid + unique + struct.pack("<QQQ", first, last, 0) + name.ljust(72, b"\0")


def _gpt_many(name: str, bases: Bases, out: Path, first: int, last: int, note: str) -> Case:
    """65,536 entries (8 MiB of array at LBA 2, over the EFI partition), every one over LBA
    ``first``-``last``; both headers point at that array, all CRCs valid."""
    img = copy_image(bases.gpt512(), out)
    primary, backup = gpt_headers(img)
    count = 65_536
    array = b"".join(gpt_entry(first, last, n) for n in range(count))
    _write(img, 2 * SECTOR, array)
    crc = zlib.crc32(array)
    for fields in (primary, backup):
        fields[_ENTRIES_LBA] = 2
        fields[_NUM], fields[_ESIZE], fields[_ECRC] = count, 128, crc
        fields[_FIRST] = 2 + len(array) // SECTOR
        write_gpt_header(img, fields)
    case = map_case(name, [img], out, note)
    case.expect_exit = (3,)  # 65,535 partitions overlap the first: findings
    return case


def gpt_65536_entries_one_range(bases: Bases, out: Path) -> Case:
    return _gpt_many(
        "gpt_65536_entries_one_range", bases, out, 43008, 45055, "65,536 entries over the gap"
    )


def gpt_65536_entries_ext4(bases: Bases, out: Path) -> Case:
    return _gpt_many(
        "gpt_65536_entries_ext4", bases, out, 18432, 43007, "65,536 entries over the ext4 root"
    )


def report_gpt_65536(bases: Bases, out: Path) -> Case:
    """``bmap report`` (HTML and CSV) of the 65,536-entry GPT over the ext4: the space table
    once filtered the whole map for each partition (551 s)."""
    mapped = gpt_65536_entries_ext4(bases, out)
    html, csv_dir = out / "report.html", out / "tables"
    return Case(
        name="report_gpt_65536",
        argv=["report", str(mapped.inputs[0]), "-o", str(html), "--csv", str(csv_dir)],
        inputs=mapped.inputs,
        expect_exit=(0,),
        note="65,536 partitions in the report's tables and layout",
    )


def _gpt_absurd(name: str, bases: Bases, out: Path, note: str, **changes: int) -> Case:
    img = copy_image(bases.gpt512(), out)
    index = {"first": _FIRST, "last": _LAST, "entries_lba": _ENTRIES_LBA, "num": _NUM}
    index["esize"] = _ESIZE
    for fields in gpt_headers(img):
        for key, value in changes.items():
            fields[index[key]] = value
        write_gpt_header(img, fields)
    # Both headers valid by CRC, neither usable: still a GPT disk (its protective MBR and
    # headers are named, the findings say why), so a map with findings: exit 3, not 5.
    case = map_case(name, [img], out, note)
    case.expect_exit = (3,)
    return case


def gpt_absurd_usable(bases: Bases, out: Path) -> Case:
    return _gpt_absurd(
        "gpt_absurd_usable", bases, out, "first_usable 60000 > last_usable 100", first=60000,
        last=100,
    )  # fmt: skip


def gpt_absurd_array_beyond_disk(bases: Bases, out: Path) -> Case:
    return _gpt_absurd(
        "gpt_absurd_array_beyond_disk", bases, out, "entry array at LBA 2^40",
        entries_lba=1 << 40,
    )  # fmt: skip


def gpt_absurd_2g_entries(bases: Bases, out: Path) -> Case:
    return _gpt_absurd(
        "gpt_absurd_2g_entries", bases, out, "2^31 entries of 128 bytes (256 GiB)", num=1 << 31
    )


def gpt_absurd_entry_size(bases: Bases, out: Path) -> Case:
    return _gpt_absurd(
        "gpt_absurd_entry_size", bases, out, "entry size 2^31, 4 entries", num=4, esize=1 << 31
    )


# --------------------------------------------------------------------------------------------
# ext: a superblock claiming two million block groups

_CRC32C_TABLE: list[int] = []


def crc32c_raw(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC32C (Castagnoli, reflected) with no final inversion: ext4's ``ext4_chksum``."""
    if not _CRC32C_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC32C_TABLE.append(c)
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc


METADATA_CSUM = 0x400  # s_feature_ro_compat
INCOMPAT_64BIT = 0x80


def claim_groups(img: Path, fs_offset: int, groups: int) -> None:
    """Set blocks_count so that the filesystem has ``groups`` block groups; the superblock's
    crc32c is recomputed where metadata_csum is on (and our crc32c checked first)."""
    at = fs_offset + 1024
    sb = bytearray(_read(img, at, 1024))
    if struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        raise AssertionError("no ext superblock")
    (ro_compat,) = struct.unpack_from("<I", sb, 0x64)
    csum = bool(ro_compat & METADATA_CSUM)
    if csum and crc32c_raw(bytes(sb[:0x3FC])) != struct.unpack_from("<I", sb, 0x3FC)[0]:
        raise AssertionError("our crc32c disagrees with the superblock's")
    (incompat,) = struct.unpack_from("<I", sb, 0x60)
    if not incompat & INCOMPAT_64BIT:
        raise AssertionError("needs the 64bit feature for that many blocks")
    first_data, _, _, per_group = struct.unpack_from("<IIII", sb, 0x14)
    blocks = first_data + groups * per_group
    struct.pack_into("<I", sb, 0x4, blocks & 0xFFFFFFFF)
    struct.pack_into("<I", sb, 0x150, blocks >> 32)
    if csum:
        struct.pack_into("<I", sb, 0x3FC, crc32c_raw(bytes(sb[:0x3FC])))
    _write(img, at, bytes(sb))


def ext_2m_groups(bases: Bases, out: Path) -> Case:
    """A fresh 64 MiB ``mke2fs -t ext4 -O 64bit,^metadata_csum`` whose superblock says 2,000,000
    groups (no checksum to fix)."""
    out.mkdir(parents=True, exist_ok=True)
    img = out / "ext4.img"
    with open(img, "wb") as fh:
        fh.truncate(64 * MiB)
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run(
        [mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "64bit,^metadata_csum", str(img)],
        check=True,
        env={"E2FSPROGS_FAKE_TIME": "1700000000", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    claim_groups(img, 0, 2_000_000)
    return map_case("ext_2m_groups", [img], out, "64 MiB ext4 claiming 2,000,000 groups")


def ext_2m_groups_csum(bases: Bases, out: Path) -> Case:
    """The gpt-512 root ext4 (metadata_csum, 1 KiB blocks): 2,000,000 groups, crc32c fixed."""
    img = copy_image(bases.gpt512(), out)
    claim_groups(img, 18432 * SECTOR, 2_000_000)
    return map_case(
        "ext_2m_groups_csum", [img], out, "gpt-512 root claiming 2,000,000 groups, crc32c ok"
    )


# --------------------------------------------------------------------------------------------
# map files and traces (a real map of gpt-512 made by ``bmap map``, then edited)


def real_map(bases: Bases, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "gpt-512.bmap"
    subprocess.run(
        [sys.executable, "-m", "bmap", "map", str(bases.gpt512()), "-o", str(target)],
        check=True,
        capture_output=True,
    )
    return target


def _edit_map(bases: Bases, out: Path, name: str, edit: Callable[[list[str]], None]) -> Path:
    lines = real_map(bases, out).read_text().splitlines()
    edit(lines)
    path = out / f"{name}.bmap"
    path.write_text("\n".join(lines) + "\n")
    return path


def _partition_line(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if re.match(r"1 \w+ \w+ p /dev/sda1$", line))


def map_end_beyond_int64(bases: Bases, out: Path) -> Case:
    def edit(lines: list[str]) -> None:
        i = _partition_line(lines)
        disk, start, _, rest = lines[i].split(" ", 3)
        lines[i] = f"{disk} {start} {(1 << 64) + 5:x} {rest}"

    path = _edit_map(bases, out, "map_end_beyond_int64", edit)
    return Case(
        "map_end_beyond_int64",
        ["lookup", str(path), "0x1000"],
        [path],
        expect_exit=(6,),
        note="a p line ending at 2^64+5",
    )


def map_negative_start(bases: Bases, out: Path) -> Case:
    def edit(lines: list[str]) -> None:
        i = _partition_line(lines)
        disk, start, rest = lines[i].split(" ", 2)
        lines[i] = f"{disk} -{start} {rest}"

    path = _edit_map(bases, out, "map_negative_start", edit)
    return Case(
        "map_negative_start",
        ["lookup", str(path), "0x1000"],
        [path],
        expect_exit=(6,),
        note="a p line starting at -0x100000",
    )


def map_1m_nested(bases: Bases, out: Path) -> Case:
    """1,000,000 identical lines over the same range (the format's only nesting of equal
    ranges: lines with the same range, one inside the other)."""
    count = 1_000_000
    head = [line for line in real_map(bases, out).read_text().splitlines() if line[:1] == "#"]
    path = out / "map_1m_nested.bmap"
    with open(path, "w") as fh:
        fh.write("\n".join(head) + "\n1 0 2000000 v /dev/sda\n")
        fh.write("1 0 1000 m /dev/sda mbr\n" * count)
    return Case("map_1m_nested", ["lookup", str(path), "0x100"], [path], note="1M equal lines")


BIG_DIGITS = "9" * 5000


def trace_huge_numbers_csv(bases: Bases, out: Path) -> Case:
    map_path = real_map(bases, out)
    log = out / "trace.csv"
    rows = [
        "offset,length",
        "0,512",
        f"{BIG_DIGITS},512",
        f"0,{BIG_DIGITS}",
        f"{1 << 64},512",
        f"0,{1 << 64}",
        f"{INT64_MAX},2",
        f"{(1 << 64) - 1},{(1 << 64) - 1}",
        "4096,512",
    ]
    log.write_text("\n".join(rows) + "\n")
    return Case(
        "trace_huge_numbers_csv",
        ["trace", str(map_path), str(log)],
        [map_path, log],
        note="CSV offsets of 5,000 digits and 2^64",
    )


def trace_huge_numbers_nbdkit(bases: Bases, out: Path) -> Case:
    map_path = real_map(bases, out)
    log = out / "nbdkit.log"
    requests = [
        ("0x0", "0x200"),
        (BIG_DIGITS, "0x200"),
        ("0x" + "f" * 5000, "0x200"),
        ("0x0", BIG_DIGITS),
        (f"{1 << 64:#x}", "0x200"),
        (str(1 << 64), "512"),
        ("0x0", f"{1 << 64:#x}"),
        (f"{INT64_MAX:#x}", "0x2"),
        ("0x0", "0xffffffffffffffff"),
        ("0x1000", "0x200"),
    ]
    lines = []
    for n, (offset, count) in enumerate(requests, 1):
        t = f"2024-05-01 10:00:00.{n * 100:06d}"
        lines.append(f"{t} connection=1 Read id={n} offset={offset} count={count} ...")
        lines.append(f"{t} connection=1 ...Read id={n} return=0")
    log.write_text("\n".join(lines) + "\n")
    return Case(
        "trace_huge_numbers_nbdkit",
        ["trace", str(map_path), str(log)],
        [map_path, log],
        note="nbdkit offsets/counts of 5,000 digits and 2^64",
    )


# --------------------------------------------------------------------------------------------
# FAT (bases from tests/tsk_images.py, by mkfs.vfat and mtools: fat32 of 40 MiB with 512-byte
# clusters, fat16 of 20 MiB; both hold /big.bin of 150 KiB, /dir1/dir2/deep.txt, ...)

FAT_ENTRY = 32


@dataclass
class FatVolume:
    """What a FAT boot sector says (fatgen103), in bytes of the image."""

    path: Path
    bps: int
    cluster: int
    fat_start: int
    fat_bytes: int
    nfats: int
    root_start: int
    """FAT12/16: the fixed root directory's start (FAT32: 0)."""
    root_entries: int
    root_cluster: int
    """FAT32: the root directory's first cluster (FAT12/16: 0)."""
    data_start: int
    bits: int

    @classmethod
    def read(cls, path: Path) -> FatVolume:
        boot = _read(path, 0, SECTOR)
        bps, spc, reserved, nfats, root_entries = struct.unpack_from("<HBHBH", boot, 11)
        fat16_size = struct.unpack_from("<H", boot, 22)[0]
        total = struct.unpack_from("<H", boot, 19)[0] or struct.unpack_from("<I", boot, 32)[0]
        fat_size = fat16_size or struct.unpack_from("<I", boot, 36)[0]
        fat_start = reserved * bps
        root_start = fat_start + nfats * fat_size * bps
        data_start = root_start + -(-root_entries * FAT_ENTRY // bps) * bps
        clusters = (total * bps - data_start) // (spc * bps)
        bits = 32 if fat16_size == 0 else 16 if clusters >= 4085 else 12
        if bits == 12:
            raise AssertionError(f"{path}: FAT12 is not edited here")
        root_cluster = struct.unpack_from("<I", boot, 44)[0] if bits == 32 else 0
        return cls(
            path, bps, spc * bps, fat_start, fat_size * bps, nfats, root_start, root_entries,
            root_cluster, data_start, bits,
        )  # fmt: skip

    def cluster_at(self, n: int) -> int:
        return self.data_start + (n - 2) * self.cluster

    def get(self, n: int) -> int:
        size = self.bits // 8
        value = int.from_bytes(_read(self.path, self.fat_start + n * size, size), "little")
        return value & 0x0FFFFFFF if self.bits == 32 else value

    def set(self, n: int, value: int) -> None:
        """Entry ``n`` of every FAT (FAT32 keeps the entry's top four bits)."""
        size = self.bits // 8
        for i in range(self.nfats):
            at = self.fat_start + i * self.fat_bytes + n * size
            if self.bits == 32:
                old = int.from_bytes(_read(self.path, at, 4), "little")
                value = (old & 0xF0000000) | (value & 0x0FFFFFFF)
            _write(self.path, at, value.to_bytes(size, "little"))

    def chain(self, first: int) -> list[int]:
        end = 0x0FFFFFF8 if self.bits == 32 else 0xFFF8
        out = [first]
        while len(out) <= self.fat_bytes:
            nxt = self.get(out[-1])
            if nxt < 2 or nxt >= end:
                return out
            out.append(nxt)
        raise AssertionError(f"{self.path}: the chain from cluster {first} loops")

    def directory(self, first: int) -> list[tuple[int, bytes]]:
        """``(image offset, 32 bytes)`` of each short entry of a directory (cluster ``first``;
        0: the FAT12/16 root), up to the end marker."""
        if first == 0:
            spans = [(self.root_start, self.root_entries * FAT_ENTRY)]
        else:
            spans = [(self.cluster_at(n), self.cluster) for n in self.chain(first)]
        out: list[tuple[int, bytes]] = []
        for start, size in spans:
            data = _read(self.path, start, size)
            for at in range(0, size, FAT_ENTRY):
                entry = data[at : at + FAT_ENTRY]
                if entry[0] == 0:
                    return out
                if entry[0] != 0xE5 and entry[11] != 0x0F:
                    out.append((start + at, entry))
        return out

    def find(self, path: str) -> tuple[int, int, int]:
        """``(image offset of its entry, first cluster, size)`` of the file or directory at
        ``path`` (8.3 names, as ``DIR1/BIG.BIN``)."""
        here = self.root_cluster
        found = None
        for part in path.strip("/").split("/"):
            stem, _, ext = part.upper().partition(".")
            want = stem.ljust(8).encode() + ext.ljust(3).encode()
            for at, entry in self.directory(here):
                if entry[:11] == want:
                    high, low = struct.unpack_from("<H", entry, 20)[0], entry[26:28]
                    first = (high << 16 if self.bits == 32 else 0) | int.from_bytes(low, "little")
                    found = (at, first, struct.unpack_from("<I", entry, 28)[0])
                    here = first
                    break
            else:
                raise AssertionError(f"{self.path}: no {part} in {path}")
        assert found is not None
        return found

    def set_first_cluster(self, entry_at: int, cluster: int) -> None:
        if self.bits == 32:
            _write(self.path, entry_at + 20, struct.pack("<H", cluster >> 16))
        _write(self.path, entry_at + 26, struct.pack("<H", cluster & 0xFFFF))


def fat32_chain_loop(bases: Bases, out: Path) -> Case:
    """/big.bin's last FAT entry (both FATs) points back at its first cluster."""
    img = copy_image(bases.tsk("fat32"), out)
    fat = FatVolume.read(img)
    _, first, _ = fat.find("BIG.BIN")
    chain = fat.chain(first)
    fat.set(chain[-1], first)
    return map_case("fat32_chain_loop", [img], out, f"a {len(chain)}-cluster chain looping back")


def fat32_file_4gib(bases: Bases, out: Path) -> Case:
    """/big.bin's directory entry says 4 GiB - 1 bytes (its chain is 300 clusters)."""
    img = copy_image(bases.tsk("fat32"), out)
    fat = FatVolume.read(img)
    at, _, _ = fat.find("BIG.BIN")
    _write(img, at + 28, struct.pack("<I", 0xFFFFFFFF))
    case = map_case("fat32_file_4gib", [img], out, "a 150 KiB file claiming 4 GiB - 1 bytes")
    case.expect_findings = ("belong to no file The Sleuth Kit lists",)
    return case


def fat32_dir_loop(bases: Bases, out: Path) -> Case:
    """/dir1/dir2's entry names the root directory's cluster, and /dir1's names dir1's own
    parent: a directory that is its own ancestor."""
    img = copy_image(bases.tsk("fat32"), out)
    fat = FatVolume.read(img)
    dir2_at, _, _ = fat.find("DIR1/DIR2")
    fat.set_first_cluster(dir2_at, fat.root_cluster)
    return map_case("fat32_dir_loop", [img], out, "/dir1/dir2 is the root directory")


def fat32_all_entries_2(bases: Bases, out: Path) -> Case:
    """Every entry of both FATs (but the two reserved) = 2: each chain runs into cluster 2,
    which points at itself."""
    img = copy_image(bases.tsk("fat32"), out)
    fat = FatVolume.read(img)
    for i in range(fat.nfats):
        at = fat.fat_start + i * fat.fat_bytes
        _write(img, at + 8, struct.pack("<I", 2) * (fat.fat_bytes // 4 - 2))
    return map_case("fat32_all_entries_2", [img], out, "all 80,638 FAT entries = 2")


def _fat16_bpb(name: str, bases: Bases, out: Path, note: str, **fields: int) -> Case:
    """The fat16 base with BPB fields (byte offset: struct format) rewritten."""
    img = copy_image(bases.tsk("fat16"), out)
    layout = {"spc": (13, "<B"), "root_entries": (17, "<H"), "fat_size": (22, "<H")}
    for key, value in fields.items():
        at, fmt = layout[key]
        _write(img, at, struct.pack(fmt, value))
    return map_case(name, [img], out, note)


def fat16_bpb_fat_size(bases: Bases, out: Path) -> Case:
    """Two FATs of 20,400 sectors (a FAT16 needs 256 at most) on a 40,960-sector volume: the
    largest the FAT probe still takes (more is "metadata larger than the volume", exit 5)."""
    return _fat16_bpb(
        "fat16_bpb_fat_size", bases, out, "FATs of 20,400 sectors (2 x 10 MiB) on 20 MiB",
        fat_size=20400,
    )  # fmt: skip


def fat16_bpb_cluster_128(bases: Bases, out: Path) -> Case:
    return _fat16_bpb(
        "fat16_bpb_cluster_128", bases, out, "128 sectors per cluster (64 KiB)", spc=128
    )


def fat16_bpb_root_entries(bases: Bases, out: Path) -> Case:
    return _fat16_bpb(
        "fat16_bpb_root_entries", bases, out, "65,535 root entries (a 2 MiB root directory)",
        root_entries=0xFFFF,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# exFAT (base ``exfat`` of tests/tsk_images.py: mkfs.exfat, 32 MiB, 4 KiB clusters, files
# written by exfat-fuse). The boot region's checksum and each file's entry-set checksum are
# recomputed as the exFAT specification (sections 3.4 and 6.3.3) gives them, after checking
# ours against what mkfs.exfat and exfat-fuse wrote.


def exfat_boot_checksum(region: bytes) -> int:
    """The checksum of sectors 0-10 of a boot region (VolumeFlags and PercentInUse left
    out)."""
    checksum = 0
    for i, byte in enumerate(region):
        if i in (106, 107, 112):
            continue
        checksum = ((checksum >> 1) | ((checksum & 1) << 31)) + byte
        checksum &= 0xFFFFFFFF
    return checksum


def exfat_set_checksum(entries: bytes) -> int:
    """The SetChecksum of a file's directory entry set (its own field, bytes 2-3, left out)."""
    checksum = 0
    for i, byte in enumerate(entries):
        if i in (2, 3):
            continue
        checksum = (((checksum >> 1) | ((checksum & 1) << 15)) + byte) & 0xFFFF
    return checksum


@dataclass
class ExfatVolume:
    path: Path
    bps: int
    cluster: int
    fat_start: int
    heap: int
    root_cluster: int

    @classmethod
    def read(cls, path: Path) -> ExfatVolume:
        boot = _read(path, 0, SECTOR)
        if boot[3:11] != b"EXFAT   ":
            raise AssertionError(f"{path}: no exFAT boot sector")
        bps = 1 << boot[108]
        fat_offset, _, heap, _, root = struct.unpack_from("<IIIII", boot, 80)
        volume = cls(path, bps, bps << boot[109], fat_offset * bps, heap * bps, root)
        for region in (0, 12):
            stored = struct.unpack_from("<I", _read(path, (region + 11) * bps, 4))[0]
            if exfat_boot_checksum(_read(path, region * bps, 11 * bps)) != stored:
                raise AssertionError(f"{path}: our checksum disagrees with the boot region's")
        return volume

    def set_boot(self, at: int, data: bytes) -> None:
        """Bytes ``at`` of the boot sector, in the main and the backup region, each region's
        checksum sector rewritten."""
        for region in (0, 12):
            _write(self.path, region * self.bps + at, data)
            checksum = exfat_boot_checksum(_read(self.path, region * self.bps, 11 * self.bps))
            sector = struct.pack("<I", checksum) * (self.bps // 4)
            _write(self.path, (region + 11) * self.bps, sector)

    def cluster_at(self, n: int) -> int:
        return self.heap + (n - 2) * self.cluster

    def fat_next(self, n: int) -> int:
        return int(struct.unpack("<I", _read(self.path, self.fat_start + 4 * n, 4))[0])

    def root_entries(self) -> list[tuple[int, bytes]]:
        """``(image offset, 32 bytes)`` of the root directory's entries in use (its first
        cluster: the base's root fits one)."""
        start = self.cluster_at(self.root_cluster)
        data = _read(self.path, start, self.cluster)
        out = []
        for at in range(0, self.cluster, 32):
            if data[at] == 0:
                break
            if data[at] & 0x80:
                out.append((start + at, data[at : at + 32]))
        return out

    def file_set(self, name: str) -> tuple[int, bytearray]:
        """``(image offset, bytes)`` of the entry set (file, stream, names) of the root's
        ``name``, its checksum checked."""
        entries = self.root_entries()
        for i, (at, entry) in enumerate(entries):
            if entry[0] != 0x85:
                continue
            count = entry[1]
            raw = bytearray(b"".join(e for _, e in entries[i : i + 1 + count]))
            names = b"".join(bytes(raw[k + 2 : k + 32]) for k in range(64, len(raw), 32))
            length = raw[32 + 3]
            if names.decode("utf-16-le")[:length] == name:
                if exfat_set_checksum(bytes(raw)) != struct.unpack_from("<H", raw, 2)[0]:
                    raise AssertionError(f"{self.path}: our set checksum disagrees for {name}")
                return at, raw
        raise AssertionError(f"{self.path}: no {name} in the root directory")

    def write_set(self, at: int, raw: bytearray) -> None:
        struct.pack_into("<H", raw, 2, exfat_set_checksum(bytes(raw)))
        _write(self.path, at, bytes(raw))


def exfat_bitmap_huge(bases: Bases, out: Path) -> Case:
    """The allocation bitmap's directory entry claims 2**63-1 bytes (it holds 960)."""
    img = copy_image(bases.tsk("exfat"), out)
    volume = ExfatVolume.read(img)
    at = next(at for at, entry in volume.root_entries() if entry[0] == 0x81)
    _write(img, at + 24, struct.pack("<Q", INT64_MAX))
    return map_case("exfat_bitmap_huge", [img], out, "allocation bitmap of 2**63-1 bytes")


def exfat_root_out_of_range(bases: Bases, out: Path) -> Case:
    """The boot sector's root directory cluster is 0xFFFFFFF0 (the heap has 7,680); both boot
    regions rewritten with their checksums."""
    img = copy_image(bases.tsk("exfat"), out)
    ExfatVolume.read(img).set_boot(96, struct.pack("<I", 0xFFFFFFF0))
    return map_case("exfat_root_out_of_range", [img], out, "root directory at cluster 0xFFFFFFF0")


def exfat_stream_huge(bases: Bases, out: Path) -> Case:
    """/big.bin's stream extension: data length and valid data length 2**63-1 (its clusters
    contiguous, no FAT chain), the entry set's checksum recomputed."""
    img = copy_image(bases.tsk("exfat"), out)
    volume = ExfatVolume.read(img)
    at, raw = volume.file_set("big.bin")
    struct.pack_into("<Q", raw, 32 + 8, INT64_MAX)
    struct.pack_into("<Q", raw, 32 + 24, INT64_MAX)
    volume.write_set(at, raw)
    case = map_case("exfat_stream_huge", [img], out, "a 300 KiB file of 2**63-1 bytes")
    case.expect_findings = ("belong to no file The Sleuth Kit lists",)
    return case


def exfat_chain_loop(bases: Bases, out: Path) -> Case:
    """/frag.bin (fragmented: its clusters follow the FAT) with its last FAT entry pointing
    back at its first cluster, and its length 2**40 so the chain is followed past the end."""
    img = copy_image(bases.tsk("exfat"), out)
    volume = ExfatVolume.read(img)
    at, raw = volume.file_set("frag.bin")
    if raw[32 + 1] & 0x02:
        raise AssertionError(f"{img}: /frag.bin is contiguous, not a FAT chain")
    first = struct.unpack_from("<I", raw, 32 + 20)[0]
    chain = [first]
    while volume.fat_next(chain[-1]) < 0xFFFFFFF7 and len(chain) < 1 << 16:
        chain.append(volume.fat_next(chain[-1]))
    _write(img, volume.fat_start + 4 * chain[-1], struct.pack("<I", first))
    struct.pack_into("<Q", raw, 32 + 8, 1 << 40)
    struct.pack_into("<Q", raw, 32 + 24, 1 << 40)
    volume.write_set(at, raw)
    return map_case(
        "exfat_chain_loop", [img], out, f"a FAT chain of {len(chain)} clusters looping, 1 TiB long"
    )


# --------------------------------------------------------------------------------------------
# NTFS (base ``ntfs`` of tests/tsk_images.py: mkntfs, 24 MiB, 4 KiB clusters, 1 KiB MFT
# records, files written by ntfs-3g). An MFT record's update sequence array is undone before an
# edit and redone after it: the last two bytes of each 512-byte sector hold the update sequence
# number, their real values the array (checked on the way in, as TSK checks them).

NTFS_END = 0xFFFFFFFF


@dataclass
class NtfsVolume:
    path: Path
    cluster: int
    record_size: int
    mft_runs: list[tuple[int, int, int]]
    """``$MFT``'s data runs: ``(first record byte, image offset, length)``."""

    @classmethod
    def read(cls, path: Path) -> NtfsVolume:
        boot = _read(path, 0, SECTOR)
        if boot[3:11] != b"NTFS    ":
            raise AssertionError(f"{path}: no NTFS boot sector")
        bps, spc = struct.unpack_from("<HB", boot, 11)
        (mft_lcn,) = struct.unpack_from("<Q", boot, 48)
        (per,) = struct.unpack_from("<b", boot, 64)
        cluster = bps * spc
        size = 1 << -per if per < 0 else per * cluster
        volume = cls(path, cluster, size, [(0, mft_lcn * cluster, size)])
        record = volume.record(0)
        _, runs_at, attr_end = volume.nonresident(record, 0x80)
        volume.mft_runs = [
            (vcn * cluster, lcn * cluster, count * cluster)
            for vcn, lcn, count in decode_runs(bytes(record[runs_at:attr_end]))
        ]
        return volume

    def record_offset(self, n: int) -> int:
        at = n * self.record_size
        for logical, physical, length in self.mft_runs:
            if logical <= at and at + self.record_size <= logical + length:
                return physical + at - logical
        raise AssertionError(f"{self.path}: MFT record {n} is not in one run")

    def record(self, n: int) -> bytearray:
        """MFT record ``n`` with its fixups undone."""
        raw = bytearray(_read(self.path, self.record_offset(n), self.record_size))
        if raw[:4] != b"FILE":
            raise AssertionError(f"{self.path}: MFT record {n} is no FILE record")
        usa_at, usa_count = struct.unpack_from("<HH", raw, 4)
        usn = raw[usa_at : usa_at + 2]
        for i in range(1, usa_count):
            end = i * SECTOR
            if raw[end - 2 : end] != usn:
                raise AssertionError(f"{self.path}: MFT record {n}: sector {i} fails its fixup")
            raw[end - 2 : end] = raw[usa_at + 2 * i : usa_at + 2 * i + 2]
        return raw

    def write_record(self, n: int, record: bytearray) -> None:
        """Record ``n`` written back, its fixups redone (the update sequence number kept)."""
        raw = bytearray(record)
        usa_at, usa_count = struct.unpack_from("<HH", raw, 4)
        usn = raw[usa_at : usa_at + 2]
        for i in range(1, usa_count):
            end = i * SECTOR
            raw[usa_at + 2 * i : usa_at + 2 * i + 2] = raw[end - 2 : end]
            raw[end - 2 : end] = usn
        _write(self.path, self.record_offset(n), bytes(raw))

    @staticmethod
    def attributes(record: bytes | bytearray) -> list[tuple[int, int, int]]:
        """``(offset, type, length)`` of each attribute of a record."""
        at = struct.unpack_from("<H", record, 20)[0]
        out = []
        while at + 8 <= len(record):
            kind, length = struct.unpack_from("<II", record, at)
            if kind == NTFS_END or length == 0:
                break
            out.append((at, kind, length))
            at += length
        return out

    def nonresident(self, record: bytes | bytearray, kind: int) -> tuple[int, int, int]:
        """``(attribute offset, run list offset, attribute end)`` of the first unnamed
        non-resident attribute of ``kind``."""
        for at, k, length in self.attributes(record):
            if k == kind and record[at + 8] == 1 and record[at + 9] == 0:
                return at, at + struct.unpack_from("<H", record, at + 32)[0], at + length
        raise AssertionError(f"{self.path}: no non-resident attribute 0x{kind:x}")

    def find(self, name: str, parent: int = 5) -> int:
        """The MFT record number of the file ``name`` in the directory record ``parent``
        (its $FILE_NAME attributes, the records the first MFT run holds)."""
        count = self.mft_runs[0][2] // self.record_size
        want = name.encode("utf-16-le")
        for n in range(16, count):
            raw = _read(self.path, self.record_offset(n), self.record_size)
            if raw[:4] != b"FILE" or not raw[22] & 1:
                continue
            record = self.record(n)
            for at, kind, _ in self.attributes(record):
                if kind != 0x30:
                    continue
                value = at + struct.unpack_from("<H", record, at + 20)[0]
                ref = struct.unpack_from("<Q", record, value)[0] & 0xFFFFFFFFFFFF
                length = record[value + 64]
                if ref == parent and record[value + 66 : value + 66 + 2 * length] == want:
                    return n
        raise AssertionError(f"{self.path}: no {name} in directory record {parent}")

    def set_runs(self, record: bytearray, kind: int, pairs: bytes) -> bytearray:
        """The record with the run list of its non-resident attribute ``kind`` replaced by
        ``pairs`` (padded to 8 bytes; what follows moved, the lengths fixed)."""
        at, runs_at, attr_end = self.nonresident(record, kind)
        pairs = pairs + bytes(-len(pairs) % 8)
        (used,) = struct.unpack_from("<I", record, 24)
        body = bytes(record[:runs_at]) + pairs + bytes(record[attr_end:used])
        if len(body) > self.record_size - 8:
            raise AssertionError(f"{len(pairs)} bytes of runs do not fit the record")
        new = bytearray(body.ljust(self.record_size, b"\0"))
        struct.pack_into("<I", new, at + 4, runs_at - at + len(pairs))
        struct.pack_into("<I", new, 24, len(body))
        return new


def decode_runs(pairs: bytes) -> list[tuple[int, int, int]]:
    """``(vcn, lcn, clusters)`` of a run list's allocated runs."""
    out, at, vcn, lcn = [], 0, 0, 0
    while at < len(pairs) and pairs[at]:
        size_len, size_off = pairs[at] & 0xF, pairs[at] >> 4
        count = int.from_bytes(pairs[at + 1 : at + 1 + size_len], "little")
        delta = pairs[at + 1 + size_len : at + 1 + size_len + size_off]
        if size_off:
            lcn += int.from_bytes(delta, "little", signed=True)
            out.append((vcn, lcn, count))
        vcn += count
        at += 1 + size_len + size_off
    return out


def encode_run(count: int, delta: int | None, count_bytes: int = 0, delta_bytes: int = 0) -> bytes:
    """One run list entry: ``count`` clusters at ``delta`` from the previous run (None:
    sparse), each field as wide as asked or as it needs."""
    size_len = count_bytes or max(1, (count.bit_length() + 8) // 8)
    head = count.to_bytes(size_len, "little")
    if delta is None:
        return bytes([size_len]) + head
    size_off = delta_bytes or max(1, (delta.bit_length() + 8) // 8)
    return (
        bytes([size_off << 4 | size_len]) + head + delta.to_bytes(size_off, "little", signed=True)
    )


RecordEdit = Callable[[NtfsVolume, bytearray], bytearray]


def _ntfs_record_case(
    name: str, bases: Bases, out: Path, path: str, edit: RecordEdit, note: str
) -> Case:
    """Copy the ntfs base, rewrite the record of ``path`` (names below the root) with
    ``edit``, map it."""
    img = copy_image(bases.tsk("ntfs"), out)
    volume = NtfsVolume.read(img)
    n = 5
    for part in path.strip("/").split("/"):
        n = volume.find(part, n)
    volume.write_record(n, edit(volume, volume.record(n)))
    return map_case(name, [img], out, note)


def ntfs_run_past_end(bases: Bases, out: Path) -> Case:
    """/docs/big.bin's data (50 clusters) as one run at cluster 2**40 of a 6,144-cluster
    volume."""

    def edit(volume: NtfsVolume, record: bytearray) -> bytearray:
        return volume.set_runs(record, 0x80, encode_run(50, 1 << 40) + b"\0")

    return _ntfs_record_case(
        "ntfs_run_past_end", bases, out, "/docs/big.bin", edit, "a run at 4 PiB on 24 MiB"
    )


def ntfs_tiny_runs(bases: Bases, out: Path) -> Case:
    """/A long name with spaces.dat (2 clusters of data): a run list of as many one-cluster
    runs as its record holds, 3 bytes each, hopping between two clusters; the attribute's sizes
    left as they were."""
    runs: list[int] = []

    def edit(volume: NtfsVolume, record: bytearray) -> bytearray:
        _, runs_at, attr_end = volume.nonresident(record, 0x80)
        (used,) = struct.unpack_from("<I", record, 24)
        room = volume.record_size - 8 - (used - (attr_end - runs_at)) - 16
        first = decode_runs(bytes(record[runs_at:attr_end]))[0][1]
        pairs = encode_run(1, first, 1, 4)
        while len(pairs) + 3 <= room:
            pairs += encode_run(1, 1 if len(pairs) % 2 else -1, 1, 1)
        runs.append(len(decode_runs(pairs)))
        return volume.set_runs(record, 0x80, pairs + b"\0")

    img = copy_image(bases.tsk("ntfs"), out)
    volume = NtfsVolume.read(img)
    n = volume.find("A long name with spaces.dat")
    volume.write_record(n, edit(volume, volume.record(n)))
    return map_case("ntfs_tiny_runs", [img], out, f"{runs[0]} one-cluster runs over 2 clusters")


def ntfs_thousands_of_runs(bases: Bases, out: Path) -> Case:
    """/A long name with spaces.dat's $DATA continued in ten extension records (free records
    of the MFT, marked in use in the record and $MFT's bitmap), named by a resident
    $ATTRIBUTE_LIST: each fragment a run list of some 290 one-cluster runs hopping between two
    clusters, near 3,000 runs in all; the sizes in the first fragment say as many clusters."""
    img = copy_image(bases.tsk("ntfs"), out)
    volume = NtfsVolume.read(img)
    base_n = volume.find("A long name with spaces.dat")
    base = volume.record(base_n)
    base_ref = base_n | struct.unpack_from("<H", base, 16)[0] << 48
    count = volume.mft_runs[0][2] // volume.record_size
    free = [
        n
        for n in range(24, count)
        if not _read(img, volume.record_offset(n), volume.record_size)[22] & 1
    ][:10]
    if len(free) < 10:
        raise AssertionError(f"{img}: fewer than 10 free MFT records")
    # $MFT's $BITMAP: the bit of each extension record set.
    mft = volume.record(0)
    _, runs_at, attr_end = volume.nonresident(mft, 0xB0)
    bitmap = volume.cluster * decode_runs(bytes(mft[runs_at:attr_end]))[0][1]
    data_at, data_runs_at, data_end = volume.nonresident(base, 0x80)
    first_lcn = decode_runs(bytes(base[data_runs_at:data_end]))[0][1]
    base_clusters = struct.unpack_from("<Q", base, data_at + 24)[0] + 1
    vcn, total = base_clusters, 0
    entries: list[tuple[int, int, int, int]] = []
    for n in free:
        record = volume.record(n)
        first_attr = struct.unpack_from("<H", record, 20)[0]
        room = volume.record_size - first_attr - 64 - 8 - 8
        pairs = encode_run(1, first_lcn, 1, 4)
        while len(pairs) + 3 <= room:
            pairs += encode_run(1, 1 if len(pairs) % 2 else -1, 1, 1)
        runs = len(decode_runs(pairs))
        pairs += bytes(8 - len(pairs) % 8)
        header = struct.pack(
            "<IIBBHHHQQHH4xQQQ", 0x80, 64 + len(pairs), 1, 0, 64, 0, 0, vcn, vcn + runs - 1,
            64, 0, 0, 0, 0,
        )  # fmt: skip
        body = bytes(record[:first_attr]) + header + pairs + struct.pack("<I", NTFS_END)
        new = bytearray(body.ljust(volume.record_size, b"\0"))
        struct.pack_into("<H", new, 22, 1)  # in use
        struct.pack_into("<I", new, 24, len(body) + 4)
        struct.pack_into("<Q", new, 32, base_ref)
        struct.pack_into("<H", new, 40, 1)
        struct.pack_into("<I", new, 44, n)
        volume.write_record(n, new)
        byte = _read(img, bitmap + n // 8, 1)[0]
        _write(img, bitmap + n // 8, bytes([byte | 1 << (n % 8)]))
        ref = n | struct.unpack_from("<H", new, 16)[0] << 48
        entries.append((0x80, vcn, ref, 0))
        vcn += runs
        total += runs
    # The base's own attributes first in the list, then the fragments, by VCN.
    own = [
        (kind, 0, base_ref, struct.unpack_from("<H", base, at + 14)[0])
        for at, kind, _ in volume.attributes(base)
    ]
    listed = sorted(own + entries, key=lambda e: (e[0], e[1]))
    value = b"".join(
        struct.pack("<IHBBQQH", kind, 32, 0, 26, start, ref, ident) + bytes(6)
        for kind, start, ref, ident in listed
    )
    attr = struct.pack(
        "<IIBBHHHIHBB", 0x20, 24 + len(value), 0, 0, 0, 0, 0x20, len(value), 24, 0, 0
    )
    at = next(a for a, kind, _ in volume.attributes(base) if kind > 0x20)
    (used,) = struct.unpack_from("<I", base, 24)
    body = bytes(base[:at]) + attr + value + bytes(base[at:used])
    if len(body) > volume.record_size - 8:
        raise AssertionError("the attribute list does not fit the record")
    new = bytearray(body.ljust(volume.record_size, b"\0"))
    struct.pack_into("<I", new, 24, len(body))
    struct.pack_into("<H", new, 40, 0x21)
    # The first fragment's sizes: every cluster of every fragment.
    data_at += len(attr) + len(value)
    size = vcn * volume.cluster
    struct.pack_into("<Q", new, data_at + 40, size)
    struct.pack_into("<Q", new, data_at + 48, size)
    struct.pack_into("<Q", new, data_at + 56, size)
    volume.write_record(base_n, new)
    return map_case(
        "ntfs_thousands_of_runs", [img], out, f"{total} runs in 10 extension records, 2 clusters"
    )


def ntfs_mft_run_huge(bases: Bases, out: Path) -> Case:
    """$MFT's own $DATA: its first run claims 2**40 clusters (4 PiB of records on 24 MiB)."""
    img = copy_image(bases.tsk("ntfs"), out)
    volume = NtfsVolume.read(img)
    record = volume.record(0)
    _, runs_at, attr_end = volume.nonresident(record, 0x80)
    runs = decode_runs(bytes(record[runs_at:attr_end]))
    pairs = encode_run(1 << 40, runs[0][1], 6, 4) + b"\0"
    volume.write_record(0, volume.set_runs(record, 0x80, pairs))
    return map_case("ntfs_mft_run_huge", [img], out, "$MFT's run of 2**40 clusters")


def ntfs_mft_whole_volume(bases: Bases, out: Path) -> Case:
    """$MFT's own $DATA: one run from its start to the volume's end (24,560 records, of which
    some 250 are records; the rest is files' data, $LogFile, ...), its three sizes saying so."""
    img = copy_image(bases.tsk("ntfs"), out)
    volume = NtfsVolume.read(img)
    record = volume.record(0)
    at, runs_at, attr_end = volume.nonresident(record, 0x80)
    lcn = decode_runs(bytes(record[runs_at:attr_end]))[0][1]
    clusters = struct.unpack_from("<Q", _read(img, 40, 8))[0] * SECTOR // volume.cluster - lcn
    record = volume.set_runs(record, 0x80, encode_run(clusters, lcn) + b"\0")
    struct.pack_into("<Q", record, at + 24, clusters - 1)
    size = clusters * volume.cluster
    struct.pack_into("<QQQ", record, at + 40, size, size, size)
    volume.write_record(0, record)
    records = size // volume.record_size
    return map_case("ntfs_mft_whole_volume", [img], out, f"$MFT of {records:,} records")


def ntfs_attribute_list_self(bases: Bases, out: Path) -> Case:
    """/docs/big.bin gets a resident $ATTRIBUTE_LIST whose entries all name its own record:
    the list itself, its $DATA at VCN 0 and again at VCN 1 (as if continued elsewhere)."""

    def edit(volume: NtfsVolume, record: bytearray) -> bytearray:
        n = struct.unpack_from("<I", record, 44)[0]
        ref = n | struct.unpack_from("<H", record, 16)[0] << 48
        entries = b"".join(
            struct.pack("<IHBBQQH", kind, 32, 0, 26, vcn, ref, ident) + bytes(6)
            for kind, vcn, ident in ((0x10, 0, 0), (0x20, 0, 9), (0x30, 0, 2), (0x80, 0, 3),
                                     (0x80, 1, 3))
        )  # fmt: skip
        # A resident attribute: 24-byte header, the value at 24.
        attr = struct.pack("<IIBBHHHIHBB", 0x20, 24 + len(entries), 0, 0, 0, 0, 9,
                           len(entries), 24, 0, 0) + entries  # fmt: skip
        attrs = volume.attributes(record)
        at = next(a for a, kind, _ in attrs if kind > 0x20)
        (used,) = struct.unpack_from("<I", record, 24)
        body = bytes(record[:at]) + attr + bytes(record[at:used])
        if len(body) > volume.record_size - 8:
            raise AssertionError("the attribute list does not fit the record")
        new = bytearray(body.ljust(volume.record_size, b"\0"))
        struct.pack_into("<I", new, 24, len(body))
        struct.pack_into("<H", new, 40, max(struct.unpack_from("<H", record, 40)[0], 10))
        return new

    return _ntfs_record_case(
        "ntfs_attribute_list_self", bases, out, "/docs/big.bin", edit,
        "an attribute list naming its own record",
    )  # fmt: skip


def ntfs_record_offsets_past(bases: Bases, out: Path) -> Case:
    """/docs's record (a directory with files under it): first attribute at 0xFFF8, used size
    0xFFFFFFFF, in a 1 KiB record."""

    def edit(volume: NtfsVolume, record: bytearray) -> bytearray:
        struct.pack_into("<H", record, 20, 0xFFF8)
        struct.pack_into("<I", record, 24, 0xFFFFFFFF)
        return record

    return _ntfs_record_case(
        "ntfs_record_offsets_past", bases, out, "/docs", edit,
        "attributes at 0xFFF8, used size 4 GiB, in a 1 KiB record",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# ISO9660 (base ``iso`` of tests/tsk_images.py: genisoimage -R -J, 1.4 MB; a primary and a
# Joliet descriptor, each with its own tree and path tables). Both-endian fields are written in
# both byte orders; an edit goes to both trees and both kinds of path table, since TSK may
# follow either.

ISO_BLOCK = 2048


@dataclass
class IsoTree:
    descriptor: int
    """Image offset of the volume descriptor."""
    joliet: bool
    root_extent: int
    root_length: int
    l_table: int
    m_table: int
    table_size: int


def _iso_both(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def iso_trees(img: Path) -> list[IsoTree]:
    """The primary and supplementary descriptors' trees."""
    out = []
    for n in range(16, 32):
        vd = _read(img, n * ISO_BLOCK, ISO_BLOCK)
        if vd[1:6] != b"CD001" or vd[0] == 255:
            break
        if vd[0] in (1, 2):
            extent, length = (
                struct.unpack_from("<I", vd, 158)[0],
                struct.unpack_from("<I", vd, 166)[0],
            )
            out.append(
                IsoTree(
                    n * ISO_BLOCK, vd[0] == 2, extent, length,
                    struct.unpack_from("<I", vd, 140)[0] * ISO_BLOCK,
                    struct.unpack_from(">I", vd, 148)[0] * ISO_BLOCK,
                    struct.unpack_from("<I", vd, 132)[0],
                )
            )  # fmt: skip
    if len(out) != 2:
        raise AssertionError(f"{img}: not a primary and a Joliet descriptor")
    return out


def iso_records(
    img: Path, extent: int, length: int, joliet: bool = False
) -> list[tuple[int, bytes, str]]:
    """``(image offset, record, name)`` of each record of a directory (``.`` is ``"\\0"``;
    names lower case, without a version)."""
    data = _read(img, extent * ISO_BLOCK, length)
    out, at = [], 0
    while at < len(data):
        size = data[at]
        if size == 0:
            at = (at // ISO_BLOCK + 1) * ISO_BLOCK  # records do not cross a block
            continue
        record = data[at : at + size]
        raw = record[33 : 33 + record[32]]
        name = raw.decode("utf-16-be") if joliet and len(raw) > 1 else raw.decode("latin-1")
        out.append((extent * ISO_BLOCK + at, record, name.split(";")[0].lower()))
        at += size
    return out


def iso_find(img: Path, tree: IsoTree, path: str) -> tuple[int, int, int]:
    """``(image offset of its record, extent, length)`` of the directory at ``path``."""
    extent, length, found = tree.root_extent, tree.root_length, None
    for part in path.strip("/").split("/"):
        for at, record, name in iso_records(img, extent, length, tree.joliet):
            if name == part:
                extent = struct.unpack_from("<I", record, 2)[0]
                length = struct.unpack_from("<I", record, 10)[0]
                found = (at, extent, length)
                break
        else:
            raise AssertionError(f"{img}: no {part} in {path}")
    assert found is not None
    return found


def iso_set_table_extent(img: Path, tree: IsoTree, old: int, new: int) -> None:
    """Every path table entry (L and M) that names extent ``old`` names ``new``."""
    for table, order in ((tree.l_table, "<"), (tree.m_table, ">")):
        data = _read(img, table, tree.table_size)
        at = 0
        while at + 8 <= len(data) and data[at]:
            if struct.unpack_from(order + "I", data, at + 2)[0] == old:
                _write(img, table + at + 2, struct.pack(order + "I", new))
            at += 8 + data[at] + (data[at] & 1)


def iso_path_table_2g(bases: Bases, out: Path) -> Case:
    """Both descriptors' path tables claim 2**31 bytes (they hold 48 and 62)."""
    img = copy_image(bases.tsk("iso"), out)
    for tree in iso_trees(img):
        _write(img, tree.descriptor + 132, _iso_both(1 << 31))
    return map_case("iso_path_table_2g", [img], out, "path tables of 2**31 bytes")


def iso_path_table_100k(bases: Bases, out: Path) -> Case:
    """A path table of 100,001 entries (2.4 MiB, appended to the image, both descriptors and
    the volume space size pointing at it): the root, then 100,000 directories named
    ``D00000``... each at the root directory's extent, under the root."""
    img = copy_image(bases.tsk("iso"), out)
    trees = iso_trees(img)
    root = trees[0].root_extent
    tables = {}
    for order in ("<", ">"):
        entry = struct.Struct(order + "BBIH")
        parts = [entry.pack(1, 0, root, 1) + b"\0\0"]
        parts += [entry.pack(6, 0, root, 1) + b"D%05d" % i for i in range(100_000)]
        tables[order] = b"".join(parts)
    size = len(tables["<"])
    blocks = -(-size // ISO_BLOCK)
    l_lba = img.stat().st_size // ISO_BLOCK
    m_lba = l_lba + blocks
    with open(img, "r+b") as fh:
        fh.seek(l_lba * ISO_BLOCK)
        fh.write(tables["<"].ljust(blocks * ISO_BLOCK, b"\0"))
        fh.write(tables[">"].ljust(blocks * ISO_BLOCK, b"\0"))
    for tree in trees:
        _write(img, tree.descriptor + 80, _iso_both(m_lba + blocks))
        _write(img, tree.descriptor + 132, _iso_both(size))
        tables_at = struct.pack("<I", l_lba) + bytes(4) + struct.pack(">I", m_lba) + bytes(4)
        _write(img, tree.descriptor + 140, tables_at)
    return map_case("iso_path_table_100k", [img], out, "100,000 path table entries, one extent")


def iso_record(extent: int, length: int, name: bytes, flags: int = 0) -> bytes:
    """One directory record (ECMA-119 9.1), padded to an even length."""
    body = (
        _iso_both(extent) + _iso_both(length) + bytes(7) + bytes([flags, 0, 0])
        + struct.pack("<HH", 1, 1 << 8) + bytes([len(name)]) + name
    )  # fmt: skip
    body += bytes((len(body) + 2) % 2)
    return bytes([len(body) + 2, 0]) + body


def iso_root_150k_files(bases: Bases, out: Path) -> Case:
    """A new root directory of 150,000 file records (6.4 MiB, appended to the image; both
    descriptors' root records, its ``.`` and both trees' path tables point at it), every
    file 100 bytes at the old root's extent."""
    img = copy_image(bases.tsk("iso"), out)
    trees = iso_trees(img)
    lba = img.stat().st_size // ISO_BLOCK
    blocks: list[bytes] = []
    block = b""
    records = [iso_record(lba, 0, b"\0", 2), iso_record(lba, 0, b"\1", 2)]
    records += [iso_record(trees[0].root_extent, 100, b"F%06d.;1" % i) for i in range(150_000)]
    for record in records:
        if len(block) + len(record) > ISO_BLOCK:  # records do not cross a block
            blocks.append(block.ljust(ISO_BLOCK, b"\0"))
            block = b""
        block += record
    blocks.append(block.ljust(ISO_BLOCK, b"\0"))
    length = len(blocks) * ISO_BLOCK
    root = iso_record(lba, length, b"\0", 2)
    blocks[0] = root + iso_record(lba, length, b"\1", 2) + blocks[0][2 * len(root) :]
    _write(img, lba * ISO_BLOCK, b"".join(blocks))
    for tree in trees:
        _write(img, tree.descriptor + 80, _iso_both(lba + len(blocks)))
        _write(img, tree.descriptor + 156, root)
        _write(img, tree.l_table + 2, struct.pack("<I", lba))
        _write(img, tree.m_table + 2, struct.pack(">I", lba))
    return map_case("iso_root_150k_files", [img], out, "one directory of 150,000 files")


def iso_dir_loop(bases: Bases, out: Path) -> Case:
    """In both trees /boot's record, its own ``.`` and its path table entries name the root
    directory's extent, and /docs/deeper's names /docs (its parent): two loops."""
    img = copy_image(bases.tsk("iso"), out)
    for tree in iso_trees(img):
        for child, target in (("boot", ""), ("docs/deeper", "docs")):
            at, extent, _ = iso_find(img, tree, child)
            if target:
                _, new, new_length = iso_find(img, tree, target)
            else:
                new, new_length = tree.root_extent, tree.root_length
            _write(img, at + 2, _iso_both(new) + _iso_both(new_length))
            iso_set_table_extent(img, tree, extent, new)
    return map_case("iso_dir_loop", [img], out, "/boot is the root, /docs/deeper is /docs")


def iso_dir_4gib(bases: Bases, out: Path) -> Case:
    """In both trees /docs's length, in its record and its own ``.``, is 4 GiB - 1 bytes (it
    holds one 2 KiB block)."""
    img = copy_image(bases.tsk("iso"), out)
    for tree in iso_trees(img):
        at, extent, length = iso_find(img, tree, "docs")
        _write(img, at + 10, _iso_both(0xFFFFFFFF))
        dot, _, _ = iso_records(img, extent, length)[0]
        _write(img, dot + 10, _iso_both(0xFFFFFFFF))
    return map_case("iso_dir_4gib", [img], out, "a 2 KiB directory of 4 GiB - 1 bytes")


def iso_root_4gib(bases: Bases, out: Path) -> Case:
    """Both descriptors' root directory records (and the root's ``.``) say 4 GiB - 1 bytes
    at the last block of the image."""
    img = copy_image(bases.tsk("iso"), out)
    for tree in iso_trees(img):
        dot, _, _ = iso_records(img, tree.root_extent, tree.root_length)[0]
        _write(img, dot + 10, _iso_both(0xFFFFFFFF))
        _write(img, tree.descriptor + 156 + 10, _iso_both(0xFFFFFFFF))
    return map_case("iso_root_4gib", [img], out, "root directories of 4 GiB - 1 bytes")


def iso_empty_path_table(bases: Bases, out: Path) -> Case:
    """Both descriptors' path tables are 0 bytes long: TSK numbers no directory, so its root
    (number 0) is also its virtual orphan directory (the last number), and opening it waited
    forever on a lock TSK already held."""
    img = copy_image(bases.tsk("iso"), out)
    for tree in iso_trees(img):
        _write(img, tree.descriptor + 132, struct.pack("<I", 0) + struct.pack(">I", 0))
    case = map_case("iso_empty_path_table", [img], out, "path tables of 0 bytes")
    case.expect_findings = ("whose number is also its virtual orphan directory's",)
    return case


# --------------------------------------------------------------------------------------------
# UFS1 (base ``ufs1`` of tests/ufs_images.py: makefs, 15 MiB, 8 KiB blocks, 1 KiB fragments,
# eight cylinder groups of 2048 fragments, the superblock at 8 KiB, little-endian). No
# checksums: UFS1 has none. Each field below is one The Sleuth Kit's C code trusted.

UFS_SB = 8192


def _ufs_i32(img: Path, offset: int) -> int:
    return int(struct.unpack("<i", _read(img, offset, 4))[0])


def _ufs_case(
    name: str,
    bases: Bases,
    out: Path,
    edits: Callable[[Path], list[tuple[int, int]]],
    note: str,
    findings: tuple[str, ...],
    objects: tuple[str, ...] = ("/big.bin", "/dir1/dir2/dir3/small.txt"),
) -> Case:
    """A copy of ``ufs1`` with the int32 fields ``edits(img)`` names set, mapped."""
    img = copy_image(bases.tsk("ufs1"), out)
    for offset, value in edits(img):
        _write(img, offset, struct.pack("<I", value & 0xFFFFFFFF))
    case = map_case(name, [img], out, note)
    case.expect_findings, case.expect_objects = findings, objects
    return case


def _ufs_cg_header(img: Path, cg: int) -> int:
    fpg, cblkno = _ufs_i32(img, UFS_SB + 188), _ufs_i32(img, UFS_SB + 12)
    return (cg * fpg + cblkno) * _ufs_i32(img, UFS_SB + 52)


def ufs_cg_map_offsets(bases: Bases, out: Path) -> Case:
    """Group 0's inode map lies 64 KiB before its header (cg_iusedoff -65536: TSK read the
    heap there), group 1's fragment map 2 bytes before the end of its block (cg_freeoff 8190,
    a 256-byte map)."""
    return _ufs_case(
        "ufs_cg_map_offsets",
        bases,
        out,
        lambda img: [
            (_ufs_cg_header(img, 0) + 92, -65536),
            (_ufs_cg_header(img, 1) + 96, 8190),
        ],
        "cylinder group maps outside their block",
        ("ufs-cg 0: its inode map of 32 bytes at -65536", "ufs-cg 1: its fragment map"),
    )


def ufs_zero_inodes_per_block(bases: Bases, out: Path) -> Case:
    """fs_inopb 0 (TSK divided by it: SIGFPE) and fs_fragshift 40."""
    return _ufs_case(
        "ufs_zero_inodes_per_block",
        bases,
        out,
        lambda img: [(UFS_SB + 120, 0), (UFS_SB + 96, 40)],
        "inodes per block 0, fragment shift 40",
        ("0 inodes per block where a 8192-byte block holds 64", "a fragment shift of 40"),
    )


def ufs_2g_groups(bases: Bases, out: Path) -> Case:
    """fs_ncg 2^31 - 1 on a 15 MiB volume of eight groups."""
    return _ufs_case(
        "ufs_2g_groups",
        bases,
        out,
        lambda img: [(UFS_SB + 44, 2**31 - 1)],
        "2^31 - 1 cylinder groups",
        ("2147483647 cylinder groups where the volume holds 8",),
    )


def ufs_unused_root_3tib(bases: Bases, out: Path) -> Case:
    """The root inode is unused (mode 0) and 3.26 TiB long, with no indirect block: TSK built
    its run list a block at a time (minutes)."""

    def edits(img: Path) -> list[tuple[int, int]]:
        root = _ufs_i32(img, UFS_SB + 16) * 1024 + 2 * 128
        size = 3_581_683_957_760
        return [(root, 0), (root + 8, size & 0xFFFFFFFF), (root + 12, size >> 32)]

    return _ufs_case(
        "ufs_unused_root_3tib",
        bases,
        out,
        edits,
        "an unused root of 3.26 TiB",
        ("inode 2: its size 3581683957760 spans more than 8 times the volume",),
        objects=(),
    )


def ufs_decoy_ufs2_superblock(bases: Bases, out: Path) -> Case:
    """A UFS2 magic at 64 KiB + 1372 (inside the root directory's block): TSK takes the first
    UFS2 magic it finds there for a superblock before the UFS1 one at 8 KiB; bmap reads the
    UFS1 one."""
    return _ufs_case(
        "ufs_decoy_ufs2_superblock",
        bases,
        out,
        lambda img: [(65536 + 1372, 0x19540119)],
        "a decoy UFS2 magic at 64 KiB",
        ("a UFS2 superblock at 0x10000 that bmap does not read is hidden",),
    )


# --------------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Bases, Path], Case]] = {
    f.__name__: f
    for f in (
        lvm_huge_counts,
        lvm_int64_edge,
        lvm_overlapping_segments,
        lvm_nested_lists,
        lvm_long_number,
        lvm_lv_dwarfs_pv,
        lvm_stripes_1_sector,
        lvm_8mb_string,
        lvm_damaged_ring,
        lvm_damaged_ring_names,
        lvm_20000_lvs,
        lvm_negative_pe_start,
        lvm_negative_extents,
        gpt_65536_entries_one_range,
        gpt_65536_entries_ext4,
        report_gpt_65536,
        gpt_absurd_usable,
        gpt_absurd_array_beyond_disk,
        gpt_absurd_2g_entries,
        gpt_absurd_entry_size,
        ext_2m_groups,
        ext_2m_groups_csum,
        map_end_beyond_int64,
        map_negative_start,
        map_1m_nested,
        trace_huge_numbers_csv,
        trace_huge_numbers_nbdkit,
        fat32_chain_loop,
        fat32_file_4gib,
        fat32_dir_loop,
        fat32_all_entries_2,
        fat16_bpb_fat_size,
        fat16_bpb_cluster_128,
        fat16_bpb_root_entries,
        exfat_bitmap_huge,
        exfat_root_out_of_range,
        exfat_stream_huge,
        exfat_chain_loop,
        ntfs_run_past_end,
        ntfs_tiny_runs,
        ntfs_thousands_of_runs,
        ntfs_mft_run_huge,
        ntfs_mft_whole_volume,
        ntfs_attribute_list_self,
        ntfs_record_offsets_past,
        iso_path_table_2g,
        iso_path_table_100k,
        iso_root_150k_files,
        iso_dir_loop,
        iso_dir_4gib,
        iso_root_4gib,
        iso_empty_path_table,
        ufs_cg_map_offsets,
        ufs_zero_inodes_per_block,
        ufs_2g_groups,
        ufs_unused_root_3tib,
        ufs_decoy_ufs2_superblock,
    )
}
