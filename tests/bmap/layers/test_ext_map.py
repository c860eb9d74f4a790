"""The ext2/3/4 map against truth from outside bmap.

- every file and directory range equals the kernel's FIEMAP on a read-only loop mount;
- every static structure equals dumpe2fs; free space equals dumpe2fs's free blocks;
- extent-tree nodes, indirect blocks and xattr blocks equal debugfs ``stat``;
- the journal, quota inodes and the orphan file equal debugfs; the MMP block equals dumpe2fs;
- the lines nest, and the lines below the disk cover every byte of it.

The images come from mke2fs, e2fsck and a read-write loop mount (tests/ext_images.py).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.model.escape import name_to_bytes
from bmap.model.intervals import union
from bmap.store.mapfile import read_map, write_map
from tests import ext_truth as T
from tests.ext_images import (  # noqa: F401 - pytest fixtures
    INTERESTING_PATHS,
    ext4_in_gpt_image_fixture,
    ext_image_factory_fixture,
    ext_images_cache_fixture,
)

IMAGES = [
    "ext4_tree",
    "ext4_1k",
    "ext2_1k_tind",
    "ext3_journal",
    "ext4_meta_bg",
    "ext4_bigalloc",
    "ext4_inline",
    "ext4_misc",
]


@pytest.fixture(scope="module")
def mapped(ext_image_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            path = ext_image_factory(name)
            with Image(path) as image:
                bmap = map_images([image])
            cache[name] = (path, bmap, bmap.to_dataframe())
        return cache[name]

    return get


def runs_of(frame, types, kinds=None):
    """``{path bytes: [(file_offset, start, length)]}`` of the chosen lines."""
    sel = frame[frame["type"].isin(types)]
    if kinds is not None:
        sel = sel[sel["kind"].isin(kinds)]
    result = defaultdict(list)
    for path, fo, start, end in zip(sel["path"], sel["file_offset"], sel["start"], sel["end"]):
        result[name_to_bytes(path)].append(
            (0 if fo is None else int(fo), int(start), int(end - start))
        )
    return result


def coalesce(runs):
    out = []
    for lo, ph, ln in sorted(runs):
        if out and out[-1][0] + out[-1][2] == lo and out[-1][1] + out[-1][2] == ph:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + ln)
        else:
            out.append((lo, ph, ln))
    return out


def ranges(frame, kind, type_="m", path=None):
    sel = frame[(frame["type"] == type_) & (frame["kind"] == kind)]
    if path is not None:
        sel = sel[sel["path"] == path]
    s, e = union(sel["start"].to_numpy(), sel["end"].to_numpy())
    return list(zip(s.tolist(), e.tolist()))


def merged(pairs):
    if not pairs:
        return []
    s, e = union(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
    return list(zip(s.tolist(), e.tolist()))


@pytest.mark.parametrize("name", IMAGES)
def test_files_and_directories_equal_fiemap(mapped, name):
    path, _bmap, frame = mapped(name)
    truth = T.fiemap(path)
    ours = runs_of(frame, ["f", "d"])
    checked = 0
    for file, extents in truth.items():
        inline = [e for e in extents if "inline" in e.flags]
        if inline:
            # Inline data: FIEMAP points into the inode; bmap names the inode's record.
            (line,) = ours[file]
            assert line[1] <= inline[0].physical < line[1] + line[2], file
            continue
        want = coalesce((e.logical, e.physical, e.length) for e in extents)
        assert coalesce(ours.get(file, [])) == want, file
        checked += 1
    assert checked > 5
    orphans = {p for p in ours if p.startswith(b"/$OrphanFiles/")}
    assert set(ours) - orphans <= set(truth), "bmap names files the mount does not have"
    assert not orphans


@pytest.mark.parametrize("name", IMAGES)
def test_static_structures_equal_dumpe2fs(mapped, name):
    path, _bmap, frame = mapped(name)
    layout = T.dumpe2fs_layout(path)
    bs = layout["block_size"]
    expected = defaultdict(list)
    for g in layout["groups"]:
        for key, kind in [
            ("superblock", "superblock"),
            ("group_descriptors", "group-descriptors"),
            ("reserved_gdt", "reserved-gdt"),
            ("block_bitmap", "block-bitmap"),
            ("inode_bitmap", "inode-bitmap"),
            ("inode_table", "inode-table"),
        ]:
            if g[key] is not None:
                expected[kind].append(g[key])
    got_sb = ranges(frame, "superblock") + ranges(frame, "superblock-backup")
    if bs > 1024:
        # dumpe2fs gives block 0 as the superblock; bmap splits off the boot block's 1 KiB.
        assert ranges(frame, "boot-block") == [(0, 1024)]
        got_sb = [(0, bs) if r == (1024, bs) else r for r in got_sb]
    else:
        assert ranges(frame, "boot-block") == [(0, 1024)]
    assert merged(got_sb) == merged(expected["superblock"])
    for kind in [
        "group-descriptors",
        "reserved-gdt",
        "block-bitmap",
        "inode-bitmap",
        "inode-table",
    ]:
        assert ranges(frame, kind) == merged(expected[kind]), kind
    free = [r for g in layout["groups"] for r in g["free_blocks"]]
    assert ranges(frame, "unallocated", "u") == merged(free)


@pytest.mark.parametrize("name", IMAGES)
def test_per_object_metadata_equals_debugfs(mapped, name):
    path, _bmap, frame = mapped(name)
    bs = T.dumpe2fs_layout(path)["block_size"]
    files = list(T.fiemap(path))
    stats = T.debugfs_stat_all(path, files)
    seen = defaultdict(int)
    for file in files:
        st = stats[file]
        text = file.decode("utf-8", "surrogateescape")
        for kind, blocks in [
            ("extent-tree", st["etb_blocks"]),
            ("indirect-block", [b for _, b in st["ind_blocks"]]),
            ("xattr-block", [st["file_acl"]] if st["file_acl"] else []),
        ]:
            want = merged([(b * bs, (b + 1) * bs) for b in blocks])
            assert ranges(frame, kind, path=text) == want, (file, kind)
            seen[kind] += bool(want)
    expected_kinds = {
        "ext4_tree": {"extent-tree", "xattr-block"},
        "ext4_1k": {"extent-tree"},
        "ext2_1k_tind": {"indirect-block", "xattr-block"},
        "ext3_journal": {"indirect-block"},
    }.get(name, set())
    assert expected_kinds <= {k for k, n in seen.items() if n}


def test_tind_file_has_all_three_levels(mapped):
    path, _bmap, frame = mapped("ext2_1k_tind")
    st = T.debugfs_stat(
        path,
        INTERESTING_PATHS["ext2_1k_tind"].get("tind_file", b"/tind.bin"),
    )
    assert {level for level, _ in st["ind_blocks"]} == {"IND", "DIND", "TIND"}
    assert len(ranges(frame, "indirect-block", path="/tind.bin")) >= 1


@pytest.mark.parametrize("name", ["ext4_tree", "ext3_journal", "ext4_misc"])
def test_special_inodes_equal_debugfs(mapped, name):
    path, _bmap, frame = mapped(name)
    bs = T.dumpe2fs_layout(path)["block_size"]
    special = T.special_inodes(path)

    def blocks_of(inode):
        st = T.debugfs_stat(path, inode)
        spans = [(e.physical * bs, (e.physical + e.length) * bs) for e in st["data_extents"]]
        spans += [(b * bs, (b + 1) * bs) for b in st["etb_blocks"]]
        spans += [(b * bs, (b + 1) * bs) for _, b in st["ind_blocks"]]
        return merged(spans)

    assert ranges(frame, "journal") == blocks_of(special["journal"])
    quota = [special[k] for k in ("user_quota", "group_quota", "project_quota") if special[k]]
    if quota:
        assert ranges(frame, "quota") == merged([r for q in quota for r in blocks_of(q)])
    if special["orphan_file"]:
        assert ranges(frame, "orphan-file") == blocks_of(special["orphan_file"])
    if special["resize"]:
        dind = [b for level, b in T.debugfs_stat(path, 7)["ind_blocks"] if level == "DIND"]
        assert ranges(frame, "resize-inode") == [(b * bs, (b + 1) * bs) for b in dind]
    if special["mmp_block"]:
        b = special["mmp_block"]
        assert ranges(frame, "mmp") == [(b * bs, (b + 1) * bs)]


def assert_nested_and_covering(frame, disk_size, disk=1):
    """Lines nest (any two that overlap, one contains the other) and the lines below the disk
    line cover every byte of it: the innermost lines explain each byte exactly once."""
    sel = frame[frame["disk"] == disk]
    lines = sorted(zip(sel["start"].tolist(), (-sel["end"]).tolist()))
    stack: list[int] = []
    for start, neg_end in lines:
        end = -neg_end
        while stack and stack[-1] <= start:
            stack.pop()
        assert not stack or end <= stack[-1], f"line [{start:#x}, {end:#x}) crosses its container"
        stack.append(end)
    below = sel[sel["type"] != "v"]
    assert merged(list(zip(below["start"].tolist(), below["end"].tolist()))) == [(0, disk_size)]


@pytest.mark.parametrize("name", IMAGES)
def test_lines_nest_and_cover_the_disk(mapped, name):
    path, bmap, frame = mapped(name)
    assert_nested_and_covering(frame, path.stat().st_size)
    assert not [f for f in bmap.findings if f.severity >= 1], bmap.findings
    # e2fsck finds these images clean: every block in use belongs to something bmap names.
    assert not (frame["kind"] == "unreferenced").any()


def test_names_are_exact_and_hard_links_repeat(mapped, tmp_path):
    path, bmap, frame = mapped("ext4_tree")
    paths = INTERESTING_PATHS["ext4_tree"]
    hard = [paths["hard_link_1"], paths["hard_link_2"], paths["hard_link_3"]]
    ours = runs_of(frame, ["f"])
    assert ours[hard[0]] and ours[hard[0]] == ours[hard[1]] == ours[hard[2]]
    for role in ("fifo", "char_device", "block_device", "fast_symlink"):
        assert name_to_bytes(paths[role].decode("utf-8", "surrogateescape")) not in ours
        assert not (frame["path"] == paths[role].decode("utf-8", "surrogateescape")).any()
    slow = paths["slow_symlink"].decode()
    assert len(ranges(frame, "symlink", path=slow)) == 1
    truth = set(T.fiemap(path))
    awkward = [p for p in truth if any(c in p for c in (b"\n", b"\x1b", b"\xff", b" "))]
    assert awkward, "the image has awkward names"
    for fmt in ("bmap", "csv", "jsonl"):
        out = tmp_path / f"map.{fmt}"
        write_map(bmap, out, fmt)
        back = {name_to_bytes(p) for p in read_map(out)["path"]}
        assert set(awkward) <= back, fmt


def test_filesystem_in_a_gpt_partition(ext4_in_gpt_image):
    disk = ext4_in_gpt_image
    with Image(disk.path) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    truth = T.fiemap(disk.path, disk.offset)
    ours = runs_of(frame[frame["device"] == f"/dev/sda{disk.partition}"], ["f", "d"])
    checked = 0
    for file, extents in truth.items():
        if any("inline" in e.flags for e in extents):
            continue
        want = coalesce((e.logical, e.physical + disk.offset, e.length) for e in extents)
        assert coalesce(ours.get(file, [])) == want, file
        checked += 1
    assert checked > 100
    assert_nested_and_covering(frame, disk.path.stat().st_size)


@pytest.mark.parametrize("name", ["ext4_tree", "ext2_1k_tind", "ext4_bigalloc"])
def test_info_shows_what_dumpe2fs_says(ext_image_factory, name):
    import json

    from click.testing import CliRunner

    from bmap.cli import main

    path = ext_image_factory(name)
    header = T.dumpe2fs_header(path)
    result = CliRunner().invoke(main, ["info", "--json", str(path)])
    fs = json.loads(result.stdout)["disks"][0]["filesystem"]
    assert fs["blocks"] == int(header["Block count"])
    assert fs["free_blocks"] == int(header["Free blocks"])
    assert fs["inodes"] == int(header["Inode count"])
    assert fs["free_inodes"] == int(header["Free inodes"])
    assert fs["block_size"] == int(header["Block size"])
    assert fs["uuid"] == header["Filesystem UUID"]
    assert set(fs["features"]) == set(header["Filesystem features"].split())
    text = CliRunner().invoke(main, ["info", str(path)]).stdout
    assert f"{fs['type']}: {fs['blocks']} blocks of {fs['block_size']} bytes" in text
