"""Shared fixtures: the bundled sample images, decompressed once, and the outside tools."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis: the test command draws the same examples every run ("stable", derandomized), so
# that a run passes or fails by the code alone; `make fuzz` explores with fresh random draws
# (BMAP_HYPOTHESIS=explore), as the random CI draw that found an LVM segment past int64 did.
settings.register_profile("stable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("BMAP_HYPOTHESIS", "stable"))

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def pytest_configure(config: pytest.Config) -> None:
    """A shell that starts the tests in the background (``make test &``) makes them ignore
    SIGINT, and every child inherits that: ``bmap serve`` and ``trace --follow`` would not stop
    on the Ctrl-C the tests send. A handler of our own is reset to the default on exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


TRUTH = SAMPLES / "truth"


def manifest() -> list[dict]:
    return json.loads((SAMPLES / "MANIFEST.json").read_text())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every sample image decompressed into one directory, checked against the manifest."""
    out = tmp_path_factory.mktemp("samples")
    for entry in manifest():
        target = out / entry["file"].removesuffix(".xz")
        with lzma.open(SAMPLES / entry["file"]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        assert sha256_file(target) == entry["sha256"], f"{target.name} differs from MANIFEST"
        # Read-only on disk too: a write by mistake fails loudly (for non-root runs).
        target.chmod(0o444)
    return out


@pytest.fixture(scope="session")
def sample(samples_dir: Path):
    def get(name: str) -> Path:
        path = samples_dir / f"{name}.img"
        assert path.exists(), f"no sample {name}"
        return path

    return get


def tool(name: str) -> str:
    """Path of a system tool, or skip the test saying which package brings it."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin/", "/sbin/"):
        if os.access(folder + name, os.X_OK):
            return folder + name
    pytest.skip(f"{name} is not installed (make test installs it as root)")


def run_tool(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = tool(args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, check=check)


def sfdisk_json(path: Path | str) -> dict:
    """``sfdisk --json`` of an image or device: the truth for partition tables."""
    return json.loads(run_tool("sfdisk", "--json", str(path)).stdout)["partitiontable"]


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def loop_device() -> Iterator:
    """Attach images to loop devices (read-only); every device is detached afterwards."""
    if not is_root():
        pytest.skip("needs root to attach loop devices")
    if not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no loop devices (/dev/loop-control missing)")
    attached: list[str] = []

    def attach(path: Path, sector_size: int = 512) -> str:
        out = run_tool(
            "losetup",
            "--find",
            "--show",
            "--read-only",
            "--sector-size",
            str(sector_size),
            str(path),
        ).stdout.strip()
        attached.append(out)
        return out

    yield attach
    for dev in attached:
        subprocess.run([tool("losetup"), "--detach", dev], check=False)


@pytest.fixture
def kernel_client(tmp_path: Path) -> Iterator:
    """nbdkit serving an image, nbdfuse exposing it as a file, a read-only loop device and
    mount of one partition: the real kernel reads through nbdkit. All undone afterwards."""
    if not is_root():
        pytest.skip("needs root for loop devices and mounts")
    if not Path("/dev/fuse").exists() or not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no /dev/fuse or no loop devices")
    undo: list = []

    def start(image: Path, offset: int, size: int) -> tuple[Path, Path]:
        from bmap.trace.serve import NbdkitServer

        server = NbdkitServer(image).start()
        undo.append(server.stop)
        fuse_dir = tmp_path / "fuse"
        mnt = tmp_path / "mnt"
        fuse_dir.mkdir()
        mnt.mkdir()
        fuse = subprocess.Popen([tool("nbdfuse"), str(fuse_dir), server.uri])
        undo.append(
            lambda: (
                subprocess.run([tool("fusermount3"), "-u", str(fuse_dir)], check=False),
                fuse.wait(10),
            )
        )
        for _ in range(250):
            if (fuse_dir / "nbd").exists():
                break
            time.sleep(0.02)
        loop = subprocess.run(
            [
                tool("losetup"),
                "-r",
                "-f",
                "--show",
                "-o",
                str(offset),
                "--sizelimit",
                str(size),
                str(fuse_dir / "nbd"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        undo.append(lambda: subprocess.run([tool("losetup"), "-d", loop], check=False))
        subprocess.run(["mount", "-o", "ro,noload", loop, str(mnt)], check=True)
        undo.append(lambda: subprocess.run(["umount", str(mnt)], check=False))
        return mnt, server.log

    yield start
    for step in reversed(undo):
        step()


SMALL_EXT4_FILES, SMALL_EXT4_DIRS = 300, 12


@pytest.fixture(scope="session")
def small_ext4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 MiB ext4 of 1 KiB blocks in groups of 1,024 (so its inode tables are many),
    made by ``mke2fs -d`` from SMALL_EXT4_DIRS directories of SMALL_EXT4_FILES files in all."""
    top = tmp_path_factory.mktemp("small-ext4")
    tree = top / "tree"
    for d in range(SMALL_EXT4_DIRS):
        (tree / f"d{d:02}").mkdir(parents=True)
    for i in range(SMALL_EXT4_FILES):
        (tree / f"d{i % SMALL_EXT4_DIRS:02}" / f"f{i}").write_bytes(b"x" * (i * 37 % 9000))
    image = top / "fs.img"
    run_tool(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "1024",
        "-g",
        "1024",
        "-N",
        "2048",
        "-d",
        str(tree),
        str(image),
        "32M",
    )
    return image
