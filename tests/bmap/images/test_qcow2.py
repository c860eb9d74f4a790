"""qcow2 images opened by bmap: every byte read equals ``qemu-img convert -O raw``'s, chains
and data files are found beside the image, damage becomes findings or one ContainerError,
and no input changes."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bmap.errors import ContainerError, ExitCode, Severity
from bmap.images import VirtualDisk, open_image
from parsers.qcow2 import COMPRESSED, DATA, Qcow2Image
from tests.bmap.cli.test_cli import one_line_error, run
from tests.conftest import sha256_file

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="qemu-img and qemu-io are not installed (Debian: qemu-utils)",
)


def qemu(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=True, cwd=cwd
    ).stdout


def create(cwd: Path, name: str, backing: str, backing_format: str, *size: str) -> None:
    """``qemu-img create`` of a qcow2 over a backing file, the backing file not checked."""
    args = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing]
    qemu(*args, "-u", name, *size, cwd=cwd)


def to_raw(path: Path, out: Path) -> bytes:
    qemu("qemu-img", "convert", "-q", "-O", "raw", path, out, cwd=path.parent)
    return out.read_bytes()


def opened(path: Path) -> VirtualDisk:
    disk = open_image(path)
    assert isinstance(disk, VirtualDisk)
    return disk


def qcow2_of(disk: VirtualDisk) -> Qcow2Image:
    assert isinstance(disk.reader, Qcow2Image)
    return disk.reader


def assert_reads_equal(disk: VirtualDisk, truth: bytes) -> None:
    assert disk.size == len(truth)
    for offset in range(0, disk.size, 1 << 20):
        assert disk.pread(offset, 1 << 20) == truth[offset : offset + (1 << 20)], hex(offset)
    rng = np.random.default_rng(11)
    for _ in range(300):
        offset = int(rng.integers(0, disk.size))
        size = int(rng.integers(1, 300_000))
        assert disk.pread(offset, size) == truth[offset : offset + size], (offset, size)
    # Many small odd pieces at once, spanning clusters, in no order.
    n = 4000
    offsets = rng.integers(0, disk.size - 70_000, n)
    sizes = rng.integers(1, 70_000, n)
    positions = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    buffer = bytearray(int(sizes.sum()))
    disk.stream().gather_into(memoryview(buffer), offsets, positions, sizes)
    expect = b"".join(truth[o : o + s] for o, s in zip(offsets.tolist(), sizes.tolist()))
    assert buffer == expect


@pytest.fixture
def raw_disk(sample) -> Path:
    return sample("whole-disk-ext4")


def convert(src: Path, out: Path, *options: str) -> Path:
    qemu("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", *options, src, out)
    return out


VARIANTS = {
    "plain": (),
    "deflate": ("-c",),
    "zstd": ("-c", "-o", "compression_type=zstd"),
    "extended-l2": ("-o", "extended_l2=on"),
    "extended-l2-64k": ("-o", "extended_l2=on,cluster_size=64k"),
    "extended-l2-2m-zstd": ("-c", "-o", "extended_l2=on,cluster_size=2M,compression_type=zstd"),
    "clusters-4k": ("-o", "cluster_size=4k"),
    "clusters-2m": ("-o", "cluster_size=2M"),
    "v2": ("-o", "compat=0.10"),
    "v2-deflate": ("-c", "-o", "compat=0.10"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reads_equal_qemu_img_convert(raw_disk, tmp_path, variant):
    path = convert(raw_disk, tmp_path / "x.qcow2", *VARIANTS[variant])
    truth = to_raw(path, tmp_path / "x.raw")
    assert truth == raw_disk.read_bytes()
    before = sha256_file(path)
    with opened(path) as disk:
        assert_reads_equal(disk, truth)
        assert disk.findings == []
        info = disk.container
        assert (info.format, info.virtual_size, info.file_size) == (
            "qcow2",
            len(truth),
            path.stat().st_size,
        )
        compressed = int(info.details["compressed_clusters"])
        assert (compressed > 0) == ("-c" in VARIANTS[variant])
        if compressed:
            assert info.compression == ("zstd" if "zstd" in variant else "deflate")
        else:
            assert info.compression == "none"
    assert sha256_file(path) == before


def make_chain(raw_disk: Path, tmp_path: Path) -> Path:
    base_raw = tmp_path / "base.raw"
    base_raw.write_bytes(raw_disk.read_bytes()[: 10 << 20])
    qemu(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "base.raw",
        "base.qcow2",
        cwd=tmp_path,
    )
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x11 64k 200k",
        "-c",
        "write -z 1M 128k",
        "base.qcow2",
        cwd=tmp_path,
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
        "mid.qcow2",
        "14M",
        cwd=tmp_path,
    )
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x22 100k 100k",
        "-c",
        "write -z 2M 64k",
        "-c",
        "write -P 0x23 11M 1M",
        "-c",
        "write -z 12M 1M",
        "mid.qcow2",
        cwd=tmp_path,
    )
    sub = tmp_path / "top"
    sub.mkdir()
    # A name relative to the directory of the image that names it, not to the cwd.
    qemu(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "../mid.qcow2",
        "-u",
        "top.qcow2",
        "20M",
        cwd=sub,
    )
    qemu(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x33 150k 10k",
        "-c",
        "write -z 64k 64k",
        "-c",
        "write -P 0x34 18M 64k",
        "-c",
        "write -z 11M 4k",
        "top.qcow2",
        cwd=sub,
    )
    return sub / "top.qcow2"


def test_three_level_chain_reads_like_qemu(raw_disk, tmp_path):
    top = make_chain(raw_disk, tmp_path)
    truth = to_raw(top, tmp_path / "top.raw")
    inputs = [*sorted(tmp_path.glob("*.qcow2")), top, tmp_path / "base.raw"]
    before = [sha256_file(p) for p in inputs]
    with opened(top) as disk:
        assert_reads_equal(disk, truth)
        assert disk.findings == []
        chain = [
            (link.role, Path(link.path).resolve(), link.format) for link in disk.container.chain
        ]
        assert chain == [
            ("backing", tmp_path / "mid.qcow2", "qcow2"),
            ("backing", tmp_path / "base.qcow2", "qcow2"),
            ("backing", tmp_path / "base.raw", "raw"),
        ]
    assert [sha256_file(p) for p in inputs] == before
    # The zero write on top hides the 0x22 data of the layer below it.
    assert truth[64 << 10 : 128 << 10] == bytes(64 << 10)
    assert b"\x22" in truth[100 << 10 : 200 << 10]


def test_external_data_file(raw_disk, tmp_path):
    options = ("-f", "raw", "-O", "qcow2", "-o", "data_file=d.data")
    qemu("qemu-img", "convert", "-q", *options, raw_disk, "d.qcow2", cwd=tmp_path)
    path = tmp_path / "d.qcow2"
    with opened(path) as disk:
        assert_reads_equal(disk, raw_disk.read_bytes())
        assert [(c.role, c.path) for c in disk.container.chain] == [
            ("data-file", str(tmp_path / "d.data"))
        ]
    (tmp_path / "d.data").unlink()
    with pytest.raises(ContainerError, match=r"external data file 'd\.data'"):
        open_image(path)


def test_bmap_map_of_qcow2_equals_the_raw_map(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2", "-c")
    assert run("map", str(path), "-o", str(tmp_path / "q.bmap")).exit_code == 0
    assert run("map", str(raw_disk), "-o", str(tmp_path / "r.bmap")).exit_code == 0

    def lines(p: Path) -> list[str]:
        return [x for x in p.read_text().splitlines() if not x.startswith("#")]

    assert lines(tmp_path / "q.bmap") == lines(tmp_path / "r.bmap")
    assert len(lines(tmp_path / "q.bmap")) > 10


# -- what bmap refuses --------------------------------------------------------------------


def test_missing_backing_file_is_one_clear_error(raw_disk, tmp_path):
    create(tmp_path, "t.qcow2", "gone.raw", "raw", "16M")
    with pytest.raises(ContainerError, match=r"backing file 'gone.raw'.*cannot be opened"):
        open_image(tmp_path / "t.qcow2")
    result = run("map", str(tmp_path / "t.qcow2"), "-o", str(tmp_path / "t.bmap"))
    assert result.exit_code == ExitCode.CONTAINER
    one_line_error(result, "gone.raw")


def test_backing_chain_loop_is_refused(tmp_path):
    for name, other in (("a", "b"), ("b", "a")):
        create(tmp_path, f"{name}.qcow2", f"{other}.qcow2", "qcow2", "1M")
    with pytest.raises(ContainerError, match="loops"):
        open_image(tmp_path / "a.qcow2")
    # Itself as its own backing file, too.
    rebase = ("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "a.qcow2")
    qemu(*rebase, "a.qcow2", cwd=tmp_path)
    with pytest.raises(ContainerError, match="loops"):
        open_image(tmp_path / "a.qcow2")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ('json:{"file": {"driver": "file", "filename": "x.raw"}}', "json:"),
        ("nbd://localhost/disk", "nbd:"),
        ("http://example.com/disk.raw", "http:"),
    ],
)
def test_backing_behind_a_protocol_is_refused(tmp_path, name, words):
    create(tmp_path, "p.qcow2", name, "raw", "1M")
    with pytest.raises(ContainerError, match="protocol") as caught:
        open_image(tmp_path / "p.qcow2")
    assert words in str(caught.value)


def test_encrypted_image_is_refused(tmp_path):
    path = tmp_path / "e.qcow2"
    args = [
        "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
        "-o", "encrypt.format=luks,encrypt.key-secret=s0", str(path), "1M",
    ]  # fmt: skip
    # qemu-img times its PBKDF by the thread's CPU time before it writes the LUKS header, and
    # now and then (a loaded VM) measures none: "Unable to get accurate CPU usage". Seen once
    # in one CI run (and in none of five tries by hand): up to three tries.
    for _attempt in range(3):
        made = subprocess.run(args, capture_output=True, text=True, check=False)
        if made.returncode == 0 or "accurate CPU usage" not in made.stderr:
            break
    assert made.returncode == 0, made.stderr
    result = run("map", str(path), "-o", str(tmp_path / "e.bmap"))
    assert result.exit_code == ExitCode.CONTAINER
    one_line_error(result, "encrypted (LUKS)")


def patched(src: Path, out: Path, at: int, data: bytes) -> Path:
    raw = bytearray(src.read_bytes())
    raw[at : at + len(data)] = data
    out.write_bytes(raw)
    return out


def test_unknown_incompatible_bit_is_refused(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2")
    bad = patched(path, tmp_path / "bad.qcow2", 72, struct.pack(">Q", 1 << 20))
    with pytest.raises(ContainerError, match="unknown incompatible feature bit 20"):
        open_image(bad)


def test_dirty_and_corrupt_bits_are_findings(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2")
    bad = patched(path, tmp_path / "bad.qcow2", 72, struct.pack(">Q", 3))
    with opened(bad) as disk:
        assert disk.pread(0, disk.size) == raw_disk.read_bytes()
        messages = [(f.severity, f.message) for f in disk.findings]
    assert (Severity.WARNING, "qcow2 image is marked corrupt by qemu") in messages
    assert any("dirty" in m for _, m in messages)


# -- damage -------------------------------------------------------------------------------


def test_cut_files_read_zeros_with_findings(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2")
    whole = path.read_bytes()
    truth = raw_disk.read_bytes()
    for cut in (50, 104, 70_000, 200_000, 300_000, len(whole) // 2, len(whole) - 1):
        part = tmp_path / f"cut-{cut}.qcow2"
        part.write_bytes(whole[:cut])
        digest = sha256_file(part)
        try:
            disk = opened(part)
        except ContainerError as exc:
            assert "qcow2" in str(exc)
            continue
        with disk:
            data = disk.pread(0, disk.size)
            assert len(data) == len(truth)
            if data != truth:
                assert disk.findings, cut
                assert all(f.source == "qcow2" for f in disk.findings)
            # What the file still holds reads right.
            runs = qcow2_of(disk).host_runs(0, disk.size)
            inside = (runs.kind == DATA) & (runs.host_offset + runs.host_length <= cut)
            for gs, ge in zip(runs.guest_start[inside].tolist(), runs.guest_end[inside].tolist()):
                assert data[gs:ge] == truth[gs:ge]
        assert sha256_file(part) == digest


def test_l2_pointer_past_the_end(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2")
    raw = path.read_bytes()
    l1_offset = struct.unpack(">Q", raw[40:48])[0]
    bad = patched(path, tmp_path / "bad.qcow2", l1_offset, struct.pack(">Q", (1 << 63) | 1 << 40))
    with opened(bad) as disk:
        assert disk.pread(0, disk.size) == bytes(disk.size)
        assert any("past the end of the file" in f.message for f in disk.findings)
        assert all(f.severity == Severity.ERROR for f in disk.findings)


def test_corrupted_compressed_cluster(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "c.qcow2", "-c")
    truth = raw_disk.read_bytes()
    with opened(path) as disk:
        runs = qcow2_of(disk).host_runs(0, disk.size)
        packed = np.flatnonzero(runs.kind == COMPRESSED)
        victim = int(packed[0])
        gs, ge = int(runs.guest_start[victim]), int(runs.guest_end[victim])
        at, length = int(runs.host_offset[victim]), int(runs.host_length[victim])
    # The descriptor's length runs to the end of a sector, where the next cluster may start.
    bad = patched(path, tmp_path / "bad.qcow2", at, bytes(range(7, 71)))
    assert length > 64
    with opened(bad) as disk:
        data = disk.pread(0, disk.size)
        assert data[gs:ge] == bytes(ge - gs)
        assert data[:gs] == truth[:gs] and data[ge:] == truth[ge:]
        assert [f.offset for f in disk.findings] == [gs]
        assert "compressed cluster" in disk.findings[0].message


def test_refcount_table_over_the_l1_is_a_structure_problem(raw_disk, tmp_path):
    path = convert(raw_disk, tmp_path / "x.qcow2")
    raw = path.read_bytes()
    l1_offset = raw[40:48]
    bad = patched(path, tmp_path / "bad.qcow2", 48, l1_offset)  # refcount table := the L1
    with opened(bad) as disk:
        assert disk.pread(0, disk.size) == raw_disk.read_bytes()
        problems = qcow2_of(disk).structure_problems()
        assert any("overlaps" in message for _, message in problems)
