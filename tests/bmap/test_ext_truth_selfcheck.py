"""The ext test images and the outside truth about them agree with each other.

These tests check the fixtures, not bmap: that each image has what it was built to have
(an htree directory, a TIND block, a depth-1 extent tree, ...) and that the kernel's FIEMAP
and e2fsprogs tell the same story about it. The ext parser's tests rely on both.
"""

from __future__ import annotations

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
    ext4_in_gpt_image,  # noqa: F401  (a fixture)
    ext_image_factory,  # noqa: F401  (a fixture)
    ext_images_cache,  # noqa: F401  (a fixture)
    tool_path,
)

pytestmark = pytest.mark.root  # the tree images and FIEMAP need root and loop devices

MOUNTED_IMAGES = ["ext4_tree", "ext4_1k", "ext2_1k_tind", "ext3_journal", "ext4_meta_bg",
                  "ext4_bigalloc", "ext4_inline", "ext4_misc"]


@pytest.fixture(scope="session")
def image_truth(ext_image_factory) -> Any:  # noqa: F811
    """Per image, computed once: FIEMAP, names, stat of every named inode, layout."""
    cache: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in cache:
            path = ext_image_factory(name)
            names = truth.ncheck_all(path)
            cache[name] = {
                "path": path,
                "fiemap": truth.fiemap(path),
                "names": names,
                "inode": {p: ino for ino, paths in names.items() for p in paths},
                "stat": truth.debugfs_stat_all(path, sorted(names)),
                "layout": truth.dumpe2fs_layout(path),
            }
        return cache[name]

    return get


def _inode(info: dict[str, Any], role: str, name: str) -> int:
    return info["inode"][INTERESTING_PATHS[name][role]]


def _stat(info: dict[str, Any], role: str, name: str) -> dict[str, Any]:
    return info["stat"][_inode(info, role, name)]


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_image_is_clean_for_e2fsck(ext_image_factory, name):  # noqa: F811
    clean, report = truth.e2fsck_clean(ext_image_factory(name))
    assert clean, report


@pytest.mark.parametrize("name", MOUNTED_IMAGES)
def test_fiemap_equals_debugfs_extents(image_truth, name):
    """Every regular file's and directory's FIEMAP runs are debugfs' block runs, in bytes."""
    info = image_truth(name)
    bs = info["layout"]["block_size"]
    compared = 0
    for path, extents in info["fiemap"].items():
        st = info["stat"][info["inode"][path]]
        if st["flags"] & truth.EXT4_INLINE_DATA_FL:
            assert all("inline" in e.flags for e in extents), path
            continue
        assert truth.fiemap_runs(extents) == truth.block_runs_to_bytes(
            st["data_extents"], bs
        ), path
        compared += 1
    assert compared > 10


def test_ext4_tree_has_what_it_was_built_with(image_truth):
    info = image_truth("ext4_tree")
    total_entries = sum(len(p) for p in info["names"].values())
    assert total_entries > 3300
    bigdir = _stat(info, "htree_dir", "ext4_tree")
    assert bigdir["flags"] & truth.EXT4_INDEX_FL
    assert truth.htree_dump(info["path"], b"/bigdir")["indexed"]
    assert len([p for p in info["inode"] if p.startswith(b"/bigdir/")]) == 2999  # one deleted

    big = _stat(info, "depth1_extent_file", "ext4_tree")
    assert big["etb_nodes"] and all(level == 0 for level, _ in big["etb_nodes"])
    assert len(big["data_extents"]) > 4  # more than the inode's four slots: depth 1
    out = subprocess.run(
        [tool_path("debugfs"), "-R", "dump_extents -n /frag/big4m.bin", str(info["path"])],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "0/ 1" in out  # an index level above the leaves

    uninit = info["fiemap"][INTERESTING_PATHS["ext4_tree"]["uninit_file"]]
    assert uninit and all("unwritten" in e.flags for e in uninit)
    mixed = info["fiemap"][INTERESTING_PATHS["ext4_tree"]["mixed_uninit_file"]]
    assert ["unwritten" in e.flags for e in mixed] == [True, False, True]
    sparse = info["fiemap"][INTERESTING_PATHS["ext4_tree"]["sparse_file"]]
    assert [e.logical for e in sparse] == [0, 10 << 20]

    xattr = _stat(info, "xattr_block_file", "ext4_tree")
    assert xattr["file_acl"] and "user.big" in xattr["xattrs"]
    assert _stat(info, "xattr_block_dir", "ext4_tree")["file_acl"]
    assert _stat(info, "xattr_inode_file", "ext4_tree")["file_acl"] == 0

    assert _stat(info, "slow_symlink", "ext4_tree")["data_extents"]
    assert _stat(info, "slow_symlink", "ext4_tree")["size"] == len(SLOW_LINK_TARGET)
    assert _stat(info, "fast_symlink", "ext4_tree")["fast_link"] == FAST_LINK_TARGET

    hard = info["names"][_inode(info, "hard_link_1", "ext4_tree")]
    assert sorted(hard) == sorted(
        INTERESTING_PATHS["ext4_tree"][f"hard_link_{i}"] for i in (1, 2, 3)
    )
    for name in AWKWARD_NAMES:
        assert b"/names/" + name in info["inode"], name


def test_ext4_tree_file_types(ext_image_factory):  # noqa: F811
    kinds = truth.file_types(ext_image_factory("ext4_tree"))
    paths = INTERESTING_PATHS["ext4_tree"]
    assert kinds[paths["fifo"]] == "fifo"
    assert kinds[paths["char_device"]] == "chr"
    assert kinds[paths["block_device"]] == "blk"
    assert kinds[paths["socket"]] == "sock"
    assert kinds[paths["fast_symlink"]] == kinds[paths["slow_symlink"]] == "lnk"
    assert kinds[paths["empty_file"]] == "reg"


def test_icheck_attributes_metadata_blocks_to_their_inode(image_truth):
    info = image_truth("ext4_tree")
    big = _stat(info, "depth1_extent_file", "ext4_tree")
    xattr = _stat(info, "xattr_block_file", "ext4_tree")
    layout = info["layout"]
    table_block = layout["groups"][0]["inode_table"][0] // layout["block_size"]
    owners = truth.icheck(info["path"], [*big["etb_blocks"], xattr["file_acl"], table_block])
    assert [owners[b] for b in big["etb_blocks"]] == [big["inode"]] * len(big["etb_blocks"])
    assert owners[xattr["file_acl"]] == xattr["inode"]
    assert owners[table_block] is None  # static metadata is not attributed


def test_ext2_tind_file_has_single_double_and_triple_indirect_blocks(image_truth):
    info = image_truth("ext2_1k_tind")
    st = _stat(info, "tind_file", "ext2_1k_tind")
    assert st["block_map"] == "blocks"
    assert {kind for kind, _ in st["ind_blocks"]} == {"IND", "DIND", "TIND"}
    assert st["total_blocks"] == 16 + len(st["ind_blocks"])  # 4 runs of 4 data blocks
    assert max(e.logical for e in st["data_extents"]) * 1024 >= (64 << 20) + (268 << 10)
    assert _stat(info, "xattr_block_file", "ext2_1k_tind")["file_acl"]
    assert "has_journal" not in info["layout"]["features"]


def test_ext3_journal_and_block_maps(image_truth):
    info = image_truth("ext3_journal")
    assert info["layout"]["journal_inode"] == 8
    assert "extent" not in info["layout"]["features"]
    assert [k for k, _ in _stat(info, "ind_file", "ext3_journal")["ind_blocks"]] == ["IND"]
    assert [k for k, _ in _stat(info, "dind_file", "ext3_journal")["ind_blocks"]] == [
        "DIND", "IND"]
    journal = truth.debugfs_stat(info["path"], 8)
    assert journal["data_extents"] and journal["ind_blocks"]


def test_meta_bg_groups_have_single_descriptor_blocks(image_truth):
    layout = image_truth("ext4_meta_bg")["layout"]
    assert "meta_bg" in layout["features"] and "resize_inode" not in layout["features"]
    bs, groups = layout["block_size"], layout["groups"]
    per_block = bs // int(layout["header"].get("Group descriptor size", "32"))
    assert len(groups) >= 3 * per_block  # at least three meta-groups
    with_desc = [g["group"] for g in groups if g["group_descriptors"]]
    # meta_bg: the first, second and last group of each meta-group hold one descriptor block.
    expected = sorted({m + i for m in range(0, len(groups), per_block)
                       for i in (0, 1, per_block - 1) if m + i < len(groups)})
    assert with_desc == expected
    for g in groups:
        assert g["reserved_gdt"] is None
        if g["group_descriptors"]:
            start, end = g["group_descriptors"]
            assert end - start == bs


def test_layout_groups_tile_the_filesystem(image_truth):
    for name in ("ext4_tree", "ext4_bigalloc", "ext4_misc", "ext2_1k_tind"):
        layout = image_truth(name)["layout"]
        bs = layout["block_size"]
        groups = layout["groups"]
        assert groups[0]["range"][0] == layout["first_data_block"] * bs
        assert groups[-1]["range"][1] == layout["blocks_count"] * bs
        for prev, nxt in itertools.pairwise(groups):
            assert prev["range"][1] == nxt["range"][0]
        assert groups[0]["superblock_kind"] == "primary"
        assert groups[0]["superblock"] == (layout["first_data_block"] * bs,
                                           (layout["first_data_block"] + 1) * bs)
        for g in groups:
            for lo, hi in g["free_blocks"]:
                assert g["range"][0] <= lo < hi <= g["range"][1], (name, g["group"])


def test_sparse_super2_has_backups_only_in_two_groups(image_truth):
    layout = image_truth("ext4_misc")["layout"]
    assert "sparse_super2" in layout["features"]
    backups = [g["group"] for g in layout["groups"] if g["superblock_kind"] == "backup"]
    assert len(layout["groups"]) > 3
    assert backups == [1, len(layout["groups"]) - 1]


def test_special_inodes(image_truth):
    misc = image_truth("ext4_misc")
    special = truth.special_inodes(misc["path"])
    assert special["journal"] == 8
    assert special["user_quota"] == 3 and special["group_quota"] == 4
    assert special["orphan_file"] == 12
    assert special["mmp_block"]
    for ino in (3, 4, 12):
        assert misc["stat"].get(ino) is None  # not reachable by name
        assert truth.debugfs_stat(misc["path"], ino)["data_extents"]
    assert truth.special_inodes(image_truth("ext4_meta_bg")["path"])["resize"] is None
    assert truth.special_inodes(image_truth("ext4_tree")["path"])["resize"] == 7


def test_bigalloc_cluster_file(image_truth):
    info = image_truth("ext4_bigalloc")
    assert info["layout"]["cluster_size"] == 16384 and info["layout"]["block_size"] == 4096
    (extent,) = info["fiemap"][INTERESTING_PATHS["ext4_bigalloc"]["multi_cluster_file"]]
    assert extent.length == 100 << 10  # FIEMAP stops at the last block, not the cluster end
    assert extent.physical % 16384 == 0
    multi = _stat(info, "multi_extent_file", "ext4_bigalloc")
    # 6 runs of 5 blocks, each run two logical clusters; mke2fs put the extent-tree block in
    # the cluster after one run's first cluster, so that run goes on one cluster later.
    assert multi["etb_blocks"] and len(multi["data_extents"]) >= 6
    assert sum(e.length for e in multi["data_extents"]) == 6 * 5


def test_inline_data_lives_in_the_inode(image_truth):
    info = image_truth("ext4_inline")
    paths = INTERESTING_PATHS["ext4_inline"]
    inline_roles = ["inline_tiny_file", "inline_small_file", "inline_dir", "inline_empty_dir"]
    inodes = {role: _inode(info, role, "ext4_inline") for role in inline_roles}
    where = truth.inode_locations(info["path"], inodes.values())
    for role, ino in inodes.items():
        st = info["stat"][ino]
        assert st["flags"] & truth.EXT4_INLINE_DATA_FL, role
        assert not st["data_extents"], role
        (extent,) = info["fiemap"][paths[role]]
        assert {"inline", "not_aligned", "last"} <= extent.flags
        assert extent.physical == where[ino] + 40  # i_block
    assert info["stat"][inodes["inline_tiny_file"]]["inline_size"] == 60
    assert info["stat"][inodes["inline_small_file"]]["inline_size"] == 120
    assert info["fiemap"][paths["inline_small_file"]][0].length == 120
    for role in ("normal_file", "normal_dir", "block_dir"):
        assert not _stat(info, role, "ext4_inline")["flags"] & truth.EXT4_INLINE_DATA_FL


def test_ext4_in_gpt_partition_holds_the_tree(image_truth, ext4_in_gpt_image: DiskImage):  # noqa: F811
    disk = ext4_in_gpt_image
    table = json.loads(subprocess.run(
        [tool_path("sfdisk"), "--json", str(disk.path)], capture_output=True, text=True,
        check=True,
    ).stdout)["partitiontable"]
    part = table["partitions"][1]
    assert part["start"] * table["sectorsize"] == disk.offset
    assert part["size"] * table["sectorsize"] == disk.size
    tree = image_truth("ext4_tree")
    assert truth.fiemap(disk.path, disk.offset) == tree["fiemap"]
    assert truth.dumpe2fs_layout(disk.path, disk.offset)["groups"] == tree["layout"]["groups"]
    mixed = truth.debugfs_stat(disk.path, b"/mixed.bin", disk.offset)
    assert mixed["data_extents"] == _stat(tree, "mixed_uninit_file", "ext4_tree")["data_extents"]
    clean, report = truth.e2fsck_clean(disk.path, disk.offset)
    assert clean, report


def test_no_loop_device_left_on_the_images(ext_images_cache: Path):  # noqa: F811
    listed = subprocess.run(
        [tool_path("losetup"), "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert str(ext_images_cache) not in listed
