"""A whole machine's disk (issue #14): a GPT with an EFI system partition (FAT32), an XFS root
and an LVM PV whose LV holds NTFS, every one made by its own real tool and filled with files.

Truth from outside bmap: sgdisk/sfdisk for the partitions, ``lvs`` for the LV's place, the
source files' own bytes (each file read back from the disk at the ranges the map gives it,
in file-offset order), and the rule of the format that the innermost lines cover every byte
of the disk once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bmap.images import open_images
from bmap.layers.mapper import map_images
from tests.bmap.layers.test_ext_map import assert_nested_and_covering
from tests.conftest import is_root, sfdisk_json, tool
from tests.lvm_images import copy_to_lv, verify_lv
from tests.lvm_truth import LvmSession, PvPlace

MiB = 1 << 20
DISK_SIZE = 200 * MiB
ESP = (1 * MiB, 40 * MiB)  # (offset, size)
ROOT = (41 * MiB, 80 * MiB)
PV = (121 * MiB, 72 * MiB)
LV_SIZE = 48 * MiB
XFS_ENV = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}


def _content(seed: str, size: int) -> bytes:
    """``size`` bytes that differ from file to file and block to block."""
    block = (seed.encode() * (4096 // len(seed) + 1))[:4093]
    return (block + b"\n" * 3) * (size // 4096) + block[: size % 4096]


#: (filesystem, path) -> content; the files each filesystem gets, big enough to have runs.
FILES: dict[tuple[str, str], bytes] = {
    ("esp", "/EFI/BOOT/BOOTX64.EFI"): _content("efi", 300_000),
    ("esp", "/EFI/debian/grub.cfg"): b"set timeout=0\n" * 200,
    ("root", "/etc/hostname"): b"machine\n" * 1000,
    ("root", "/usr/lib/big.bin"): _content("big", 3 * MiB + 123),
    ("root", "/var/log/syslog"): _content("log", 200_000),
    ("data", "/Documents/report.txt"): _content("report", 150_000),
    ("data", "/Pictures/photo.bin"): _content("photo", 2 * MiB + 7),
}
DEVICES = {"esp": "/dev/sda1", "root": "/dev/sda2", "data": "/dev/vgm/data"}


@dataclass(frozen=True)
class WholeDisk:
    disk: Path


def _run(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(list(args), check=True, capture_output=True, env={**os.environ, **(env or {})})


def _tree(folder: Path, fs: str) -> Path:
    tree = folder / f"tree-{fs}"
    for (owner, path), data in FILES.items():
        if owner == fs:
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return tree


def _esp(folder: Path) -> Path:
    image = folder / "esp.img"
    with open(image, "wb") as fh:
        fh.truncate(ESP[1])
    _run(tool("mkfs.vfat"), "-F", "32", "-n", "ESP", str(image))
    tree = _tree(folder, "esp")
    for path in sorted(p for p in tree.rglob("*")):
        rel = "::/" + str(path.relative_to(tree))
        if path.is_dir():
            _run(tool("mmd"), "-i", str(image), rel)
        else:
            _run(tool("mcopy"), "-i", str(image), str(path), rel)
    return image


def _mounted_copy(image: Path, fstype: list[str], tree: Path, folder: Path) -> None:
    """Copy ``tree`` into the filesystem of ``image`` through a read-write mount (a loop
    device for XFS, ntfs-3g's FUSE mount for NTFS), undone on every way out."""
    mnt = folder / f"mnt-{image.stem}"
    mnt.mkdir()
    if fstype[0] == "ntfs-3g":
        _run(tool("ntfs-3g"), str(image), str(mnt))
    else:
        _run("mount", "-o", "loop", *fstype, str(image), str(mnt))
    try:
        shutil.copytree(tree, mnt, dirs_exist_ok=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert not os.path.ismount(mnt)


def _root(folder: Path) -> Path:
    image = folder / "root.xfs"
    with open(image, "wb") as fh:
        fh.truncate(ROOT[1])
    _run(tool("mkfs.xfs"), "-q", "-f", "-L", "root", str(image), env=XFS_ENV)
    _mounted_copy(image, ["-t", "xfs"], _tree(folder, "root"), folder)
    return image


def _ntfs(folder: Path) -> Path:
    image = folder / "data.ntfs"
    with open(image, "wb") as fh:
        fh.truncate(LV_SIZE)
    _run(tool("mkntfs"), "-Q", "-F", "-q", "-L", "data", str(image))
    _mounted_copy(image, ["ntfs-3g"], _tree(folder, "data"), folder)
    return image


def build(folder: Path) -> WholeDisk:
    disk = folder / "disk.img"
    with open(disk, "wb") as fh:
        fh.truncate(DISK_SIZE)
    parts = []
    for number, ((offset, size), code) in enumerate(
        ((ESP, "ef00"), (ROOT, "8300"), (PV, "8e00")), start=1
    ):
        parts += ["-n", f"{number}:{offset // 512}:+{size // 512}", "-t", f"{number}:{code}"]
    _run(tool("sgdisk"), *parts, str(disk))
    for image, (offset, _) in ((_esp(folder), ESP), (_root(folder), ROOT)):
        with open(disk, "r+b") as out, open(image, "rb") as src:
            out.seek(offset)
            shutil.copyfileobj(src, out)
    place = PvPlace(disk, PV[0], PV[1], 3, 1)
    with LvmSession() as session:
        dev = session.attach(place, read_only=False)
        session.run("pvcreate", "--norestorefile", dev)
        session.run("vgcreate", "-s", "4m", "vgm", dev)
        session.run("lvcreate", "-an", "-Zn", "-L", f"{LV_SIZE // MiB}m", "-n", "data", "vgm")
        ranges = session.physical_ranges()["data"]
    ntfs = _ntfs(folder)
    copy_to_lv(ntfs, ranges)
    verify_lv(ntfs, ranges)
    return WholeDisk(disk)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory):
    if not is_root():
        pytest.skip("needs root: loop devices for LVM and the XFS mount, FUSE for ntfs-3g")
    for name in ("sgdisk", "mkfs.vfat", "mcopy", "mkfs.xfs", "mkntfs", "ntfs-3g", "pvcreate"):
        tool(name)
    case = build(tmp_path_factory.mktemp("whole-disk"))
    images = open_images([case.disk])
    try:
        bmap = map_images(images)
    finally:
        for image in images:
            image.close()
    return case, bmap, bmap.to_dataframe()


def test_partitions_are_where_sgdisk_put_them(whole):
    case, _bmap, frame = whole
    parts = sfdisk_json(case.disk)["partitions"]
    got = sorted(
        (int(s), int(e))
        for s, e in zip(frame[frame.type == "p"].start, frame[frame.type == "p"].end)
    )
    assert got == [(p["start"] * 512, (p["start"] + p["size"]) * 512) for p in parts]


def test_every_byte_is_covered_once(whole):
    _case, _bmap, frame = whole
    assert_nested_and_covering(frame, DISK_SIZE, 1)
    # Nothing is left as a bare partition or LV: each filesystem is mapped inside.
    for device in DEVICES.values():
        inside = frame[(frame.device == device) & frame.type.isin(["d", "f", "m", "u"])]
        assert len(inside) > 3, device


@pytest.mark.parametrize(("fs", "path"), list(FILES))
def test_every_file_reads_back_from_its_ranges(whole, fs, path):
    case, _bmap, frame = whole
    want = FILES[(fs, path)]
    rows = frame[(frame.type == "f") & (frame.device == DEVICES[fs]) & (frame.path == path)]
    assert len(rows), (fs, path)
    content = bytearray(len(want))
    covered = 0
    with open(case.disk, "rb") as fh:
        for start, end, offset in zip(rows.start, rows.end, rows.file_offset):
            fh.seek(int(start))
            piece = fh.read(int(end) - int(start))[: max(0, len(want) - int(offset))]
            content[int(offset) : int(offset) + len(piece)] = piece
            covered += len(piece)
    assert covered >= len(want)
    assert bytes(content) == want


def test_no_finding_says_something_was_left_unmapped(whole):
    _case, bmap, _frame = whole
    serious = [f for f in bmap.findings if str(f.severity) in ("warning", "error")]
    assert not serious, serious
    assert not [
        f for f in bmap.findings if "not mapped" in f.message or "does not map" in f.message
    ]
