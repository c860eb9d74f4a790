"""Directory blocks: the vectorised parser (``bulk_dir_entries``) against the entry-by-entry one
(``dir_entries``) on generated, damaged and random blocks.

The two are written differently on purpose: one walks each block's ``rec_len`` chain in
Python, the other follows every block's chain at once in numpy and checks the entries
afterwards. Both sit under real filesystems made by ``mke2fs`` (with and without the
``filetype`` feature, 1 KiB, 4 KiB and 64 KiB blocks, the last with its own ``rec_len``
encoding); the blocks are written into a scratch copy and read back through a plain
``BytesIO`` and through the project's own image view (``preadv``).
"""

from __future__ import annotations

import io
import random
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parsers.ext.filesystem as F
from bmap.images import Image
from parsers.ext.filesystem import ExtFS
from tests.conftest import tool

#: (name, mke2fs arguments, block size)
FILESYSTEMS = [
    ("ext4-4k", ["-t", "ext4", "-b", "4096"], 4096),
    ("ext2-1k-nofiletype", ["-t", "ext2", "-b", "1024", "-O", "^filetype"], 1024),
    ("ext4-64k", ["-t", "ext4", "-b", "65536"], 65536),
]
#: Where the generated blocks go: far from the filesystem's own metadata.
FIRST_BLOCK = 40


@pytest.fixture(scope="module", params=FILESYSTEMS, ids=[f[0] for f in FILESYSTEMS])
def scratch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name, args, bs = request.param
    path = tmp_path_factory.mktemp("dirs") / f"{name}.img"
    size = max(64 * bs, 4 << 20)
    with open(path, "wb") as fh:
        fh.truncate(size)
    subprocess.run(
        [tool("mke2fs"), "-q", "-F", *args, str(path)],
        check=True,
        capture_output=True,
        env={"MKE2FS_CONFIG": "/dev/null", "PATH": "/usr/sbin:/sbin:/usr/bin:/bin"},
    )
    return path, bs


def encode_rec_len(rec_len: int, bs: int) -> int:
    """The on-disk 16-bit ``rec_len`` (ext4_rec_len_to_disk)."""
    if bs < 65536:
        return rec_len & 0xFFFF
    if rec_len == 65536:
        return 65535
    return (rec_len & 65532) | ((rec_len >> 16) & 3)


def _block_of(entries: list[tuple[int, bytes, int]], bs: int, filetype: bool) -> bytearray:
    """Entries ``(inode, name, extra rec_len)`` linked from the block's start; the last one
    reaches the end of the block."""
    block = bytearray(bs)
    pos = 0
    for i, (ino, name, extra) in enumerate(entries):
        need = 8 + -(-len(name) // 4) * 4
        if pos + need > bs:
            break
        rec_len = need + 4 * extra
        if i == len(entries) - 1 or pos + rec_len + 12 > bs:
            rec_len = bs - pos
        if filetype:
            header = struct.pack("<IHBB", ino, encode_rec_len(rec_len, bs), len(name), 1)
        else:
            header = struct.pack("<IHH", ino, encode_rec_len(rec_len, bs), len(name))
        block[pos : pos + 8] = header
        block[pos + 8 : pos + 8 + len(name)] = name
        pos += rec_len
        if pos >= bs:
            break
    return block


INODES = [0, 1, 2, 11, 12, 65537, 2**32 - 1]


@st.composite
def block_spec(draw: st.DrawFn, filetype: bool) -> tuple:
    """What a block holds, small enough to print: linked entries with a few 16-bit words
    overwritten, a block full of short names made from a seed, or random bytes from a seed."""
    kind = draw(st.sampled_from(["entries", "entries", "entries", "dense", "random"]))
    damage = draw(
        st.lists(
            st.tuples(st.integers(0, 255), st.sampled_from([0, 4, 6]), st.integers(0, 65535)),
            max_size=2,
        )
    )
    if kind != "entries":
        return kind, draw(st.integers(0, 2**32)), damage
    names = st.one_of(
        st.binary(min_size=0, max_size=255 if filetype else 300).filter(lambda n: b"\0" not in n),
        st.sampled_from([b".", b"..", b".a", b"..."]),
    )
    entry = st.tuples(st.sampled_from(INODES), names, st.integers(0, 3))
    return kind, draw(st.lists(entry, min_size=1, max_size=12)), damage


def build_block(spec: tuple, bs: int, filetype: bool) -> bytes:
    kind, what, damage = spec
    if kind == "random":
        return random.Random(what).randbytes(bs)
    if kind == "dense":
        rng = random.Random(what)
        entries = [
            (rng.choice(INODES), rng.randbytes(rng.randint(1, 12)).replace(b"\0", b"x"), 0)
            for _ in range(min(bs // 12, 800))
        ]
    else:
        entries = what
    block = _block_of(entries, bs, filetype)
    for word, within, value in damage:
        at = min(word * 4 + within, bs - 2)
        block[at : at + 2] = struct.pack("<H", value)
    return bytes(block)


def parse_both(fs: ExtFS, blocks: list[int], data: dict[int, bytes]):
    """The bulk answer and the one-block-at-a-time answer, as comparable lists."""
    bulk = fs.bulk_dir_entries(np.array(blocks, dtype=np.int64))
    bulk_bad = sorted({p.offset // fs.block_size for p in bulk.problems})
    got = list(zip(bulk.block.tolist(), bulk.inodes.tolist(), bulk.names, bulk.file_types.tolist()))
    want = []
    want_bad = set()
    for index, block in enumerate(blocks):
        entries = fs.dir_entries(data[block], f"block {block}")
        if entries.problems:
            want_bad.add(block)
        want += [
            (index, ino, name, ftype)
            for ino, name, ftype in zip(
                entries.inodes.tolist(), entries.names, entries.file_types.tolist()
            )
        ]
    return got, bulk_bad, want, sorted(want_bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bulk_parser_equals_entry_by_entry_parser(scratch, data: st.DataObject) -> None:
    path, bs = scratch
    image_bytes = bytearray(path.read_bytes())
    fs = ExtFS(io.BytesIO(bytes(image_bytes)), len(image_bytes))
    filetype = fs.sb.has(incompat=0x2)
    count = data.draw(st.integers(1, 6), label="blocks")
    specs = [data.draw(block_spec(filetype), label="block") for _ in range(count)]
    contents = [build_block(spec, bs, filetype) for spec in specs]
    # Consecutive and scattered block numbers, in any order: runs are read as one piece.
    numbers = data.draw(
        st.permutations(range(FIRST_BLOCK, FIRST_BLOCK + 8)).map(lambda p: sorted(p[:count])),
        label="numbers",
    )
    if data.draw(st.booleans(), label="shuffled"):
        numbers = data.draw(st.permutations(numbers))
    by_block = dict(zip(numbers, contents))
    for number, content in by_block.items():
        image_bytes[number * bs : (number + 1) * bs] = content

    # Several windows and chunks too: each chunk's entries must say which of all the blocks
    # they are in.
    chunk = data.draw(st.sampled_from([1, 2, 3, F.DIR_CHUNK_BLOCKS]), label="chunk")
    window = data.draw(st.sampled_from([1, 2, 5, 1 << 30]), label="window (blocks)")
    saved = F.DIR_CHUNK_BLOCKS, F.DIR_WINDOW_BYTES
    F.DIR_CHUNK_BLOCKS, F.DIR_WINDOW_BYTES = chunk, window * bs
    try:
        check_both_streams(path, image_bytes, numbers, by_block)
    finally:
        F.DIR_CHUNK_BLOCKS, F.DIR_WINDOW_BYTES = saved


def check_both_streams(path, image_bytes: bytearray, numbers: list[int], by_block) -> None:
    for fh in ("bytesio", "image"):
        if fh == "bytesio":
            fs = ExtFS(io.BytesIO(bytes(image_bytes)), len(image_bytes))
            got, got_bad, want, want_bad = parse_both(fs, numbers, by_block)
        else:
            path.write_bytes(image_bytes)
            with Image(path) as image:
                fs = ExtFS(image.stream(), image.size)
                got, got_bad, want, want_bad = parse_both(fs, numbers, by_block)
        assert got == want, fh
        assert got_bad == want_bad, fh


def test_a_real_directory_parses_the_same_both_ways(scratch) -> None:
    """The blocks of a directory mke2fs wrote (with ``.``, ``..`` and ``lost+found``)."""
    path, _ = scratch
    with Image(path) as image:
        fs = ExtFS(image.stream(), image.size)
        root = fs.inodes.index_of(2)
        runs = fs.runs_of(root, "root")
        blocks = [
            p + i for p, n in zip(runs.physical.tolist(), runs.length.tolist()) for i in range(n)
        ]
        data = {b: fs.read_blocks(b) for b in blocks}
        got, got_bad, want, want_bad = parse_both(fs, blocks, data)
    assert [name for _, _, name, _ in got] == [b"lost+found"]
    assert got == want and got_bad == want_bad == []
