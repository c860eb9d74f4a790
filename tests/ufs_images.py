"""UFS1 and UFS2 test images made by makefs (the NetBSD/MirBSD tool Debian packages), no root.

Each image is 15 MiB with 8 KiB blocks and 1 KiB fragments, in cylinder groups of 2 MiB
(``maxbpcg=2048``): eight groups, the last one half as long. The tree holds nested directories
(three levels and more), a small file, a file of a few hundred KiB, a 1.2 MiB file that needs
an indirect block (more than 12 direct blocks of 8 KiB), an empty file, a symlink, non-ASCII
names, and a few dozen fillers of 100 KiB that spread over the groups.

``ufs1_be`` is ``ufs1``'s tree written big-endian (makefs ``-B be``), as BSD on SPARC or
PowerPC wrote it.

Determinism: makefs takes ``fs_id`` from the time (``-T``) and an unseeded ``random()``, so
blkid's UUID is the same on every build (``6553f1006b8b4567``); the tree's mtimes are fixed.
The builders join :data:`tests.tsk_images.BUILDERS`: each image is built once into that
module's cache, with the bytes of every regular file beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import tsk_images
from tests.ext_images import FAKE_TIME, run
from tests.tsk_images import data

KiB = 1 << 10
MiB = 1 << 20
IMAGE_SIZE = 15 * MiB
BLOCK, FRAGMENT = 8192, 1024
#: fs_id[0] is makefs's timestamp (-T), fs_id[1] glibc's first unseeded random().
EXPECTED_UUID = f"{FAKE_TIME:08x}6b8b4567"
SYMLINK = ("/links/to-small", "../dir1/dir2/dir3/small.txt")


def _tree(seed: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {
        "/README.txt": b"bmap UFS test image " + seed.encode() + b"\n",
        "/dir1/dir2/dir3/small.txt": b"small\n" * 20,
        "/dir1/dir2/dir3/dir4/deepest.txt": data(seed + "deepest", 3000),
        "/dir1/medium.bin": data(seed + "medium", 300 * KiB),
        "/big.bin": data(seed + "big", 1200 * KiB),
        "/empty.txt": b"",
        "/données ☃.txt": data(seed + "unicode", 5000),
        "/dir1/Ünïcödé dir/ß.bin": data(seed + "sharp-s", 20 * KiB),
    }
    for i in range(40):
        files[f"/fill/f{i:02d}.bin"] = data(f"{seed}fill{i}", 100 * KiB)
    return files


def _write_source(root: Path, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (root / "links").mkdir()
    os.symlink(SYMLINK[1], root / SYMLINK[0].lstrip("/"))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (FAKE_TIME, FAKE_TIME), follow_symlinks=False)


def _build(image: Path, work: Path, version: int, *extra: str) -> dict[str, bytes]:
    files = _tree(f"ufs{version}")
    source = work / "src"
    _write_source(source, files)
    options = f"version={version},bsize={BLOCK},fsize={FRAGMENT},density=8192,maxbpcg=2048"
    run(
        "makefs",
        "-t",
        "ffs",
        *extra,
        "-o",
        options,
        "-T",
        str(FAKE_TIME),
        "-s",
        str(IMAGE_SIZE),
        image,
        source,
    )
    return files


def build_ufs1(image: Path, work: Path) -> dict[str, bytes]:
    """UFS1, little-endian: the superblock at 8 KiB."""
    return _build(image, work, 1)


def build_ufs2(image: Path, work: Path) -> dict[str, bytes]:
    """UFS2, little-endian. makefs puts its superblock at 8 KiB (fs_sblockloc 8192), not at
    the 64 KiB FreeBSD's newfs uses."""
    return _build(image, work, 2)


def build_ufs1_be(image: Path, work: Path) -> dict[str, bytes]:
    """UFS1, big-endian."""
    return _build(image, work, 1, "-B", "be")


BUILDERS: dict[str, Callable[[Path, Path], dict[str, bytes]]] = {
    "ufs1": build_ufs1,
    "ufs2": build_ufs2,
    "ufs1_be": build_ufs1_be,
}


# The images are built and cached by tests.tsk_images, beside the other TSK-family images.
tsk_images.BUILDERS.update(BUILDERS)
tsk_images.TOOLS.update({name: ("makefs",) for name in BUILDERS})
source_files = tsk_images.source_files


@pytest.fixture(scope="session", name="ufs_image_factory")
def ufs_image_factory_fixture(
    tsk_image_factory: Callable[[str], Path],
) -> Callable[[str], Path]:
    """``ufs_image_factory("ufs1")`` -> Path; skips when makefs is missing."""
    return tsk_image_factory
