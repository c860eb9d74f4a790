"""Hypothesis builds structurally valid hostile inputs with correct checksums: GPTs (both
headers' and the entry array's CRC32), LVM2 metadata (lvm2's CRC of the mda header and of the
text) and ext4 without and with metadata_csum (the superblock, group descriptor 0 and the root
directory's extent tree; with metadata_csum their crc32c sums recomputed as the kernel does,
the crc32c checked against mke2fs's own), whose counts, sizes and places are drawn from the
absurd as much as the plausible.

Properties, for every example: only the project's own errors escape; every map line lies
inside its disk and is not empty; the input is not changed.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.errors import BmapError
from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.store.mapfile import dumps_map
from parsers.errors import ParserError
from tests.hostile import craft
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_images_cache_fixture,
    lvm_whole_image_fixture,
)

SECTOR = 512
DISK = 4 << 20  # a 4 MiB GPT disk: 8192 sectors
LAST_LBA = DISK // SECTOR - 1

# Numbers as an attacker picks them: small, at the edges, past the disk, past int64.
in_disk = st.integers(0, LAST_LBA + 2)
lba = st.one_of(  # three times in (or just past) the disk to once absurd
    in_disk, in_disk, in_disk, st.sampled_from([2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1])
)
count = st.one_of(st.integers(0, 300), st.sampled_from([4096, 65_536, 2**31, 2**32 - 1]))


def _check_map(path: Path) -> None:
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with Image(path) as image:
            bmap = map_images([image])
            dumps_map(bmap)
    except (BmapError, ParserError):
        return
    finally:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    frame = bmap.to_dataframe()
    size = path.stat().st_size
    assert (frame["end"] > frame["start"]).all()
    assert frame["start"].min() >= 0 and frame["end"].max() <= size


@st.composite
def gpt_disk(draw: st.DrawFn) -> bytes:
    """A 4 MiB disk: a protective MBR, a primary and a backup GPT header, an entry array; the
    header fields and the entries are drawn, the three CRC32s are right."""
    disk = bytearray(DISK)
    # protective MBR: one 0xEE entry over the disk
    disk[446 : 446 + 16] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff" * 3, 1, LAST_LBA)
    disk[510:512] = b"\x55\xaa"
    entries = draw(st.lists(st.tuples(lba, lba, st.integers(0, 3)), max_size=24))
    stored = draw(st.sampled_from([128, 128, 128, 256, 8, 0, 2**31]))
    num = draw(st.one_of(st.just(max(len(entries), 1)), st.just(128), count))
    array = bytearray()
    for i, (first, last, kind) in enumerate(entries):
        type_guid = craft.LINUX_FS if kind else bytes(16)  # an unused slot now and then
        raw = craft.gpt_entry(first, last, i, type_guid)
        array += raw.ljust(stored, b"\0")[: max(stored, 0)] if stored <= 1024 else raw
    entries_lba = draw(st.one_of(st.just(2), st.just(2), lba))
    room = max(0, min(len(array), DISK - min(entries_lba, DISK // SECTOR) * SECTOR))
    at = min(entries_lba, DISK // SECTOR) * SECTOR
    disk[at : at + room] = array[:room]
    array_len = num * stored if 0 < num * stored <= 1 << 24 else len(array)
    array_crc = zlib.crc32(bytes(disk[at : at + array_len])) if at < DISK else 0
    first_usable = draw(st.one_of(st.just(34), st.just(34), lba))
    last_usable = draw(st.one_of(st.just(LAST_LBA - 33), st.just(LAST_LBA - 33), lba))
    for current, other in ((1, LAST_LBA), (LAST_LBA, 1)):
        fields = [
            b"EFI PART", 0x00010000, 92, 0, 0, current, other, first_usable, last_usable,
            bytes(range(16)), entries_lba, num % 2**32, stored % 2**32, array_crc,
        ]  # fmt: skip
        fields[3] = 0
        raw = bytearray(craft.GPT_HEADER.pack(*fields))
        fields[3] = zlib.crc32(raw[:92])
        raw = craft.GPT_HEADER.pack(*fields)
        disk[current * SECTOR : current * SECTOR + len(raw)] = raw
    return bytes(disk)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(gpt_disk())
def test_crafted_gpt_with_valid_crcs(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("gpt") / "disk.img"
    path.write_bytes(data)
    _check_map(path)


# LVM2: metadata text from drawn numbers, written with good checksums into a real PV.

number = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]),
)


@st.composite
def lvm_text(draw: st.DrawFn, base: str) -> str:
    """The base PV's metadata with its extent size, PV fields and LVs replaced by drawn ones:
    linear and striped segments at drawn extents, counts, stripe sizes, PVs (some missing)."""
    text = base
    text = craft.set_field(text, "extent_size", draw(st.one_of(st.just(8192), number)))
    text = craft.set_field(text, "pe_start", draw(st.one_of(st.just(2048), number)))
    text = craft.set_field(text, "pe_count", draw(st.one_of(st.just(15), number)))
    lvs = []
    for n in range(draw(st.integers(0, 6))):
        segments = []
        start = 0
        for k in range(draw(st.integers(1, 3))):
            extents = draw(number)
            stripes = draw(st.integers(1, 3))
            pvs = [draw(st.sampled_from(["pv0", "pv0", "pv9"])) for _ in range(stripes)]
            segments.append(
                craft.segment(
                    k + 1,
                    start,
                    extents,
                    [(pv, draw(number)) for pv in pvs],
                    stripe_size=draw(st.one_of(st.just(128), number)) if stripes > 1 else None,
                )
            )
            start = start + extents if isinstance(extents, int) and extents >= 0 else 0
        lvs.append(craft.lv(f"lv{n}", n, segments))
    return craft.set_lvs(text, "\n".join(lvs))


@pytest.fixture(scope="module")
def lvm_scratch(lvm_whole_image, tmp_path_factory) -> tuple[Path, str]:
    """A copy of a real whole-disk PV (pvcreate, vgcreate, lvcreate) and its metadata text."""
    src = lvm_whole_image.images[0]
    path = tmp_path_factory.mktemp("lvm") / src.name
    shutil.copyfile(src, path)
    return path, craft.current_text(path)


def test_crafted_lvm_metadata_with_valid_checksums(lvm_scratch):
    path, base = lvm_scratch

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(lvm_text(base))
    def check(text: str) -> None:
        craft.write_metadata(path, text)
        _check_map(path)

    check()


def test_a_segment_ending_past_int64_is_cut_short(lvm_scratch):
    """Found by the property above in a CI run: each number in range, but a segment at extent
    2**62 of 4 MiB extents lies past int64 (an OverflowError, exit 1)."""
    path, base = lvm_scratch
    far = 1 << 62
    segments = [
        craft.segment(1, 0, far, [("pv0", 0)]),
        craft.segment(2, far, 1, [("pv0", 0)]),
    ]
    text = craft.set_field(base, "extent_size", 8192)
    text = craft.set_lvs(text, craft.lv("lv1", 1, segments))
    craft.write_metadata(path, text)
    _check_map(path)
    with Image(path) as image:
        bmap = map_images([image])
    cut = [f for f in bmap.findings if "past the largest offset a device can have" in f.message]
    assert cut and cut[0].source.endswith("lv1"), bmap.findings


# ext2/3/4 without metadata_csum (no checksum to keep): superblock, group descriptor 0 and
# the root directory's extent tree drawn over a real mke2fs image.

u32 = st.one_of(st.integers(0, 70_000), st.sampled_from([2**31, 2**32 - 1]))
u16 = st.one_of(st.integers(0, 5000), st.sampled_from([2**15, 2**16 - 1]))

#: (offset in the superblock, struct format, strategy)
SUPERBLOCK_FIELDS = [
    (0x00, "<I", u32),  # s_inodes_count
    (0x04, "<I", u32),  # s_blocks_count_lo
    (0x14, "<I", st.integers(0, 3)),  # s_first_data_block
    (0x18, "<I", st.one_of(st.integers(0, 6), st.just(2**32 - 1))),  # s_log_block_size
    (0x20, "<I", u32),  # s_blocks_per_group
    (0x28, "<I", u32),  # s_inodes_per_group
    (0x54, "<I", u32),  # s_first_ino
    (0x58, "<H", st.sampled_from([0, 1, 128, 256, 512, 1024, 4096, 65535])),  # s_inode_size
    (0x60, "<I", st.integers(0, 2**32 - 1)),  # s_feature_incompat
    (0xCE, "<H", u16),  # s_reserved_gdt_blocks
    (0xFE, "<H", st.sampled_from([0, 32, 64, 128, 1024, 65535])),  # s_desc_size
    (0x104, "<I", u32),  # s_first_meta_bg
    (0x150, "<I", st.one_of(st.just(0), u32)),  # s_blocks_count_hi
    (0x174, "<B", st.integers(0, 255)),  # s_log_groups_per_flex
]
#: group descriptor 0: block bitmap, inode bitmap, inode table, flags, itable unused
DESCRIPTOR_FIELDS = [(0x0, "<I", u32), (0x4, "<I", u32), (0x8, "<I", u32), (0x12, "<H", u16)]
#: the root inode's extent header and first extent (i_block at 0x28 of the inode)
EXTENT_FIELDS = [
    (0x02, "<H", u16),  # eh_entries
    (0x04, "<H", u16),  # eh_max
    (0x06, "<H", st.one_of(st.integers(0, 6), u16)),  # eh_depth
    (0x0C, "<I", u32),  # ee_block
    (0x10, "<H", u16),  # ee_len
    (0x12, "<H", u16),  # ee_start_hi
    (0x14, "<I", u32),  # ee_start_lo
]


def _ext4_image(tmp_path_factory, features: str) -> bytes:
    """An 8 MiB ext4 of 1 KiB blocks with files, made by mke2fs -d with ``-O features``."""
    from tests.conftest import run_tool, tool

    root = tmp_path_factory.mktemp("ext")
    tree = root / "tree"
    (tree / "d").mkdir(parents=True)
    for i in range(20):
        (tree / "d" / f"f{i}").write_bytes(bytes([i]) * (700 * i + 1))
    image = root / "ext4.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    run_tool(
        tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", "1024",
        "-O", features, "-d", str(tree), str(image),
    )  # fmt: skip
    return image.read_bytes()


@pytest.fixture(scope="module")
def ext_base(tmp_path_factory) -> bytes:
    """Without metadata_csum or uninit_bg."""
    return _ext4_image(tmp_path_factory, "^metadata_csum,^uninit_bg")


@st.composite
def ext_changes(
    draw: st.DrawFn, descriptor_fields: list = DESCRIPTOR_FIELDS
) -> list[tuple[str, int, str, int]]:
    """Some fields of the superblock, descriptor 0 and the root inode's ``i_block``, each set
    to a draw."""
    picked = []
    for where, fields in (
        ("sb", SUPERBLOCK_FIELDS),
        ("gd", descriptor_fields),
        ("root", EXTENT_FIELDS),
    ):
        for offset, fmt, values in fields:
            if draw(st.integers(0, 3)) == 0:  # each field changed one time in four
                picked.append((where, offset, fmt, draw(values)))
    return picked


def test_crafted_ext_superblock_descriptors_and_extents(ext_base, tmp_path):
    pristine = ext_base
    superblock = 1024
    block = 1024
    descriptor = 2 * block  # 1 KiB blocks: the descriptor table follows the superblock
    table = struct.unpack_from("<I", pristine, descriptor + 8)[0] * block
    inode_size = struct.unpack_from("<H", pristine, superblock + 0x58)[0]
    root_iblock = table + inode_size + 0x28  # inode 2
    assert struct.unpack_from("<H", pristine, root_iblock)[0] == 0xF30A  # an extent header
    base = {"sb": superblock, "gd": descriptor, "root": root_iblock}
    _check_ext_changes(pristine, base, ext_changes(), tmp_path / "ext4.img")


def _check_ext_changes(pristine, base, changes, path, fix=None) -> None:
    """Each drawn list of ``changes`` written over ``pristine`` at ``base[where] + offset``,
    ``fix`` (the checksums) applied, and the map of the result checked."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(changes)
    def check(changes: list[tuple[str, int, str, int]]) -> None:
        data = bytearray(pristine)
        for where, offset, fmt, value in changes:
            struct.pack_into(fmt, data, base[where] + offset, value)
        if fix is not None:
            fix(data)
        path.write_bytes(bytes(data))
        _check_map(path)

    check()


# ext4 with metadata_csum: the same fields and more of descriptor 0 (flags, unused inodes: the
# paths of uninit_bg), the checksums of the superblock, of descriptor 0 and of the root inode
# recomputed after each change as the kernel computes them (crc32c). The crc32c below is
# checked first against the checksums mke2fs wrote.


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c_raw(seed: int, data: bytes) -> int:
    """ext4's ``ext4_chksum``: crc32c from ``seed`` with no final inversion."""
    c = seed
    for byte in data:
        c = _CRC32C[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c


#: descriptor 0 (64 bytes with 64bit): and its flags and unused inodes, where uninit_bg reads
CSUM_DESCRIPTOR_FIELDS = [*DESCRIPTOR_FIELDS, (0x1C, "<H", u16), (0x12, "<H", st.integers(0, 7))]


@pytest.fixture(scope="module")
def ext_csum_base(tmp_path_factory) -> bytes:
    """With metadata_csum (and 64bit)."""
    return _ext4_image(tmp_path_factory, "metadata_csum,64bit,^metadata_csum_seed")


class _CsumLayout:
    """Where the checksummed structures of :func:`ext_csum_base` sit, and their sums."""

    def __init__(self, data: bytes) -> None:
        self.sb = 1024
        self.gd = 2048  # 1 KiB blocks: the descriptor table follows the superblock
        self.desc_size = struct.unpack_from("<H", data, self.sb + 0xFE)[0]
        self.inode_size = struct.unpack_from("<H", data, self.sb + 0x58)[0]
        self.seed = crc32c_raw(0xFFFFFFFF, data[self.sb + 0x68 : self.sb + 0x78])  # s_uuid
        table = struct.unpack_from("<I", data, self.gd + 8)[0] * 1024
        self.root = table + self.inode_size  # inode 2

    def fix(self, data: bytearray) -> None:
        """Recompute the checksums of the root inode, descriptor 0 and the superblock."""
        ino = self.root
        struct.pack_into("<H", data, ino + 0x7C, 0)
        struct.pack_into("<H", data, ino + 0x82, 0)
        generation = data[ino + 0x64 : ino + 0x68]
        crc = crc32c_raw(crc32c_raw(self.seed, struct.pack("<I", 2)), generation)
        crc = crc32c_raw(crc, bytes(data[ino : ino + self.inode_size]))
        struct.pack_into("<H", data, ino + 0x7C, crc & 0xFFFF)
        struct.pack_into("<H", data, ino + 0x82, crc >> 16)
        desc = bytearray(data[self.gd : self.gd + self.desc_size])
        struct.pack_into("<H", desc, 0x1E, 0)
        crc = crc32c_raw(crc32c_raw(self.seed, struct.pack("<I", 0)), bytes(desc))
        struct.pack_into("<H", data, self.gd + 0x1E, crc & 0xFFFF)
        crc = crc32c_raw(0xFFFFFFFF, bytes(data[self.sb : self.sb + 0x3FC]))
        struct.pack_into("<I", data, self.sb + 0x3FC, crc)


def test_the_crc32c_here_is_the_one_mke2fs_writes(ext_csum_base):
    layout = _CsumLayout(ext_csum_base)
    fixed = bytearray(ext_csum_base)
    layout.fix(fixed)
    assert struct.unpack_from("<H", ext_csum_base, layout.root + 0x28)[0] == 0xF30A  # extents
    assert bytes(fixed) == ext_csum_base  # every recomputed sum equals mke2fs's


def test_crafted_ext_with_metadata_csum_and_valid_checksums(ext_csum_base, tmp_path):
    layout = _CsumLayout(ext_csum_base)
    base = {"sb": layout.sb, "gd": layout.gd, "root": layout.root + 0x28}  # its i_block
    changes = ext_changes(CSUM_DESCRIPTOR_FIELDS)
    _check_ext_changes(ext_csum_base, base, changes, tmp_path / "ext4.img", layout.fix)
