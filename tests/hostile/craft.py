"""Crafted hostile inputs: real images (made by the real tools) rewritten as an attacker would.

Every structure that carries a checksum keeps a valid one: the GPT header and entry-array
CRC32, the LVM2 label CRC, the metadata-area header checksum and each ``raw_locn``'s checksum
of the metadata text (lvm2's own CRC32: zlib's table, initial value 0xf597a6cf, no final
inversion), the ext4 superblock's crc32c where ``metadata_csum`` is on. What is absurd is the
contents: counts past int64, 2^40 extents on a 28 MiB PV, 65,536 GPT entries, two million
block groups on 64 MiB, ...

The checksum code here is written from the formats (lvm2's ``lib/format_text/layout.h``, the
UEFI spec, the ext4 wiki), not taken from bmap, and each one is first checked against the
checksum the real tool wrote into the base image.

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


class Bases(Protocol):
    """The real base images, made by the real tools (read only: copy before changing)."""

    def gpt512(self) -> Path: ...

    def lvm_whole(self) -> Path: ...

    def lvm_two(self) -> tuple[Path, Path]: ...

    def lvm_big_mda(self) -> Path: ...


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
    raw = bytearray(GPT_HEADER.pack(*fields))
    fields[_H_CRC] = zlib.crc32(raw[: fields[2]])
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
    )
}
