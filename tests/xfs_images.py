"""XFS test images made by the real tools: mkfs.xfs, then a read-write loop mount (v5), or a
mkfs.xfs protofile (v4: this kernel is built without v4 support, so it cannot mount one).

Each ``build_*`` function writes one whole-device filesystem image (no partition table) to the
path it is given; :func:`xfs_image` builds it once into a cache directory and hands out the
path. The cache is ``$BMAP_TEST_CACHE/<version>`` when that variable is set, else a directory
under pytest's ``tmp_path_factory``; the version holds :data:`IMAGES_VERSION` and the
xfsprogs version. Builds are serialised by a lock file.

mkfs.xfs refuses filesystems under 300 MB unless ``TEST_DIR``, ``TEST_DEV`` and
``QA_CHECK_FS`` are set (xfstests' escape hatch), which :data:`MKFS_ENV` does.

``xfs_v5`` goes through the kernel's allocator, so its layout differs between builds: the
tests read the truth from the image (``tests.xfs_truth``), never from constants here, except
the paths in :data:`PATHS`, which are fixed. Every loop device and mount is released in a
``finally``, also when a build fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ext_images import (
    NeedsRoot,
    _data,
    _write,
    cache_root_of,
    cached_file,
    is_root,
    tool_path,
)

IMAGES_VERSION = "xfs-images-2"
MKFS_ENV = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
MiB = 1 << 20
KiB = 1 << 10
UUIDS = {
    "xfs_small": "5f5f0006-0000-4000-8000-000000000006",
    "xfs_v5": "5f5f0005-0000-4000-8000-000000000005",
    "xfs_v4": "5f5f0004-0000-4000-8000-000000000004",
}
LONG_LINK_TARGET = b"../" + b"/".join([b"a-rather-long-directory-name-for-a-remote-symlink"] * 19)
SHORT_LINK_TARGET = b"../README.txt"
AWKWARD_NAMES: tuple[bytes, ...] = (b"with space", b"new\nline", b"\xff\xfe", "données ☃".encode())

#: Fixed paths of the objects the tests care about.
PATHS: dict[str, dict[str, str]] = {
    "xfs_v5": {
        "btree_file": "/frag/a.bin",
        "btree_file_2": "/frag/b.bin",
        "prealloc": "/prealloc.bin",
        "mixed": "/mixed.bin",
        "sparse": "/sparse.bin",
        "reflink_orig": "/reflink/orig.bin",
        "reflink_copy": "/reflink/copy1.bin",
        "reflink_cow": "/reflink/copy2.bin",
        "short_dir": "/dirs/short",
        "block_dir": "/dirs/block",
        "leaf_dir": "/dirs/leaf",
        "node_dir": "/dirs/node",
        "btree_dir": "/dirs/btree1",
        "short_link": "/links/short",
        "long_link": "/links/long",
        "xattr_local": "/xattr/small",
        "xattr_remote": "/xattr/big",
        "xattr_many": "/xattr/many",
        "xattr_btree": "/xattr/tree1",
        "hard_1": "/hard/one",
        "hard_2": "/dir1/two",
        "hard_3": "/names/three",
    },
    "xfs_v4": {
        "short_dir": "/dirs/short",
        "block_dir": "/dirs/block",
        "leaf_dir": "/dirs/leaf",
        "node_dir": "/dirs/node",
        "long_link": "/links/long",
        "big_file": "/data/big.bin",
    },
}


class Unavailable(RuntimeError):
    """A tool or feature the builder needs is missing here."""


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    """Run a tool, raise with its stderr on failure, return its stdout."""
    exe = tool_path(str(args[0]))
    proc = subprocess.run(
        [exe, *map(str, args[1:])],
        capture_output=True,
        text=True,
        env={**os.environ, **MKFS_ENV, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def xfsprogs_version() -> str:
    out = run("mkfs.xfs", "-V")  # "mkfs.xfs version 6.1.0"
    return out.split()[-1]


def cache_version() -> str:
    return f"{IMAGES_VERSION}-xfsprogs-{xfsprogs_version()}"


def mkfs(image: Path, size: int, *args: str, name: str) -> None:
    if image.exists():
        image.unlink()
    with open(image, "wb") as fh:
        fh.truncate(size)
    run("mkfs.xfs", "-q", "-f", "-L", name, "-m", f"uuid={UUIDS[name]}", *args, image)


def repair_clean(image: Path) -> None:
    """``xfs_repair -n``: raise unless the image is clean."""
    run("xfs_repair", "-n", "-f", image)


@contextlib.contextmanager
def rw_mount(image: Path, options: str = "allocsize=4k") -> Iterator[Path]:
    """Loop-mount an image read-write (only for building); always unmount and detach."""
    if not is_root():
        raise NeedsRoot("a read-write loop mount needs root")
    if not Path("/dev/loop-control").exists():
        raise NeedsRoot("this machine has no loop devices (/dev/loop-control missing)")
    dev = run("losetup", "--find", "--show", image).strip()
    try:
        mnt = Path(tempfile.mkdtemp(prefix="bmap-xfs-build-"))
        try:
            run("mount", "-t", "xfs", "-o", options, dev, mnt)
            try:
                yield mnt
            finally:
                subprocess.run([tool_path("umount"), str(mnt)], check=True)
        finally:
            mnt.rmdir()
    finally:
        subprocess.run([tool_path("losetup"), "--detach", dev], check=False)


def _interleaved(paths: list[Path], blocks: int, seed: str) -> None:
    """Write ``blocks`` 4 KiB blocks to each file in turn, each synced before the next, so
    that the allocator hands the files alternate blocks: one extent per block."""
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT, 0o644) for p in paths]
    try:
        for i in range(blocks):
            for k, fd in enumerate(fds):
                os.pwrite(fd, _data(f"{seed}{k}-{i}", 4 * KiB), i * 4 * KiB)
                os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _fallocate(path: Path, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, offset, length)
    finally:
        os.close(fd)


def _make_dirs(root: Path) -> None:
    d = root / "dirs"
    d.mkdir()
    for name, count, width in (("short", 3, 8), ("block", 40, 12), ("leaf", 300, 24)):
        sub = d / name
        sub.mkdir()
        for i in range(count):
            _write(sub / f"{name}-{i:05d}".ljust(width, "x"), b"")
    node = d / "node"
    node.mkdir()
    for i in range(3000):
        _write(node / f"node-entry-{i:05d}-{'n' * 20}", b"" if i % 50 else b"n\n")
    # Two big directories grown in turn: their blocks interleave, so each has more extents
    # than its inode holds: btree-format directories.
    one, two = d / "btree1", d / "btree2"
    one.mkdir()
    two.mkdir()
    for i in range(5000):
        for k, sub in enumerate((one, two)):
            fd = os.open(sub / f"entry-{i:05d}-{'b' * 60}-{k}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        if i % 50 == 0:
            os.sync()


def _fill_v5(mnt: Path) -> None:
    _write(mnt / "README.txt", b"bmap xfs test image\n")
    _write(mnt / "empty", b"")
    frag = mnt / "frag"
    frag.mkdir()
    # 400 extents each: more than the inode holds (bmbt of two leaves).
    _interleaved([frag / "a.bin", frag / "b.bin"], 400, "frag")
    _interleaved([frag / "c.bin", frag / "d.bin"], 12, "small")
    _write(mnt / "data.bin", _data("data", 300 * KiB))
    _fallocate(mnt / "prealloc.bin", 0, 1 * MiB)
    _fallocate(mnt / "mixed.bin", 0, 256 * KiB)
    fd = os.open(mnt / "mixed.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, _data("mixed", 12 * KiB), 64 * KiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(mnt / "sparse.bin", "wb") as fh:
        fh.write(_data("s0", 8 * KiB))
        fh.seek(10 * MiB)
        fh.write(_data("s1", 8 * KiB))
    ref = mnt / "reflink"
    ref.mkdir()
    _write(ref / "orig.bin", _data("orig", 1 * MiB))
    os.sync()
    run("cp", "--reflink=always", ref / "orig.bin", ref / "copy1.bin")
    run("cp", "--reflink=always", ref / "orig.bin", ref / "copy2.bin")
    fd = os.open(ref / "copy2.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, _data("cow", 8 * KiB), 256 * KiB)  # copy on write: a new extent
        os.fsync(fd)
    finally:
        os.close(fd)
    _make_dirs(mnt)
    links = mnt / "links"
    links.mkdir()
    os.symlink(SHORT_LINK_TARGET, os.fsencode(links / "short"))
    os.symlink(LONG_LINK_TARGET, os.fsencode(links / "long"))
    x = mnt / "xattr"
    x.mkdir()
    _write(x / "small", b"small\n")
    os.setxattr(x / "small", "user.a", b"local")
    _write(x / "big", b"big\n")
    os.setxattr(x / "big", "user.big", _data("xbig", 6000))  # a remote value
    os.setxattr(x / "big", "user.small", b"also")
    _write(x / "many", b"many\n")
    for i in range(300):
        os.setxattr(x / "many", f"user.attr{i:04d}", _data(f"xa{i}", 120))
    (x / "dir").mkdir()
    os.setxattr(x / "dir", "user.d", _data("xd", 2000))
    # Two files whose attribute forks grow in turn: more extents than the fork holds in the
    # inode, so a btree-format attribute fork.
    trees = (x / "tree1", x / "tree2")
    for t in trees:
        _write(t, t.name.encode())
    for i in range(1500):
        for t in trees:
            os.setxattr(t, f"user.a{i:05d}", _data(f"{t.name}{i}", 200))
        if i % 20 == 0:
            os.sync()
    for d in ("hard", "dir1", "names"):
        (mnt / d).mkdir()
    _write(mnt / "hard" / "one", b"one file, three names\n")
    os.link(mnt / "hard" / "one", mnt / "dir1" / "two")
    os.link(mnt / "hard" / "one", mnt / "names" / "three")
    for i, name in enumerate(AWKWARD_NAMES):
        _write(os.path.join(os.fsencode(mnt / "names"), name), b"awkward %d\n" % i)
    for a in range(10):
        for b in range(5):
            sub = mnt / "nest" / f"a{a}" / f"b{b}"
            sub.mkdir(parents=True)
            for c in range(4):
                _write(sub / f"c{c}.txt", b"%d/%d/%d\n" % (a, b, c) * (c + 1) * 100)
    # Free space in the middle of used space.
    os.sync()
    for i in range(0, 3000, 7):
        (mnt / "dirs" / "node" / f"node-entry-{i:05d}-{'n' * 20}").unlink(missing_ok=True)
    (mnt / "frag" / "d.bin").unlink()
    os.sync()


def build_xfs_v5(image: Path, workdir: Path) -> Path:
    """v5 (CRC) with reflink, rmapbt, finobt and sparse inodes, 4 AGs, 192 MiB, filled
    through a read-write mount with allocsize=4k."""
    if not is_root():
        raise NeedsRoot("xfs_v5 needs root: a read-write loop mount")
    mkfs(
        image,
        192 * MiB,
        "-m",
        "crc=1,reflink=1,rmapbt=1,finobt=1",
        "-i",
        "sparse=1",
        "-d",
        "agcount=4",
        name="xfs_v5",
    )
    with rw_mount(image) as mnt:
        _fill_v5(mnt)
    repair_clean(image)
    return image


def _proto_tree(root: Path) -> list[str]:
    """Source files for the v4 protofile, and the protofile's lines for them."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]
    root.mkdir(parents=True, exist_ok=True)

    def file(name: str, data: bytes, depth: int) -> None:
        src = root / f"src{len(lines)}"
        _write(src, data)
        lines.append(f"{' ' * depth}{name} ---644 0 0 {src}")

    file("README.txt", b"bmap xfs v4 image\n", 1)
    file("empty", b"", 1)
    lines.append(" data d--755 0 0")
    file("big.bin", _data("v4big", 2 * MiB), 2)
    file("medium.bin", _data("v4med", 100 * KiB), 2)
    lines.append(" $")
    lines.append(" dirs d--755 0 0")
    for name, count in (("short", 3), ("block", 40), ("leaf", 300), ("node", 2000)):
        lines.append(f"  {name} d--755 0 0")
        for i in range(count):
            file(f"{name}-entry-{i:05d}-{'z' * 16}", b"" if i % 100 else b"x\n", 3)
        lines.append("  $")
    lines.append(" $")
    lines.append(" links d--755 0 0")
    lines.append(f"  short l--777 0 0 {SHORT_LINK_TARGET.decode()}")
    lines.append(f"  long l--777 0 0 {LONG_LINK_TARGET.decode()}")
    lines.append(" $")
    lines.append("$")
    return lines


def build_xfs_v4(image: Path, workdir: Path) -> Path:
    """v4 (``-m crc=0``), 2 KiB blocks, 256-byte inodes, 3 AGs, 64 MiB, filled by a protofile."""
    proto = workdir / "proto"
    proto.write_text("\n".join(_proto_tree(workdir / "src")) + "\n")
    mkfs(
        image,
        64 * MiB,
        "-m",
        "crc=0",
        "-b",
        "size=2048",
        "-i",
        "size=256",
        "-d",
        "agcount=3",
        "-p",
        str(proto),
        name="xfs_v4",
    )
    repair_clean(image)
    return image


def build_xfs_small(image: Path, workdir: Path) -> Path:
    """A small v5 (reflink, rmapbt, finobt, sparse inodes), 4 AGs, 64 MiB, filled by a
    protofile (no mount, no root): the base of the crafted and hypothesis images."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]
    src = workdir / "src"
    src.mkdir()
    for i in range(40):
        path = src / f"f{i}"
        _write(path, _data(f"small{i}", 100 + 3000 * (i % 7)))
        lines.append(f" file{i:03d} ---644 0 0 {path}")
    lines.append(" dir d--755 0 0")
    for i in range(200):
        lines.append(f"  entry-{i:04d}-{'d' * 30} ---644 0 0 {src / 'f0'}")
    lines += [" $", "$"]
    proto = workdir / "proto"
    proto.write_text("\n".join(lines) + "\n")
    mkfs(
        image,
        64 * MiB,
        "-m",
        "crc=1,reflink=1,rmapbt=1,finobt=1",
        "-i",
        "sparse=1",
        "-d",
        "agcount=4",
        "-p",
        str(proto),
        name="xfs_small",
    )
    repair_clean(image)
    return image


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {
    "xfs_small": build_xfs_small,
    "xfs_v5": build_xfs_v5,
    "xfs_v4": build_xfs_v4,
}


def xfs_image(name: str, cache_root: Path) -> Path:
    """The image ``name`` (a key of :data:`BUILDERS`), built once into the cache."""
    return cached_file(cache_root / cache_version(), f"{name}.img", BUILDERS[name])


@pytest.fixture(scope="session", name="xfs_images_cache")
def xfs_images_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cache_root_of(tmp_path_factory, "xfs-images")


@pytest.fixture(scope="session", name="xfs_image_factory")
def xfs_image_factory_fixture(xfs_images_cache: Path) -> Callable[[str], Path]:
    """``xfs_image_factory("xfs_v5")`` -> Path; skips with the reason when it cannot be built."""

    def get(name: str) -> Path:
        try:
            return xfs_image(name, xfs_images_cache)
        except (NeedsRoot, FileNotFoundError, Unavailable) as exc:
            pytest.skip(str(exc))

    return get
