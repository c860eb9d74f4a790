"""Damaged and hostile ext filesystems: a finding for the damaged object, the map goes on.

Each test copies a real image (the cached originals are never written), damages the copy
with debugfs or by patching the bytes debugfs locates, and maps it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.errors import BmapError, Severity
from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.store.mapfile import dumps_map
from tests import ext_truth as T
from tests.conftest import tool
from tests.ext_images import (  # noqa: F401 - pytest fixtures
    ext_image_factory_fixture,
    ext_images_cache_fixture,
)


def copy_of(ext_image_factory, name: str, tmp_path: Path) -> Path:
    target = tmp_path / f"{name}.img"
    shutil.copyfile(ext_image_factory(name), target)
    return target


def mapping(path: Path):
    with Image(path) as image:
        bmap = map_images([image])
    return bmap, bmap.to_dataframe()


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def inode_offset(path: Path, file: str) -> int:
    out = subprocess.run(
        [tool("debugfs"), "-R", f"imap {file}", str(path)], capture_output=True, text=True
    ).stdout
    block = int(out.split("located at block ")[1].split(",")[0])
    within = int(out.split("offset ")[1].split()[0], 16)
    bs = T.dumpe2fs_layout(path)["block_size"]
    return block * bs + within


def files(frame):
    sel = frame[frame["type"].isin(["f", "d"])]
    return sorted(zip(sel["path"], sel["start"], sel["end"]))


def test_zeroed_primary_superblock_uses_the_backup(ext_image_factory, tmp_path):
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    _, good = mapping(path)
    patch(path, 1024, bytes(1024))
    bmap, frame = mapping(path)
    assert files(frame) == files(good)
    notes = [f for f in bmap.findings if "backup" in f.message]
    assert notes and notes[0].severity == Severity.WARNING


def test_extent_outside_the_filesystem_is_a_finding(ext_image_factory, tmp_path):
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    at = inode_offset(path, "/data/medium.bin")
    # i_block starts 40 bytes into the inode: header (12 bytes), then the first leaf extent
    # (logical u32, length u16, start_hi u16, start_lo u32).
    patch(path, at + 40 + 12 + 6, struct.pack("<HI", 0x7FFF, 0xFFFFFF00))
    bmap, frame = mapping(path)
    assert "/data/medium.bin" not in set(frame["path"])
    assert any("outside the filesystem" in f.message for f in bmap.findings)
    assert "/multi.bin" in set(frame["path"])  # the rest is still mapped


def test_directory_loop_is_walked_once(ext_image_factory, tmp_path):
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    subprocess.run(
        [tool("debugfs"), "-w", "-R", "link /data /data/loop", str(path)],
        capture_output=True,
        check=True,
    )
    bmap, frame = mapping(path)
    assert any("second name" in f.message for f in bmap.findings)
    assert "/data/loop" in set(frame["path"])
    assert not any(p.startswith("/data/loop/") for p in frame["path"])


def test_bad_rec_len_skips_the_rest_of_the_block(ext_image_factory, tmp_path):
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    st_root = T.debugfs_stat(path, "/")
    block = st_root["data_extents"][0].physical
    bs = T.dumpe2fs_layout(path)["block_size"]
    # The first entry is "."; give it a rec_len that runs past the block.
    patch(path, block * bs + 4, struct.pack("<H", 0xFFF0))
    bmap, frame = mapping(path)
    assert any("rec_len" in f.message for f in bmap.findings)
    orphans = frame["path"].str.startswith("/$OrphanFiles/")
    assert list(frame[(frame["type"] == "d") & ~orphans]["path"]) == ["/"]
    assert orphans.any()  # what the root no longer names is still accounted for


def test_superblock_with_absurd_counts_falls_back(ext_image_factory, tmp_path):
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    patch(path, 1024 + 0x28, struct.pack("<I", 0xFFFFFFF0))  # s_inodes_per_group
    bmap, frame = mapping(path)
    assert any("inodes per group" in f.message for f in bmap.findings)
    assert (frame["type"] == "f").any()


@pytest.fixture(scope="module")
def small_ext(tmp_path_factory) -> bytes:
    """A 2 MiB ext4 with 1 KiB blocks and a few files: small enough to fuzz."""
    folder = tmp_path_factory.mktemp("fuzz")
    src = folder / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"f{i}").write_bytes(bytes([i]) * (700 * i))
    (src / "long").symlink_to("x" * 100)
    image = folder / "small.img"
    subprocess.run(
        [
            tool("mke2fs"),
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "1024",
            "-N",
            "64",
            "-d",
            str(src),
            str(image),
            "2M",
        ],
        check=True,
        capture_output=True,
    )
    return image.read_bytes()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.integers(0, 96 * 1024), st.integers(0, 255)), min_size=1, max_size=40))
def test_mutated_metadata_never_crashes(small_ext, changes):
    """Bytes changed in the first 96 KiB (superblock, descriptors, bitmaps, inode table,
    directories, extent roots): a map with findings, or bmap's own error."""
    data = bytearray(small_ext)
    for position, value in changes:
        data[position] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.img"
        path.write_bytes(bytes(data))
        try:
            bmap, _ = mapping(path)
        except BmapError:
            return
        dumps_map(bmap)
        assert len(bmap) >= 1


def test_superblock_claiming_millions_of_groups_is_refused(ext_image_factory, tmp_path):
    """blocks_count 2**32 - 1 with 8 blocks per group: the walk over groups stays bounded."""
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    patch(path, 1024 + 0x04, struct.pack("<I", 0xFFFFFFFF))  # s_blocks_count_lo
    patch(path, 1024 + 0x20, struct.pack("<I", 8))  # s_blocks_per_group
    bmap, frame = mapping(path)
    assert any("would not fit the device" in f.message for f in bmap.findings)
    assert (frame["type"] == "f").any()  # the backup superblock maps the files


def test_clusters_per_group_is_ignored_without_bigalloc(ext_image_factory, tmp_path):
    """s_clusters_per_group (0x24) means nothing without bigalloc: a hostile value there
    must not reach the block bitmaps (it made a ValueError past one bitmap block's bits)."""
    clean = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    _, want = mapping(clean)
    path = tmp_path / "hostile.img"
    shutil.copyfile(clean, path)
    patch(path, 1024 + 0x24, struct.pack("<I", 0x7FFFFFFF))
    _, frame = mapping(path)
    assert frame[["start", "end", "type", "path"]].equals(want[["start", "end", "type", "path"]])


def test_bigalloc_clusters_per_group_must_match_its_blocks(ext_image_factory, tmp_path):
    """The image has one group, so no backup superblock: the filesystem is not mapped, a
    finding says why, and the disk is still covered (as unmapped)."""
    path = copy_of(ext_image_factory, "ext4_bigalloc", tmp_path)
    patch(path, 1024 + 0x24, struct.pack("<I", 1 << 20))  # s_clusters_per_group
    bmap, frame = mapping(path)
    assert any("1048576 clusters per group" in f.message for f in bmap.findings)
    inner = frame[frame["type"] != "v"]
    assert inner[["type", "kind", "start", "end"]].values.tolist() == [
        ["u", "unmapped", 0, path.stat().st_size]
    ]


def _entry_offset(path: Path, directory: str, name: bytes) -> int:
    """Byte offset in the image of the directory entry ``name`` in ``directory``."""
    bs = T.dumpe2fs_layout(path)["block_size"]
    with open(path, "rb") as fh:
        for extent in T.debugfs_stat(path, directory)["data_extents"]:
            for i in range(extent.length):
                at = (extent.physical + i) * bs
                fh.seek(at)
                block = fh.read(bs)
                pos = 0
                while pos + 8 <= bs:
                    rec_len, name_len = struct.unpack_from("<HB", block, pos + 4)
                    if block[pos + 8 : pos + 8 + name_len] == name:
                        return at + pos
                    if rec_len < 8:
                        break
                    pos += rec_len
    raise AssertionError(f"no entry {name!r} in {directory}")


def test_names_holding_nul_or_slash_keep_every_other_name_right(ext_image_factory, tmp_path):
    """No kernel writes a NUL or "/" into a name, but a hostile image can: the name is kept
    as stored, the names after it still belong to their own inodes, and a finding says so."""
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    _, good = mapping(path)
    patch(path, _entry_offset(path, "/", b"data") + 8, b"d\0t")
    patch(path, _entry_offset(path, "/", b"multi.bin") + 8, b"mu/ti")
    bmap, frame = mapping(path)

    def renamed(p: str) -> str:
        p = p.replace("/data", "/d\0ta", 1) if p == "/data" or p.startswith("/data/") else p
        return "/mu/ti.bin" if p == "/multi.bin" else p

    want = sorted((renamed(p), s, e) for p, s, e in files(good))
    assert files(frame) == want
    assert any("NUL or '/'" in f.message and "2 directory" in f.message for f in bmap.findings)
    text = dumps_map(bmap)
    assert "/d\\x00ta/" in text


def test_an_inode_table_outside_the_filesystem_is_a_finding(ext_image_factory, tmp_path):
    """Damage found in the filesystem's own tables (here a group descriptor whose inode table
    lies past the end) is reported, not only damage found in files and directories: the
    inodes of that table cannot be read, and the map must say so."""
    path = copy_of(ext_image_factory, "ext4_1k", tmp_path)
    layout = T.dumpe2fs_layout(path)
    assert len(layout["groups"]) > 1
    subprocess.run(
        [tool("debugfs"), "-w", "-R", "set_bg 1 inode_table 99999999", str(path)],
        capture_output=True,
        check=True,
    )
    bmap, _ = mapping(path)
    damaged = [f for f in bmap.findings if f.source == "/dev/sda inode-table"]
    assert len(damaged) == 1, bmap.findings
    assert damaged[0].severity == Severity.ERROR
    assert "blocks 99999999+" in damaged[0].message
    assert "outside the fs" in damaged[0].message
    assert damaged[0].offset == 99999999 * layout["block_size"]
