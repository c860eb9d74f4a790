"""HFS+ through the Sleuth Kit layer: the structures where the volume header says (decoded by
hand here, TN1150's offsets), detection as ``blkid -p`` says, the allocation file's free
blocks, the journal, a volume inside a GPT partition, and damaged headers.

The image is xorriso's HFS+ (tests/tsk_images.py ``hfsplus``); the generic checks (every
file's bytes, fls's names, TSK's free blocks, every byte once) are in test_tsk_map.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bmap.errors import NotADiskError, Severity
from bmap.images import Image
from bmap.layers.mapper import map_images
from parsers.detect import detect
from tests import tsk_truth as T
from tests.bmap.layers.test_map_samples import assert_covers_exactly_once
from tests.ext_images import run, tool_path
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    source_files,
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def hfs(tsk_image_factory) -> Path:
    return tsk_image_factory("hfsplus")


def header_of(image: Path) -> dict:
    """The volume header at 1024, decoded by hand (TN1150, big-endian): the block size and
    count, and each special file's fork: logical size and its eight extents."""
    with open(image, "rb") as fh:
        fh.seek(1024)
        vh = fh.read(512)
    out = {
        "signature": vh[0:2],
        "attributes": struct.unpack(">I", vh[4:8])[0],
        "journal_info_block": struct.unpack(">I", vh[12:16])[0],
        "block_size": struct.unpack(">I", vh[40:44])[0],
        "total_blocks": struct.unpack(">I", vh[44:48])[0],
    }
    for name, at in (
        ("allocation", 112),
        ("extents", 192),
        ("catalog", 272),
        ("attributes_file", 352),
        ("startup", 432),
    ):
        size = struct.unpack(">Q", vh[at : at + 8])[0]
        extents = [struct.unpack(">II", vh[at + 16 + 8 * i : at + 24 + 8 * i]) for i in range(8)]
        out[name] = (size, [e for e in extents if e[1]])
    return out


def map_of(path: Path):
    with Image(path) as image:
        bmap = map_images([image])
    return bmap, bmap.to_dataframe()


def lines(frame, kind, type_="m"):
    sel = frame[(frame["type"] == type_) & (frame["kind"] == kind)]
    return sorted(zip(sel["start"].tolist(), sel["end"].tolist()))


def merged(ranges):
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return [tuple(r) for r in out]


def patched(src: Path, dst: Path, edits: dict[int, bytes]) -> Path:
    data = bytearray(src.read_bytes())
    for at, value in edits.items():
        data[at : at + len(value)] = value
    dst.write_bytes(bytes(data))
    return dst


# -- structures ------------------------------------------------------------------------------


def test_structures_where_the_volume_header_says(hfs):
    bmap, frame = map_of(hfs)
    vh = header_of(hfs)
    bs, size = vh["block_size"], hfs.stat().st_size
    assert vh["signature"] == b"H+"
    assert lines(frame, "hfs-boot-blocks") == [(0, 1024)]
    assert lines(frame, "hfs-volume-header") == [(1024, 1536)]
    assert lines(frame, "hfs-volume-header-backup") == [(size - 1024, size - 512)]
    assert lines(frame, "hfs-reserved") == [(size - 512, size)]
    for name, kind in (
        ("catalog", "hfs-catalog"),
        ("extents", "hfs-extents"),
        ("allocation", "hfs-allocation"),
    ):
        _, extents = vh[name]
        assert extents, name
        want = merged([(s * bs, (s + n) * bs) for s, n in extents])
        assert merged(lines(frame, kind)) == want, name
    # The special files are named by TSK's paths, as fls lists them.
    paths = set(frame.loc[frame["kind"] == "hfs-catalog", "path"])
    assert paths == {"/$CatalogFile"}
    assert not bmap.findings
    assert_covers_exactly_once(frame, size)


def test_special_file_blocks_belong_to_them_by_ifind(hfs):
    """``ifind -d`` names the special file that owns the first and the last block of each of
    their lines (istat lists no blocks for them)."""
    _, frame = map_of(hfs)
    bs = header_of(hfs)["block_size"]
    for inode, kind in ((4, "hfs-catalog"), (6, "hfs-allocation"), (3, "hfs-extents")):
        ranges = merged(lines(frame, kind))
        assert ranges, kind
        for lo, hi in ranges:
            for block in {lo // bs, (hi - 1) // bs}:
                owner = run("ifind", "-f", "hfs", "-d", str(block), hfs).strip()
                assert owner == str(inode), (kind, block, owner)


def test_detection_is_what_blkid_says(hfs, tmp_path):
    """TYPE and LABEL as ``blkid -p`` prints them. No UUID: blkid derives one from the volume
    identifier (here written into a copy's Finder info, which xorriso leaves zero) by a rule
    bmap could not reproduce, so bmap claims none rather than a different one."""
    ident = bytes.fromhex("0123456789abcdef")
    with_id = patched(hfs, tmp_path / "id.img", {1024 + 80 + 24: ident})
    for path in (hfs, with_id):
        blkid = dict(
            line.split("=", 1)
            for line in run("blkid", "-p", "-o", "export", path).splitlines()
            if "=" in line
        )
        with open(path, "rb") as fh:
            content = detect(fh, path.stat().st_size)
        assert content.kind == blkid["TYPE"] == "hfsplus"
        assert content.label == blkid.get("LABEL") == "BMAPHFS"
        assert content.uuid is None
        assert ("UUID" in blkid) == (path == with_id)
        assert content.fs_size == header_of(path)["total_blocks"] * header_of(path)["block_size"]


# -- the allocation file --------------------------------------------------------------------


def _allocation_byte(image: Path, block: int) -> tuple[int, int]:
    """Where the allocation file holds ``block``'s bit: (byte offset in the image, mask)."""
    vh = header_of(image)
    (start, _count), *_ = vh["allocation"][1]
    return start * vh["block_size"] + block // 8, 0x80 >> (block % 8)


def test_a_clear_bit_in_the_allocation_file_is_unallocated(hfs, tmp_path):
    """Clearing the bit of a block nothing holds makes it ``u unallocated`` (most significant
    bit first); clearing a file's bit keeps the file's lines and gives a warning."""
    _, frame = map_of(hfs)
    bs = header_of(hfs)["block_size"]
    holes = [(s, e) for s, e in lines(frame, "unreferenced", "u") if s % bs == 0 and e - s >= bs]
    assert holes, "xorriso's image has an allocated block that nothing holds"
    hole = holes[0][0] // bs
    kernel = frame[frame["path"] == "/System/Library/kernel"]
    file_block = int(kernel["start"].min()) // bs
    data = bytearray(hfs.read_bytes())
    for block in (hole, file_block):
        at, mask = _allocation_byte(hfs, block)
        data[at] &= ~mask & 0xFF
    crafted = tmp_path / "free.img"
    crafted.write_bytes(bytes(data))
    bmap, frame2 = map_of(crafted)
    assert lines(frame2, "unallocated", "u") == [(hole * bs, (hole + 1) * bs)]
    free, _ = T.blkls_free(crafted, "hfs")
    assert (hole * bs, (hole + 1) * bs) in free  # TSK's block walk agrees
    assert set(frame2.loc[frame2["type"] == "f", "path"]) == set(
        frame.loc[frame["type"] == "f", "path"]
    )
    (warning,) = [f for f in bmap.findings if f.severity == Severity.WARNING]
    assert "free" in warning.message


# -- the journal ----------------------------------------------------------------------------


def _journaled(hfs: Path, out: Path, flags: int, offset: int, size: int) -> tuple[Path, int]:
    """A copy with the journaled attribute set and a journal info block in an allocated block
    nothing holds; returns the copy and the info block's byte offset."""
    _, frame = map_of(hfs)
    bs = header_of(hfs)["block_size"]
    hole = next(s for s, e in lines(frame, "unreferenced", "u") if s % bs == 0 and e - s >= bs)
    attributes = header_of(hfs)["attributes"] | (1 << 13)
    info = struct.pack(">I32sQQ", flags, bytes(32), offset, size)
    return patched(
        hfs,
        out,
        {
            1024 + 4: struct.pack(">I", attributes),
            1024 + 12: struct.pack(">I", hole // bs),
            hole: info,
        },
    ), hole


def test_the_journal_and_its_info_block(hfs, tmp_path):
    """The journal lies where the info block says (here the rest of block 0, after the volume
    header: no file's bytes)."""
    crafted, jib = _journaled(hfs, tmp_path / "j.img", 1, 1536, 512)
    bmap, frame = map_of(crafted)
    bs = header_of(hfs)["block_size"]
    assert lines(frame, "hfs-journal-info") == [(jib, jib + bs)]
    assert lines(frame, "hfs-journal") == [(1536, 2048)]
    assert not [f for f in bmap.findings if f.severity >= Severity.WARNING]
    assert_covers_exactly_once(frame, crafted.stat().st_size)


@pytest.mark.parametrize(
    ("flags", "offset", "size", "words"),
    [
        (2, 0, 0, "another device"),
        (1, 1 << 40, 1 << 20, "outside the volume"),
        (1, 1536, 1 << 62, "outside the volume"),
    ],
)
def test_a_journal_elsewhere_is_a_finding(hfs, tmp_path, flags, offset, size, words):
    crafted, _jib = _journaled(hfs, tmp_path / "j.img", flags, offset, size)
    bmap, frame = map_of(crafted)
    assert any(words in f.message for f in bmap.findings), bmap.findings
    assert (frame["end"] <= crafted.stat().st_size).all()
    assert bmap.covered_bytes() == crafted.stat().st_size


# -- inside a disk, and damage ----------------------------------------------------------------


def test_an_hfs_volume_in_a_gpt_partition(hfs, tmp_path):
    """sgdisk's GPT with an Apple HFS+ partition (type AF00) holding the volume: every file's
    bytes at the map's disk offsets; fls at the partition's offset agrees."""
    tool_path("sgdisk")
    disk = tmp_path / "disk.img"
    first = 1 * MiB
    size = hfs.stat().st_size
    with open(disk, "wb") as fh:
        fh.truncate(first + size + MiB)
    run("sgdisk", "-n", f"1:{first // 512}:{(first + size) // 512 - 1}", "-t", "1:AF00", disk)
    with open(disk, "r+b") as fh:
        fh.seek(first)
        fh.write(hfs.read_bytes())
    _bmap, frame = map_of(disk)
    files = frame[frame["type"] == "f"]
    assert (files["device"] == "/dev/sda1").all()
    checked = 0
    with open(disk, "rb") as fh:
        for path, content in source_files(hfs).items():
            runs = files[files["path"] == path].sort_values("file_offset")
            if not content:
                assert runs.empty
                continue
            got = bytearray()
            for start, end in zip(runs["start"], runs["end"]):
                fh.seek(int(start))
                got += fh.read(int(end - start))
            assert bytes(got[: len(content)]) == content, path
            checked += 1
    assert checked > 300
    assert lines(frame, "hfs-volume-header") == [(first + 1024, first + 1536)]
    listed = {e.path for e in T.fls(disk, first // 512) if not e.deleted}
    assert set(source_files(hfs)) <= listed
    assert_covers_exactly_once(frame, disk.stat().st_size)


def test_a_volume_claiming_more_blocks_than_it_holds(hfs, tmp_path):
    """total_blocks = 2**32 - 1: an error finding, what is there is mapped, nothing past the
    end, and the walk's work follows the real size."""
    crafted = patched(hfs, tmp_path / "huge.img", {1024 + 44: b"\xff\xff\xff\xff"})
    bmap, frame = map_of(crafted)
    assert any("claims" in f.message for f in bmap.findings), bmap.findings
    assert (frame["end"] <= crafted.stat().st_size).all()
    assert bmap.covered_bytes() == crafted.stat().st_size


@pytest.mark.parametrize(
    ("what", "edits"),
    [
        ("block size 0", {1024 + 40: bytes(4)}),
        ("block size 2**31", {1024 + 40: b"\x80\x00\x00\x00"}),
        ("catalog extent past the end", {1024 + 272 + 16: b"\x7f\xff\xff\xf0"}),
        ("catalog of 2**32-1 blocks", {1024 + 272 + 20: b"\xff\xff\xff\xff"}),
        ("allocation file of 2**63 bytes", {1024 + 112: b"\x7f" + b"\xff" * 7}),
        ("truncated", None),
    ],
)
def test_damaged_headers_give_findings_never_tracebacks(hfs, tmp_path, what, edits):
    path = tmp_path / "broken.img"
    if edits is None:
        path.write_bytes(hfs.read_bytes()[: 96 * 1024])
    else:
        patched(hfs, path, edits)
    if what.startswith("block size"):
        # Detection no longer sees HFS+: a bare volume is then no disk at all (exit 5).
        with pytest.raises(NotADiskError):
            map_of(path)
        return
    bmap, frame = map_of(path)
    size = path.stat().st_size
    assert (frame["end"] <= size).all() and (frame["start"] >= 0).all(), what
    assert bmap.covered_bytes() == size, what
