"""The ext test images and the outside truth about them agree with each other.

These tests check the fixtures, not bmap: that each image has what it was built to have
(an htree directory, a TIND block, a depth-1 extent tree, ...) and that the kernel's FIEMAP
and e2fsprogs tell the same story about it. The ext parser's tests rely on both.

Tests marked ``root`` mount images (FIEMAP, names) or need ``ext4_tree``, which is built
on a read-write loop mount; without root they skip and say so.
"""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import ext_truth as truth
from tests.ext_images import (
    AWKWARD_NAMES,
    BUILDERS,
    FAST_LINK_TARGET,
    INTERESTING_PATHS,
    SLOW_LINK_TARGET,
    DiskImage,
    ext4_in_gpt_image_fixture,  # noqa: F401  (fixture ext4_in_gpt_image)
    ext_image_factory_fixture,  # noqa: F401  (fixture ext_image_factory)
    ext_images_cache_fixture,  # noqa: F401  (fixture ext_images_cache)
    tool_path,
)

NEEDS_ROOT_TO_BUILD = {"ext4_tree"}


class ImageTruth:
    """Everything the tests ask about one image, each part computed once, when first asked."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    @functools.cached_property
    def fiemap(self) -> dict[bytes, list[truth.Extent]]:
        return truth.fiemap(self.path)

    @functools.cached_property
    def names(self) -> dict[int, list[bytes]]:
        return truth.ncheck_all(self.path)

    @functools.cached_property
    def inode(self) -> dict[bytes, int]:
        return {p: ino for ino, paths in self.names.items() for p in paths}

    @functools.cached_property
    def stat(self) -> dict[Any, dict[str, Any]]:
        """debugfs stat of every inode that has a name (needs the mount for the names)."""
        return truth.debugfs_stat_all(self.path, sorted(self.names))

    @functools.cached_property
    def layout(self) -> dict[str, Any]:
        return truth.dumpe2fs_layout(self.path)

    def path_of(self, role: str) -> bytes:
        return INTERESTING_PATHS[self.name][role]

    @functools.cache  # noqa: B019  (one object per image and session)
    def stat_of(self, role: str) -> dict[str, Any]:
        """debugfs stat of an interesting path by its role (no mount: the paths are plain)."""
        return truth.debugfs_stat(self.path, self.path_of(role))


@pytest.fixture(scope="session")
def image_truth(ext_image_factory) -> Any:
    cache: dict[str, ImageTruth] = {}

    def get(name: str) -> ImageTruth:
        if name not in cache:
            cache[name] = ImageTruth(name, ext_image_factory(name))
        return cache[name]

    return get


def _root_if_needed(names):
    return [
        pytest.param(n, marks=pytest.mark.root) if n in NEEDS_ROOT_TO_BUILD else n for n in names
    ]


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _root_if_needed(sorted(BUILDERS)))
def test_image_is_clean_for_e2fsck(ext_image_factory, name):
    clean, report = truth.e2fsck_clean(ext_image_factory(name))
    assert clean, report


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fiemap_equals_debugfs_extents(image_truth, name):
    """Every regular file's and directory's FIEMAP runs are debugfs' block runs, in bytes."""
    info = image_truth(name)
    bs = info.layout["block_size"]
    compared = 0
    for path, extents in info.fiemap.items():
        st = info.stat[info.inode[path]]
        if st["flags"] & truth.EXT4_INLINE_DATA_FL:
            assert all("inline" in e.flags for e in extents), path
            continue
        assert truth.fiemap_runs(extents) == truth.block_runs_to_bytes(st["data_extents"], bs), path
        compared += 1
    assert compared > 10


@pytest.mark.root
def test_ext4_tree_has_what_it_was_built_with(image_truth):
    info = image_truth("ext4_tree")
    assert sum(len(p) for p in info.names.values()) > 3300
    assert info.stat_of("htree_dir")["flags"] & truth.EXT4_INDEX_FL
    assert truth.htree_dump(info.path, info.path_of("htree_dir"))["indexed"]
    assert len([p for p in info.inode if p.startswith(b"/bigdir/")]) == 2999  # one deleted

    big = info.stat_of("depth1_extent_file")
    assert big["etb_nodes"] and all(level == 0 for level, _ in big["etb_nodes"])
    assert len(big["data_extents"]) > 4  # more than the inode's four slots: depth 1
    out = subprocess.run(
        [tool_path("debugfs"), "-R", "dump_extents -n /frag/big4m.bin", str(info.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " 0/ 1 " in out  # an index level above the leaves

    uninit = info.fiemap[info.path_of("uninit_file")]
    assert uninit and all("unwritten" in e.flags for e in uninit)
    mixed = info.fiemap[info.path_of("mixed_uninit_file")]
    assert ["unwritten" in e.flags for e in mixed] == [True, False, True]
    assert [e.uninit for e in info.stat_of("mixed_uninit_file")["data_extents"]] == [
        True,
        False,
        True,
    ]
    sparse = info.fiemap[info.path_of("sparse_file")]
    assert [e.logical for e in sparse] == [0, 10 << 20]

    xattr = info.stat_of("xattr_block_file")
    assert xattr["file_acl"] and "user.big" in xattr["xattrs"]
    assert info.stat_of("xattr_block_dir")["file_acl"]
    assert info.stat_of("xattr_inode_file")["file_acl"] == 0

    slow = info.stat_of("slow_symlink")
    assert slow["data_extents"] and slow["size"] == len(SLOW_LINK_TARGET)
    assert slow["fast_link"] is None
    assert info.stat_of("fast_symlink")["fast_link"] == FAST_LINK_TARGET

    hard = info.names[info.inode[info.path_of("hard_link_1")]]
    assert sorted(hard) == sorted(info.path_of(f"hard_link_{i}") for i in (1, 2, 3))
    for name in AWKWARD_NAMES:
        assert b"/names/" + name in info.inode, name
    # debugfs stat by a path its command parser cannot take: resolved through the mount.
    awkward = truth.debugfs_stat(info.path, b"/names/new\nline")
    assert awkward["inode"] == info.inode[b"/names/new\nline"]


@pytest.mark.root
def test_ext4_tree_file_types(ext_image_factory):
    kinds = truth.file_types(ext_image_factory("ext4_tree"))
    paths = INTERESTING_PATHS["ext4_tree"]
    assert kinds[paths["fifo"]] == "fifo"
    assert kinds[paths["char_device"]] == "chr"
    assert kinds[paths["block_device"]] == "blk"
    assert kinds[paths["socket"]] == "sock"
    assert kinds[paths["fast_symlink"]] == kinds[paths["slow_symlink"]] == "lnk"
    assert kinds[paths["empty_file"]] == "reg"


@pytest.mark.root
def test_icheck_attributes_metadata_blocks_to_their_inode(image_truth):
    info = image_truth("ext4_tree")
    big = info.stat_of("depth1_extent_file")
    xattr = info.stat_of("xattr_block_file")
    table_block = info.layout["groups"][0]["inode_table"][0] // info.layout["block_size"]
    owners = truth.icheck(info.path, [*big["etb_blocks"], xattr["file_acl"], table_block])
    assert [owners[b] for b in big["etb_blocks"]] == [big["inode"]] * len(big["etb_blocks"])
    assert owners[xattr["file_acl"]] == xattr["inode"]
    assert owners[table_block] is None  # static metadata is not attributed


def test_ext2_tind_file_has_single_double_and_triple_indirect_blocks(image_truth):
    info = image_truth("ext2_1k_tind")
    st = info.stat_of("tind_file")
    assert st["block_map"] == "blocks"
    assert {kind for kind, _ in st["ind_blocks"]} == {"IND", "DIND", "TIND"}
    assert st["total_blocks"] == 16 + len(st["ind_blocks"])  # 4 runs of 4 data blocks
    assert max(e.logical for e in st["data_extents"]) * 1024 >= (64 << 20) + (268 << 10)
    assert info.stat_of("xattr_block_file")["file_acl"]
    assert "has_journal" not in info.layout["features"]


def test_ext3_journal_and_block_maps(image_truth):
    info = image_truth("ext3_journal")
    assert info.layout["journal_inode"] == 8
    assert "extent" not in info.layout["features"]
    assert [k for k, _ in info.stat_of("ind_file")["ind_blocks"]] == ["IND"]
    assert [k for k, _ in info.stat_of("dind_file")["ind_blocks"]] == ["DIND", "IND"]
    journal = truth.debugfs_stat(info.path, 8)
    assert journal["data_extents"] and journal["ind_blocks"]


def test_meta_bg_groups_have_single_descriptor_blocks(image_truth):
    layout = image_truth("ext4_meta_bg").layout
    assert "meta_bg" in layout["features"] and "resize_inode" not in layout["features"]
    bs, groups = layout["block_size"], layout["groups"]
    per_block = bs // int(layout["header"].get("Group descriptor size", "32"))
    assert len(groups) >= 3 * per_block  # at least three meta-groups
    with_desc = [g["group"] for g in groups if g["group_descriptors"]]
    # meta_bg: the first, second and last group of each meta-group hold one descriptor block.
    expected = sorted(
        {
            m + i
            for m in range(0, len(groups), per_block)
            for i in (0, 1, per_block - 1)
            if m + i < len(groups)
        }
    )
    assert with_desc == expected
    for g in groups:
        assert g["reserved_gdt"] is None
        if g["group_descriptors"]:
            start, end = g["group_descriptors"]
            assert end - start == bs


@pytest.mark.parametrize(
    "name", _root_if_needed(["ext4_tree", "ext4_bigalloc", "ext4_misc", "ext2_1k_tind"])
)
def test_layout_groups_tile_the_filesystem(image_truth, name):
    layout = image_truth(name).layout
    bs = layout["block_size"]
    groups = layout["groups"]
    assert groups[0]["range"][0] == layout["first_data_block"] * bs
    assert groups[-1]["range"][1] == layout["blocks_count"] * bs
    for prev, nxt in itertools.pairwise(groups):
        assert prev["range"][1] == nxt["range"][0]
    assert groups[0]["superblock_kind"] == "primary"
    assert groups[0]["superblock"] == (
        layout["first_data_block"] * bs,
        (layout["first_data_block"] + 1) * bs,
    )
    for g in groups:
        for lo, hi in g["free_blocks"]:
            assert g["range"][0] <= lo < hi <= g["range"][1], g["group"]


def test_sparse_super2_has_backups_only_in_two_groups(image_truth):
    layout = image_truth("ext4_misc").layout
    assert "sparse_super2" in layout["features"]
    backups = [g["group"] for g in layout["groups"] if g["superblock_kind"] == "backup"]
    assert len(layout["groups"]) > 3
    assert backups == [1, len(layout["groups"]) - 1]


def test_special_inodes(image_truth):
    misc = image_truth("ext4_misc")
    special = truth.special_inodes(misc.path)
    assert special["journal"] == 8
    assert special["user_quota"] == 3 and special["group_quota"] == 4
    assert special["orphan_file"] == 12
    assert special["mmp_block"]
    for ino in (3, 4, 12, 8):
        assert truth.debugfs_stat(misc.path, ino)["data_extents"]
    assert truth.icheck(misc.path, [special["mmp_block"]]) == {special["mmp_block"]: None}
    assert truth.special_inodes(image_truth("ext4_meta_bg").path)["resize"] is None
    assert truth.special_inodes(image_truth("ext4_1k").path)["resize"] == 7


@pytest.mark.root
def test_special_inodes_have_no_names(image_truth):
    misc = image_truth("ext4_misc")
    assert not {3, 4, 7, 8, 12} & set(misc.names)


@pytest.mark.root
def test_bigalloc_cluster_file(image_truth):
    info = image_truth("ext4_bigalloc")
    assert info.layout["cluster_size"] == 16384 and info.layout["block_size"] == 4096
    (extent,) = info.fiemap[info.path_of("multi_cluster_file")]
    assert extent.length == 100 << 10  # FIEMAP stops at the last block, not the cluster end
    assert extent.physical % 16384 == 0
    multi = info.stat_of("multi_extent_file")
    # 6 runs of 5 blocks, each run two logical clusters; mke2fs put the extent-tree block in
    # the cluster after one run's first cluster, so that run goes on one cluster later.
    assert multi["etb_blocks"] and len(multi["data_extents"]) >= 6
    assert sum(e.length for e in multi["data_extents"]) == 6 * 5


@pytest.mark.root
def test_inline_data_lives_in_the_inode(image_truth):
    info = image_truth("ext4_inline")
    roles = ["inline_tiny_file", "inline_small_file", "inline_dir", "inline_empty_dir"]
    inodes = {role: info.inode[info.path_of(role)] for role in roles}
    where = truth.inode_locations(info.path, inodes.values())
    for role, ino in inodes.items():
        st = info.stat[ino]
        assert st["flags"] & truth.EXT4_INLINE_DATA_FL, role
        assert not st["data_extents"], role
        (extent,) = info.fiemap[info.path_of(role)]
        assert {"inline", "not_aligned", "last"} <= extent.flags
        assert extent.physical == where[ino] + 40  # i_block
    assert info.stat[inodes["inline_tiny_file"]]["inline_size"] == 60
    assert info.stat[inodes["inline_small_file"]]["inline_size"] == 120
    assert info.fiemap[info.path_of("inline_small_file")][0].length == 120
    assert info.fiemap[info.path_of("inline_empty_file")] == []
    for role in ("normal_file", "normal_dir", "block_dir"):
        assert not info.stat_of(role)["flags"] & truth.EXT4_INLINE_DATA_FL


@pytest.mark.root
def test_ext4_in_gpt_partition_holds_the_tree(image_truth, ext4_in_gpt_image: DiskImage):
    disk = ext4_in_gpt_image
    table = json.loads(
        subprocess.run(
            [tool_path("sfdisk"), "--json", str(disk.path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["partitiontable"]
    part = table["partitions"][1]
    assert part["start"] * table["sectorsize"] == disk.offset
    assert part["size"] * table["sectorsize"] == disk.size
    tree = image_truth("ext4_tree")
    assert truth.fiemap(disk.path, disk.offset) == tree.fiemap
    assert truth.dumpe2fs_layout(disk.path, disk.offset)["groups"] == tree.layout["groups"]
    mixed = truth.debugfs_stat(disk.path, b"/mixed.bin", disk.offset)
    assert mixed["data_extents"] == tree.stat_of("mixed_uninit_file")["data_extents"]
    clean, report = truth.e2fsck_clean(disk.path, disk.offset)
    assert clean, report


@pytest.mark.root
def test_no_loop_device_left_on_the_images(image_truth, ext_images_cache: Path):
    image_truth("ext4_tree").fiemap  # noqa: B018  (mount and unmount at least once)
    listed = subprocess.run(
        [tool_path("losetup"), "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ext_images_cache.resolve()) not in listed
