"""The XFS parser against ``xfs_db`` on images made by mkfs.xfs (v5 filled through a mount,
v4 by a protofile), zero-filled buffers and random or truncated bytes.

Known values come from ``xfs_db -r`` (the superblock, every AGF, AGI and AGFL, the inode
btrees' counts), never from the code under test.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.errors import NotThisFormat, ParserError
from parsers.xfs import XFS, parse_superblock
from parsers.xfs import structs as S
from parsers.xfs.filesystem import describe
from tests import xfs_truth as T
from tests.xfs_images import (  # noqa: F401 - pytest fixtures
    UUIDS,
    xfs_image_factory_fixture,
    xfs_images_cache_fixture,
)

IMAGES = ["xfs_v5", "xfs_v4"]


@pytest.mark.parametrize("name", IMAGES)
def test_superblock_equals_xfs_db(xfs_image_factory, name):
    path = xfs_image_factory(name)
    sb_db = T.header(path, "sb")
    with open(path, "rb") as fh:
        fs = XFS(fh, path.stat().st_size)
    sb = fs.sb
    assert sb.version == (5 if name == "xfs_v5" else 4)
    assert sb.block_size == int(sb_db["blocksize"])
    assert sb.sector_size == int(sb_db["sectsize"])
    assert sb.inode_size == int(sb_db["inodesize"])
    assert sb.ag_count == int(sb_db["agcount"])
    assert sb.ag_blocks == int(sb_db["agblocks"])
    assert sb.data_blocks == int(sb_db["dblocks"])
    assert sb.log_start == int(sb_db["logstart"])
    assert sb.log_blocks == int(sb_db["logblocks"])
    assert sb.root_ino == int(sb_db["rootino"])
    assert sb.icount == int(sb_db["icount"])
    assert sb.ifree == int(sb_db["ifree"])
    assert sb.free_blocks == int(sb_db["fdblocks"])
    assert sb.uuid == UUIDS[name]
    assert sb.crc_ok is (True if name == "xfs_v5" else None)
    if name == "xfs_v5":
        assert {"crc", "finobt", "rmapbt", "reflink", "sparse", "ftype"} <= set(sb.features)
        assert sb_db["crc"].endswith("(correct)")
    assert describe(fs)["ag_count"] == sb.ag_count
    assert not fs.take_problems()


@pytest.mark.parametrize("name", IMAGES)
def test_ag_headers_equal_xfs_db(xfs_image_factory, name):
    path = xfs_image_factory(name)
    with open(path, "rb") as fh:
        fs = XFS(fh, path.stat().st_size)
        total_in_use = 0
        for ag in range(fs.sb.ag_count):
            agf = T.header(path, "agf", ag)
            agi = T.header(path, "agi", ag)
            h = fs.ag_headers(ag)
            assert h.agf_ok and h.agi_ok and not h.problems
            assert h.length == int(agf["length"]) == int(agi["length"])
            assert (h.bno_root, h.bno_levels) == (int(agf["bnoroot"]), int(agf["bnolevel"]))
            assert (h.cnt_root, h.cnt_levels) == (int(agf["cntroot"]), int(agf["cntlevel"]))
            assert h.free_blocks == int(agf["freeblks"])
            assert len(h.agfl_blocks) == int(agf["flcount"])
            assert (h.ino_root, h.ino_levels) == (int(agi["root"]), int(agi["level"]))
            assert (h.inode_count, h.free_inodes) == (int(agi["count"]), int(agi["freecount"]))
            if name == "xfs_v5":
                assert (h.rmap_root, h.rmap_levels) == (
                    int(agf["rmaproot"]),
                    int(agf["rmaplevel"]),
                )
                assert h.refcount_root == int(agf["refcntroot"])
                assert (h.fino_root, h.fino_levels) == (
                    int(agi["free_root"]),
                    int(agi["free_level"]),
                )
            # The inobt's records: as many inodes and free inodes as the AGI counts.
            walk = fs.walk_btree(ag, "inobt", h.ino_root, h.ino_levels)
            assert not walk.problems
            chunks = fs.inode_chunks(ag, walk)
            recs = walk.records.copy().view(S.INOBT_REC_DTYPE).reshape(-1)
            assert int(chunks["present"].sum()) == int(agi["count"])
            assert int(chunks["present"].sum() - chunks["in_use"].sum()) == int(agi["freecount"])
            assert len(recs) == len(chunks["ino"])
            total_in_use += int(chunks["in_use"].sum())
            # The bnobt's free blocks are the AGF's count.
            bno = fs.walk_btree(ag, "bnobt", h.bno_root, h.bno_levels)
            start, end = fs.free_extents(ag, bno)
            assert int((end - start).sum()) == int(agf["freeblks"]) * fs.block_size
        sb = T.header(path, "sb")
        assert total_in_use == int(sb["icount"]) - int(sb["ifree"])


def test_zero_filled_device_is_not_xfs():
    with pytest.raises(NotThisFormat):
        XFS(io.BytesIO(bytes(1 << 16)), 1 << 16)
    with pytest.raises(NotThisFormat):
        parse_superblock(bytes(512))


def test_crc32c_known_value():
    # RFC 3720 (iSCSI) test vector: 32 bytes of zeros.
    assert S.crc32c(bytes(32)) ^ 0xFFFFFFFF == 0x8A9136AA


@pytest.fixture(scope="module")
def v5_head(xfs_image_factory):
    path = xfs_image_factory("xfs_v5")
    with open(path, "rb") as fh:
        return fh.read(1 << 16)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_damage_raises_only_our_errors(v5_head, data):
    """The first 64 KiB of a real v5 image (AG 0's headers and btree roots), truncated or with
    bytes overwritten, read as a whole device: only ParserError, or a walk that ends."""
    buf = bytearray(v5_head)
    cut = data.draw(st.integers(0, len(buf)))
    for _ in range(data.draw(st.integers(0, 8))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    device = bytes(buf[:cut])
    try:
        fs = XFS(io.BytesIO(device), len(device))
    except ParserError:
        return
    for ag in range(fs.readable_ags):
        h = fs.ag_headers(ag)
        if h.agi_ok:
            walk = fs.walk_btree(ag, "inobt", h.ino_root, h.ino_levels)
            chunks = fs.inode_chunks(ag, walk)
            _table, data_runs, _attr, _problems = fs.read_inodes(chunks)
            assert np.all(data_runs.physical + data_runs.length * fs.block_size <= fs.sb.size)
        if h.agf_ok:
            fs.walk_btree(ag, "bnobt", h.bno_root, h.bno_levels)


def test_leaf_node_and_extent_declarations_read_real_blocks(xfs_image_factory):
    """The construct declarations of the leaf and node headers and of a bmbt record, on the
    v5 image's leaf and node directories and a file, against xfs_db."""
    path = xfs_image_factory("xfs_v5")
    geo = T.geometry(path)
    bs = geo["blocksize"]

    def ino_of(name: str) -> int:
        return int(T.xfs_db(path, [f"path {name}", "print v3.inumber"]).split("=")[-1])

    def block_at(ino: int, logical: int) -> bytes:
        (run,) = [
            r
            for r in T.inode_bmaps(path, [ino])[ino]
            if r.logical <= logical < r.logical + r.length
        ]
        with open(path, "rb") as fh:
            fh.seek(run.physical + logical - run.logical)
            return fh.read(bs)

    leaf_ino = ino_of("/dirs/leaf")
    leaf = S.Dir3LeafHeader.parse(block_at(leaf_ino, S.DIR2_LEAF_OFFSET))
    listed = [line for line in T.xfs_db(path, ["ls /dirs/leaf"]).splitlines() if line[:1].isdigit()]
    assert leaf.magic == S.DA_MAGIC["dir3-leaf1"]
    assert leaf.owner == leaf_ino
    assert leaf.count - leaf.stale == len(listed) == 302  # 300 names, "." and ".."
    node_ino = ino_of("/dirs/node")
    node = S.Da3NodeHeader.parse(block_at(node_ino, S.DIR2_LEAF_OFFSET))
    assert node.magic == S.DA_MAGIC["da3-node"] and node.level >= 1 and node.count >= 2
    free = S.Dir2FreeHeader.parse(block_at(node_ino, 2 * S.DIR2_LEAF_OFFSET))
    assert free.magic == S.DIR2_FREE_MAGIC[5]
    # A file's one extent record in its inode, as xfs_db's bmap reads it.
    data_ino = ino_of("/data.bin")
    at = int(T.xfs_db(path, [f"convert ino {data_ino} fsbyte"]).split()[0], 16)
    with open(path, "rb") as fh:
        fh.seek(at)
        record = fh.read(geo["inodesize"])
    core = S.DinodeCore.parse(record)
    assert core.di_format == S.FMT_EXTENTS and core.di_nextents == 1
    rec = S.BmbtRecord.parse(record[S.DINODE_CORE_V3 : S.DINODE_CORE_V3 + 16])
    (run,) = T.inode_bmaps(path, [data_ino])[data_ino]
    assert (rec.startoff, rec.blockcount * bs, rec.unwritten) == (0, run.length, False)
    assert T.fsb_to_bytes(geo, rec.startblock) == run.physical
