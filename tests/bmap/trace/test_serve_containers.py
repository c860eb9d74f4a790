"""``bmap serve`` of containers: qemu-nbd reads the qcow2 (VMDK, VHD, VHDX) behind nbdkit's log
filter, a client reads a file through it, and the record names that file at the offsets the
raw disk has them (ground truth from sfdisk and debugfs on the raw sample). Every server goes
away, and its folder with it, on every way out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmap.cli import main
from bmap.errors import ContainerError
from tests import ext_truth as T
from tests.conftest import sfdisk_json, sha256_file, tool

#: bmap's format name -> qemu-img's, for the containers qemu-nbd serves.
QEMU_FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx"}


@pytest.fixture(scope="module")
def big_bin(sample) -> tuple[Path, int]:
    """The gpt-512 sample and where debugfs says /data/big.bin starts on the disk."""
    image = sample("gpt-512")
    part = next(p for p in sfdisk_json(image)["partitions"] if p["name"] == "root")
    offset = part["start"] * 512
    bs = int(T.dumpe2fs_header(image, offset)["Block size"])
    extent = T.debugfs_stat(image, "/data/big.bin", offset)["data_extents"][0]
    return image, offset + extent.physical * bs


@pytest.fixture(scope="module")
def containers(big_bin, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample converted by qemu-img into each container format."""
    raw, _ = big_bin
    out = tmp_path_factory.mktemp("containers")
    made = {}
    for name, qemu_name in QEMU_FORMATS.items():
        target = out / f"gpt-512.{name}"
        subprocess.run(
            [tool("qemu-img"), "convert", "-f", "raw", "-O", qemu_name, str(raw), str(target)],
            check=True,
            capture_output=True,
        )
        target.chmod(0o444)
        made[name] = target
    return made


def _serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bmap", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _folders(stderr: str) -> list[Path]:
    """The private folders the banners name (the socket's folder)."""
    return [
        Path(line.split("socket=", 1)[1].split()[0]).parent
        for line in stderr.splitlines()
        if line.startswith("bmap: serving ") and "socket=" in line
    ]


def _servers_of(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (nbdkit, qemu-nbd), zombies aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("fmt", list(QEMU_FORMATS))
def test_serve_names_a_guest_read_in_virtual_disk_offsets(big_bin, containers, fmt):
    _, file_disk = big_bin
    image = containers[fmt]
    before = sha256_file(image)
    run = f"{tool('qemu-io')} -r -f raw -c 'read {file_disk + 0x1000} 0x2000' \"$uri\" >/dev/null"
    proc = _serve(str(image), "--run", run, "-f", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert f"({fmt}, read by qemu-nbd)" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["op"], r["path"]) for r in rows] == [("read", "/data/big.bin")], rows
    assert rows[0]["ranges"] == [[0x1000, 0x3000]]
    assert rows[0]["disk_ranges"] == [[file_disk + 0x1000, file_disk + 0x3000]]
    for folder in _folders(proc.stderr):
        assert not folder.exists() and not _servers_of(folder)
    assert sha256_file(image) == before


def test_serve_qcow2_text_record_and_the_raw_map(big_bin, containers, tmp_path):
    """The text records, with the raw image's map given as --map: the same names."""
    raw, file_disk = big_bin
    map_csv = tmp_path / "raw.csv"
    result = CliRunner().invoke(main, ["map", str(raw), "-o", str(map_csv)])
    assert result.exit_code == 0, result.output
    run = (
        f"{tool('qemu-io')} -r -f raw -c 'read 512 512' -c 'read {file_disk} 4096' \"$uri\""
        " >/dev/null"
    )
    proc = _serve(str(containers["qcow2"]), "--map", str(map_csv), "--run", run)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[1:5] == ["read", "m", "/dev/sda", "gpt-header"], lines
    assert lines[1].split()[1:5] == ["read", "f", "/dev/sda2", "/data/big.bin"], lines
    assert "0-1000 (4.0 KiB)" in lines[1]


def test_serve_an_nbd_uri(big_bin, tmp_path):
    """An NBD export (qemu-nbd serving a qcow2) given as a URI: nbdkit's nbd plugin reads it."""
    pytest.importorskip("nbd", reason="libnbd's Python binding (python3-libnbd) is not in the venv")
    raw, file_disk = big_bin
    qcow2 = tmp_path / "d.qcow2"
    subprocess.run(
        [tool("qemu-img"), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        check=True,
    )
    sock, pid = tmp_path / "q.sock", tmp_path / "q.pid"
    server = subprocess.Popen(
        [
            tool("qemu-nbd"),
            "--read-only",
            "--format=qcow2",
            f"--socket={sock}",
            f"--pid-file={pid}",
            "--persistent",
            "--shared=0",
            str(qcow2),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            if pid.exists() and pid.read_text().strip():
                break
            time.sleep(0.02)
        run = f"{tool('qemu-io')} -r -f raw -c 'read {file_disk + 0x8000} 0x800' \"$uri\""
        proc = _serve(f"nbd+unix:///?socket={sock}", "--run", run + " >/dev/null")
        assert proc.returncode == 0, proc.stderr
        assert "(NBD export, read by nbdkit's nbd plugin)" in proc.stderr
        assert proc.stdout.split()[1:5] == ["read", "f", "/dev/sda2", "/data/big.bin"]
        assert "8000-8800" in proc.stdout
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_writable_qcow2_writes_go_to_an_overlay(big_bin, containers):
    """--writable with a container: the client writes and reads its write back, the record
    names the write, and the qcow2 is unchanged (qemu-nbd is read-only; nbdkit's cow filter
    keeps the write)."""
    _, file_disk = big_bin
    image = containers["qcow2"]
    before = (sha256_file(image), image.stat().st_mtime_ns)
    run = (
        f"{tool('qemu-io')} -f raw -c 'write -P 0xaa {file_disk} 4096' "
        f"-c 'read -P 0xaa {file_disk} 4096' \"$uri\" >/dev/null"
    )
    proc = _serve(str(image), "--writable", "--run", run)
    assert proc.returncode == 0, proc.stderr
    assert "--run command exited" not in proc.stderr  # the pattern read back matched
    ops = [line.split()[1:5] for line in proc.stdout.splitlines()]
    assert ["write", "f", "/dev/sda2", "/data/big.bin"] in ops
    assert (sha256_file(image), image.stat().st_mtime_ns) == before


def test_ctrl_c_stops_qemu_nbd_and_nbdkit(containers):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmap", "serve", str(containers["qcow2"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stderr.readline()
        assert "(qcow2, read by qemu-nbd)" in banner, banner
        [folder] = _folders(banner)
        assert len(_servers_of(folder)) == 2  # nbdkit and qemu-nbd
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert "Traceback" not in proc.stderr.read()
        assert not folder.exists()
        assert not _servers_of(folder)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_bmap_takes_its_servers_along(containers):
    """SIGKILL runs no clean-up: nbdkit goes by --exit-with-parent, qemu-nbd by setpriv's
    parent-death signal."""
    tool("setpriv")  # skips without it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmap", "serve", str(containers["vmdk"])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = None
    try:
        [folder] = _folders(proc.stderr.readline())
        assert len(_servers_of(folder)) == 2
        proc.kill()
        proc.wait()
        for _ in range(250):
            if not _servers_of(folder):
                break
            time.sleep(0.02)
        assert not _servers_of(folder)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # the one thing a killed bmap leaves


def test_e01_is_refused_with_one_line(big_bin, tmp_path):
    raw, _ = big_bin
    subprocess.run(
        [tool("ewfacquire"), "-u", "-t", str(tmp_path / "disk"), "-f", "encase6", str(raw)],
        check=True,
        capture_output=True,
    )
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "disk.E01"), "--run", "true"])
    assert result.exit_code == 8, result.output
    assert result.stderr.count("\n") == 1 and "ewfexport" in result.stderr


def test_qemu_nbd_missing_is_exit_7(containers, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(tool("nbdkit"), bin_dir / "nbdkit")
    monkeypatch.setenv("PATH", str(bin_dir))
    result = CliRunner().invoke(main, ["serve", str(containers["qcow2"]), "--run", "true"])
    assert result.exit_code == 7, result.output
    assert "qemu-nbd is not installed" in result.stderr and "qemu-utils" in result.stderr


def test_an_image_qemu_nbd_cannot_open_is_one_error_and_nothing_left(big_bin):
    """qemu-nbd told a raw file is a qcow2 (what serve never does: the format is bmap's):
    its own message, exit 8, and no process or folder left."""
    from bmap.trace.serve import NbdkitServer

    raw, _ = big_bin
    server = NbdkitServer(raw, image_format="qcow2")
    with pytest.raises(ContainerError, match=r"qemu-nbd cannot serve it: .*qcow2"):
        server.start()
    assert not server.folder.exists()
    assert server.qemu is not None and server.qemu.poll() is not None
    assert server.proc is None
