"""LVM2 test images made by the real lvm tools on loop devices (no device-mapper here).

Each builder writes one image set into a directory: the disk image(s), one standalone ext4
file per LV that holds a filesystem (``<lv>.ext4``: its bytes ARE the LV's bytes) and
``layout.json`` (what :class:`LvmImage` says about the set). :func:`lvm_image` builds a set
once into the cache and hands out its description; the cache works like ``tests.ext_images``
(``$BMAP_TEST_CACHE/<version>`` or pytest's tmp dir, a lock, built under a temp name then
renamed; the version holds :data:`IMAGES_VERSION` and the lvm2 and e2fsprogs versions).

How an image is made: the PV's byte range of the image file is attached to a loop device (a
partition is attached at its offset with ``--sizelimit``: there is no udev to make
``/dev/loopNp2``), and pvcreate / vgcreate / lvcreate ``--driverloaded n -an -Zn`` write the
label and the metadata, in an isolated LVM environment (``tests.lvm_truth.LvmSession``: own
``lvm.conf``, a filter that accepts only the session's loop devices, no backups, archives,
hints or devices file). Nothing is activated, so the LVs cannot be written through
device-mapper: each ext4 is made as a separate file by ``mke2fs -d`` and copied to the PV
image(s) range by range, using the layout that ``lvs --segments`` and ``pvs`` report (a
striped LV chunk by chunk), and then read back through the same layout and compared
(sha256). Loop devices are detached before the copy, on every path.

Not deterministic: LVM writes random VG and LV UUIDs, the build time and the host name into
the metadata. PV UUIDs (:data:`PV_UUIDS`), the partition table, the extent layout and the
filesystems are fixed; tests read the rest from the tools (``tests.lvm_truth``).

Needs root and loop devices (:class:`tests.ext_images.NeedsRoot` otherwise).

The images (``KNOWN_LAYOUT`` has the numbers a test may assert):

``lvm_gpt``
    48 MiB GPT disk. Partition 1 (4 MiB at 1 MiB, type 8300, empty), partition 2 (40 MiB at
    6 MiB, type 8E00) is a PV of VG ``vg0`` with 1 MiB extents. ``root``: 8 MiB linear, PE
    0-7. ``data``: two segments, PE 8-11 and 16-19 (``gap`` took 12-15 and was removed, so
    those extents are free between the segments).
``lvm_whole``
    32 MiB whole-disk PV (no partition table) with TWO metadata areas (``pvcreate
    --pvmetadatacopies 2``: the second is the last MiB of the disk); VG ``vgw``, 4 MiB
    extents, one linear LV ``lv1`` of 12 MiB (PE 0-2).
``lvm_two``
    Two 16 MiB whole-disk PVs in VG ``vg2`` (2 MiB extents, PE 0-6 on each): ``striped``
    8 MiB, 2 stripes of 64 KiB chunks (PE 0-1 of each PV); ``span`` 14 MiB linear, PE 2-6 of
    the first PV then PE 3-4 of the second (PE 2 and 5-6 of the second stay free).
``lvm_damaged_meta``
    24 MiB whole-disk PV, VG ``vgd`` (4 MiB extents), ``lv1`` 8 MiB (PE 0-1, an ext4) and
    ``lv2`` 4 MiB (PE 2, no filesystem). Metadata records: seqno 1 (vgcreate), 2 (lv1), 3
    (lv2). In the newest record (seqno 3) the LV name ``lv2`` of its section header is
    turned into ``LV2`` (two bytes XOR 0x20): the text still parses, its checksum no longer
    matches ``raw_locn[0].checksum``. Record 2 is untouched. ``damage`` in the description
    gives the offsets.
``lvm_wrapped_meta``
    16 MiB whole-disk PV made with ``--metadatasize 32k --dataalignment 64k``: a 60 KiB
    metadata area (4 KiB .. 64 KiB) and pe_start 64 KiB. VG ``vgr`` (1 MiB extents) with
    eight 1 MiB LVs ``lv0`` .. ``lv7`` (PE 0-7); then ``lvchange --addtag`` on ``lv0`` until
    the newest record runs past the end of the ring and goes on right after the
    mda_header (mda start + 512). ``ring`` in the description gives both parts. No
    filesystems.
``lvm_missing_pv``
    The first image of ``lvm_two`` alone (the VG's second PV is missing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import lvm_truth
from tests.ext_images import (
    HASH_SEED,
    KiB,
    MiB,
    NeedsRoot,
    _data,
    _fix_times,
    _locked,
    _write,
    e2fsck_clean,
    e2fsprogs_version,
    fix_ctimes,
    run,
)
from tests.lvm_truth import LvmSession, PhysicalRange, PvPlace

IMAGES_VERSION = "lvm-images-1"

# 6-4-4-4-4-4-6 characters of LVM's id alphabet: recognisable in a hex dump and in pvs.
PV_UUIDS = {
    "lvm_gpt": ("bmapPV-gpt0-0000-0000-0000-0000-000001",),
    "lvm_whole": ("bmapPV-whol-0000-0000-0000-0000-000001",),
    "lvm_two": (
        "bmapPV-two0-0000-0000-0000-0000-000001",
        "bmapPV-two0-0000-0000-0000-0000-000002",
    ),
    "lvm_damaged_meta": ("bmapPV-dmg0-0000-0000-0000-0000-000001",),
    "lvm_wrapped_meta": ("bmapPV-wrap-0000-0000-0000-0000-000001",),
}

GPT_DISK_GUID = "B3A9C1D0-0000-4000-8000-0000000001D1"
GPT_PART_GUIDS = ("B3A9C1D0-0000-4000-8000-0000000001E1", "B3A9C1D0-0000-4000-8000-0000000001E2")
GPT_DISK_SIZE = 48 * MiB
GPT_P1_OFFSET, GPT_P1_SIZE = 1 * MiB, 4 * MiB
GPT_PV_OFFSET, GPT_PV_SIZE = 6 * MiB, 40 * MiB  # partition 2

# The numbers the builders aim for and check (bytes; PE ranges inclusive as lvm prints them).
KNOWN_LAYOUT: dict[str, dict[str, Any]] = {
    "lvm_gpt": {
        "vg": "vg0",
        "extent_size": 1 * MiB,
        "pe_start": 1 * MiB,
        "pvs": [(GPT_PV_OFFSET, GPT_PV_SIZE, 2)],  # (offset in image, size, partition)
        "lvs": {"root": [(0, 0, 7)], "data": [(0, 8, 11), (0, 16, 19)]},  # (pv, first, last)
    },
    "lvm_whole": {
        "vg": "vgw",
        "extent_size": 4 * MiB,
        "pe_start": 1 * MiB,
        "pvs": [(0, 32 * MiB, None)],
        "lvs": {"lv1": [(0, 0, 2)]},
    },
    "lvm_two": {
        "vg": "vg2",
        "extent_size": 2 * MiB,
        "pe_start": 1 * MiB,
        "pvs": [(0, 16 * MiB, None), (0, 16 * MiB, None)],
        "lvs": {"striped": [(0, 0, 1), (1, 0, 1)], "span": [(0, 2, 6), (1, 3, 4)]},
        "stripes": {"striped": (2, 64 * KiB)},
    },
    "lvm_damaged_meta": {
        "vg": "vgd",
        "extent_size": 4 * MiB,
        "pe_start": 1 * MiB,
        "pvs": [(0, 24 * MiB, None)],
        "lvs": {"lv1": [(0, 0, 1)], "lv2": [(0, 2, 2)]},
    },
    "lvm_wrapped_meta": {
        "vg": "vgr",
        "extent_size": 1 * MiB,
        "pe_start": 64 * KiB,
        "pvs": [(0, 16 * MiB, None)],
        "lvs": {f"lv{i}": [(0, i, i)] for i in range(8)},
        "metadata_area": (4 * KiB, 60 * KiB),  # (offset, size) in the PV
    },
}

# ext4 UUIDs of the filesystems inside the LVs.
FS_UUIDS = {
    ("lvm_gpt", "root"): "1a7e0000-0000-4000-8000-000000000001",
    ("lvm_gpt", "data"): "1a7e0000-0000-4000-8000-000000000002",
    ("lvm_whole", "lv1"): "1a7e0000-0000-4000-8000-000000000003",
    ("lvm_two", "striped"): "1a7e0000-0000-4000-8000-000000000004",
    ("lvm_two", "span"): "1a7e0000-0000-4000-8000-000000000005",
    ("lvm_damaged_meta", "lv1"): "1a7e0000-0000-4000-8000-000000000006",
}

BIG_FILE = b"/big.bin"  # in every LV filesystem; crosses the LV's segment/stripe/PV boundaries
SMALL_FILES = (b"/README.txt", b"/dir/small.txt", b"/dir/sub/deep.txt")


@dataclass(frozen=True)
class BigFile:
    """A file of ``size`` bytes, ``tests.ext_images._data(seed, size)``, at ``path``."""

    path: bytes
    seed: str
    size: int

    def content(self) -> bytes:
        return _data(self.seed, self.size)


@dataclass(frozen=True)
class LvmImage:
    """One LVM test case: what to hand to bmap and what was built into it.

    ``images``: the disk images in order (disk 1, 2, ...). ``pvs``: where each PV of the VG
    sits, parallel to ``pv_uuids``; a missing PV has no place and is listed in
    ``missing_pv_uuids`` only. ``filesystems``: LV name -> standalone ext4 file whose bytes
    are the LV's; ``big_files``: LV name -> the big file in that ext4. ``lv_sizes`` in
    bytes. ``damage``: for lvm_damaged_meta, the offsets (disk bytes) of what was changed.
    ``ring``: for lvm_wrapped_meta, where the wrapped newest record lies (disk bytes).
    """

    name: str
    vg: str
    images: tuple[Path, ...]
    pvs: tuple[PvPlace, ...]
    pv_uuids: tuple[str, ...]
    lv_sizes: dict[str, int]
    filesystems: dict[str, Path] = field(default_factory=dict)
    big_files: dict[str, BigFile] = field(default_factory=dict)
    missing_pv_uuids: tuple[str, ...] = ()
    damage: dict[str, Any] = field(default_factory=dict)
    ring: dict[str, Any] = field(default_factory=dict)

    def to_json(self, folder: Path) -> dict[str, Any]:
        """Paths relative to ``folder`` (the cache entry), bytes as text."""
        data = asdict(self)
        data["images"] = [str(p.relative_to(folder)) for p in self.images]
        data["pvs"] = [{**p._asdict(), "image": str(p.image.relative_to(folder))} for p in self.pvs]
        data["filesystems"] = {k: str(v.relative_to(folder)) for k, v in self.filesystems.items()}
        data["big_files"] = {
            k: {"path": v.path.decode(), "seed": v.seed, "size": v.size}
            for k, v in self.big_files.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> LvmImage:
        return cls(
            name=data["name"],
            vg=data["vg"],
            images=tuple(folder / p for p in data["images"]),
            pvs=tuple(PvPlace(**{**p, "image": folder / p["image"]}) for p in data["pvs"]),
            pv_uuids=tuple(data["pv_uuids"]),
            lv_sizes=data["lv_sizes"],
            filesystems={k: folder / v for k, v in data["filesystems"].items()},
            big_files={
                k: BigFile(v["path"].encode(), v["seed"], v["size"])
                for k, v in data["big_files"].items()
            },
            missing_pv_uuids=tuple(data["missing_pv_uuids"]),
            damage=data["damage"],
            ring=data["ring"],
        )


# --------------------------------------------------------------------------------------------
# filesystems for the LVs


def _lv_tree(root: Path, seed: str, big: BigFile) -> None:
    root.mkdir(parents=True)
    _write(root / "README.txt", f"bmap lvm test image: {seed}\n".encode())
    (root / "dir" / "sub").mkdir(parents=True)
    _write(root / "dir" / "small.txt", b"small\n" * 10)
    _write(root / "dir" / "sub" / "deep.txt", _data(seed + "deep", 3000))
    _write(root / big.path.decode().lstrip("/"), big.content())


def make_lv_fs(
    fs_path: Path, size: int, workdir: Path, *, uuid: str, label: str, big: BigFile, block: int
) -> Path:
    """``mke2fs -t ext4 -d`` of a small tree with ``big`` into a standalone file of ``size``."""
    src = workdir / f"tree-{label}"
    _lv_tree(src, label, big)
    _fix_times(src)
    with open(fs_path, "wb") as fh:
        fh.truncate(size)
    run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        str(block),
        "-I",
        "256",
        "-N",
        "256",
        "-U",
        uuid,
        "-E",
        f"hash_seed={HASH_SEED}",
        "-L",
        label[:16],
        "-d",
        src,
        fs_path,
    )
    fix_ctimes(fs_path)
    e2fsck_clean(fs_path)
    return fs_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_to_lv(fs_path: Path, ranges: list[PhysicalRange]) -> None:
    """Write the bytes of ``fs_path`` (an LV's contents) to their physical places.

    All-zero 64 KiB blocks are skipped (the freshly made images are zero there, so they stay
    sparse); the read-back check in :func:`verify_lv` would see any difference.
    """
    size = fs_path.stat().st_size
    step = 64 * KiB
    zero = bytes(step)
    handles: dict[Path, Any] = {}
    try:
        with open(fs_path, "rb") as src:
            for r in lvm_truth.lv_to_disk(ranges, 0, size):
                out = handles.get(r.image) or handles.setdefault(r.image, open(r.image, "r+b"))  # noqa: SIM115
                for pos in range(r.start, r.end, step):
                    length = min(step, r.end - pos)
                    src.seek(r.lv_offset + pos - r.start)
                    data = src.read(length)
                    if data != zero[:length]:
                        out.seek(pos)
                        out.write(data)
    finally:
        for fh in handles.values():
            fh.close()


def verify_lv(fs_path: Path, ranges: list[PhysicalRange]) -> None:
    size = fs_path.stat().st_size
    if lvm_truth.lv_sha256(ranges, size) != _sha256(fs_path):
        raise RuntimeError(f"{fs_path.name}: the LV read back differs from the filesystem")


# --------------------------------------------------------------------------------------------
# building


def _sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)


def _check_layout(name: str, session: LvmSession, places: list[PvPlace]) -> None:
    """The tools' layout is the one the builder aimed for (KNOWN_LAYOUT)."""
    want = KNOWN_LAYOUT[name]
    pvs = session.pvs_info()
    for pv in pvs:
        if pv["pe_start"] != want["pe_start"] or pv["vg_extent_size"] != want["extent_size"]:
            raise RuntimeError(f"{name}: unexpected PV geometry {pv}")
    got: dict[str, list[tuple[int, int, int]]] = {}
    for seg in session.lvs_segments():
        for area in seg["pe_ranges"]:
            index = next(
                i
                for i, p in enumerate(places)
                if p.image == area["image"] and p.offset == area["pv_offset"]
            )
            got.setdefault(seg["lv_name"], []).append((index, area["first_pe"], area["last_pe"]))
    if got != want["lvs"]:
        raise RuntimeError(f"{name}: lvs says {got}, the builder aimed for {want['lvs']}")


def _lv_filesystems(
    name: str,
    folder: Path,
    workdir: Path,
    ranges: dict[str, list[PhysicalRange]],
    specs: dict[str, tuple[int, int]],
) -> tuple[dict[str, Path], dict[str, BigFile]]:
    """Make, copy and verify one ext4 per LV in ``specs`` (LV -> (block size, big size))."""
    filesystems, big_files = {}, {}
    for lv, (block, big_size) in specs.items():
        big = BigFile(BIG_FILE, f"{name}/{lv}/big", big_size)
        size = sum(r.end - r.start for r in ranges[lv])
        fs_path = folder / f"{lv}.ext4"
        make_lv_fs(
            fs_path, size, workdir, uuid=FS_UUIDS[(name, lv)], label=lv, big=big, block=block
        )
        copy_to_lv(fs_path, ranges[lv])
        verify_lv(fs_path, ranges[lv])
        filesystems[lv], big_files[lv] = fs_path, big
    return filesystems, big_files


def _lv_sizes(session: LvmSession) -> dict[str, int]:
    return {s["lv_name"]: s["lv_size"] for s in session.lvs_segments()}


def build_lvm_gpt(folder: Path, workdir: Path) -> LvmImage:
    name = "lvm_gpt"
    disk = folder / "disk.img"
    _sparse_file(disk, GPT_DISK_SIZE)
    run(
        "sgdisk",
        "--disk-guid",
        GPT_DISK_GUID,
        "-n",
        f"1:{GPT_P1_OFFSET // 512}:+{GPT_P1_SIZE // 512}",
        "-t",
        "1:8300",
        "-c",
        "1:empty",
        "-u",
        f"1:{GPT_PART_GUIDS[0]}",
        "-n",
        f"2:{GPT_PV_OFFSET // 512}:+{GPT_PV_SIZE // 512}",
        "-t",
        "2:8E00",
        "-c",
        "2:lvm-pv",
        "-u",
        f"2:{GPT_PART_GUIDS[1]}",
        disk,
    )
    places = [PvPlace(disk, GPT_PV_OFFSET, GPT_PV_SIZE, 2, 1)]
    with LvmSession() as s:
        dev = s.attach(places[0], read_only=False)
        s.run("pvcreate", "--uuid", PV_UUIDS[name][0], "--norestorefile", dev)
        s.run("vgcreate", "-s", "1m", "vg0", dev)
        s.run("lvcreate", "-an", "-Zn", "-L", "8m", "-n", "root", "vg0")
        s.run("lvcreate", "-an", "-Zn", "-L", "4m", "-n", "data", "vg0")
        s.run("lvcreate", "-an", "-Zn", "-L", "4m", "-n", "gap", "vg0")
        s.run("lvextend", "-L", "+4m", "vg0/data")
        s.run("lvremove", "-y", "vg0/gap")
        _check_layout(name, s, places)
        ranges = s.physical_ranges()
        sizes = _lv_sizes(s)
    # 8 MiB each, 1 KiB blocks (a 1 MiB journal); 5 MiB cannot fit in either 4 MiB segment.
    filesystems, big_files = _lv_filesystems(
        name, folder, workdir, ranges, {"root": (1024, 4 * MiB), "data": (1024, 5 * MiB)}
    )
    return LvmImage(
        name, "vg0", (disk,), tuple(places), PV_UUIDS[name], sizes, filesystems, big_files
    )


def build_lvm_whole(folder: Path, workdir: Path) -> LvmImage:
    name = "lvm_whole"
    disk = folder / "disk.img"
    _sparse_file(disk, 32 * MiB)
    places = [PvPlace(disk, 0, 32 * MiB, None, 1)]
    with LvmSession() as s:
        dev = s.attach(places[0], read_only=False)
        s.run(
            "pvcreate",
            "--uuid",
            PV_UUIDS[name][0],
            "--norestorefile",
            "--pvmetadatacopies",
            "2",
            dev,
        )
        s.run("vgcreate", "vgw", dev)
        s.run("lvcreate", "-an", "-Zn", "-L", "12m", "-n", "lv1", "vgw")
        _check_layout(name, s, places)
        ranges = s.physical_ranges()
        sizes = _lv_sizes(s)
    filesystems, big_files = _lv_filesystems(
        name, folder, workdir, ranges, {"lv1": (4096, 4 * MiB)}
    )
    return LvmImage(
        name, "vgw", (disk,), tuple(places), PV_UUIDS[name], sizes, filesystems, big_files
    )


def build_lvm_two(folder: Path, workdir: Path) -> LvmImage:
    name = "lvm_two"
    disks = (folder / "disk1.img", folder / "disk2.img")
    places = []
    for i, disk in enumerate(disks, start=1):
        _sparse_file(disk, 16 * MiB)
        places.append(PvPlace(disk, 0, 16 * MiB, None, i))
    with LvmSession() as s:
        devs = [s.attach(p, read_only=False) for p in places]
        for dev, uuid in zip(devs, PV_UUIDS[name]):
            s.run("pvcreate", "--uuid", uuid, "--norestorefile", dev)
        s.run("vgcreate", "-s", "2m", "vg2", *devs)
        s.run("lvcreate", "-an", "-Zn", "-i", "2", "-I", "64k", "-L", "8m", "-n", "striped", "vg2")
        # Fill the rest of the first PV, then go on at PE 3 of the second (PE 2 stays free).
        span_pvs = (f"{devs[0]}:2-6", f"{devs[1]}:3-4")
        s.run("lvcreate", "-an", "-Zn", "-l", "7", "-n", "span", "vg2", *span_pvs)
        _check_layout(name, s, places)
        ranges = s.physical_ranges()
        sizes = _lv_sizes(s)
    # striped: 5 MiB in 8 MiB crosses chunks of both stripes; span: 11 MiB of a 14 MiB fs
    # cannot fit in the 10 MiB on the first PV.
    filesystems, big_files = _lv_filesystems(
        name, folder, workdir, ranges, {"striped": (1024, 5 * MiB), "span": (1024, 11 * MiB)}
    )
    return LvmImage(
        name, "vg2", disks, tuple(places), PV_UUIDS[name], sizes, filesystems, big_files
    )


def _xor_bytes(path: Path, offset: int, length: int, mask: int) -> tuple[bytes, bytes]:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(length)
        new = bytes(b ^ mask for b in old)
        fh.seek(offset)
        fh.write(new)
    return old, new


def build_lvm_damaged_meta(folder: Path, workdir: Path) -> LvmImage:
    name = "lvm_damaged_meta"
    disk = folder / "disk.img"
    _sparse_file(disk, 24 * MiB)
    places = [PvPlace(disk, 0, 24 * MiB, None, 1)]
    with LvmSession() as s:
        dev = s.attach(places[0], read_only=False)
        s.run("pvcreate", "--uuid", PV_UUIDS[name][0], "--norestorefile", dev)
        s.run("vgcreate", "vgd", dev)
        s.run("lvcreate", "-an", "-Zn", "-L", "8m", "-n", "lv1", "vgd")
        s.run("lvcreate", "-an", "-Zn", "-L", "4m", "-n", "lv2", "vgd")
        _check_layout(name, s, places)
        ranges = s.physical_ranges()
        sizes = _lv_sizes(s)
    filesystems, big_files = _lv_filesystems(
        name, folder, workdir, ranges, {"lv1": (1024, 4 * MiB)}
    )

    # The newest record: where raw_locn[0] of the (only) metadata area points.
    before = lvm_truth.pvck_dump(disk)
    mda = before["mda_headers"][0]
    commit = mda["raw_locns"][0]
    record_start = mda["start"] + commit["offset"]
    record_end = record_start + commit["size"]
    if record_end > mda["start"] + mda["size"]:
        raise RuntimeError("the newest record wraps around the ring: damage it differently")
    with open(disk, "rb") as fh:
        fh.seek(record_start)
        text = fh.read(commit["size"])
    if lvm_truth.lvm_crc32(text) != commit["checksum"]:
        raise RuntimeError("our crc of the newest record differs from raw_locn's before damage")
    where = text.find(b"\nlv2 {")
    if where < 0:
        raise RuntimeError("no 'lv2 {' section in the newest metadata record")
    name_offset = record_start + where + 1
    old, new = _xor_bytes(disk, name_offset, 2, 0x20)  # "lv" -> "LV": still valid text
    with open(disk, "rb") as fh:
        fh.seek(record_start)
        damaged_text = fh.read(commit["size"])
    after = lvm_truth.pvck_dump(disk)
    if not after["checks"]:
        raise RuntimeError(f"pvck does not notice the damage: {after['fields']}")
    previous = max(
        (r for r in before["records"][0] if r["seqno"] < before["metadata_text"][0]["seqno"]),
        key=lambda r: r["seqno"],
    )
    damage = {
        "kind": "newest metadata record text changed; its raw_locn checksum no longer matches",
        "mda_header": mda["at"],
        "raw_locn": commit["at"],
        "raw_locn_checksum": commit["checksum"],
        "record_start": record_start,
        "record_end": record_end,
        "record_seqno": before["metadata_text"][0]["seqno"],
        "changed": [{"offset": name_offset, "old": old.decode(), "new": new.decode()}],
        "crc_after": lvm_truth.lvm_crc32(damaged_text),
        "previous_record": {
            "start": previous["at"],
            "end": previous["at"] + previous["length"],
            "seqno": previous["seqno"],
            "crc": previous["crc"],
        },
        "lvs_in_previous_record": ["lv1"],
    }
    return LvmImage(
        name,
        "vgd",
        (disk,),
        tuple(places),
        PV_UUIDS[name],
        sizes,
        filesystems,
        big_files,
        damage=damage,
    )


MAX_RING_STEPS = 200  # metadata changes before giving up on wrapping the ring


def build_lvm_wrapped_meta(folder: Path, workdir: Path) -> LvmImage:
    name = "lvm_wrapped_meta"
    disk = folder / "disk.img"
    _sparse_file(disk, 16 * MiB)
    places = [PvPlace(disk, 0, 16 * MiB, None, 1)]
    with LvmSession() as s:
        dev = s.attach(places[0], read_only=False)
        s.run(
            "pvcreate",
            "--uuid",
            PV_UUIDS[name][0],
            "--norestorefile",
            "--metadatasize",
            "32k",
            "--dataalignment",
            "64k",
            dev,
        )
        s.run("vgcreate", "-s", "1m", "vgr", dev)
        for i in range(8):  # more LVs, longer records: the ring fills in fewer steps
            s.run("lvcreate", "-an", "-Zn", "-l", "1", "-n", f"lv{i}", "vgr")
        for step in range(MAX_RING_STEPS):
            s.run("lvchange", "--addtag", f"step{step}", "vgr/lv0")
            headers = lvm_truth.parse_pvck_headers(s.run("pvck", "--dump", "headers", dev).stdout)
            mda = headers["mda_headers"][0]
            commit = mda["raw_locns"][0]
            if commit["offset"] + commit["size"] > mda["size"]:
                break
        else:
            raise RuntimeError(f"{name}: no wrapped record after {MAX_RING_STEPS} changes")
        _check_layout(name, s, places)
        sizes = _lv_sizes(s)
    start = mda["start"]
    first = (start + commit["offset"], start + mda["size"])
    second_size = commit["size"] - (first[1] - first[0])
    second = (start + lvm_truth.SECTOR, start + lvm_truth.SECTOR + second_size)
    with open(disk, "rb") as fh:
        fh.seek(first[0])
        text = fh.read(first[1] - first[0])
        fh.seek(second[0])
        text += fh.read(second[1] - second[0])
    if lvm_truth.lvm_crc32(text) != commit["checksum"]:
        raise RuntimeError(f"{name}: the two parts of the wrapped record fail raw_locn's crc")
    ring = {
        "mda_start": start,
        "mda_end": start + mda["size"],
        "raw_locn": commit["at"],
        "offset": commit["offset"],
        "size": commit["size"],
        "checksum": commit["checksum"],
        "seqno": headers["metadata_text"][0]["seqno"],
        "parts": [list(first), list(second)],  # disk bytes, in text order
        "tags_on_lv0": step + 1,
    }
    return LvmImage(name, "vgr", (disk,), tuple(places), PV_UUIDS[name], sizes, ring=ring)


BUILDERS: dict[str, Callable[[Path, Path], LvmImage]] = {
    "lvm_gpt": build_lvm_gpt,
    "lvm_whole": build_lvm_whole,
    "lvm_two": build_lvm_two,
    "lvm_damaged_meta": build_lvm_damaged_meta,
    "lvm_wrapped_meta": build_lvm_wrapped_meta,
}
NAMES = (*BUILDERS, "lvm_missing_pv")


# --------------------------------------------------------------------------------------------
# the cache


def cache_version() -> str:
    return f"{IMAGES_VERSION}-lvm2-{lvm_truth.lvm_version()}-e2fsprogs-{e2fsprogs_version()}"


def default_cache_root() -> Path | None:
    env = os.environ.get("BMAP_TEST_CACHE")
    return Path(env) if env else None


def _cached_set(cache_root: Path, name: str) -> LvmImage:
    """Build the set ``name`` into ``cache_root/<version>/name/`` once: in a temp directory,
    then renamed; ``layout.json`` is written last, so a set without it is not finished."""
    folder = cache_root / cache_version()
    target = folder / name
    layout = target / "layout.json"
    with _locked(folder / f".{name}.lock"):
        if not layout.exists():
            lvm_truth.require_loops()
            shutil.rmtree(target, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=folder))
            try:
                partial = work / name
                partial.mkdir()
                built = BUILDERS[name](partial, work / "work")
                (partial / "layout.json").write_text(
                    json.dumps(built.to_json(partial), indent=1, sort_keys=True)
                )
                for item in partial.iterdir():
                    item.chmod(0o444)
                partial.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return LvmImage.from_json(json.loads(layout.read_text()), target)


def lvm_image(name: str, cache_root: Path) -> LvmImage:
    """The image set ``name`` (one of :data:`NAMES`), built once into the cache."""
    if name == "lvm_missing_pv":
        two = _cached_set(cache_root, "lvm_two")
        return LvmImage(
            name="lvm_missing_pv",
            vg=two.vg,
            images=two.images[:1],
            pvs=two.pvs[:1],
            pv_uuids=two.pv_uuids[:1],
            lv_sizes=two.lv_sizes,
            filesystems=two.filesystems,
            big_files=two.big_files,
            missing_pv_uuids=two.pv_uuids[1:],
        )
    return _cached_set(cache_root, name)


@contextlib.contextmanager
def scratch_copy(image: LvmImage) -> Iterator[LvmImage]:
    """A writable sparse copy of a set's images, for a test that damages them further."""
    work = Path(tempfile.mkdtemp(prefix="bmap-lvm-copy-"))
    try:
        mapping = {}
        for path in image.images:
            copy = work / path.name
            run("cp", "--sparse=always", path, copy)
            copy.chmod(0o644)
            mapping[path] = copy
        yield dataclasses.replace(
            image,
            images=tuple(mapping[p] for p in image.images),
            pvs=tuple(p._replace(image=mapping[p.image]) for p in image.pvs),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# pytest fixtures. Import the ``*_fixture`` functions into a test module or a conftest.py;
# pytest knows them by the names given (``lvm_image_factory``, ``lvm_gpt_image``, ...).


@pytest.fixture(scope="session", name="lvm_images_cache")
def lvm_images_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = default_cache_root()
    if root is None:
        root = tmp_path_factory.getbasetemp() / "lvm-images"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _get_or_skip(name: str, cache_root: Path) -> LvmImage:
    try:
        return lvm_image(name, cache_root)
    except (NeedsRoot, FileNotFoundError) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session", name="lvm_image_factory")
def lvm_image_factory_fixture(lvm_images_cache: Path) -> Callable[[str], LvmImage]:
    """``lvm_image_factory("lvm_gpt")`` -> LvmImage; skips without root or loop devices."""
    return lambda name: _get_or_skip(name, lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_gpt_image")
def lvm_gpt_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_gpt", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_whole_image")
def lvm_whole_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_whole", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_two_image")
def lvm_two_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_two", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_damaged_meta_image")
def lvm_damaged_meta_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_damaged_meta", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_missing_pv_image")
def lvm_missing_pv_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_missing_pv", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_wrapped_meta_image")
def lvm_wrapped_meta_image_fixture(lvm_images_cache: Path) -> LvmImage:
    return _get_or_skip("lvm_wrapped_meta", lvm_images_cache)
