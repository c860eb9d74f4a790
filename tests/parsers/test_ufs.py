"""The UFS parser against blkid, the Sleuth Kit's CLI and hand-decoded bytes, on images made by
makefs (tests/ufs_images.py); then hostile copies of them.

Ground truth:

- ``blkid -p -o export`` for TYPE, VERSION, LABEL and UUID;
- TSK's ``fsstat -f ufs1`` for each cylinder group's superblock copy, header block ("Group
  Desc") and inode table, ``blkls -e`` for the free fragments, ``fls``/``istat`` for where
  every file's data and indirect blocks lie (UFS1 only: TSK cannot open makefs's UFS2, see
  :func:`test_tsk_cannot_open_makefs_ufs2`);
- the superblock and cylinder group headers decoded here with ``struct.unpack`` at offsets
  written out from FreeBSD's ``sys/ufs/ffs/fs.h``, not through parsers.ufs's declarations;
- the files' own bytes, found in the image fragment by fragment (random contents are unique).
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import ufs
from parsers.detect import detect
from parsers.errors import DamagedError, NotThisFormat, ParserError
from tests.ext_images import tool_path
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)
from tests.ufs_images import (  # noqa: F401 - pytest fixtures
    EXPECTED_UUID,
    SYMLINK,
    source_files,
    ufs_image_factory_fixture,
)

IMAGES = ["ufs1", "ufs2", "ufs1_be"]
TSK_IMAGES = ["ufs1", "ufs1_be"]
ENDIAN = {"ufs1": "<", "ufs2": "<", "ufs1_be": ">"}
#: makefs writes the primary superblock at 8 KiB for UFS1 and UFS2 alike.
SB = 8192


def _tool(*args: str | Path) -> str:
    try:
        exe = tool_path(str(args[0]))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    proc = subprocess.run([exe, *map(str, args[1:])], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr!r}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def _blkid(path: Path) -> dict[str, str]:
    out = _tool("blkid", "-p", "-d", "-o", "export", path)  # -d: raw bytes, not M-^ escapes
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _blkid_or_nothing(path: Path) -> dict[str, str]:
    try:
        return _blkid(path)
    except RuntimeError:  # exit 2: nothing found
        return {}


def _detect(path: Path):
    data = path.read_bytes()
    return detect(io.BytesIO(data), len(data))


def _read_layout(data: bytes) -> ufs.UfsLayout:
    return ufs.read_layout(lambda offset, length: data[offset : offset + length], len(data))


# -- hand-decoded truth -------------------------------------------------------------------------


def _superblock(data: bytes, endian: str) -> dict[str, int]:
    """struct fs, by the offsets of fs.h (UFS1's old fields where UFS1 keeps them)."""

    def i32(at: int) -> int:
        return struct.unpack_from(endian + "i", data, SB + at)[0]

    def i64(at: int) -> int:
        return struct.unpack_from(endian + "q", data, SB + at)[0]

    magic = struct.unpack_from(endian + "I", data, SB + 1372)[0]
    version = {0x011954: 1, 0x19540119: 2}[magic]
    out = {
        "version": version,
        "sblkno": i32(8),
        "cblkno": i32(12),
        "iblkno": i32(16),
        "dblkno": i32(20),
        "cgoffset": i32(24),
        "cgmask": i32(28),
        "ncg": i32(44),
        "bsize": i32(48),
        "fsize": i32(52),
        "frag": i32(56),
        "cssize": i32(156),
        "ipg": i32(184),
        "fpg": i32(188),
    }
    if version == 1:
        out |= {"size": i32(36), "csaddr": i32(152), "nbfree": i32(196), "nffree": i32(204)}
    else:
        out |= {"size": i64(1080), "csaddr": i64(1096), "nbfree": i64(1016), "nffree": i64(1032)}
    return out


def _cg_header(data: bytes, endian: str, sb: dict[str, int], cg: int) -> dict[str, int]:
    """struct cg of group ``cg``: magic at 4, cg_cs.cs_nbfree at 28, cs_nffree at 36."""
    at = (cg * sb["fpg"] + sb["cblkno"]) * sb["fsize"]
    magic, nbfree, nffree = (struct.unpack_from(endian + "i", data, at + o)[0] for o in (4, 28, 36))
    return {"magic": magic, "nbfree": nbfree, "nffree": nffree}


def _expected_structures(sb: dict[str, int]) -> list[tuple[str, int, int]]:
    fsize, fpg = sb["fsize"], sb["fpg"]
    inode_bytes = sb["ipg"] * (128 if sb["version"] == 1 else 256)
    out = [("ufs-boot", 0, SB), ("ufs-superblock", SB, SB + 8192)]
    for cg in range(sb["ncg"]):
        start = cg * fpg  # makefs does not stagger (checked by the caller)
        out.append(
            (
                "ufs-superblock-backup",
                (start + sb["sblkno"]) * fsize,
                (start + sb["cblkno"]) * fsize,
            )
        )
        out.append(("ufs-cg", (start + sb["cblkno"]) * fsize, (start + sb["iblkno"]) * fsize))
        inodes = (start + sb["iblkno"]) * fsize
        out.append(("ufs-inodes", inodes, inodes + inode_bytes))
    summary = sb["csaddr"] * fsize
    out.append(("ufs-summary", summary, summary + -(-sb["cssize"] // fsize) * fsize))
    return sorted(out, key=lambda item: item[1])


# -- TSK truth ----------------------------------------------------------------------------------


def _fsstat(path: Path) -> tuple[dict[str, int], list[dict[str, list[tuple[int, int]]]]]:
    """fsstat's totals and, per group, its ranges (inclusive fragment numbers)."""
    text = _tool("fsstat", "-f", "ufs1", path)
    totals = {
        key: int(re.search(rf"^{label}: (\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
        for key, label in (
            ("groups", "Number of Cylinder Groups"),
            ("free_blocks", "Num of Avail Full Blocks"),
            ("free_frags", "Num of Avail Fragments"),
            ("fsize", "Fragment Size"),
        )
    }
    groups: list[dict[str, list[tuple[int, int]]]] = []
    for line in text.splitlines():
        if re.match(r"^Group \d+:", line):
            groups.append({})
            continue
        m = re.match(
            r"^\s+(Boot Block|Super Block|Group Desc|Inode Table|Data Fragments): (.*)", line
        )
        if m and groups:
            for part in m.group(2).split(","):
                lo, hi = part.split("-")
                groups[-1].setdefault(m.group(1), []).append((int(lo), int(hi)))
    return totals, groups


def _blkls_free(path: Path, fsize: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for line in _tool("blkls", "-f", "ufs1", "-l", "-e", path).splitlines():
        addr, _, flag = line.partition("|")
        if not addr.isdigit() or flag != "f":
            continue
        lo = int(addr) * fsize
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], lo + fsize)
        else:
            ranges.append((lo, lo + fsize))
    return ranges


def _tsk_file_fragments(path: Path) -> dict[str, list[int]]:
    """Every regular file's and directory's fragments (data and indirect), by fls and istat."""
    out: dict[str, list[int]] = {}
    for line in _tool("fls", "-r", "-p", "-f", "ufs1", path).splitlines():
        m = re.match(r"^(r/r|d/d) (\d+):\t(.*)$", line)
        if not m:
            continue
        frags: list[int] = []
        listing = False
        for row in _tool("istat", "-f", "ufs1", path, m.group(2)).splitlines():
            if row.strip() in ("Direct Blocks:", "Indirect Blocks:"):
                listing = True
            elif listing and re.fullmatch(r"[0-9 ]+", row.strip() or "x"):
                frags += [int(x) for x in row.split()]
            else:
                listing = False
        out["/" + m.group(3)] = frags
    return out


def _overlaps(ranges: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(a < hi and lo < b for a, b in ranges)


# -- probe --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_probe_matches_blkid(ufs_image_factory, name):
    path = ufs_image_factory(name)
    blkid = _blkid(path)
    content = _detect(path)
    assert blkid["TYPE"] == content.kind == "ufs"
    assert blkid["VERSION"] == content.version == ("2" if name == "ufs2" else "1")
    assert blkid.get("LABEL") == content.label is None  # makefs writes no volume name
    assert blkid["UUID"] == content.uuid == EXPECTED_UUID
    sb = _superblock(path.read_bytes(), ENDIAN[name])
    assert content.fs_size == sb["size"] * sb["fsize"] == path.stat().st_size
    assert content.offset_in_device == SB


@pytest.mark.parametrize(("name", "label"), [("ufs2", "UFS two ☃"), ("ufs1", None)])
def test_probe_label_as_blkid(ufs_image_factory, tmp_path, name, label):
    """A volume name written into fs_volname (makefs cannot set one): blkid shows it for UFS2
    only, and so do we."""
    copy = tmp_path / "labelled.img"
    shutil.copyfile(ufs_image_factory(name), copy)
    with open(copy, "r+b") as fh:
        fh.seek(SB + 680)
        fh.write("UFS two ☃  ".encode().ljust(32, b"\0"))
    blkid = _blkid(copy)
    content = _detect(copy)
    assert blkid.get("LABEL") == content.label == label


def test_probe_garbage_is_unknown(ufs_image_factory, tmp_path):
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(1 << 20))
    noise = tmp_path / "noise.img"
    noise.write_bytes(np.random.default_rng(7).integers(0, 256, 1 << 20, np.uint8).tobytes())
    truncated = tmp_path / "truncated.img"  # the superblock at 8 KiB is cut short
    truncated.write_bytes(ufs_image_factory("ufs1").read_bytes()[: SB + 1000])
    for path in (zeros, noise, truncated):
        assert _detect(path).kind == "unknown"
        assert "TYPE" not in _blkid_or_nothing(path)


def test_probe_magic_alone_is_not_enough(tmp_path):
    """libblkid names any UFS magic "ufs"; we also ask for a geometry that can be laid out."""
    path = tmp_path / "magic.img"
    data = bytearray(1 << 20)
    struct.pack_into("<I", data, SB + 1372, 0x011954)
    path.write_bytes(bytes(data))
    assert _blkid(path)["TYPE"] == "ufs"
    assert _detect(path).kind == "unknown"


# -- layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_layout_equals_hand_decoded(ufs_image_factory, name):
    data = ufs_image_factory(name).read_bytes()
    endian = ENDIAN[name]
    sb = _superblock(data, endian)
    assert sb["ncg"] == 8 and sb["fsize"] == 1024 and sb["bsize"] == 8192
    assert sb["version"] == 2 or sb["cgoffset"] == 0 or sb["cgmask"] == -1  # no stagger
    layout = _read_layout(data)
    assert layout.findings == []
    assert (layout.version, layout.fragment, layout.block) == (sb["version"], 1024, 8192)
    assert layout.fs_end == sb["size"] * sb["fsize"] == len(data)
    assert layout.superblock_offset == SB
    assert layout.byte_order == endian
    assert layout.cylinder_groups == 8
    assert layout.structures == _expected_structures(sb)
    # Free space: the superblock's totals, and each group's from its own header.
    lo, hi = layout.free
    assert lo.dtype == hi.dtype == np.int64
    assert np.all(lo < hi) and np.all(hi[:-1] < lo[1:])  # sorted and merged
    assert int((hi - lo).sum()) == (sb["nbfree"] * sb["frag"] + sb["nffree"]) * sb["fsize"]
    group = sb["fpg"] * sb["fsize"]
    for cg in range(sb["ncg"]):
        header = _cg_header(data, endian, sb, cg)
        assert header["magic"] == 0x090255
        in_group = np.clip(hi, cg * group, (cg + 1) * group) - np.clip(
            lo, cg * group, (cg + 1) * group
        )
        assert (
            int(in_group.sum()) == (header["nbfree"] * sb["frag"] + header["nffree"]) * sb["fsize"]
        )


@pytest.mark.parametrize("name", TSK_IMAGES)
def test_layout_equals_fsstat(ufs_image_factory, name):
    path = ufs_image_factory(name)
    layout = _read_layout(path.read_bytes())
    totals, groups = _fsstat(path)
    fsize = totals["fsize"]
    assert len(groups) == totals["groups"] == layout.cylinder_groups

    def span(pair: tuple[int, int]) -> tuple[int, int]:
        return pair[0] * fsize, (pair[1] + 1) * fsize

    expected = [("ufs-boot", *span(groups[0]["Boot Block"][0]))]
    for index, group in enumerate(groups):
        supers = [span(pair) for pair in group["Super Block"]]
        if index == 0:  # group 0 lists the primary (8 KiB) and then its own copy
            expected.append(("ufs-superblock", *supers.pop(0)))
        expected += [("ufs-superblock-backup", *pair) for pair in supers]
        expected += [("ufs-cg", *span(pair)) for pair in group["Group Desc"]]
        expected += [("ufs-inodes", *span(pair)) for pair in group["Inode Table"]]
    # fsstat does not list the summary area (it lies in group 0's data fragments).
    got = [item for item in layout.structures if item[0] != "ufs-summary"]
    assert got == sorted(expected, key=lambda item: item[1])
    # Free: fsstat's totals and blkls's fragment by fragment.
    lo, hi = layout.free
    free_frags = totals["free_blocks"] * layout.block // fsize + totals["free_frags"]
    assert int((hi - lo).sum()) == free_frags * fsize
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == _blkls_free(path, fsize)


@pytest.mark.parametrize("name", TSK_IMAGES)
def test_structures_apart_from_file_data(ufs_image_factory, name):
    """Inside the volume, not overlapping each other, nor any file's or directory's data or
    indirect blocks (TSK's istat); the free space holds none of them either."""
    path = ufs_image_factory(name)
    layout = _read_layout(path.read_bytes())
    size = path.stat().st_size
    structures = layout.structures
    assert all(0 <= start < end <= size for _, start, end in structures)
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(structures))
    files = _tsk_file_fragments(path)
    regular = {p for p, content in source_files(path).items()}
    assert regular <= set(files)
    assert len(files["/big.bin"]) > 12 * 8  # direct and indirect blocks
    ranges = [(start, end) for _, start, end in structures]
    free = list(zip(layout.free[0].tolist(), layout.free[1].tolist(), strict=True))
    fsize = layout.fragment
    for file_path, frags in files.items():
        for frag in frags:
            if file_path == SYMLINK[0]:
                continue
            assert not _overlaps(ranges, frag * fsize, (frag + 1) * fsize), (file_path, frag)
            assert not _overlaps(free, frag * fsize, (frag + 1) * fsize), (file_path, frag)


def test_tsk_cannot_open_makefs_ufs2(ufs_image_factory):
    """makefs writes its UFS2 superblock at 8 KiB (fs_sblockloc 8192), where FreeBSD's newfs
    puts only UFS1's; TSK looks for the UFS2 magic at 64 KiB only and gives up. So the UFS2
    image is checked against hand-decoded values and its files' own bytes instead."""
    path = ufs_image_factory("ufs2")
    with pytest.raises(RuntimeError):
        _tool("fsstat", "-f", "ufs2", path)
    data = path.read_bytes()
    assert struct.unpack_from("<q", data, SB + 1000)[0] == SB  # fs_sblockloc


@pytest.mark.parametrize("name", IMAGES)
def test_file_bytes_lie_outside_structures_and_free(ufs_image_factory, name):
    """Every whole fragment of every file, found in the image by its bytes, lies in neither a
    structure nor the free space (works for UFS2, which TSK cannot read)."""
    path = ufs_image_factory(name)
    data = path.read_bytes()
    layout = _read_layout(data)
    fsize = layout.fragment
    where = {data[i : i + fsize]: i for i in range(0, len(data), fsize)}
    ranges = [(start, end) for _, start, end in layout.structures]
    lo, hi = layout.free
    found = 0
    for content in source_files(path).values():
        for piece in range(0, len(content) - fsize + 1, fsize):
            at = where.get(content[piece : piece + fsize])
            if at is None or len(set(content[piece : piece + fsize])) < 64:
                continue  # repetitive text: not a unique fingerprint
            found += 1
            assert not _overlaps(ranges, at, at + fsize)
            index = int(np.searchsorted(hi, at, side="right"))
            assert index == len(lo) or lo[index] >= at + fsize
    assert found > 4000


# -- hostile ------------------------------------------------------------------------------------


class CountingReader:
    """``read(offset, length)`` over an image with byte patches laid over it, counting."""

    def __init__(self, data: bytes, patches: dict[int, bytes] | None = None, size: int = 0):
        self.data = data
        self.patches = patches or {}
        self.size = size or len(data)
        self.calls = 0
        self.bytes = 0

    def __call__(self, offset: int, length: int) -> bytes:
        assert offset >= 0 and length >= 0 and offset + length <= self.size
        self.calls += 1
        self.bytes += length
        out = bytearray(self.data[offset : min(offset + length, self.size)])
        for at, patch in self.patches.items():
            lo, hi = max(at, offset), min(at + len(patch), offset + len(out))
            if lo < hi:
                out[lo - offset : hi - offset] = patch[lo - at : hi - at]
        return bytes(out)

    def layout(self) -> ufs.UfsLayout:
        return ufs.read_layout(self, self.size)

    def assert_bounded(self) -> None:
        assert self.bytes <= 2 * self.size + 4 * ufs.SUPERBLOCK_SIZE
        assert self.calls <= 4 + self.size // 512


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _assert_sane(layout: ufs.UfsLayout, size: int) -> None:
    structures = layout.structures
    assert all(0 <= start < end <= size for _, start, end in structures)
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(structures))
    lo, hi = layout.free
    assert np.all(lo < hi) and np.all(hi[:-1] < lo[1:])
    assert lo.size == 0 or (lo[0] >= 0 and hi[-1] <= size)


@pytest.fixture(name="ufs1_bytes")
def ufs1_bytes_fixture(ufs_image_factory) -> bytes:
    return ufs_image_factory("ufs1").read_bytes()


@pytest.mark.parametrize("ncg", [9, 2**31, 2**32 - 1])
def test_hostile_ncg(ufs1_bytes, ncg):
    reader = CountingReader(ufs1_bytes, {SB + 44: _u32(ncg)})
    layout = reader.layout()
    _assert_sane(layout, reader.size)
    reader.assert_bounded()
    assert layout.cylinder_groups <= 9
    assert layout.findings and all(f[0] in ("error", "warning") for f in layout.findings)


def test_hostile_ipg(ufs1_bytes):
    reader = CountingReader(ufs1_bytes, {SB + 184: _u32(2**31)})
    layout = reader.layout()
    _assert_sane(layout, reader.size)
    reader.assert_bounded()
    assert any("inodes per group" in message for _, _, message in layout.findings)
    inodes = [end - start for kind, start, end in layout.structures if kind == "ufs-inodes"]
    assert inodes == [32 * 1024] * 8  # cut at the first data fragment


def test_hostile_cssize(ufs1_bytes):
    reader = CountingReader(ufs1_bytes, {SB + 156: _u32(2**31 - 1)})
    layout = reader.layout()
    _assert_sane(layout, reader.size)
    assert any("summary" in message for _, _, message in layout.findings)
    assert [(s, e) for k, s, e in layout.structures if k == "ufs-summary"] == [
        (64 * 1024, 65 * 1024)
    ]


def test_hostile_cg_bad_magic(ufs1_bytes):
    sb = _superblock(ufs1_bytes, "<")
    cg3 = (3 * sb["fpg"] + sb["cblkno"]) * sb["fsize"]
    header = _cg_header(ufs1_bytes, "<", sb, 3)
    reader = CountingReader(ufs1_bytes, {cg3 + 4: _u32(0xDEADBEEF)})
    layout = reader.layout()
    _assert_sane(layout, reader.size)
    assert [(severity, offset) for severity, offset, _ in layout.findings] == [("error", cg3)]
    assert "ufs-cg 3" in layout.findings[0][2]
    whole = _read_layout(ufs1_bytes)
    assert layout.structures == whole.structures
    lost = (header["nbfree"] * sb["frag"] + header["nffree"]) * sb["fsize"]
    assert (
        int((whole.free[1] - whole.free[0]).sum() - (layout.free[1] - layout.free[0]).sum()) == lost
    )


@pytest.mark.parametrize("size", [5 * 2**20 + 3000, 2 * 2**20, 20 * 1024])
def test_hostile_truncated(ufs1_bytes, size):
    reader = CountingReader(ufs1_bytes, size=size)
    layout = reader.layout()
    _assert_sane(layout, size)
    reader.assert_bounded()
    assert any("volume holds" in message for _, _, message in layout.findings)


def test_no_superblock_raises_ours(ufs1_bytes):
    with pytest.raises(NotThisFormat):
        CountingReader(bytes(1 << 20)).layout()
    with pytest.raises(NotThisFormat):
        CountingReader(ufs1_bytes, size=SB + 1000).layout()
    with pytest.raises(DamagedError):  # the magic, but a fragment size of 3 bytes
        CountingReader(ufs1_bytes, {SB + 52: _u32(3)}).layout()


#: Byte offsets (from the superblock) of the u32 fields the layout believes.
SB_FIELDS = [8, 12, 16, 20, 24, 28, 36, 44, 48, 52, 56, 104, 120, 152, 156, 160, 184, 188, 1372]
CG_FIELDS = [4, 12, 20, 92, 96, 100]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sb_patches=st.lists(
        st.tuples(st.sampled_from(SB_FIELDS), st.integers(0, 2**32 - 1)), max_size=3
    ),
    cg_patches=st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(CG_FIELDS), st.integers(0, 2**32 - 1)),
        max_size=3,
    ),
    size=st.integers(1, 15 * 2**20),
)
def test_hostile_fields_raise_only_ours(ufs1_bytes, sb_patches, cg_patches, size):
    patches = {SB + at: _u32(value) for at, value in sb_patches}
    for cg, at, value in cg_patches:
        patches[(cg * 2048 + 24) * 1024 + at] = _u32(value)
    reader = CountingReader(ufs1_bytes, patches, size=size)
    try:
        layout = reader.layout()
    except ParserError:
        return
    finally:
        reader.assert_bounded()
    _assert_sane(layout, size)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=4096), st.integers(0, 3))
def test_random_bytes_raise_only_ours(blob, where):
    """Random bytes where a superblock is searched, a UFS magic at its end now and then."""
    data = bytearray(300 * 1024)
    offset = ufs.SUPERBLOCK_OFFSETS[where]
    data[offset : offset + len(blob)] = blob
    if len(blob) % 2:
        struct.pack_into("<I", data, offset + 1372, 0x19540119 if len(blob) % 4 == 1 else 0x011954)
        struct.pack_into("<q", data, offset + 1000, offset)
    reader = CountingReader(bytes(data))
    try:
        _assert_sane(reader.layout(), len(data))
    except ParserError:
        pass
    reader.assert_bounded()
    assert detect(io.BytesIO(bytes(data)), len(data)).kind in ("ufs", "unknown")
