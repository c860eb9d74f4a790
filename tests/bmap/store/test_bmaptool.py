"""bmaptool's XML (``bmap map --format bmaptool``), checked with the real bmaptool.

The images are made by the real tools: an ext4 by ``mke2fs -d`` whose free blocks hold the
bytes of a big deleted file (``debugfs -w write`` then ``rm``: old data that is no hole), a GPT
disk with a FAT ESP (files and a deleted file by mtools) and such an ext4, and a small XFS
(``tests.xfs_images``). ``bmaptool copy`` flashes each onto a loop device over a file first
filled with another pattern; then every listed block must equal the image, every other block
must still hold the pattern, ``e2fsck -fn``, ``fsck.fat -n`` and ``xfs_repair -n`` must pass
on the target, and every source file read back through a read-only mount must equal its
source. The truth of what is free comes from ``dumpe2fs``, and ``bmaptool create`` is the
reference for ``--bmaptool-keep-free``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bmap.cli.commands import main
from bmap.errors import ExitCode
from bmap.model.blockmap import ImageInfo, MapBuilder
from bmap.store.bmaptool import (
    BmaptoolExportError,
    data_runs,
    mapped_blocks,
    to_block_ranges,
    write_bmaptool,
)
from tests.ext_images import cache_root_of, cached_file, copy_sparse, is_root, run
from tests.xfs_images import xfs_image

MiB = 1 << 20
BLOCK = 4096
IMAGES_VERSION = "bmaptool-images-1"
OLD_DATA = b"OLD-DELETED-DATA"  # what the deleted file held: the free blocks' old bytes
TARGET_FILL = b"\xa5TARGET-PATTERN\x5a"  # what the target held before the flash
GAP_BYTES = b"BIOS-BOOT-CODE!!"  # bytes in the unpartitioned gap after the GPT
ESP_OFFSET, ESP_SIZE = 1 * MiB, 8 * MiB
EXT_OFFSET = ESP_OFFSET + ESP_SIZE


# --------------------------------------------------------------------------------------------
# images


def _pattern(piece: bytes, size: int) -> bytes:
    return (piece * (size // len(piece) + 1))[:size]


def make_tree(root: Path, *, seed: str, files: int, max_size: int) -> None:
    """Directories of deterministic incompressible files, an empty file and a symlink."""
    rnd = random.Random(seed)
    for i in range(files):
        folder = root / f"d{i % 7}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rnd.randrange(1, max_size) if i % 5 else rnd.randrange(1, 4096)
        (folder / f"file{i:03d}.bin").write_bytes(rnd.randbytes(size))
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("d0/sub0/file000.bin")


def _free_blocks(image: Path) -> int:
    text = run("dumpe2fs", "-h", image)
    return int(re.search(r"(?m)^Free blocks:\s+(\d+)", text)[1])  # type: ignore[index]


def build_old_data_ext4(
    image: Path, workdir: Path, *, size: int = 24 * MiB, files: int = 60, max_size: int = 96 << 10
) -> Path:
    """An ext4 of 4 KiB blocks made by ``mke2fs -d`` from a tree (``workdir/tree``), whose free
    blocks then held a file of :data:`OLD_DATA` that was deleted: old bytes, not holes."""
    tree = workdir / "tree"
    make_tree(tree, seed=image.name, files=files, max_size=max_size)
    with open(image, "wb") as fh:
        fh.truncate(size)
    run("mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-d", tree, image)
    junk = workdir / "junk"
    # The filler takes nearly every free block (a few are left for its extent tree).
    junk.write_bytes(_pattern(OLD_DATA, (_free_blocks(image) - 64) * BLOCK))
    run("debugfs", "-w", "-R", f"write {junk} junk", image)
    run("debugfs", "-w", "-R", "rm junk", image)
    junk.unlink()
    run("e2fsck", "-fn", image)
    return image


def build_gpt_disk(disk: Path, workdir: Path) -> Path:
    """GPT: an 8 MiB FAT ESP at 1 MiB (mcopy'd files, and a deleted big one), an old-data
    ext4 of 24 MiB at 9 MiB, :data:`GAP_BYTES` in the gap after the GPT entries, 1 MiB of
    holes before the backup GPT."""
    ext = workdir / "ext.img"
    (workdir / "ext").mkdir()
    build_old_data_ext4(ext, workdir / "ext")
    total = EXT_OFFSET + ext.stat().st_size + 1 * MiB
    with open(disk, "wb") as fh:
        fh.truncate(total)
    run(
        "sgdisk",
        "-n",
        f"1:{ESP_OFFSET // 512}:+{ESP_SIZE // 512}",
        "-t",
        "1:ef00",
        "-n",
        f"2:{EXT_OFFSET // 512}:+{ext.stat().st_size // 512}",
        "-t",
        "2:8300",
        disk,
    )
    # What a BIOS boot loader would leave: bytes in no partition (sectors 34..2047).
    with open(disk, "r+b") as fh:
        fh.seek(34 * 512)
        fh.write(_pattern(GAP_BYTES, ESP_OFFSET - 34 * 512))
    run("mkfs.vfat", "--invariant", "-n", "ESP", "--offset", str(ESP_OFFSET // 512), disk, "8192")
    fat = f"{disk}@@{ESP_OFFSET}"
    junk = workdir / "JUNK.BIN"
    junk.write_bytes(_pattern(OLD_DATA, 6 * MiB))
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run("mcopy", "-i", fat, junk, "::/JUNK.BIN", env=env)
    run("mdel", "-i", fat, "::/JUNK.BIN", env=env)
    esp_tree = workdir / "esp"
    make_tree(esp_tree, seed="esp", files=12, max_size=64 << 10)
    (esp_tree / "link").unlink()  # FAT has no symlinks
    run("mcopy", "-i", fat, "-s", *sorted(esp_tree.iterdir()), "::/", env=env)
    copy_sparse(ext, disk, EXT_OFFSET)
    return disk


def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cache_root_of(tmp_path_factory, "bmaptool-images") / IMAGES_VERSION


def _need(*tools: str) -> None:
    for name in tools:
        if not (shutil.which(name) or os.access(f"/usr/sbin/{name}", os.X_OK)):
            pytest.skip(f"{name} is not installed (scripts/ensure-tools.sh installs it as root)")


@pytest.fixture(scope="session")
def old_ext4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The old-data ext4 and its source tree."""
    _need("mke2fs", "debugfs", "e2fsck")
    folder = _cache(tmp_path_factory)
    image = cached_file(folder, "old-ext4.img", build_old_data_ext4)
    tree = folder / "old-ext4-tree"
    if not tree.exists():
        make_tree(tree, seed="old-ext4.img", files=60, max_size=96 << 10)
    return image, tree


@pytest.fixture(scope="session")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The GPT disk, the ext4 partition's source tree and the ESP's."""
    _need("sgdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs")
    folder = _cache(tmp_path_factory)
    disk = cached_file(folder, "gpt-disk.img", build_gpt_disk)
    ext_tree, esp_tree = folder / "gpt-ext-tree", folder / "gpt-esp-tree"
    if not ext_tree.exists():
        make_tree(ext_tree, seed="ext.img", files=60, max_size=96 << 10)
    if not esp_tree.exists():
        make_tree(esp_tree, seed="esp", files=12, max_size=64 << 10)
        (esp_tree / "link").unlink()
    return disk, ext_tree, esp_tree


# --------------------------------------------------------------------------------------------
# helpers


def bmap_xml(image: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(main, ["map", str(image), "-f", "bmaptool", "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def bmaptool_create(image: Path, out: Path) -> Path:
    _need("bmaptool")
    subprocess.run(["bmaptool", "create", "-o", str(out), str(image)], check=True)
    return out


def listed(xml: Path) -> list[tuple[int, int]]:
    """The inclusive block ranges of a bmaptool XML, read as bmaptool's reader does."""
    import xml.etree.ElementTree as ET

    ranges = []
    for element in ET.parse(xml).getroot().find("BlockMap"):  # type: ignore[union-attr]
        first, _, last = element.text.strip().partition("-")  # type: ignore[union-attr]
        ranges.append((int(first), int(last or first)))
    return ranges


def header(xml: Path, tag: str) -> str:
    import xml.etree.ElementTree as ET

    return ET.parse(xml).getroot().find(tag).text.strip()  # type: ignore[union-attr]


def block_set(ranges: list[tuple[int, int]]) -> set[int]:
    return {b for first, last in ranges for b in range(first, last + 1)}


def fill(path: Path, size: int, piece: bytes) -> None:
    chunk = _pattern(piece, MiB)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(chunk)
        fh.write(chunk[: size % MiB])


def tree_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


@pytest.fixture
def system() -> Iterator[Callable[..., str]]:
    """Loop devices and mounts made through it; every one is undone afterwards, mounts
    first, whatever the test did."""
    if not is_root():
        pytest.skip("needs root for loop devices, mounts and flashing a block device")
    if not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no loop devices (/dev/loop-control missing)")
    loops: list[str] = []
    mounts: list[Path] = []

    def do(action: str, *args: Any) -> str:
        if action == "loop":  # loop(path, *losetup options) -> device
            dev = run("losetup", "--find", "--show", *args[1:], args[0]).strip()
            loops.append(dev)
            return dev
        if action == "mount":  # mount(device, directory, options)
            args[1].mkdir(parents=True, exist_ok=True)
            run("mount", "-o", args[2], args[0], args[1])
            mounts.append(args[1])
            return str(args[1])
        if action == "umount":
            run("umount", args[0])
            mounts.remove(args[0])
            return ""
        if action == "detach":
            run("losetup", "--detach", args[0])
            loops.remove(args[0])
            return ""
        raise ValueError(action)

    try:
        yield do
    finally:
        for mnt in reversed(mounts):
            subprocess.run(["umount", str(mnt)], check=False)
        for dev in reversed(loops):
            subprocess.run(["losetup", "--detach", dev], check=False)


def flash(image: Path, xml: Path, target: Path, system: Callable[..., str]) -> None:
    """``bmaptool copy`` onto a loop device over ``target`` (first filled with
    :data:`TARGET_FILL`): a regular-file target would be truncated by bmaptool first."""
    _need("bmaptool")
    fill(target, image.stat().st_size, TARGET_FILL)
    dev = system("loop", target)
    try:
        proc = subprocess.run(
            ["bmaptool", "copy", "--bmap", str(xml), str(image), dev],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        # bmaptool checks each range's sha256 as it writes, and the file's own checksum.
        assert "checksum" not in proc.stderr.lower() or "mismatch" not in proc.stderr.lower()
    finally:
        system("detach", dev)


def check_blocks(image: Path, target: Path, xml: Path) -> None:
    """Listed blocks equal the image; every other block still holds the target's pattern
    (bmaptool wrote nothing there)."""
    size = image.stat().st_size
    ranges = listed(xml)
    fill_block = _pattern(TARGET_FILL, size + BLOCK)
    with open(image, "rb") as img, open(target, "rb") as tgt:
        pos = 0
        for first, last in [*ranges, (size // BLOCK + 1, size // BLOCK)]:
            start, end = first * BLOCK, min((last + 1) * BLOCK, size)
            if pos < min(start, size):  # an unlisted run
                tgt.seek(pos)
                assert tgt.read(min(start, size) - pos) == fill_block[pos : min(start, size)], (
                    f"bytes {pos:#x}-{start:#x} not listed, yet written"
                )
            if end > start:
                img.seek(start)
                tgt.seek(start)
                assert (
                    hashlib.sha256(img.read(end - start)).digest()
                    == hashlib.sha256(tgt.read(end - start)).digest()
                ), f"blocks {first}-{last} differ from the image"
            pos = max(pos, end)


def check_mounted(
    system: Callable[..., str], target: Path, offset: int, size: int, fstype: str, tree: Path
) -> None:
    """Mount the target's filesystem read-only and compare every source file. A kernel
    without vfat: the files are read out of the target by mtools instead."""
    if fstype == "vfat" and not _kernel_has("vfat"):
        out = target.parent / f"mcopy-{offset}"
        out.mkdir()
        env = {"MTOOLS_SKIP_CHECK": "1"}
        run("mcopy", "-s", "-n", "-i", f"{target}@@{offset}", "::/*", out, env=env)
        _compare_tree(out, tree)
        return
    dev = system("loop", target, "--read-only", "--offset", str(offset), "--sizelimit", str(size))
    options = {"ext4": "ro,noload", "vfat": "ro", "xfs": "ro,norecovery"}[fstype]
    mnt = Path(system("mount", dev, target.parent / f"mnt-{offset}", options))
    try:
        _compare_tree(mnt, tree)
    finally:
        system("umount", mnt)
        system("detach", dev)


def _kernel_has(fstype: str) -> bool:
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", fstype], capture_output=True, check=False)
    return fstype in Path("/proc/filesystems").read_text().split()


def _compare_tree(copy_root: Path, tree: Path) -> None:
    checked = 0
    for src in tree_files(tree):
        copy = copy_root / src.relative_to(tree)
        assert copy.read_bytes() == src.read_bytes(), f"{copy} differs from its source"
        checked += 1
    assert checked >= 10


def check_fsck(system: Callable[..., str], target: Path, offset: int, size: int, tool: str) -> None:
    dev = system("loop", target, "--read-only", "--offset", str(offset), "--sizelimit", str(size))
    try:
        argv = {"e2fsck": ["e2fsck", "-fn"], "fsck.fat": ["fsck.fat", "-n"]}.get(tool)
        argv = argv or ["xfs_repair", "-n"]
        proc = subprocess.run([*argv, dev], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{tool} on the target: {proc.stdout}{proc.stderr}"
    finally:
        system("detach", dev)


def dumpe2fs_free_blocks(image: Path) -> set[int]:
    text = run("dumpe2fs", image)
    free: set[int] = set()
    for line in re.findall(r"(?m)^\s+Free blocks: (.*)$", text):
        for item in filter(None, (x.strip() for x in line.split(","))):
            first, _, last = item.partition("-")
            free.update(range(int(first), int(last or first) + 1))
    return free


# --------------------------------------------------------------------------------------------
# the rule, on a map built by hand


def _handmade(tmp_path: Path, lines: list[tuple[str, str, int, int]]) -> tuple[Any, Path]:
    """An image of 16 blocks: blocks 0-7 data (non-zero), 8-15 a hole; and a map of it."""
    image = tmp_path / "hand.img"
    with open(image, "wb") as fh:
        fh.write(b"\x01" * 8 * BLOCK)
        fh.truncate(16 * BLOCK)
    builder = MapBuilder()
    builder.add_object_extent("v", "/dev/sda", 1, 0, 16 * BLOCK)
    for type_, kind, start, end in lines:
        builder.add_object_extent(type_, "/dev/sda", 1, start, end, kind=kind or None)
    return builder.build([ImageInfo(1, str(image), 16 * BLOCK)]), image


def test_u_kinds_rules(tmp_path: Path) -> None:
    lines = [
        ("m", "mbr", 0, 512),
        ("u", "unpartitioned", 512, 2 * BLOCK),  # data: kept
        ("u", "unallocated", 2 * BLOCK, 4 * BLOCK + 100),  # free: left out but block 4
        ("f", "", 4 * BLOCK + 100, 5 * BLOCK),  # a used byte keeps its whole block
        ("u", "unreferenced", 5 * BLOCK, 6 * BLOCK),  # allocated, unnamed: kept
        ("u", "cluster-slack", 6 * BLOCK, 7 * BLOCK),  # kept
        ("u", "free-extents", 7 * BLOCK, 8 * BLOCK),  # LVM free: left out
        ("u", "unpartitioned", 8 * BLOCK, 10 * BLOCK),  # a hole: left out
        ("u", "unreferenced", 10 * BLOCK, 11 * BLOCK),  # a hole, but allocated: kept
        ("m", "superblock", 11 * BLOCK, 12 * BLOCK),  # a hole, but used: kept
        ("u", "unallocated", 12 * BLOCK, 16 * BLOCK),  # a free hole: left out
    ]
    bmap, image = _handmade(tmp_path, lines)
    with open(image, "rb") as fh:
        data = data_runs(fh, 16 * BLOCK)
    assert [a.tolist() for a in data] == [[0], [8 * BLOCK]]
    first, last = mapped_blocks(bmap, data)
    assert list(zip(first.tolist(), last.tolist())) == [(0, 1), (4, 6), (10, 11)]
    first, last = mapped_blocks(bmap, data, keep_free=True)
    assert list(zip(first.tolist(), last.tolist())) == [(0, 7)]


def test_a_used_byte_is_never_dropped(tmp_path: Path) -> None:
    """Overlapping partitions: one filesystem's free space is the other's file."""
    lines = [("u", "unallocated", 0, 16 * BLOCK), ("f", "", 9 * BLOCK + 1, 9 * BLOCK + 2)]
    bmap, image = _handmade(tmp_path, lines)
    with open(image, "rb") as fh:
        first, last = mapped_blocks(bmap, data_runs(fh, 16 * BLOCK))
    assert list(zip(first.tolist(), last.tolist())) == [(9, 9)]


def test_block_ranges_inclusive_and_merged() -> None:
    s = np.array([0, 4096, 3 * 4096, 6 * 4096 + 5])
    e = np.array([1, 8193, 3 * 4096 + 1, 6 * 4096 + 6])
    first, last = to_block_ranges(s, e, 4096)
    # Touching runs merge (bmaptool writes no two ranges that touch); a lone block is N-N.
    assert list(zip(first.tolist(), last.tolist())) == [(0, 3), (6, 6)]


def test_partial_last_block(tmp_path: Path) -> None:
    """An image whose size is no multiple of the block: its last block is counted, and
    checksummed only up to the image's end, as bmaptool does."""
    image = tmp_path / "odd.img"
    image.write_bytes(b"\x02" * (BLOCK + 100))
    builder = MapBuilder()
    builder.add_object_extent("v", "/dev/sda", 1, 0, BLOCK + 100)
    builder.add_object_extent("m", "/dev/sda", 1, 0, BLOCK + 100, kind="mbr")
    bmap = builder.build([ImageInfo(1, str(image), BLOCK + 100)])
    out = tmp_path / "odd.bmap"
    summary = write_bmaptool(bmap, image, out)
    assert (summary.blocks_count, summary.mapped_blocks) == (2, 2)
    want = hashlib.sha256(b"\x02" * (BLOCK + 100)).hexdigest()
    assert f'<Range chksum="{want}"> 0-1 </Range>' in out.read_text()


def test_refuses_several_disks(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * BLOCK)
    builder = MapBuilder()
    for disk in (1, 2):
        builder.add_object_extent("v", f"/dev/sd{'ab'[disk - 1]}", disk, 0, BLOCK)
    bmap = builder.build([ImageInfo(1, str(image), BLOCK), ImageInfo(2, str(image), BLOCK)])
    with pytest.raises(BmaptoolExportError, match="one image"):
        write_bmaptool(bmap, image, tmp_path / "x.bmap")


# --------------------------------------------------------------------------------------------
# against the real bmaptool


def test_keep_free_is_bmaptool_create_byte_for_byte(old_ext4, gpt_disk, tmp_path: Path) -> None:
    for image in (old_ext4[0], gpt_disk[0]):
        ours = bmap_xml(image, tmp_path / f"{image.name}.keep.bmap", "--bmaptool-keep-free")
        theirs = bmaptool_create(image, tmp_path / f"{image.name}.create.bmap")
        assert ours.read_bytes() == theirs.read_bytes()


def test_lists_exactly_the_blocks_dumpe2fs_calls_used(old_ext4, tmp_path: Path) -> None:
    image, _ = old_ext4
    ours = bmap_xml(image, tmp_path / "ours.bmap")
    theirs = bmaptool_create(image, tmp_path / "create.bmap")
    blocks = image.stat().st_size // BLOCK
    free = dumpe2fs_free_blocks(image)
    assert len(free) > blocks // 2  # the old data fills them
    assert block_set(listed(ours)) == set(range(blocks)) - free
    # bmaptool's own map lists the old data too: nearly every block.
    mine, its = int(header(ours, "MappedBlocksCount")), int(header(theirs, "MappedBlocksCount"))
    assert mine == blocks - len(free)
    assert mine < its - len(free) // 2
    with open(image, "rb") as fh:
        fh.seek(min(free) * BLOCK)
        assert OLD_DATA in fh.read(BLOCK)  # the free blocks do hold old bytes


def test_bmaptool_refuses_a_bad_file_checksum(old_ext4, tmp_path: Path) -> None:
    _need("bmaptool")
    image, _ = old_ext4
    good = bmap_xml(image, tmp_path / "good.bmap")
    target = tmp_path / "target.img"
    ok = subprocess.run(
        ["bmaptool", "copy", "--bmap", str(good), str(image), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    text = good.read_text()
    checksum = header(good, "BmapFileChecksum")
    bad_file = tmp_path / "bad-file.bmap"
    wrong = checksum[:-1] + ("0" if checksum[-1] != "0" else "1")
    bad_file.write_text(text.replace(checksum, wrong))
    first_range = re.search(r'chksum="([0-9a-f]{64})"', text)[1]  # type: ignore[index]
    bad_range = tmp_path / "bad-range.bmap"
    # A range checksum changed and the file checksum made right again: only the range is bad.
    body = text.replace(first_range, "f" * 64).replace(checksum, "0" * 64)
    bad_range.write_text(body.replace("0" * 64, hashlib.sha256(body.encode()).hexdigest(), 1))
    for xml, why in ((bad_file, "checksum mismatch for bmap file"), (bad_range, "mismatch")):
        proc = subprocess.run(
            ["bmaptool", "copy", "--bmap", str(xml), str(image), str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode != 0 and why in proc.stderr, proc.stderr


def test_flash_old_data_ext4(old_ext4, tmp_path: Path, system) -> None:
    image, tree = old_ext4
    xml = bmap_xml(image, tmp_path / "ours.bmap")
    target = tmp_path / "target.img"
    flash(image, xml, target, system)
    check_blocks(image, target, xml)
    size = image.stat().st_size
    check_fsck(system, target, 0, size, "e2fsck")
    check_mounted(system, target, 0, size, "ext4", tree)


def test_flash_gpt_disk(gpt_disk, tmp_path: Path, system) -> None:
    _need("fsck.fat")
    disk, ext_tree, esp_tree = gpt_disk
    xml = bmap_xml(disk, tmp_path / "ours.bmap")
    target = tmp_path / "target.img"
    flash(disk, xml, target, system)
    check_blocks(disk, target, xml)
    blocks = block_set(listed(xml))
    # The gap after the GPT entries is kept (a boot loader may live there); the holes before
    # the backup GPT are not listed.
    assert set(range(34 * 512 // BLOCK, ESP_OFFSET // BLOCK)) <= blocks
    with open(target, "rb") as fh:
        fh.seek(ESP_OFFSET - BLOCK)
        assert fh.read(BLOCK) == _pattern(GAP_BYTES, ESP_OFFSET - 34 * 512)[-BLOCK:]
    ext_size = disk.stat().st_size - EXT_OFFSET - MiB
    tail = (EXT_OFFSET + ext_size) // BLOCK
    assert not set(range(tail, tail + 200)) & blocks
    check_fsck(system, target, ESP_OFFSET, ESP_SIZE, "fsck.fat")
    check_fsck(system, target, EXT_OFFSET, ext_size, "e2fsck")
    check_mounted(system, target, ESP_OFFSET, ESP_SIZE, "vfat", esp_tree)
    check_mounted(system, target, EXT_OFFSET, ext_size, "ext4", ext_tree)
    theirs = bmaptool_create(disk, tmp_path / "create.bmap")
    assert int(header(xml, "MappedBlocksCount")) < int(header(theirs, "MappedBlocksCount"))


def test_flash_xfs(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, system) -> None:
    _need("mkfs.xfs", "xfs_repair")
    image = xfs_image("xfs_small", cache_root_of(tmp_path_factory, "xfs-images"))
    xml = bmap_xml(image, tmp_path / "ours.bmap")
    target = tmp_path / "target.img"
    flash(image, xml, target, system)
    check_blocks(image, target, xml)
    size = image.stat().st_size
    check_fsck(system, target, 0, size, "xfs_repair")
    # The protofile's sources, rebuilt as tests.xfs_images made them.
    tree = tmp_path / "xfs-tree"
    tree.mkdir()
    for i in range(40):
        data = random.Random(f"small{i}").randbytes(100 + 3000 * (i % 7))
        (tree / f"file{i:03d}").write_bytes(data)
    check_mounted(system, target, 0, size, "xfs", tree)


# --------------------------------------------------------------------------------------------
# the command line


def test_cli_refusals(old_ext4, tmp_path: Path) -> None:
    image, _ = old_ext4
    runner = CliRunner()
    two = runner.invoke(main, ["map", str(image), str(image), "-f", "bmaptool", "-o", "-"])
    assert two.exit_code == ExitCode.USAGE and "one raw image" in two.output
    host = runner.invoke(main, ["map", str(image), "-f", "bmaptool", "--host", "-o", "-"])
    assert host.exit_code == ExitCode.USAGE
    lone = runner.invoke(main, ["map", str(image), "--bmaptool-keep-free", "-o", "-"])
    assert lone.exit_code == ExitCode.USAGE
    if shutil.which("qemu-img"):
        qcow2 = tmp_path / "img.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", image, qcow2], check=True)
        refused = runner.invoke(main, ["map", str(qcow2), "-f", "bmaptool", "-o", "-"])
        assert refused.exit_code == ExitCode.USAGE and "qcow2" in refused.output
        assert len(refused.output.strip().splitlines()) == 1


def test_cli_stdout_and_default_name(old_ext4, tmp_path: Path) -> None:
    image, _ = old_ext4
    copy = tmp_path / "disk.img"
    shutil.copyfile(image, copy)
    runner = CliRunner()
    out = runner.invoke(main, ["map", str(copy), "-f", "bmaptool", "-o", "-"])
    assert out.exit_code == 0
    assert out.stdout.startswith('<?xml version="1.0" ?>')
    default = runner.invoke(main, ["map", str(copy), "-f", "bmaptool"])
    assert default.exit_code == 0
    written = tmp_path / "disk.img.bmap"  # where bmaptool copy looks for it
    assert written.read_text() == out.stdout
    # A text map of bmap's own at that name is not replaced unasked.
    assert runner.invoke(main, ["map", str(copy), "-o", str(written)]).exit_code == 0
    kept = runner.invoke(main, ["map", str(copy), "-f", "bmaptool"])
    assert kept.exit_code == ExitCode.USAGE and "-o" in kept.output
    assert written.read_text().startswith("# bmap-format")
