"""parsers.qcow2 against images made by qemu-img and qemu-io, and against hostile headers.

The truth is qemu's: ``qemu-img info`` for the header, ``qemu-img map`` for where every guest
byte is, ``qemu-img convert -O raw`` for the bytes (the reads are tested in
tests/bmap/images/test_qcow2.py).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.errors import DamagedError, NotThisFormat, ParserError, UnsupportedError
from parsers.qcow2 import (
    COMPRESSED,
    DATA,
    UNALLOCATED,
    ZERO,
    HostFile,
    Qcow2Image,
)

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="qemu-img and qemu-io are not installed (Debian: qemu-utils)",
)


class BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def pread(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class FileReader:
    """A file opened read-only, for the parser's tests (the project's Image is bmap's)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)


def host(path: Path) -> HostFile:
    st_ = os.stat(path)
    return HostFile(FileReader(path), st_.st_size, str(path), (st_.st_dev, st_.st_ino))


def opener(name: str, referrer: HostFile, role: str, declared: str | None) -> HostFile:
    path = Path(name)
    if not path.is_absolute():
        path = Path(referrer.name).parent / path
    return host(path)


def open_qcow2(path: Path) -> Qcow2Image:
    return Qcow2Image(host(path), opener)


def qemu(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def convert(src: Path, out: Path, *options: str) -> Path:
    qemu("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", *options, str(src), str(out))
    return out


def granules(size: int, runs) -> dict[str, np.ndarray]:
    """Per 512-byte sector of the disk: depth, present, zero, data, offset (-1: none)."""
    n = size // 512
    out = {k: np.full(n, -1, np.int64) for k in ("depth", "present", "zero", "data", "offset")}
    for gs, ge, depth, present, zero, data, offset in runs:
        a, b = gs // 512, ge // 512
        out["depth"][a:b] = depth
        out["present"][a:b] = present
        out["zero"][a:b] = zero
        out["data"][a:b] = data
        if offset >= 0:
            out["offset"][a:b] = offset + np.arange(b - a) * 512
    return out


def qemu_map(path: Path, raw_depths: set[int]) -> dict[str, np.ndarray]:
    entries = json.loads(qemu("qemu-img", "map", "--output=json", str(path)))
    runs = []
    for e in entries:
        start, end = e["start"], e["start"] + e["length"]
        if e["depth"] in raw_depths:
            # A raw file's holes are its file system's business, not the image's.
            runs.append((start, end, e["depth"], 1, 0, 1, start))
            continue
        # qemu gives the host cluster's offset for an unallocated subcluster of an
        # allocated cluster (extended L2); no guest byte is there, and we say none.
        offset = e.get("offset", -1) if e["present"] else -1
        # "zero" beside "data" is a hole in the host file (qemu asks the file system): the
        # image's own metadata says data.
        zero = int(e["zero"] and not e["data"])
        runs.append((start, end, e["depth"], int(e["present"]), zero, int(e["data"]), offset))
    return granules(entries[-1]["start"] + entries[-1]["length"], runs)


def our_map(image: Qcow2Image) -> dict[str, np.ndarray]:
    runs = image.host_runs(0, image.size)
    rows = []
    for gs, ge, layer, kind, off, _length in runs.rows():
        present = kind != "unallocated"
        zero = kind in ("zero", "unallocated")
        data = kind in ("data", "compressed")
        offset = off if kind in ("data", "zero") else -1
        rows.append((gs, ge, layer, int(present), int(zero), int(data), offset))
    return granules(image.size, rows)


def assert_same_map(
    image: Qcow2Image, path: Path, raw_depths: frozenset[int] = frozenset()
) -> None:
    ours, theirs = our_map(image), qemu_map(path, set(raw_depths))
    for key in ours:
        diff = np.flatnonzero(ours[key] != theirs[key])
        assert len(diff) == 0, (
            f"{key} differs from qemu-img map at sector {diff[0]} "
            f"(guest {diff[0] * 512:#x}): ours {ours[key][diff[0]]}, qemu {theirs[key][diff[0]]}"
        )


@pytest.fixture
def disk(sample, tmp_path) -> Path:
    """A copy of a bundled sample (a real ext4 disk) that the tests may convert."""
    return sample("whole-disk-ext4")


VARIANTS = {
    "plain": (),
    "deflate": ("-c",),
    "zstd": ("-c", "-o", "compression_type=zstd"),
    "extended-l2": ("-o", "extended_l2=on"),
    "extended-l2-64k": ("-o", "extended_l2=on,cluster_size=64k"),
    "extended-l2-2m": ("-o", "extended_l2=on,cluster_size=2M"),
    "extended-l2-zstd": ("-c", "-o", "extended_l2=on,compression_type=zstd"),
    "clusters-4k": ("-o", "cluster_size=4k"),
    "clusters-512": ("-o", "cluster_size=512"),
    "v2": ("-o", "compat=0.10"),
    "v2-compressed": ("-c", "-o", "compat=0.10"),
}


@needs_qemu
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_header_and_map_agree_with_qemu(disk, tmp_path, variant):
    path = convert(disk, tmp_path / "x.qcow2", *VARIANTS[variant])
    info = json.loads(qemu("qemu-img", "info", "--output=json", str(path)))
    image = open_qcow2(path)
    assert image.virtual_size == info["virtual-size"] == disk.stat().st_size
    assert image.cluster_size == info["cluster-size"]
    specific = info["format-specific"]["data"]
    assert image.version == (2 if specific["compat"] == "0.10" else 3)
    if image.version == 3:
        assert image.extended_l2 == specific["extended-l2"]
        assert (
            image.compression == {"zlib": "deflate", "zstd": "zstd"}[specific["compression-type"]]
        )
    assert_same_map(image, path)
    kinds = set(image.host_runs(0, image.size).kind.tolist())
    if "-c" in VARIANTS[variant]:
        assert COMPRESSED in kinds
        assert image.compressed_cluster_count() > 0
    else:
        assert COMPRESSED not in kinds and DATA in kinds


@needs_qemu
def test_three_level_chain_with_raw_base_agrees_with_qemu_map(disk, tmp_path):
    raw = tmp_path / "base.raw"
    raw.write_bytes(disk.read_bytes()[: 8 << 20])  # shorter than the chain above it
    base, mid, top = (tmp_path / f"{n}.qcow2" for n in ("base", "mid", "top"))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", str(base))
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x11 64k 200k",
        "-c",
        "write -z 1M 128k",
        str(base),
    )
    qemu(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "base.qcow2",
        str(mid),
        "12M",
    )
    qemu(
        "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 100k 100k", "-c", "write -z 2M 64k",
        "-c", "write -P 0x23 9M 1M", str(mid),
    )  # fmt: skip
    qemu(
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "mid.qcow2", str(top), "16M"
    )
    qemu(
        "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 150k 10k", "-c", "write -z 64k 64k",
        "-c", "write -P 0x34 13M 64k", "-c", "write -z 9M 4k", str(top),
    )  # fmt: skip
    image = open_qcow2(top)
    assert [f.name for f in image.layer_files()] == [str(top), str(mid), str(base), str(raw)]
    assert [f.layer for f in image.layer_files()] == [0, 1, 2, 3]
    assert_same_map(image, top, raw_depths=frozenset({3}))
    runs = image.host_runs(0, image.size)
    # A zero cluster written on top does not fall through to the 0x22 data below it.
    at = int(np.searchsorted(runs.guest_end, 64 << 10, side="right"))
    assert (runs.kind[at], runs.layer[at]) == (ZERO, 0)
    # Past the raw base's end and the mid's: unallocated, read as zeros.
    last = runs.guest_end == image.size
    assert runs.kind[last][0] == UNALLOCATED


@needs_qemu
def test_host_runs_clip_many_ranges_like_the_whole_table(disk, tmp_path):
    image = open_qcow2(convert(disk, tmp_path / "c.qcow2", "-c"))
    rng = np.random.default_rng(7)
    starts = rng.integers(0, image.size, 5000)
    ends = np.minimum(starts + rng.integers(1, 1 << 20, 5000), image.size)
    runs = image.host_runs(starts, ends)
    whole = image.host_runs(0, image.size)
    # Every query is covered exactly, in order, by its runs.
    covered = np.bincount(runs.query, weights=runs.guest_end - runs.guest_start, minlength=5000)
    assert np.array_equal(covered.astype(np.int64), ends - starts)
    # And each run agrees with the whole-disk table at its start.
    at = np.searchsorted(whole.guest_end, runs.guest_start, side="right")
    assert np.array_equal(whole.kind[at], runs.kind)
    data = runs.kind == DATA
    expect = whole.host_offset[at] + (runs.guest_start - whole.guest_start[at])
    assert np.array_equal(runs.host_offset[data], expect[data])


@needs_qemu
def test_external_data_file_offsets_are_in_the_data_file(disk, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # qemu-img resolves the data file's name against its cwd
    path = tmp_path / "df.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "data_file=df.data",
         str(disk), "df.qcow2"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    image = open_qcow2(path)
    assert image.data_file is not None and image.data_file.name == str(tmp_path / "df.data")
    files = image.layer_files()
    assert [f.role for f in files] == ["image", "data-file"]
    runs = image.host_runs(0, image.size)
    assert set(runs.file[runs.kind == DATA].tolist()) == {1}
    assert_same_map(image, path)


@needs_qemu
def test_structures_match_the_tables_read_independently(disk, tmp_path):
    path = tmp_path / "s.qcow2"
    convert(disk, path, "-o", "cluster_size=4k")
    qemu("qemu-img", "snapshot", "-c", "snap1", str(path))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 64k", str(path))
    qemu("qemu-img", "bitmap", "--add", str(path), "bm0")
    image = open_qcow2(path)
    raw = path.read_bytes()
    (l1_offset,) = struct.unpack(">Q", raw[40:48])
    (l1_size,) = struct.unpack(">I", raw[36:40])
    l1 = struct.unpack(f">{l1_size}Q", raw[l1_offset : l1_offset + 8 * l1_size])
    l2s = {e & 0x00FFFFFFFFFFFE00 for e in l1} - {0}
    found = image.structures()
    kinds = {s.kind for s in found}
    assert {
        "qcow2-header", "l1-table", "l2-table", "refcount-table", "refcount-block",
        "snapshot-table", "snapshot-l1-table", "bitmap-directory", "bitmap-table",
    } <= kinds  # fmt: skip
    assert {s.host_offset for s in found if s.kind == "l2-table"} == l2s
    assert [s.host_offset for s in found if s.kind == "l1-table"] == [l1_offset]
    assert all(s.host_offset + s.length <= len(raw) for s in found)
    assert image.structure_problems() == []
    assert [s.name for s in image.snapshots] == ["snap1"]
    assert [b.name for b in image.bitmaps] == ["bm0"]


# -- hostile and unsupported headers -----------------------------------------------------


def header(**fields: int) -> bytearray:
    """A minimal version 3 header (64 KiB clusters, 1 MiB disk, an empty L1 in cluster 1)."""
    values = {
        "version": 3, "backing_file_offset": 0, "backing_file_size": 0, "cluster_bits": 16,
        "size": 1 << 20, "crypt_method": 0, "l1_size": 1, "l1_table_offset": 0x10000,
        "refcount_table_offset": 0x20000, "refcount_table_clusters": 1, "nb_snapshots": 0,
        "snapshots_offset": 0, "incompatible": 0, "compatible": 0, "autoclear": 0,
        "refcount_order": 4, "header_length": 112,
    }  # fmt: skip
    values.update(fields)
    raw = bytearray(0x30000)
    struct.pack_into(">4sIQIIQIIQQIIQQQQII", raw, 0, b"QFI\xfb", *(values[k] for k in values))
    return raw


def opened(raw: bytes | bytearray) -> Qcow2Image:
    return Qcow2Image(HostFile(BytesReader(bytes(raw)), len(raw), "mem", None))


def test_zero_filled_buffer_is_not_qcow2():
    with pytest.raises(NotThisFormat):
        opened(bytes(65536))


def test_minimal_header_reads_as_unallocated_zeros():
    image = opened(header())
    assert image.pread(0, 4096) == bytes(4096)
    assert image.host_runs(0, image.size).kind.tolist() == [UNALLOCATED]


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"version": 4}, UnsupportedError, "version 4"),
        ({"cluster_bits": 8}, DamagedError, "cluster_bits"),
        ({"cluster_bits": 22}, DamagedError, "cluster_bits"),
        ({"crypt_method": 2}, UnsupportedError, "encrypted (LUKS)"),
        ({"incompatible": 1 << 9}, UnsupportedError, "unknown incompatible feature bit 9"),
        ({"header_length": 3}, DamagedError, "header_length"),
        ({"size": 1 << 63}, DamagedError, "virtual size"),
        ({"l1_table_offset": 0x10001}, DamagedError, "not aligned"),
        ({"backing_file_offset": 0x100, "backing_file_size": 5000}, DamagedError, "backing"),
    ],
)
def test_bad_headers_raise_our_errors(fields, error, words):
    with pytest.raises(error, match=None) as caught:
        opened(header(**fields))
    assert words in str(caught.value)


def test_absurd_l1_size_reads_only_what_the_file_holds():
    # 2^31 entries claimed in a file of 192 KiB: the L1 holds what the file holds.
    image = opened(header(l1_size=(1 << 31) - 1, size=1 << 50))
    assert len(image.l1) <= 0x30000 // 8
    assert any("l1-table" in p.message for p in image.problems)
    got: list[tuple[int, str]] = []
    image.on_damage = lambda offset, message: got.append((offset, message))
    assert image.pread(image.size - 4096, 4096) == bytes(4096)
    assert image.size == 1 << 50


def test_l2_pointer_past_the_end_reads_zeros_and_says_so():
    raw = header()
    struct.pack_into(">Q", raw, 0x10000, (1 << 63) | 0x7FFF0000)  # L2 far past the end
    image = opened(raw)
    got: list[tuple[int, str]] = []
    image.on_damage = lambda offset, message: got.append((offset, message))
    assert image.pread(0, 65536) == bytes(65536)
    assert got and "past the end of the file" in got[0][1]
    assert image.host_runs(0, image.size).kind.tolist() == [4]  # damaged


def test_refcount_table_pointing_at_itself_and_the_l1_is_reported():
    raw = header(refcount_table_offset=0x10000)  # the refcount table is the L1
    struct.pack_into(">Q", raw, 0x10000, 0x10000)  # and its first block is itself
    image = opened(raw)
    problems = [message for _, message in image.structure_problems()]
    assert any("overlaps" in m for m in problems), problems


def test_data_cluster_past_the_end_reads_zeros_and_says_so():
    raw = header()
    struct.pack_into(">Q", raw, 0x10000, (1 << 63) | 0x20000)  # L2 table in cluster 2
    struct.pack_into(">Q", raw, 0x20000, (1 << 63) | 0x900000)  # data far past the end
    struct.pack_into(">Q", raw, 0x20008, (1 << 63) | 0x10000)  # data: the L1's cluster
    image = opened(raw)
    got: list[tuple[int, str]] = []
    image.on_damage = lambda offset, message: got.append((offset, message))
    assert image.pread(0, 65536) == bytes(65536)
    assert got == [(0, got[0][1])] and "past the end of the file" in got[0][1]
    assert image.pread(65536, 16) == bytes(raw[0x10000:0x10010])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=0, max_size=600),
    where=st.integers(0, 0x1FF),
)
def test_random_bytes_in_the_header_raise_only_our_errors(data, where):
    raw = header()
    raw[where : where + len(data)] = data
    raw = raw[: max(4, len(raw))]
    try:
        image = opened(raw)
    except ParserError:
        return
    image.on_damage = lambda offset, message: None
    image.pread(0, 4096)
    image.host_runs(0, image.size)
    image.structures()


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 0x30000))
def test_truncated_headers_raise_only_our_errors(cut):
    try:
        image = opened(header()[:cut])
    except ParserError:
        return
    image.pread(0, 512)
