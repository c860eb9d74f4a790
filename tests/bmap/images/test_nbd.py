"""NBD URIs as images, read through libnbd from the real qemu-nbd and nbdkit on Unix sockets:
the bytes, the map and the errors are those of the file the server serves."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmap.cli import main
from bmap.images import open_image
from tests.conftest import tool

pytest.importorskip("nbd", reason="libnbd's Python binding (python3-libnbd) is not in the venv")

Serve = Callable[..., str]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(500):
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.02)
    raise AssertionError(f"{what} did not start in 10 s")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, Serve]]:
    """Start the real servers on Unix sockets in tmp_path; every one is stopped afterwards.

    ``qemu_nbd(image, fmt, export="")`` and ``nbdkit(image, *filters, **params)`` give the
    export's URI.
    """
    started: list[subprocess.Popen[bytes]] = []

    def qemu_nbd(image: Path, fmt: str = "raw", export: str = "") -> str:
        n = len(started)
        sock, pid = tmp_path / f"q{n}.sock", tmp_path / f"q{n}.pid"
        cmd = [tool("qemu-nbd"), "--read-only", f"--format={fmt}", f"--socket={sock}"]
        cmd += [f"--pid-file={pid}", "--persistent", "--shared=0", "-x", export, str(image)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        _wait_for(lambda: pid.exists() and bool(pid.read_text().strip()), proc, "qemu-nbd")
        return f"nbd+unix:///{export}?socket={sock}"

    def nbdkit(image: Path, *filters: str, **params: str) -> str:
        n = len(started)
        sock, log = tmp_path / f"k{n}.sock", tmp_path / f"k{n}.log"
        cmd = [tool("nbdkit"), "-f", "--exit-with-parent", "-r", "-U", str(sock)]
        cmd += ["--filter=log", *(f"--filter={f}" for f in filters), "file", f"file={image}"]
        cmd += [f"logfile={log}", *(f"{k.replace('_', '-')}={v}" for k, v in params.items())]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        _wait_for(sock.exists, proc, "nbdkit")
        return f"nbd+unix:///?socket={sock}"

    yield {"qemu_nbd": qemu_nbd, "nbdkit": nbdkit}
    for proc in started:
        _stop(proc)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def gpt_qcow2(sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gpt-512 sample as a compressed qcow2 made by qemu-img."""
    out = tmp_path_factory.mktemp("qcow2") / "gpt-512.qcow2"
    subprocess.run(
        [
            tool("qemu-img"),
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(sample("gpt-512")),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def _pieces(size: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pieces = [(0, 512), (size - 100, 1000), (0x100000, 0x40000)]
    for _ in range(count):
        offset = rng.randrange(size)
        if rng.random() < 0.5:
            offset -= offset % 4096
        pieces.append((offset, rng.choice([1, 511, 4096, 65536, rng.randrange(1, 200000)])))
    return pieces


def _check_reads(uri: str, raw: bytes) -> None:
    with open_image(uri, 2) as disk:
        assert disk.format == "nbd" and disk.number == 2
        assert disk.size == len(raw)
        assert disk.pread(0, len(raw) + 4096) == raw  # one read of the whole disk, cut at its end
        pieces = _pieces(len(raw), 300, seed=len(raw))
        for offset, size in pieces[:40]:
            assert disk.pread(offset, size) == raw[offset : offset + size]
        positions, at = [], 0
        for _, size in pieces:
            positions.append(at)
            at += size
        buffer = bytearray(at)
        disk.gather_into(
            memoryview(buffer),
            [p[0] for p in pieces],
            positions,
            [p[1] for p in pieces],
        )
        for (offset, size), position in zip(pieces, positions):
            got = min(size, len(raw) - offset)
            assert buffer[position : position + got] == raw[offset : offset + got], hex(offset)
        stream = disk.stream()
        stream.seek(0x100000)
        assert stream.read(4096) == raw[0x100000:0x101000]


def test_reads_of_a_raw_export_equal_the_file(sample, servers):
    image = sample("gpt-512")
    _check_reads(servers["nbdkit"](image), image.read_bytes())


def test_reads_of_a_qcow2_export_equal_the_raw_file(sample, servers, gpt_qcow2):
    raw = sample("gpt-512").read_bytes()
    _check_reads(servers["qemu_nbd"](gpt_qcow2, "qcow2"), raw)


def test_reads_keep_to_the_servers_block_sizes(sample, servers):
    """A server that advertises 512-byte alignment and 4 KiB requests, and fails any request
    that breaks them: reads are aligned and split, and still give the file's bytes."""
    image = sample("gpt-512")
    uri = servers["nbdkit"](
        image,
        "blocksize-policy",
        blocksize_minimum="512",
        blocksize_maximum="4096",
        blocksize_preferred="4096",
        blocksize_error_policy="error",
    )
    with open_image(uri) as disk:
        assert disk.container.details["block-sizes"] == "512/4096/4096"
    _check_reads(uri, image.read_bytes())


def test_container_info_names_the_export(sample, servers):
    uri = servers["qemu_nbd"](sample("mbr-extended"), "raw", "evidence")
    with open_image(uri) as disk:
        info = disk.container
        assert info.format == "nbd"
        assert info.virtual_size == info.file_size == sample("mbr-extended").stat().st_size
        assert info.details["export"] == "evidence"
        assert info.details["uri"] == uri
        assert info.details["protocol"] == "newstyle-fixed"
        assert info.details["server-read-only"] == "yes"


def _map_lines(*args: str) -> list[str]:
    result = CliRunner().invoke(main, ["map", *args, "-o", "-"])
    assert result.exit_code == 0, result.output
    return [line for line in result.stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("name", ["gpt-512", "mbr-extended", "whole-disk-ext4"])
def test_map_of_a_uri_is_the_map_of_the_file(sample, servers, name):
    image = sample(name)
    expected = _map_lines(str(image))
    assert len(expected) > 5
    assert _map_lines(servers["qemu_nbd"](image)) == expected


def test_map_of_a_qcow2_served_over_nbd_is_the_map_of_the_raw_file(sample, servers, gpt_qcow2):
    assert _map_lines(servers["qemu_nbd"](gpt_qcow2, "qcow2")) == _map_lines(str(sample("gpt-512")))


def test_map_never_writes_to_the_export(sample, servers, tmp_path):
    """nbdkit's own log of everything the client asked: reads only."""
    uri = servers["nbdkit"](sample("gpt-512"))
    _map_lines(uri)
    log = next(tmp_path.glob("k*.log")).read_text()
    assert " Read " in log
    assert not any(f" {op} " in log for op in ("Write", "Trim", "Zero", "Flush"))


def test_map_of_a_uri_goes_to_the_current_directory(sample, servers, tmp_path, monkeypatch):
    uri = servers["qemu_nbd"](sample("gpt-512"), "raw", "disk0")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, ["map", uri])
    assert result.exit_code == 0, result.output
    assert (work / "nbd-disk0.bmap").exists()
    assert f"wrote {work / 'nbd-disk0.bmap'}" in result.stderr


def _closed_port() -> int:
    from bmap.trace.serve import free_port

    return free_port()


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("nbd://127.0.0.1:{port}/", "Connection refused"),
        ("nbd+unix:///?socket={tmp}/none.sock", "No such file or directory"),
        ("nbd+unix:///", "socket"),
        ("nbd+unix:///nope?socket={live}", "no export named 'nope'"),
    ],
    ids=["refused", "no-socket", "no-socket-parameter", "no-export"],
)
def test_unreachable_exports_are_one_line_and_exit_4(sample, servers, tmp_path, uri, says):
    live = servers["qemu_nbd"](sample("gpt-512"), "raw", "disk0").split("socket=")[1]
    uri = uri.format(port=_closed_port(), tmp=tmp_path, live=live)
    for command in ("map", "info"):
        result = CliRunner().invoke(main, [command, uri])
        assert result.exit_code == 4, result.output
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"bmap: {uri}: cannot connect to the NBD server: ")
        assert says in result.stderr


def test_the_bmap_program_takes_a_uri(sample, servers):
    """Through the real entry point and argument parsing, not only CliRunner."""
    uri = servers["qemu_nbd"](sample("gpt-512"))
    proc = subprocess.run(
        [sys.executable, "-m", "bmap", "map", uri, "-o", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "# image 1 " in proc.stdout and "format=nbd" in proc.stdout
    assert "gpt-header" in proc.stdout


def test_without_libnbd_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbd", None)  # import nbd raises ImportError
    result = CliRunner().invoke(main, ["map", "nbd+unix:///?socket=/nonexistent.sock"])
    assert result.exit_code == 7, result.output
    assert "python3-libnbd" in result.stderr and result.stderr.count("\n") == 1
