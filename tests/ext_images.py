"""ext2/3/4 test images made by the real tools (mke2fs -d, a read-write loop mount, sgdisk).

Each ``build_*`` function writes one whole-disk filesystem image (no partition table) to the
path it is given; :func:`ext_image` builds it once into a cache directory and hands out the
path. The images are sparse files: a few MiB of real data each, whatever their nominal size.

The cache directory is ``$BMAP_TEST_CACHE/<version>`` when that variable is set (so images
survive across pytest runs), else a directory under pytest's ``tmp_path_factory``. The
version string holds :data:`IMAGES_VERSION` and the e2fsprogs version: change either and the
images are rebuilt. Builds are serialised by a lock file, so parallel workers share them.

Determinism: fixed UUIDs (``-U``), fixed directory hash seeds (``-E hash_seed=``),
``E2FSPROGS_FAKE_TIME`` / ``E2FSCK_TIME``, fixed mtimes on the source tree and every inode's
ctime reset with debugfs. Images made by mke2fs alone are byte-identical from one build to
the next, except ext4_misc's MMP block (real time, host name, build path). ``ext4_tree`` (and
the disk built from it) goes through the kernel's allocator and a mount, so it differs in
detail between builds: tests read the truth from the image (``tests.ext_truth``), not from
constants here, except for the paths in :data:`INTERESTING_PATHS`, which are fixed.

Needs root: ``ext4_tree`` (device nodes, the read-write loop mount) and ``ext4_in_gpt``
(built from it). The other images build as any user (device nodes are left out then).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IMAGES_VERSION = "ext-images-1"
FAKE_TIME = 1_700_000_000  # 2023-11-14T22:13:20Z, for E2FSPROGS_FAKE_TIME and the tree's mtimes
# e2fsck reads its own variable for "now" (last check time, quota inode times).
FAKE_TIME_ENV = {"E2FSPROGS_FAKE_TIME": str(FAKE_TIME), "E2FSCK_TIME": str(FAKE_TIME)}
MiB = 1 << 20
KiB = 1 << 10

# Every image gets its own UUID and hash seed so that a test can tell them apart.
UUIDS = {
    "ext4_tree": "0e4f7a1c-0000-4000-8000-000000000001",
    "ext4_1k": "0e4f7a1c-0000-4000-8000-000000000002",
    "ext2_1k_tind": "0e4f7a1c-0000-4000-8000-000000000003",
    "ext3_journal": "0e4f7a1c-0000-4000-8000-000000000004",
    "ext4_meta_bg": "0e4f7a1c-0000-4000-8000-000000000005",
    "ext4_bigalloc": "0e4f7a1c-0000-4000-8000-000000000006",
    "ext4_inline": "0e4f7a1c-0000-4000-8000-000000000007",
    "ext4_misc": "0e4f7a1c-0000-4000-8000-000000000008",
}
HASH_SEED = "6d1b1c2e-5a3f-4c4d-9e8f-0a1b2c3d4e5f"

GPT_DISK_GUID = "B3A9C1D0-0000-4000-8000-0000000000D1"
GPT_PART_GUIDS = ("B3A9C1D0-0000-4000-8000-0000000000E1", "B3A9C1D0-0000-4000-8000-0000000000E2")
GPT_EXT_OFFSET = 9 * MiB  # partition 2 of ext4_in_gpt starts here (sector 18432)
GPT_EFI_SIZE = 8 * MiB

# Names that a map writer must escape; each becomes a file in /names of the tree images.
AWKWARD_NAMES: tuple[bytes, ...] = (
    b"with space",
    b"new\nline",
    b"tab\there",
    b"back\\slash",
    b"<script>alert(1)<\\script>",  # no "/": it cannot be in a name
    b"=cmd|'calc'!A0",
    b"\x1b[31mred\x1b[0m",
    b"\xff\xfe",
    b"n" * 255,
    "données ☃".encode(),
)

SLOW_LINK_TARGET = b"../" + b"/".join([b"a-rather-long-directory-name"] * 4) + b"/target.txt"
FAST_LINK_TARGET = b"../README.txt"

# Fixed paths of the objects the tests care about, per image (bytes, absolute in the fs).
INTERESTING_PATHS: dict[str, dict[str, bytes]] = {
    "ext4_tree": {
        "htree_dir": b"/bigdir",
        "depth1_extent_file": b"/frag/big4m.bin",
        "uninit_file": b"/uninit.bin",
        "mixed_uninit_file": b"/mixed.bin",
        "sparse_file": b"/sparse/holes.bin",
        "xattr_block_file": b"/xattr/big",
        "xattr_inode_file": b"/xattr/small",
        "xattr_block_dir": b"/xattr/dir",
        "fast_symlink": b"/links/fast",
        "slow_symlink": b"/links/slow",
        "hard_link_1": b"/hard/one",
        "hard_link_2": b"/dir1/two",
        "hard_link_3": b"/names/three",
        "fifo": b"/special/fifo",
        "char_device": b"/special/null",
        "block_device": b"/special/loop0",
        "socket": b"/special/sock",
        "empty_file": b"/empty",
        "deep_file": b"/dir1/dir2/dir3/deep.txt",
        "names_dir": b"/names",
        "long_name": b"/names/" + b"n" * 255,
        "invalid_utf8_name": b"/names/\xff\xfe",
    },
    "ext4_1k": {
        "multi_extent_file": b"/multi.bin",
        "contiguous_file": b"/data/medium.bin",
        "slow_symlink": b"/links/slow",
        "hard_link_1": b"/hard/one",
    },
    "ext2_1k_tind": {
        "tind_file": b"/tind.bin",
        "ind_file": b"/data/medium.bin",
        "slow_symlink": b"/links/slow",
        "xattr_block_file": b"/xattr/big",
    },
    "ext3_journal": {
        "ind_file": b"/data/medium.bin",
        "dind_file": b"/dind.bin",
        "slow_symlink": b"/links/slow",
    },
    "ext4_meta_bg": {
        "multi_extent_file": b"/multi.bin",
        "contiguous_file": b"/data/medium.bin",
    },
    "ext4_bigalloc": {
        "multi_cluster_file": b"/cluster.bin",
        "multi_extent_file": b"/multi.bin",
        "slow_symlink": b"/links/slow",
    },
    "ext4_inline": {
        "inline_tiny_file": b"/tiny/a.txt",  # < 60 bytes: in i_block only
        "inline_small_file": b"/tiny/b.txt",  # 60..150 bytes: i_block + system.data xattr
        "inline_dir": b"/tiny/small",
        "inline_empty_dir": b"/tiny/emptydir",
        "inline_empty_file": b"/tiny/c.txt",
        "normal_file": b"/data/medium.bin",
        "normal_dir": b"/bigger",
        "block_dir": b"/tiny",  # too many entries for the inode
        "fast_symlink": b"/links/fast",
        "slow_symlink": b"/links/slow",
    },
    "ext4_misc": {
        "contiguous_file": b"/data/medium.bin",
        "multi_extent_file": b"/multi.bin",
    },
}


@dataclass(frozen=True)
class DiskImage:
    """A disk image holding a filesystem at ``offset`` bytes (a partition of ``size`` bytes)."""

    path: Path
    offset: int
    size: int
    partition: int


class NeedsRoot(RuntimeError):
    """The builder needs root (device nodes, loop devices, mounts)."""


# --------------------------------------------------------------------------------------------
# tools


def tool_path(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin/", "/sbin/"):
        if os.access(folder + name, os.X_OK):
            return folder + name
    raise FileNotFoundError(f"{name} is not installed")


def run(*args: str | os.PathLike, env: dict[str, str] | None = None) -> str:
    """Run a tool, raise with its stderr on failure, return its stdout."""
    exe = tool_path(str(args[0]))
    full_env = {**os.environ, **FAKE_TIME_ENV, **(env or {})}
    proc = subprocess.run(
        [exe, *map(str, args[1:])], capture_output=True, text=True, env=full_env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def is_root() -> bool:
    return os.geteuid() == 0


def e2fsprogs_version() -> str:
    proc = subprocess.run([tool_path("mke2fs"), "-V"], capture_output=True, text=True, check=False)
    first = (proc.stderr or proc.stdout).splitlines()[0]  # "mke2fs 1.47.0 (5-Feb-2023)"
    return first.split()[1]


def cache_version() -> str:
    return f"{IMAGES_VERSION}-e2fsprogs-{e2fsprogs_version()}"


# --------------------------------------------------------------------------------------------
# source trees for mke2fs -d


def _data(seed: int | str, size: int) -> bytes:
    """Deterministic, incompressible bytes."""
    return random.Random(seed).randbytes(size)


def _write(path: Path | bytes, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _write_sparse(path: Path | bytes, pieces: list[tuple[int, bytes]], size: int) -> None:
    """A file of ``size`` bytes holding only ``pieces`` (offset, data); the rest are holes."""
    with open(path, "wb") as fh:
        for offset, data in pieces:
            fh.seek(offset)
            fh.write(data)
        fh.truncate(size)


def _fix_times(root: Path) -> None:
    """Fixed atime/mtime on every entry: mke2fs -d copies them into the inodes."""
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot, topdown=False):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (FAKE_TIME, FAKE_TIME), follow_symlinks=False)
    os.utime(broot, (FAKE_TIME, FAKE_TIME))


def _base_tree(root: Path, *, seed: str) -> None:
    """What every tree image has: small files, nesting, links, a slow and a fast symlink."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "README.txt", b"bmap test image: " + seed.encode() + b"\n")
    _write(root / "empty", b"")
    (root / "dir1" / "dir2" / "dir3").mkdir(parents=True)
    _write(root / "dir1" / "dir2" / "dir3" / "deep.txt", b"deep\n" * 100)
    (root / "data").mkdir()
    _write(root / "data" / "medium.bin", _data(seed + "medium", 200 * KiB))
    _write(root / "data" / "small.txt", b"small\n")
    (root / "links").mkdir()
    os.symlink(FAST_LINK_TARGET, os.fsencode(root / "links" / "fast"))
    os.symlink(SLOW_LINK_TARGET, os.fsencode(root / "links" / "slow"))
    # One file, three names in three directories.
    (root / "hard").mkdir()
    (root / "names").mkdir()
    _write(root / "hard" / "one", b"one file, three names\n")
    os.link(root / "hard" / "one", root / "dir1" / "two")
    os.link(root / "hard" / "one", root / "names" / "three")
    for i, name in enumerate(AWKWARD_NAMES):
        _write(os.path.join(os.fsencode(root / "names"), name), b"awkward %d\n" % i)


def _special_files(root: Path) -> None:
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo")
    # mknod makes a socket inode without binding one (a bound path may not exceed 108 bytes).
    os.mknod(special / "sock", 0o755 | stat.S_IFSOCK)
    if is_root():
        os.mknod(special / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(special / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))


def _xattr_files(root: Path, *, big: int) -> None:
    """One xattr small enough for the inode, one big enough for an external xattr block."""
    x = root / "xattr"
    x.mkdir()
    _write(x / "small", b"small xattr\n")
    os.setxattr(x / "small", "user.x", b"in-inode")
    _write(x / "big", b"big xattr\n")
    os.setxattr(x / "big", "user.big", _data("xattr", big // 2).hex().encode()[:big])
    os.setxattr(x / "big", "user.small", b"also here")
    (x / "dir").mkdir()
    os.setxattr(x / "dir", "user.dirattr", b"d" * big)


def _tree_ext4_tree(root: Path) -> None:
    _base_tree(root, seed="ext4_tree")
    _special_files(root)
    _xattr_files(root, big=3000)
    big = root / "bigdir"
    big.mkdir()
    for i in range(3000):
        # Most entries are empty files (inodes only); every 100th holds one block of data.
        _write(big / f"f{i:04d}", b"x" * 100 if i % 100 == 0 else b"")
    (root / "sparse").mkdir()
    _write_sparse(
        root / "sparse" / "holes.bin",
        [(0, _data("s0", 8 * KiB)), (10 * MiB, _data("s1", 8 * KiB))],
        10 * MiB + 8 * KiB,
    )
    # A tree of nested dirs to bring the entry count up to ~3000 outside bigdir as well.
    nest = root / "nest"
    for a in range(10):
        for b in range(5):
            d = nest / f"a{a}" / f"b{b}"
            d.mkdir(parents=True)
            for c in range(4):
                _write(d / f"c{c}.txt", b"%d/%d/%d\n" % (a, b, c))


def _tree_small(root: Path, *, seed: str, xattr_big: int = 0) -> None:
    _base_tree(root, seed=seed)
    _special_files(root)
    if xattr_big:
        _xattr_files(root, big=xattr_big)
    for i in range(30):
        d = root / "many" / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        _write(d / f"file{i}.txt", b"file %d\n" % i * (i + 1))


def _multi_extent(path: Path, *, pieces: int, stride: int, piece: int, seed: str) -> None:
    """A sparse file with ``pieces`` data runs separated by holes: one extent per run."""
    _write_sparse(
        path,
        [(i * stride, _data(f"{seed}{i}", piece)) for i in range(pieces)],
        (pieces - 1) * stride + piece,
    )


# --------------------------------------------------------------------------------------------
# mke2fs and checks


def mke2fs(image: Path, size: int, source: Path, *args: str, name: str) -> None:
    if image.exists():
        image.unlink()
    with open(image, "wb") as fh:
        fh.truncate(size)
    _fix_times(source)
    run(
        "mke2fs",
        "-q",
        "-F",
        "-U",
        UUIDS[name],
        "-E",
        f"hash_seed={HASH_SEED}",
        "-L",
        name,
        *args,
        "-d",
        source,
        image,
    )
    fix_ctimes(image)


def _debugfs_write(image: Path, commands: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as cmdfile:
        cmdfile.write("".join(c + "\n" for c in commands))
        cmdfile.flush()
        run("debugfs", "-w", "-f", cmdfile.name, image)


def _used_inodes(image: Path) -> list[int]:
    """In-use inode numbers: every inode that dumpe2fs does not list as free."""
    text = run("dumpe2fs", image)
    count = int(re.search(r"(?m)^Inode count:\s+(\d+)", text)[1])  # type: ignore[index]
    free: set[int] = set()
    for line in re.findall(r"(?m)^\s+Free inodes: (.*)$", text):
        for item in filter(None, (x.strip() for x in line.split(","))):
            first, _, last = item.partition("-")
            free.update(range(int(first), int(last or first) + 1))
    return [i for i in range(1, count + 1) if i not in free]


def fix_ctimes(image: Path) -> None:
    """Set every used inode's ctime to FAKE_TIME: mke2fs -d copies the source's ctime,
    which no one can set, so this is what keeps two builds identical."""
    _debugfs_write(image, [f"sif <{i}> ctime @{FAKE_TIME}" for i in _used_inodes(image)])


def e2fsck_fix(image: Path, *extra: str) -> None:
    """``e2fsck -fy`` (exit 0 or 1 are fine: 1 means it corrected something)."""
    proc = subprocess.run(
        [tool_path("e2fsck"), "-fy", *extra, str(image)],
        capture_output=True,
        text=True,
        env={**os.environ, **FAKE_TIME_ENV},
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"e2fsck -fy {image} exited {proc.returncode}:\n{proc.stdout}")


def e2fsck_clean(image: Path) -> None:
    """``e2fsck -fn``: raise unless the image is clean."""
    run("e2fsck", "-fn", image)


def _loop_attach(image: Path, *extra: str) -> str:
    return run("losetup", "--find", "--show", *extra, image).strip()


@contextlib.contextmanager
def rw_mount(image: Path) -> Iterator[tuple[Path, str]]:
    """Loop-mount an image read-write (only for building); always unmount and detach."""
    if not is_root():
        raise NeedsRoot("a read-write loop mount needs root")
    if not Path("/dev/loop-control").exists():
        raise NeedsRoot("this machine has no loop devices (/dev/loop-control missing)")
    dev = _loop_attach(image)
    try:
        mnt = Path(tempfile.mkdtemp(prefix="bmap-build-"))
        try:
            run("mount", "-t", "ext4", dev, mnt)
            try:
                yield mnt, dev
            finally:
                subprocess.run([tool_path("umount"), str(mnt)], check=True)
        finally:
            mnt.rmdir()
    finally:
        subprocess.run([tool_path("losetup"), "--detach", dev], check=False)


def _fallocate(path: Path, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, offset, length)
    finally:
        os.close(fd)


def _fill_free_space(path: Path) -> None:
    """Fallocate ``path`` until the filesystem says ENOSPC: no free block is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        offset = 0
        for chunk in (4 * MiB, 256 * KiB, 4 * KiB):
            while True:
                try:
                    os.posix_fallocate(fd, offset, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                offset += chunk
    finally:
        os.close(fd)


def _no_reserved_clusters(dev: str) -> None:
    """Let fallocate use ext4's reserve too, so that the filler really fills every block."""
    knob = Path("/sys/fs/ext4") / Path(dev).name / "reserved_clusters"
    with contextlib.suppress(OSError):
        knob.write_text("0")


def _make_messy(mnt: Path, dev: str) -> None:
    """Uninit and mixed extents, then a 4 MiB file forced into 10-block holes.

    The filler takes every free block before every other small file is deleted, so the
    holes are the only free space: the 4 MiB file gets ~100 extents, an extent tree of
    depth 1. Then the filler and a few files go, which leaves free space behind.
    """
    _no_reserved_clusters(dev)
    frag = mnt / "frag"
    frag.mkdir()
    for i in range(220):
        _write(frag / f"s{i:03d}.bin", _data(f"frag{i}", 40 * KiB))
    # fallocate -l 1M: one unwritten extent.
    _fallocate(mnt / "uninit.bin", 0, 1 * MiB)
    # fallocate 256 KiB, then write 3 blocks at 64 KiB: unwritten, written, unwritten.
    _fallocate(mnt / "mixed.bin", 0, 256 * KiB)
    fd = os.open(mnt / "mixed.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, _data("mixed", 12 * KiB), 64 * KiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.sync()
    _fill_free_space(mnt / "filler")
    os.sync()
    for i in range(1, 220, 2):
        (frag / f"s{i:03d}.bin").unlink()
    os.sync()
    fd = os.open(frag / "big4m.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = _data("big4m", 4 * MiB)
        for off in range(0, len(data), 64 * KiB):
            os.pwrite(fd, data[off : off + 64 * KiB], off)
        os.fsync(fd)
    finally:
        os.close(fd)
    # Delete the filler and a few other files: freed blocks in the middle of used space.
    (mnt / "filler").unlink()
    for i in (0, 10, 20, 30):
        (frag / f"s{i:03d}.bin").unlink()
    (mnt / "bigdir" / "f0100").unlink()
    (mnt / "nest" / "a3" / "b2" / "c1.txt").unlink()
    os.sync()


# --------------------------------------------------------------------------------------------
# builders: each writes one image to ``image`` and returns it


def build_ext4_tree(image: Path, workdir: Path) -> Path:
    """ext4, 4 KiB blocks, 256-byte inodes, 160 MiB: the big tree, then made messy (root)."""
    if not is_root():
        raise NeedsRoot("ext4_tree needs root: device nodes and a read-write loop mount")
    src = workdir / "src"
    _tree_ext4_tree(src)
    mke2fs(
        image,
        160 * MiB,
        src,
        "-t",
        "ext4",
        "-b",
        "4096",
        "-I",
        "256",
        "-N",
        "8192",
        "-m",
        "0",
        name="ext4_tree",
    )
    # mke2fs -d writes linear directories; -D indexes every directory of more than one block.
    e2fsck_fix(image, "-D")
    e2fsck_clean(image)
    with rw_mount(image) as (mnt, dev):
        _make_messy(mnt, dev)
    e2fsck_clean(image)
    return image


def build_ext4_1k(image: Path, workdir: Path) -> Path:
    """ext4 with 1 KiB blocks, a smaller tree and a sparse file of 8 extents (depth 1)."""
    src = workdir / "src"
    _tree_small(src, seed="ext4_1k", xattr_big=700)
    _multi_extent(src / "multi.bin", pieces=8, stride=16 * KiB, piece=3 * KiB, seed="m1k")
    mke2fs(image, 24 * MiB, src, "-t", "ext4", "-b", "1024", "-N", "1024", name="ext4_1k")
    e2fsck_clean(image)
    return image


def build_ext2_1k_tind(image: Path, workdir: Path) -> Path:
    """ext2, 1 KiB blocks; /tind.bin has data at 0, 100 KiB, 20 MiB and 70 MiB (TIND)."""
    src = workdir / "src"
    _tree_small(src, seed="ext2_1k_tind", xattr_big=700)
    _write_sparse(
        src / "tind.bin",
        [(off, _data(f"tind{off}", 4 * KiB)) for off in (0, 100 * KiB, 20 * MiB, 70 * MiB)],
        70 * MiB + 4 * KiB,
    )
    mke2fs(image, 16 * MiB, src, "-t", "ext2", "-b", "1024", "-N", "512", name="ext2_1k_tind")
    e2fsck_clean(image)
    return image


def build_ext3_journal(image: Path, workdir: Path) -> Path:
    """ext3 (journal in inode 8, block-mapped files), 4 KiB blocks, a file with a DIND block."""
    src = workdir / "src"
    _tree_small(src, seed="ext3_journal", xattr_big=2000)
    _write_sparse(
        src / "dind.bin",
        [(0, _data("dind0", 8 * KiB)), (8 * MiB, _data("dind1", 8 * KiB))],
        8 * MiB + 8 * KiB,
    )
    mke2fs(image, 64 * MiB, src, "-t", "ext3", "-b", "4096", "-N", "1024", name="ext3_journal")
    e2fsck_clean(image)
    return image


def build_ext4_meta_bg(image: Path, workdir: Path) -> Path:
    """ext4 meta_bg without resize_inode: 1 KiB blocks, 1024 blocks a group, 64 groups."""
    src = workdir / "src"
    _tree_small(src, seed="ext4_meta_bg")
    _multi_extent(src / "multi.bin", pieces=6, stride=64 * KiB, piece=8 * KiB, seed="mbg")
    mke2fs(
        image,
        64 * MiB,
        src,
        "-t",
        "ext4",
        "-b",
        "1024",
        "-g",
        "1024",
        "-N",
        "2048",
        "-O",
        "meta_bg,^resize_inode",
        name="ext4_meta_bg",
    )
    e2fsck_clean(image)
    return image


def build_ext4_bigalloc(image: Path, workdir: Path) -> Path:
    """ext4 bigalloc: 4 KiB blocks in 16 KiB clusters; a 100 KiB file spans 7 clusters."""
    src = workdir / "src"
    _tree_small(src, seed="ext4_bigalloc", xattr_big=2000)
    _write(src / "cluster.bin", _data("cluster", 100 * KiB))
    _multi_extent(src / "multi.bin", pieces=6, stride=64 * KiB, piece=20 * KiB, seed="mba")
    mke2fs(
        image,
        64 * MiB,
        src,
        "-t",
        "ext4",
        "-b",
        "4096",
        "-O",
        "bigalloc",
        "-C",
        "16384",
        "-N",
        "1024",
        name="ext4_bigalloc",
    )
    e2fsck_clean(image)
    return image


def build_ext4_inline(image: Path, workdir: Path) -> Path:
    """ext4 inline_data, 256-byte inodes: tiny files and dirs inside their inodes."""
    src = workdir / "src"
    _tree_small(src, seed="ext4_inline")
    tiny = src / "tiny"
    tiny.mkdir()
    _write(tiny / "a.txt", b"tiny, fits in i_block\n")  # 22 bytes
    _write(tiny / "b.txt", b"0123456789" * 12)  # 120 bytes: i_block + system.data
    _write(tiny / "c.txt", b"")
    (tiny / "emptydir").mkdir()
    # An inline directory holding entries: the 56 bytes of i_block after the parent number
    # take two short names (/tiny itself has too many entries and gets a block).
    (tiny / "small").mkdir()
    _write(tiny / "small" / "x", b"x\n")
    _write(tiny / "small" / "y", b"y\n")
    bigger = src / "bigger"
    bigger.mkdir()
    for i in range(60):  # too many entries for the inode: a normal directory block
        _write(bigger / f"entry-with-a-longer-name-{i:03d}", b"%d\n" % i)
    mke2fs(
        image,
        16 * MiB,
        src,
        "-t",
        "ext4",
        "-b",
        "4096",
        "-I",
        "256",
        "-N",
        "512",
        "-O",
        "inline_data",
        name="ext4_inline",
    )
    e2fsck_clean(image)
    return image


def build_ext4_misc(image: Path, workdir: Path) -> Path:
    """ext4 with quota, mmp, orphan_file and sparse_super2, 1 KiB blocks, 8 groups."""
    src = workdir / "src"
    _tree_small(src, seed="ext4_misc")
    _multi_extent(src / "multi.bin", pieces=6, stride=64 * KiB, piece=8 * KiB, seed="mmi")
    mke2fs(
        image,
        64 * MiB,
        src,
        "-t",
        "ext4",
        "-b",
        "1024",
        "-N",
        "1024",
        "-O",
        "quota,orphan_file,sparse_super2",
        name="ext4_misc",
    )
    # mke2fs 1.47.0 computes quota usage before -d copies the tree in: let e2fsck redo it.
    # MMP comes after: e2fsck -y on an MMP filesystem waits 2 * interval + 1 = 11 s.
    e2fsck_fix(image)
    # The MMP block records the real time, the host name and the build path: the one part of
    # these images that differs between builds (rewriting it, debugfs -w waits 11 s too).
    run("tune2fs", "-O", "mmp", image)
    e2fsck_clean(image)
    return image


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {
    "ext4_tree": build_ext4_tree,
    "ext4_1k": build_ext4_1k,
    "ext2_1k_tind": build_ext2_1k_tind,
    "ext3_journal": build_ext3_journal,
    "ext4_meta_bg": build_ext4_meta_bg,
    "ext4_bigalloc": build_ext4_bigalloc,
    "ext4_inline": build_ext4_inline,
    "ext4_misc": build_ext4_misc,
}


def copy_sparse(src: Path, dst: Path, dst_offset: int) -> None:
    """Copy the data regions of ``src`` into ``dst`` at ``dst_offset`` (holes stay holes)."""
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fd = fin.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(dst_offset + start)
            remaining = end - start
            while remaining:
                chunk = fin.read(min(remaining, 4 * MiB))
                fout.write(chunk)
                remaining -= len(chunk)
            pos = end


def build_ext4_in_gpt(disk: Path, ext4_tree: Path) -> DiskImage:
    """GPT disk: partition 1 an 8 MiB EFI vfat at 1 MiB, partition 2 = ext4_tree at 9 MiB."""
    fs_size = ext4_tree.stat().st_size
    total = GPT_EXT_OFFSET + fs_size + 1 * MiB
    if disk.exists():
        disk.unlink()
    with open(disk, "wb") as fh:
        fh.truncate(total)
    first, second = GPT_EFI_SIZE // 512, fs_size // 512
    run(
        "sgdisk",
        "--disk-guid",
        GPT_DISK_GUID,
        "-n",
        f"1:2048:+{first}",
        "-t",
        "1:ef00",
        "-c",
        "1:EFI",
        "-u",
        f"1:{GPT_PART_GUIDS[0]}",
        "-n",
        f"2:{GPT_EXT_OFFSET // 512}:+{second}",
        "-t",
        "2:8300",
        "-c",
        "2:ext4_tree",
        "-u",
        f"2:{GPT_PART_GUIDS[1]}",
        disk,
    )
    run(
        "mkfs.vfat",
        "--invariant",
        "-i",
        "b3a9c1d0",
        "-n",
        "EFI",
        "--offset",
        "2048",
        disk,
        str(GPT_EFI_SIZE // 1024),
    )
    copy_sparse(ext4_tree, disk, GPT_EXT_OFFSET)
    return DiskImage(path=disk, offset=GPT_EXT_OFFSET, size=fs_size, partition=2)


# --------------------------------------------------------------------------------------------
# the cache


def default_cache_root() -> Path | None:
    env = os.environ.get("BMAP_TEST_CACHE")
    return Path(env) if env else None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cache_root_of(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The image cache of a test session: ``$BMAP_TEST_CACHE`` when set (images survive
    across runs), else ``name`` under pytest's base temporary directory."""
    root = default_cache_root() or tmp_path_factory.getbasetemp() / name
    root.mkdir(parents=True, exist_ok=True)
    return root


def _cached(cache_root: Path, filename: str, build: Callable[[Path, Path], object]) -> Path:
    """Build ``filename`` in ``cache_root/<version>`` once (:func:`cached_file`)."""
    return cached_file(cache_root / cache_version(), filename, build)


def cached_file(folder: Path, filename: str, build: Callable[[Path, Path], object]) -> Path:
    """``folder/filename``, built once by ``build(partial, workdir)``: to a temp name in a
    work directory, then renamed, under a lock, so a broken build is never reused and
    parallel workers share it."""
    target = folder / filename
    with _locked(folder / f".{filename}.lock"):
        if target.exists():
            return target
        work = Path(tempfile.mkdtemp(prefix=f"build-{filename}-", dir=folder))
        try:
            partial = work / filename
            build(partial, work)
            partial.chmod(0o444)
            partial.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def ext_image(name: str, cache_root: Path) -> Path:
    """The image ``name`` (a key of :data:`BUILDERS`), built once into the cache."""
    return _cached(cache_root, f"{name}.img", BUILDERS[name])


def ext4_in_gpt(cache_root: Path) -> DiskImage:
    """The GPT disk whose partition 2 holds a copy of ``ext4_tree``."""
    tree = ext_image("ext4_tree", cache_root)
    stale = cache_root / cache_version() / "ext4_in_gpt.img"
    with _locked(stale.parent / ".ext4_in_gpt.img.lock"):
        if stale.exists() and stale.stat().st_mtime < tree.stat().st_mtime:
            stale.unlink()  # ext4_tree was rebuilt since: copy it again
    disk = _cached(cache_root, "ext4_in_gpt.img", lambda out, _work: build_ext4_in_gpt(out, tree))
    return DiskImage(path=disk, offset=GPT_EXT_OFFSET, size=tree.stat().st_size, partition=2)


# --------------------------------------------------------------------------------------------
# pytest fixtures. Import the ``*_fixture`` functions into a test module or a conftest.py;
# pytest knows them by the names given (``ext_image_factory``, ``ext4_tree_image``, ...), so a
# test's parameter does not shadow the import.


@pytest.fixture(scope="session", name="ext_images_cache")
def ext_images_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cache_root_of(tmp_path_factory, "ext-images")


def _get_or_skip(name: str, cache_root: Path) -> Path:
    try:
        return ext_image(name, cache_root)
    except NeedsRoot as exc:
        pytest.skip(str(exc))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session", name="ext_image_factory")
def ext_image_factory_fixture(ext_images_cache: Path) -> Callable[[str], Path]:
    """``ext_image_factory("ext4_1k")`` -> Path; skips when the image needs root."""
    return lambda name: _get_or_skip(name, ext_images_cache)


@pytest.fixture(scope="session", name="ext4_tree_image")
def ext4_tree_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_tree", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_1k_image")
def ext4_1k_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_1k", ext_images_cache)


@pytest.fixture(scope="session", name="ext2_1k_tind_image")
def ext2_1k_tind_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext2_1k_tind", ext_images_cache)


@pytest.fixture(scope="session", name="ext3_journal_image")
def ext3_journal_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext3_journal", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_meta_bg_image")
def ext4_meta_bg_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_meta_bg", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_bigalloc_image")
def ext4_bigalloc_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_bigalloc", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_inline_image")
def ext4_inline_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_inline", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_misc_image")
def ext4_misc_image_fixture(ext_images_cache: Path) -> Path:
    return _get_or_skip("ext4_misc", ext_images_cache)


@pytest.fixture(scope="session", name="ext4_in_gpt_image")
def ext4_in_gpt_image_fixture(ext_images_cache: Path) -> DiskImage:
    try:
        return ext4_in_gpt(ext_images_cache)
    except (NeedsRoot, FileNotFoundError) as exc:
        pytest.skip(str(exc))
