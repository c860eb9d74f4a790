"""The XFS map against truth from outside bmap.

- every regular file's ranges equal the kernel's FIEMAP on a read-only loop mount (v5), or
  ``xfs_db``'s ``bmap`` of its inode (v4, which this kernel does not mount);
- every directory's ranges equal ``xfs_bmap -v`` (v5) or ``xfs_db bmap`` (v4); a short-form
  directory is its inode's record, where ``xfs_db convert`` puts it;
- every attribute fork's blocks equal ``xfs_bmap -a -v``, and the bmbt blocks of every fork,
  the attribute blocks and every per-AG structure equal ``xfs_db fsmap`` (the rmapbt);
- free space equals ``xfs_db freesp -d``; AG headers, the free list and the log equal
  ``xfs_db``'s prints;
- reflinked ranges have every owner, hard links repeat their ranges;
- the image has every directory format, a btree-format file and a remote symlink (checked by
  ``xfs_db``, so that the tests above cannot pass on an image without them);
- the lines nest, and the lines below the disk cover every byte of it;
- crafted images (a btree pointing at itself, absurd counts with valid CRCs) give findings.

The images come from mkfs.xfs and a read-write loop mount (tests/xfs_images.py).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.errors import Severity
from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.model.escape import name_to_bytes
from bmap.store.mapfile import write_map
from tests import xfs_truth as T
from tests.bmap.layers.test_ext_map import (
    assert_nested_and_covering,
    coalesce,
    merged,
    ranges,
    runs_of,
)
from tests.xfs_images import (  # noqa: F401 - pytest fixtures
    PATHS,
    xfs_image_factory_fixture,
    xfs_images_cache_fixture,
)

IMAGES = ["xfs_v5", "xfs_v4"]


@pytest.fixture(scope="module")
def mapped(xfs_image_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            path = xfs_image_factory(name)
            with Image(path) as image:
                bmap = map_images([image])
            cache[name] = (path, bmap, bmap.to_dataframe())
        return cache[name]

    return get


@pytest.fixture(scope="module")
def kernel(xfs_image_factory):
    cache: dict[str, T.Truth] = {}

    def get(name: str) -> T.Truth:
        if name not in cache:
            cache[name] = T.kernel_truth(xfs_image_factory(name))
        return cache[name]

    return get


def lines_of(frame, type_, kind=None):
    """``{path bytes: [(file_offset, start, length)]}`` of one type (and kind)."""
    return runs_of(frame, [type_], None if kind is None else [kind])


def owner_ranges(frame, type_, kind, path):
    sel = frame[(frame["type"] == type_) & (frame["kind"] == kind) & (frame["path"] == path)]
    return merged(list(zip(sel["start"].tolist(), sel["end"].tolist())))


def test_v5_files_equal_fiemap(mapped, kernel):
    _path, _bmap, frame = mapped("xfs_v5")
    truth = kernel("xfs_v5")
    ours = lines_of(frame, "f")
    checked = 0
    for file, extents in truth.files.items():
        want = coalesce((e.logical, e.physical, e.length) for e in extents)
        assert coalesce(ours.get(file, [])) == want, file
        checked += bool(want)
    assert checked > 200
    # Every name bmap gives a file is a name the kernel gives a regular file.
    assert set(ours) <= set(truth.files)
    assert not [p for p in ours if p.startswith(b"/$OrphanFiles")]
    # Preallocated and shared extents were in the image, and were checked above.
    flags = {f for extents in truth.files.values() for e in extents for f in e.flags}
    assert {"unwritten", "shared"} <= flags


def test_v5_directories_equal_xfs_bmap_and_xfs_db(mapped, kernel):
    """A directory's data blocks (below 32 GiB) as the kernel's ``xfs_bmap -v`` gives them
    (it stops at the directory's size), and its whole data fork (leaf, node and free-index
    blocks too) as ``xfs_db bmap`` reads it."""
    path, _bmap, frame = mapped("xfs_v5")
    truth = kernel("xfs_v5")
    ours = lines_of(frame, "d")
    on_disk = T.inode_bmaps(path, [truth.inodes[d] for d in truth.dirs])
    short = []
    for directory, runs in truth.dirs.items():
        whole = on_disk[truth.inodes[directory]]
        if not whole:
            short.append(directory)
            continue
        want = coalesce((r.logical, r.physical, r.length) for r in whole)
        assert coalesce(ours[directory]) == want, directory
        data = [r for r in coalesce(ours[directory]) if r[0] < 1 << 35]
        assert data == coalesce((r.logical, r.physical, r.length) for r in runs), directory
    assert set(ours) == set(truth.dirs)
    # Short-form directories: their one line is the inode's record.
    places = T.xfs_db(path, [f"convert ino {truth.inodes[d]} fsbyte" for d in short])
    offsets = [int(line.split()[0], 16) for line in places.splitlines()]
    inode_size = T.geometry(path)["inodesize"]
    for directory, offset in zip(short, offsets, strict=True):
        assert ours[directory] == [(0, offset, inode_size)], directory
    assert len(short) >= 20


def test_v5_attribute_forks_equal_xfs_bmap(mapped, kernel):
    _path, _bmap, frame = mapped("xfs_v5")
    truth = kernel("xfs_v5")
    ours = lines_of(frame, "m", "attr")
    with_blocks = 0
    for name, runs in truth.attrs.items():
        want = coalesce((r.logical, r.physical, r.length) for r in runs)
        assert coalesce(ours.get(name, [])) == want, name
        with_blocks += bool(want)
    assert set(ours) <= set(truth.attrs)
    assert with_blocks >= 3  # big, many, dir


def test_v5_per_object_metadata_and_structures_equal_fsmap(mapped, kernel):
    """The rmapbt says who owns every allocated block: each bmbt block and attribute block
    (per inode), and every per-AG structure (by its special owner)."""
    path, _bmap, frame = mapped("xfs_v5")
    truth = kernel("xfs_v5")
    records = T.fsmap(path)
    assert records
    by_inode: dict[tuple[int, str], list] = defaultdict(list)
    special: dict[str, list] = defaultdict(list)
    for r in records:
        if int(r.owner) >= 0:
            kind = "bmbt" if r.bmbt else ("attr" if r.attr else "data")
            by_inode[(int(r.owner), kind)].append((r.start, r.end))
        else:
            special[r.owner].append((r.start, r.end))
    name_of = {}
    for name, ino in truth.inodes.items():
        name_of.setdefault(ino, name)
    bmbt_owners = 0
    for (ino, kind), spans in by_inode.items():
        if kind == "data" or ino not in name_of:
            continue
        text = name_of[ino].decode("utf-8", "surrogateescape")
        assert owner_ranges(frame, "m", kind, text) == merged(spans), (text, kind)
        bmbt_owners += kind == "bmbt"
    assert bmbt_owners >= 3  # two fragmented files, a btree directory (and an attr btree)
    # What bmap names bmbt is exactly what the rmapbt says.
    ours_bmbt = ranges(frame, "bmbt")
    assert ours_bmbt == merged([s for (_, k), v in by_inode.items() if k == "bmbt" for s in v])

    def kinds(*names):
        return merged([r for n in names for r in ranges(frame, n)])

    # xfs_rmap owners: -3 static fs metadata, -4 log, -5 AG btrees and free list, -6 inode
    # btrees, -7 inode chunks, -8 refcount btree.
    assert kinds("xfs-superblock", "xfs-superblock-backup", "agf", "agi", "agfl") == merged(
        special["-3"]
    )
    assert kinds("xfs-log") == merged(special["-4"])
    assert kinds("bnobt", "cntbt", "rmapbt", "agfl-block") == merged(special["-5"])
    assert kinds("inobt", "finobt") == merged(special["-6"])
    assert kinds("inode-chunk") == merged(special["-7"])
    assert kinds("refcountbt") == merged(special["-8"])


@pytest.mark.parametrize("name", IMAGES)
def test_ag_structures_equal_xfs_db(mapped, name):
    path, _bmap, frame = mapped(name)
    geo = T.geometry(path)
    bs, sect = geo["blocksize"], geo["sectsize"]
    ag_bytes = geo["agblocks"] * bs
    starts = [ag * ag_bytes for ag in range(geo["agcount"])]
    assert ranges(frame, "xfs-superblock") == [(0, sect)]
    assert ranges(frame, "xfs-superblock-backup") == [(s, s + sect) for s in starts[1:]]
    assert ranges(frame, "agf") == [(s + sect, s + 2 * sect) for s in starts]
    assert ranges(frame, "agi") == [(s + 2 * sect, s + 3 * sect) for s in starts]
    header_end = -(-4 * sect // bs) * bs
    assert ranges(frame, "agfl") == [(s + 3 * sect, s + header_end) for s in starts]
    log = fsb = geo["logstart"]
    log = T.fsb_to_bytes(geo, fsb)
    assert ranges(frame, "xfs-log") == [(log, log + geo["logblocks"] * bs)]
    agfl_blocks = []
    for ag, start in enumerate(starts):
        agf = T.header(path, "agf", ag)
        agi = T.header(path, "agi", ag)
        for kind, key in (("bnobt", "bnoroot"), ("cntbt", "cntroot"), ("inobt", "root")):
            value = agf.get(key, agi.get(key))
            root = start + int(value) * bs
            assert any(a <= root < b for a, b in ranges(frame, kind)), (kind, ag)
        first, last, count = (int(agf[k]) for k in ("flfirst", "fllast", "flcount"))
        slots = T._fields(T.xfs_db(path, [f"agfl {ag}", "print bno"]))
        bno = {
            int(i): v for i, v in (item.split(":") for item in next(iter(slots.values())).split())
        }
        size = len(bno)
        for k in range(count):
            agfl_blocks.append(start + int(bno[(first + k) % size]) * bs)
        assert count == 0 or (first + count - 1) % size == last
    assert ranges(frame, "agfl-block") == merged([(b, b + bs) for b in agfl_blocks])


@pytest.mark.parametrize("name", IMAGES)
def test_free_space_equals_freesp(mapped, name):
    """freesp counts the free list's blocks as free: bmap names them ``agfl-block``."""
    path, _bmap, frame = mapped(name)
    ours = merged(ranges(frame, "unallocated", "u") + ranges(frame, "agfl-block"))
    assert ours == merged(T.freesp(path))
    assert ranges(frame, "unallocated", "u")


@pytest.mark.parametrize("name", IMAGES)
def test_lines_nest_and_cover_the_disk(mapped, name):
    path, bmap, frame = mapped(name)
    assert_nested_and_covering(frame, path.stat().st_size)
    assert not [f for f in bmap.findings if f.severity >= Severity.WARNING], bmap.findings
    assert not (frame["kind"] == "unreferenced").any()


def test_v5_has_every_format(mapped, kernel):
    """What the other tests check is in the image: each directory format, btree-format files,
    a btree-format attribute fork, a remote symlink and a local one."""
    path, _bmap, frame = mapped("xfs_v5")
    truth = kernel("xfs_v5")
    p = {k: v.encode() for k, v in PATHS["xfs_v5"].items()}
    ino = {k: truth.inodes[v] for k, v in p.items()}
    fields = T.inode_fields(path, ino.values(), ["core.format", "core.aformat"])
    fmt = {k: fields[i]["core.format"].split()[0] for k, i in ino.items()}
    assert fields[ino["xattr_btree"]]["core.aformat"].split()[0] == "3"
    assert fmt["short_dir"] == "1" and fmt["block_dir"] == "2" and fmt["btree_dir"] == "3"
    assert fmt["btree_file"] == "3" and fmt["long_link"] == "2" and fmt["short_link"] == "1"
    assert len(truth.dirs[p["block_dir"]]) == 1
    # Leaf and node directories: blocks past the 32 GiB leaf offset (node: a free index too).
    forks = T.inode_bmaps(path, [ino["leaf_dir"], ino["node_dir"]])
    leaf = [r.logical >> 35 for r in forks[ino["leaf_dir"]]]
    node = [r.logical >> 35 for r in forks[ino["node_dir"]]]
    assert leaf.count(1) == 1 and 2 not in leaf
    assert node.count(1) >= 2 and 2 in node
    # The remote symlink's target blocks; none for the local one.
    want = T.inode_bmaps(path, [ino["long_link"]])[ino["long_link"]]
    got = owner_ranges(frame, "m", "symlink", PATHS["xfs_v5"]["long_link"])
    assert got == merged([(r.physical, r.physical + r.length) for r in want]) and got
    assert not (frame["path"] == PATHS["xfs_v5"]["short_link"]).any()


def test_v5_hard_links_and_reflinks_have_every_owner(mapped, tmp_path):
    _path, bmap, frame = mapped("xfs_v5")
    p = PATHS["xfs_v5"]
    files = lines_of(frame, "f")
    hard = [files[p[k].encode()] for k in ("hard_1", "hard_2", "hard_3")]
    assert hard[0] and hard[0] == hard[1] == hard[2]
    orig = coalesce(files[p["reflink_orig"].encode()])
    assert orig == coalesce(files[p["reflink_copy"].encode()])
    cow = coalesce(files[p["reflink_cow"].encode()])
    assert cow != orig and len(cow) > len(orig)
    # Any byte of the shared extent: every file that shares it has a line over it.
    start = orig[0][1]
    owners = frame[(frame["start"] <= start) & (frame["end"] > start) & (frame["type"] == "f")]
    assert set(owners["path"]) == {p["reflink_orig"], p["reflink_copy"], p["reflink_cow"]}
    # And ``bmap lookup`` of that byte names each of them.
    from click.testing import CliRunner

    from bmap.cli import main

    out = tmp_path / "v5.csv"
    write_map(bmap, out, "csv")
    result = CliRunner().invoke(main, ["lookup", str(out), str(start)])
    assert result.exit_code == 0, result.output
    for key in ("reflink_orig", "reflink_copy", "reflink_cow"):
        assert p[key] in result.output


def test_v4_files_and_directories_equal_xfs_db(mapped):
    path, _bmap, frame = mapped("xfs_v4")
    names = T.ncheck(path)
    inodes = sorted(set(names.values()))
    bmaps = T.inode_bmaps(path, inodes)
    fields = T.inode_fields(path, inodes, ["core.mode", "core.format"])
    inode_size = T.geometry(path)["inodesize"]
    ours = runs_of(frame, ["f", "d", "m"], ["file", "dir", "symlink"])
    checked = with_data = 0
    for name, ino in names.items():
        if name.endswith((b"/.", b"/..")):
            continue
        want = coalesce((r.logical, r.physical, r.length) for r in bmaps[ino])
        fmt = fields[ino]["core.format"].split()[0]
        mode = int(fields[ino]["core.mode"], 8)
        if fmt == "1" and mode & 0o170000 == 0o040000:
            assert [line[2] for line in ours[name]] == [inode_size], name
            continue
        assert coalesce(ours.get(name, [])) == want, name
        checked += 1
        with_data += bool(want)
    assert checked > 2000 and with_data >= 25
    # A 2 MiB file in 2 KiB blocks, the directories of every format.
    assert ours[PATHS["xfs_v4"]["big_file"].encode()]
    assert len(ours[PATHS["xfs_v4"]["node_dir"].encode()]) >= 3


# --------------------------------------------------------------------------------------------
# crafted images: damage gives findings, never a traceback


def _crc_fix(data: bytearray, offset: int) -> None:
    from parsers.xfs import structs as S

    struct.pack_into("<I", data, offset, S.xfs_checksum(bytes(data), offset))


def _map_copy(src, dst, patch):
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    with open(dst, "r+b") as fh:
        patch(fh)
    with Image(dst) as image:
        bmap = map_images([image])
    return bmap, bmap.to_dataframe()


def _geometry_of(path):
    from parsers.xfs import XFS

    with open(path, "rb") as fh:
        fs = XFS(fh, path.stat().st_size)
        return fs, fs.ag_headers(1)


def test_crafted_crc32c_is_the_kernels(xfs_image_factory):
    """Our crc32c gives back the sums mkfs and the kernel wrote (so the crafted images below
    carry valid CRCs)."""
    from parsers.xfs import structs as S

    path = xfs_image_factory("xfs_v5")
    with open(path, "rb") as fh:
        for offset, crc in (
            (0, S.SB_CRC_OFFSET),
            (512, S.AGF_CRC_OFFSET),
            (1024, S.AGI_CRC_OFFSET),
        ):
            fh.seek(offset)
            sector = fh.read(512)
            assert S.xfs_checksum(sector, crc) == S.stored_checksum(sector, crc)


def test_crafted_inobt_cycle_is_a_finding(xfs_image_factory, tmp_path):
    """AG 1's inobt made a two-level tree whose root points at itself (CRCs kept valid)."""
    path = xfs_image_factory("xfs_v5")
    fs, ag1 = _geometry_of(path)
    bs, sect = fs.block_size, fs.sb.sector_size
    agi_at = fs.ag_start(1) + 2 * sect
    root_at = fs.ag_start(1) + ag1.ino_root * bs

    def patch(fh):
        fh.seek(root_at)
        block = bytearray(fh.read(bs))
        struct.pack_into(">HH", block, 4, 1, 1)  # level 1, one pointer
        maxrecs = (bs - 56) // (4 + 4)
        struct.pack_into(">I", block, 56, 0)  # key
        struct.pack_into(">I", block, 56 + maxrecs * 4, ag1.ino_root)  # pointer: itself
        _crc_fix(block, 52)
        fh.seek(root_at)
        fh.write(block)
        fh.seek(agi_at)
        agi = bytearray(fh.read(sect))
        struct.pack_into(">I", agi, 24, 2)  # agi_level
        _crc_fix(agi, 312)
        fh.seek(agi_at)
        fh.write(agi)

    bmap, frame = _map_copy(path, tmp_path / "cycle.img", patch)
    messages = [f.message for f in bmap.findings]
    assert any("cycle" in m and "AG 1" in m for m in messages), messages
    assert (frame["kind"] == "inobt").any()
    assert_nested_and_covering(frame, path.stat().st_size)


def test_crafted_absurd_counts_are_findings(xfs_image_factory, tmp_path):
    """The AGF's free-list count and the superblock's AG count made absurd, CRCs valid."""
    path = xfs_image_factory("xfs_v5")
    fs, _ = _geometry_of(path)
    sect = fs.sb.sector_size
    agf_at = fs.ag_start(1) + sect

    def patch(fh):
        fh.seek(agf_at)
        agf = bytearray(fh.read(sect))
        struct.pack_into(">I", agf, 48, 1 << 31)  # agf_flcount
        _crc_fix(agf, 216)
        fh.seek(agf_at)
        fh.write(agf)

    bmap, frame = _map_copy(path, tmp_path / "flcount.img", patch)
    assert any("free list" in f.message for f in bmap.findings), bmap.findings
    assert_nested_and_covering(frame, path.stat().st_size)

    def huge(fh):
        fh.seek(0)
        sb = bytearray(fh.read(sect))
        agblocks = struct.unpack_from(">I", sb, 84)[0]
        agcount = 1 << 30
        struct.pack_into(">I", sb, 88, agcount)
        struct.pack_into(">Q", sb, 8, (agcount - 1) * agblocks + 64)
        _crc_fix(sb, 224)
        fh.seek(0)
        fh.write(sb)

    bmap, frame = _map_copy(path, tmp_path / "agcount.img", huge)
    assert any("past the end of the device" in f.message for f in bmap.findings), bmap.findings
    assert (frame["end"] <= path.stat().st_size).all()


def test_crafted_inode_extent_count_is_a_finding(xfs_image_factory, tmp_path):
    """A file's inode claims 2**31 extents in its inode (its CRC recomputed)."""
    path = xfs_image_factory("xfs_v5")
    fs, _ = _geometry_of(path)
    truth_ino = int(T.xfs_db(path, ["path /data.bin", "print v3.inumber"]).split("=")[-1])
    at = int(T.xfs_db(path, [f"convert ino {truth_ino} fsbyte"]).split()[0], 16)
    isz = fs.sb.inode_size

    def patch(fh):
        fh.seek(at)
        rec = bytearray(fh.read(isz))
        struct.pack_into(">I", rec, 76, 1 << 31)
        _crc_fix(rec, 100)
        fh.seek(at)
        fh.write(rec)

    bmap, frame = _map_copy(path, tmp_path / "nextents.img", patch)
    assert any(str(truth_ino) in f.message and "extents" in f.message for f in bmap.findings)
    assert (frame["path"] == "/data.bin").any()
    assert np.all(frame["end"] <= path.stat().st_size)
    assert name_to_bytes("/data.bin") == b"/data.bin"


# --------------------------------------------------------------------------------------------
# in a partition, bmap info, the memory budget


def test_xfs_in_a_gpt_partition(xfs_image_factory, kernel, tmp_path):
    """The v5 image copied into partition 1 of a GPT disk at 1 MiB: every file's ranges are
    FIEMAP's moved by the partition's offset, under the partition's name."""
    src = xfs_image_factory("xfs_v5")
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk is not installed")
    offset, size = 1 << 20, src.stat().st_size
    disk = tmp_path / "gpt-xfs.img"
    with open(disk, "wb") as fh:
        fh.truncate(offset + size + (1 << 20))
    subprocess.run(
        ["sgdisk", "-n", f"1:{offset // 512}:+{size // 512}", "-t", "1:8300", str(disk)],
        check=True,
        capture_output=True,
    )
    with open(src, "rb") as fin, open(disk, "r+b") as fout:
        fout.seek(offset)
        shutil.copyfileobj(fin, fout, 1 << 20)
    with Image(disk) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    truth = kernel("xfs_v5")
    ours = lines_of(frame[frame["device"] == "/dev/sda1"], "f")
    checked = 0
    for file, extents in truth.files.items():
        want = coalesce((e.logical, e.physical + offset, e.length) for e in extents)
        assert coalesce(ours.get(file, [])) == want, file
        checked += bool(want)
    assert checked > 200
    assert_nested_and_covering(frame, disk.stat().st_size)


@pytest.mark.parametrize("name", IMAGES)
def test_info_shows_what_xfs_db_says(xfs_image_factory, name):
    import json

    from click.testing import CliRunner

    from bmap.cli import main

    path = xfs_image_factory(name)
    sb = T.header(path, "sb")
    result = CliRunner().invoke(main, ["info", "--json", str(path)])
    fs = json.loads(result.stdout)["disks"][0]["filesystem"]
    assert fs["type"] == "xfs"
    assert fs["blocks"] == int(sb["dblocks"])
    assert fs["block_size"] == int(sb["blocksize"])
    assert fs["free_blocks"] == int(sb["fdblocks"])
    assert fs["inodes"] == int(sb["icount"])
    assert fs["ag_count"] == int(sb["agcount"])
    assert fs["uuid"] == sb["uuid"]


def test_memory_budget_leaves_the_filesystem_out_with_a_finding(xfs_image_factory):
    from bmap.errors import BUDGET_SOURCE
    from bmap.model.blockmap import BASELINE_BYTES

    path = xfs_image_factory("xfs_v5")
    with Image(path) as image:
        bmap = map_images([image], memory_limit=BASELINE_BYTES + (8 << 20))
    assert any(BUDGET_SOURCE in f.source for f in bmap.findings), bmap.findings
    frame = bmap.to_dataframe()
    # Nothing inside is mapped: the disk is one "unmapped" line, as for any filesystem left out.
    assert not frame["type"].isin(["f", "d", "m"]).any()
    assert ranges(frame, "unmapped", "u") == [(0, path.stat().st_size)]


def test_crafted_bmbt_cycle_is_a_finding(xfs_image_factory, tmp_path):
    """The bmbt root of a btree-format file made to point twice at its first leaf (the inode's
    CRC recomputed): reported as a cycle, the leaf mapped once, the rest of the map made."""
    path = xfs_image_factory("xfs_v5")
    fs, _ = _geometry_of(path)
    name = PATHS["xfs_v5"]["btree_file"]
    ino = int(T.xfs_db(path, [f"path {name}", "print v3.inumber"]).split("=")[-1])
    at = int(T.xfs_db(path, [f"convert ino {ino} fsbyte"]).split()[0], 16)
    isz = fs.sb.inode_size

    def patch(fh):
        fh.seek(at)
        rec = bytearray(fh.read(isz))
        assert rec[5] == 3  # btree format
        forkoff = rec[82] * 8
        size = forkoff or isz - 176
        level, numrecs = struct.unpack_from(">HH", rec, 176)
        assert level == 1 and numrecs >= 2
        maxrecs = (size - 4) // 16
        ptrs = 176 + 4 + maxrecs * 8
        struct.pack_into(">Q", rec, ptrs + 8, struct.unpack_from(">Q", rec, ptrs)[0])
        _crc_fix(rec, 100)
        fh.seek(at)
        fh.write(rec)

    bmap, frame = _map_copy(path, tmp_path / "bmbt-cycle.img", patch)
    assert any("cycle" in f.message and str(ino) in f.message for f in bmap.findings), bmap.findings
    assert (frame["path"] == name).any()
    assert_nested_and_covering(frame, path.stat().st_size)


# --------------------------------------------------------------------------------------------
# hypothesis: the superblock, an AGF, an AGI and the root inode with drawn fields, their
# CRCs recomputed as the kernel computes them


_U32_EDGES = [0, 1, 2, 63, 64, 4096, 2**31 - 1, 2**31, 2**32 - 1]


def _u32(limit: int):
    return st.one_of(st.integers(0, limit), st.integers(0, limit), st.sampled_from(_U32_EDGES))


#: (where, offset, format, strategy) of the fields drawn; ``where`` is the structure.
def _fields(agblocks: int, dblocks: int):
    blocks = _u32(agblocks + 8)
    levels = st.integers(0, 12)
    return [
        ("sb", 8, ">Q", st.one_of(st.integers(0, dblocks * 2), st.sampled_from([2**40, 2**63]))),
        ("sb", 48, ">Q", st.integers(0, dblocks + 8)),
        ("sb", 56, ">Q", st.one_of(st.integers(0, 1 << 20), st.sampled_from([2**63, 2**64 - 1]))),
        ("sb", 84, ">I", _u32(agblocks * 2)),
        ("sb", 88, ">I", _u32(64)),
        ("sb", 96, ">I", _u32(dblocks)),
        ("sb", 192, ">B", st.integers(0, 255)),
        ("agf", 12, ">I", blocks),
        ("agf", 16, ">I", blocks),
        ("agf", 20, ">I", blocks),
        ("agf", 24, ">I", blocks),
        ("agf", 28, ">I", levels),
        ("agf", 32, ">I", levels),
        ("agf", 36, ">I", levels),
        ("agf", 40, ">I", _u32(200)),
        ("agf", 44, ">I", _u32(200)),
        ("agf", 48, ">I", _u32(200)),
        ("agf", 88, ">I", blocks),
        ("agf", 92, ">I", levels),
        ("agi", 16, ">I", _u32(1 << 16)),
        ("agi", 20, ">I", blocks),
        ("agi", 24, ">I", levels),
        ("agi", 328, ">I", blocks),
        ("agi", 332, ">I", levels),
        ("inode", 2, ">H", st.sampled_from([0, 0o040755, 0o100644, 0o120777, 0xFFFF])),
        ("inode", 5, ">B", st.integers(0, 7)),
        ("inode", 56, ">Q", st.one_of(st.integers(0, 1 << 20), st.just(2**63 - 1))),
        ("inode", 76, ">I", _u32(64)),
        ("inode", 80, ">H", st.integers(0, 0xFFFF)),
        ("inode", 82, ">B", st.integers(0, 255)),
        ("inode", 83, ">B", st.integers(0, 7)),
    ]


@pytest.fixture(scope="module")
def small_base(xfs_image_factory, tmp_path_factory):
    from parsers.xfs import XFS

    path = tmp_path_factory.mktemp("xfs-hypothesis") / "small.img"
    shutil.copyfile(xfs_image_factory("xfs_small"), path)
    path.chmod(0o644)
    with open(path, "rb") as fh:
        fs = XFS(fh, path.stat().st_size)
        sb = fs.sb
        root_at = int(T.xfs_db(path, [f"convert ino {sb.root_ino} fsbyte"]).split()[0], 16)
    return path, sb, root_at


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_crafted_xfs_with_valid_crcs(small_base, data):
    from bmap.errors import BmapError
    from parsers.errors import ParserError
    from parsers.xfs import structs as S

    path, sb, root_at = small_base
    sect = sb.sector_size
    ag = data.draw(st.integers(0, sb.ag_count - 1))
    ag_at = ag * sb.ag_blocks * sb.block_size
    places = {
        "sb": (0, sect, S.SB_CRC_OFFSET),
        "agf": (ag_at + sect, sect, S.AGF_CRC_OFFSET),
        "agi": (ag_at + 2 * sect, sect, S.AGI_CRC_OFFSET),
        "inode": (root_at, sb.inode_size, S.DINODE_CRC_OFFSET),
    }
    originals = {}
    with open(path, "r+b") as fh:
        for where, (at, size, _) in places.items():
            fh.seek(at)
            originals[where] = fh.read(size)
        patched = {w: bytearray(b) for w, b in originals.items()}
        # Some structures drawn, the others left as mkfs wrote them (a damaged superblock
        # alone would stop every example at the start).
        touched = data.draw(st.sets(st.sampled_from(sorted(places)), min_size=1))
        for where, offset, fmt, strategy in _fields(sb.ag_blocks, sb.data_blocks):
            if where in touched and data.draw(st.integers(0, 2)) == 0:
                struct.pack_into(fmt, patched[where], offset, data.draw(strategy))
        for where, (at, _size, crc) in places.items():
            if patched[where] != originals[where]:
                _crc_fix(patched[where], crc)
                fh.seek(at)
                fh.write(patched[where])
    try:
        try:
            with Image(path) as image:
                bmap = map_images([image])
        except (BmapError, ParserError):
            return
        frame = bmap.to_dataframe()
        size = path.stat().st_size
        assert (frame["end"] > frame["start"]).all()
        assert frame["start"].min() >= 0 and frame["end"].max() <= size
    finally:
        with open(path, "r+b") as fh:
            for where, (at, _size, _crc) in places.items():
                fh.seek(at)
                fh.write(originals[where])


def test_crafted_realtime_and_external_log_are_named(xfs_image_factory, tmp_path):
    """A superblock that claims a realtime device and an external log (CRC valid): findings
    name both; the blocks of the old internal log are left unreferenced, nothing is lost."""
    path = xfs_image_factory("xfs_small")
    fs, _ = _geometry_of(path)
    sect = fs.sb.sector_size

    def patch(fh):
        fh.seek(0)
        sb = bytearray(fh.read(sect))
        struct.pack_into(">QQ", sb, 16, 1 << 20, 1 << 20)  # sb_rblocks, sb_rextents
        struct.pack_into(">Q", sb, 48, 0)  # sb_logstart: external
        _crc_fix(sb, 224)
        fh.seek(0)
        fh.write(sb)

    bmap, frame = _map_copy(path, tmp_path / "rt.img", patch)
    messages = [f.message for f in bmap.findings]
    assert any("realtime device" in m for m in messages), messages
    assert any("external device" in m for m in messages), messages
    assert not (frame["kind"] == "xfs-log").any()
    log = fs.fsblocks_to_bytes(np.array([fs.sb.log_start]), np.array([fs.sb.log_blocks]))[0][0]
    assert ranges(frame, "unreferenced", "u") == [(log, log + fs.sb.log_blocks * fs.block_size)]
    assert (frame["type"] == "f").sum() > 40


@pytest.mark.parametrize("name", IMAGES)
def test_every_kind_is_documented(mapped, name):
    """Each ``m`` and ``u`` kind of an XFS map is in docs/format.md (its XFS table, or the
    unused kinds every filesystem shares)."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[3] / "docs" / "format.md").read_text()
    section = docs[docs.index("### XFS specifics") :]
    section = section[: section.index("\n### ", 1)]
    documented = set(re.findall(r"`([a-z0-9-]+)(?: <path>)?`", section))
    documented |= {"unallocated", "unreferenced", "volume-slack"}
    _path, _bmap, frame = mapped(name)
    kinds = set(frame.loc[frame["type"].isin(["m", "u"]), "kind"])
    assert kinds <= documented, kinds - documented
    assert {"xfs-superblock", "agf", "agi", "agfl", "bnobt", "inode-chunk", "xfs-log"} <= kinds


def test_a_dirty_log_is_a_finding(xfs_image_factory, tmp_path):
    """An image copied while its filesystem is mounted (written to and synced: the changes are
    in the log): bmap says the log is dirty, as xfs_logprint does; the clean images say
    nothing (test_lines_nest_and_cover_the_disk)."""
    from parsers.xfs import XFS
    from tests.ext_images import NeedsRoot
    from tests.xfs_images import rw_mount

    base = tmp_path / "base.img"
    shutil.copyfile(xfs_image_factory("xfs_small"), base)
    base.chmod(0o644)
    snapshot = tmp_path / "snapshot.img"
    try:
        with rw_mount(base, "defaults") as mnt:
            for i in range(50):
                (mnt / f"late-{i}").write_bytes(b"late\n")
            subprocess.run(["sync"], check=True)
            shutil.copyfile(base, snapshot)
    except NeedsRoot as exc:
        pytest.skip(str(exc))
    assert T.log_state(snapshot) == "DIRTY"
    assert T.log_state(base) == "CLEAN"
    with Image(snapshot) as image:
        bmap = map_images([image])
    dirty = [f for f in bmap.findings if "log is dirty" in f.message]
    assert len(dirty) == 1 and dirty[0].severity == Severity.WARNING
    for path in (base, xfs_image_factory("xfs_v5"), xfs_image_factory("xfs_v4")):
        with open(path, "rb") as fh:
            assert XFS(fh, path.stat().st_size).log_is_clean() is True
    assert_nested_and_covering(bmap.to_dataframe(), snapshot.stat().st_size)
