"""parsers.detect against images made by the real tools, with blkid as the judge.

Every image is a small sparse file made once per session by the tool that owns the format
(mke2fs, mkswap, mkfs.vfat, mkfs.ntfs, mkfs.exfat, mkfs.xfs, mkfs.btrfs, cryptsetup, pvcreate,
xorriso or genisoimage). ``detect()`` must say what ``blkid -p`` says about the same file, and
its size must agree with the tool's own account (dumpe2fs, xfs_db, btrfs inspect-internal,
fsck.fat, dump.exfat, ntfsinfo, isoinfo, mkswap, blockdev). A missing tool skips its cases
with the reason; pvcreate needs root and a loop device.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.detect import READ_BUDGET, UNKNOWN, Content, detect
from parsers.swap import SWAP_HEADER_BE

UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
LVM_UUID = "abcdef-ABCD-0123-4567-89ab-cdef-012345"
KiB, MiB = 1024, 1024 * 1024
ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LVM_SUPPRESS_FD_WARNINGS": "1"}
LVM_CONFIG = "devices { use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 }"


def run(*args: str | Path, ok: tuple[int, ...] = (0,)) -> str:
    """Run a tool; its stdout, or the test fails with its stderr."""
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=ENV, check=False
    )
    if done.returncode not in ok:
        pytest.fail(f"{args[0]} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(length)


def iso_tool() -> list[str] | None:
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    if shutil.which("genisoimage"):
        return ["genisoimage"]
    return None


def is_root_with_loop() -> bool:
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


# --------------------------------------------------------------------------------------------
# The cases: how each image is made, and what the tool was told
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    tools: tuple[str, ...]
    make: Callable[[Path], dict[str, int]]  # builds the image; returns facts the tool told
    kind: str
    label: str | None = None
    uuid: str | None = "*"  # "*": the tool picked one
    needs_root: bool = False
    fs_size: Callable[[Path, dict[str, int]], int | None] | None = field(default=None)


def make_ext(fs: str, *features: str, label: str) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 8 * MiB)
        extra = ["-O", ",".join(features)] if features else []
        run("mke2fs", "-q", "-F", "-t", fs, *extra, "-L", label, "-U", UUID, path)
        return {}

    return make


def ext_size(path: Path, _: dict[str, int]) -> int:
    out = run("dumpe2fs", "-h", path)
    blocks = int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    block_size = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    return blocks * block_size


def make_swap(page_size: int, label: str) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 8 * MiB)
        out = run("mkswap", "-p", str(page_size), "-L", label, "-U", UUID, path)
        usable = int(re.search(r"\((\d+) bytes\)", out).group(1))  # type: ignore[union-attr]
        # mkswap reports the pages after the header page
        return {"fs_size": usable + page_size}

    return make


def told_size(_: Path, facts: dict[str, int]) -> int:
    return facts["fs_size"]


def make_vfat(
    bits: int | None, size: int, label: str | None, fix: Callable[[Path], None] | None = None
) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, size)
        args = ["mkfs.vfat", "-i", "1234ABCD"]
        args += ["-F", str(bits)] if bits else []
        args += ["-n", label] if label is not None else []
        run(*args, path)
        if fix is not None:
            fix(path)
        return {}

    return make


def fat_layout(path: Path) -> dict[str, int]:
    """Whether fsck.fat calls it FAT32, and where it says the FAT12/16 root directory is."""
    out = run("fsck.fat", "-n", "-v", path, ok=(0, 1))
    root = re.search(r"Root directory starts at byte (\d+)", out)
    return {"fat32": int("32 bit entries" in out), "root": int(root.group(1)) if root else -1}


def stale_bpb_label(path: Path) -> None:
    # Windows renames a volume in the root directory only: the boot sector keeps the old name.
    offset = 0x47 if fat_layout(path)["fat32"] else 0x2B
    patch(path, offset, b"STALE BPB  ")


def dir_label_first_byte(value: bytes) -> Callable[[Path], None]:
    def fix(path: Path) -> None:
        root = fat_layout(path)["root"]
        assert read_at(path, root + 11, 1) == b"\x08", "mkfs.vfat wrote no label entry first"
        patch(path, root, value)

    return fix


def no_extended_boot_signature(path: Path) -> None:
    # a pre-DOS-4 boot sector (no 0x29 at 0x26): no serial number, hence no UUID
    patch(path, 0x26, b"\x00")


def vfat_size(path: Path, _: dict[str, int]) -> int:
    out = run("fsck.fat", "-n", "-v", path, ok=(0, 1))
    sectors = int(re.search(r"(\d+) sectors total", out).group(1))  # type: ignore[union-attr]
    sector = int(re.search(r"(\d+) bytes per logical sector", out).group(1))  # type: ignore[union-attr]
    return sectors * sector


def make_ntfs(label: str) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 16 * MiB)
        run("mkfs.ntfs", "-F", "-Q", "-q", "-L", label, path)
        return {}

    return make


def ntfs_size(path: Path, _: dict[str, int]) -> int | None:
    out = run("ntfsinfo", "-m", path)
    clusters = int(re.search(r"Volume Size in Clusters:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    cluster = int(re.search(r"Cluster Size:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    # ntfsinfo counts whole clusters; the boot sector counts sectors: same clusters either way
    return clusters * cluster


def make_exfat(label: str) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 16 * MiB)
        run("mkfs.exfat", "-L", label, path)
        out = run("dump.exfat", path)
        serial = int(re.search(r"Volume Serial:\s*0x([0-9a-f]+)", out).group(1), 16)  # type: ignore[union-attr]
        sectors = int(re.search(r"Volume Length\(sectors\):\s*(\d+)", out).group(1))  # type: ignore[union-attr]
        bits = int(re.search(r"Sector Size Bits:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
        return {"serial": serial, "fs_size": sectors << bits}

    return make


def make_xfs(path: Path) -> dict[str, int]:
    sparse(path, 300 * MiB)  # mkfs.xfs refuses anything smaller
    run("mkfs.xfs", "-q", "-L", "XFSLBL", "-m", f"uuid={UUID}", path)
    return {}


def xfs_size(path: Path, _: dict[str, int]) -> int:
    out = run("xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", path)
    values = dict(re.findall(r"^(\w+) = (\d+)$", out, re.M))
    return int(values["dblocks"]) * int(values["blocksize"])


def make_btrfs(path: Path) -> dict[str, int]:
    sparse(path, 128 * MiB)
    run("mkfs.btrfs", "-q", "-L", "BTRLBL", "-U", UUID, path)
    return {}


def btrfs_size(path: Path, _: dict[str, int]) -> int:
    out = run("btrfs", "inspect-internal", "dump-super", path)
    return int(re.search(r"^total_bytes\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]


def make_luks(
    luks_type: str, *extra: str, wipe_primary: bool = False
) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 32 * MiB)
        key = path.with_suffix(".key")
        key.write_bytes(b"correct horse battery staple")
        run(
            "cryptsetup", "luksFormat", "--batch-mode", "--type", luks_type,
            "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--uuid", UUID, "--key-file", key, *extra, path,
        )  # fmt: skip
        if wipe_primary:
            patch(path, 0, bytes(4096))
        return {}

    return make


def make_lvm(label_sector: int) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        sparse(path, 16 * MiB)
        loop = run("losetup", "-f", "--show", path).strip()
        try:
            size = int(run("blockdev", "--getsize64", loop))
            run(
                "pvcreate", "--config", LVM_CONFIG, "--uuid", LVM_UUID, "--norestorefile",
                "--labelsector", str(label_sector), loop,
            )  # fmt: skip
        finally:
            subprocess.run(["losetup", "-d", loop], check=False, env=ENV)
        return {"fs_size": size}

    return make


def make_iso(*extra: str, label: str) -> Callable[[Path], dict[str, int]]:
    def make(path: Path) -> dict[str, int]:
        tool = iso_tool()
        assert tool is not None
        tree = path.with_suffix(".d")
        tree.mkdir()
        (tree / "hello.txt").write_text("hello\n")
        (tree / "boot.img").write_bytes(bytes(2048))
        run(*tool, "-quiet", "-V", label, *extra, "-o", path, tree)
        return {}

    return make


def iso_size(path: Path, _: dict[str, int]) -> int:
    if not shutil.which("isoinfo"):
        pytest.skip("isoinfo (genisoimage) not installed")
    out = run("isoinfo", "-d", "-i", path)
    blocks = int(re.search(r"Volume size is:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    block = int(re.search(r"Logical block size is:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    return blocks * block


def no_size(_: Path, __: dict[str, int]) -> None:
    return None


ISO = ("xorriso|genisoimage",)

CASES = [
    Case("ext2", ("mke2fs",), make_ext("ext2", label="e2lbl"), "ext2", "e2lbl", UUID,
         fs_size=ext_size),
    Case("ext3", ("mke2fs",), make_ext("ext3", label="e3lbl"), "ext3", "e3lbl", UUID,
         fs_size=ext_size),
    Case("ext4", ("mke2fs",), make_ext("ext4", label="e4lbl"), "ext4", "e4lbl", UUID,
         fs_size=ext_size),
    Case("ext4-no-journal", ("mke2fs",), make_ext("ext4", "^has_journal", label="nj"), "ext4",
         "nj", UUID, fs_size=ext_size),
    Case("ext3-no-journal", ("mke2fs",), make_ext("ext3", "^has_journal", label="nj"), "ext2",
         "nj", UUID, fs_size=ext_size),
    Case("ext2-extents", ("mke2fs",), make_ext("ext2", "extent", label="x"), "ext4", "x", UUID,
         fs_size=ext_size),
    Case("ext3-dir-nlink", ("mke2fs",), make_ext("ext3", "dir_nlink", label="dn"), "ext4",
         "dn", UUID, fs_size=ext_size),
    Case("swap-4k", ("mkswap",), make_swap(4096, "swp4k"), "swap", "swp4k", UUID,
         fs_size=told_size),
    Case("swap-16k", ("mkswap",), make_swap(16384, "swp16k"), "swap", "swp16k", UUID,
         fs_size=told_size),
    Case("swap-64k", ("mkswap",), make_swap(65536, "swp64k"), "swap", "swp64k", UUID,
         fs_size=told_size),
    Case("vfat12", ("mkfs.vfat", "fsck.fat"), make_vfat(12, 4 * MiB, "FAT12LBL"), "vfat",
         "FAT12LBL", "1234-ABCD", fs_size=vfat_size),
    Case("vfat16", ("mkfs.vfat", "fsck.fat"), make_vfat(16, 16 * MiB, "FAT16LBL"), "vfat",
         "FAT16LBL", "1234-ABCD", fs_size=vfat_size),
    Case("vfat32", ("mkfs.vfat", "fsck.fat"), make_vfat(32, 64 * MiB, "FAT32LBL"), "vfat",
         "FAT32LBL", "1234-ABCD", fs_size=vfat_size),
    Case("vfat-no-label", ("mkfs.vfat", "fsck.fat"), make_vfat(None, 16 * MiB, None), "vfat",
         None, "1234-ABCD", fs_size=vfat_size),
    Case("vfat-lowercase-label", ("mkfs.vfat", "fsck.fat"),
         make_vfat(16, 16 * MiB, "lower c"), "vfat", "lower c", "1234-ABCD", fs_size=vfat_size),
    Case("vfat16-stale-bpb-label", ("mkfs.vfat", "fsck.fat"),
         make_vfat(16, 16 * MiB, "IN ROOTDIR", stale_bpb_label), "vfat", "IN ROOTDIR",
         "1234-ABCD", fs_size=vfat_size),
    Case("vfat32-stale-bpb-label", ("mkfs.vfat", "fsck.fat"),
         make_vfat(32, 64 * MiB, "IN ROOTDIR", stale_bpb_label), "vfat", "IN ROOTDIR",
         "1234-ABCD", fs_size=vfat_size),
    # blkid's LABEL is the root directory's entry only, never the boot sector's copy
    Case("vfat16-deleted-dir-label", ("mkfs.vfat", "fsck.fat"),
         make_vfat(16, 16 * MiB, "IN BPB ONLY", dir_label_first_byte(b"\xe5")), "vfat", None,
         "1234-ABCD", fs_size=vfat_size),
    Case("vfat16-dir-label-0x05", ("mkfs.vfat", "fsck.fat"),
         make_vfat(16, 16 * MiB, "XE5 START", dir_label_first_byte(b"\x05")), "vfat",
         "\ufffdE5 START", "1234-ABCD", fs_size=vfat_size),
    Case("vfat16-no-extended-boot-signature", ("mkfs.vfat", "fsck.fat"),
         make_vfat(16, 16 * MiB, "OLD DOS", no_extended_boot_signature), "vfat", "OLD DOS",
         None, fs_size=vfat_size),
    Case("ntfs", ("mkfs.ntfs", "ntfsinfo"), make_ntfs("NTFSLBL"), "ntfs", "NTFSLBL",
         fs_size=ntfs_size),
    Case("ntfs-unicode-label", ("mkfs.ntfs", "ntfsinfo"), make_ntfs("Daten Ü€"), "ntfs",
         "Daten Ü€", fs_size=ntfs_size),
    Case("exfat", ("mkfs.exfat", "dump.exfat"), make_exfat("EXLBL"), "exfat", "EXLBL",
         fs_size=told_size),
    Case("exfat-unicode-label", ("mkfs.exfat", "dump.exfat"), make_exfat("Bilder Ö"), "exfat",
         "Bilder Ö", fs_size=told_size),
    Case("xfs", ("mkfs.xfs", "xfs_db"), make_xfs, "xfs", "XFSLBL", UUID, fs_size=xfs_size),
    Case("btrfs", ("mkfs.btrfs", "btrfs"), make_btrfs, "btrfs", "BTRLBL", UUID,
         fs_size=btrfs_size),
    Case("luks1", ("cryptsetup",), make_luks("luks1"), "crypto_LUKS", None, UUID,
         fs_size=no_size),
    Case("luks2", ("cryptsetup",), make_luks("luks2", "--label", "My Disk"), "crypto_LUKS",
         "My Disk", UUID, fs_size=no_size),
    Case("luks2-secondary-header", ("cryptsetup",),
         make_luks("luks2", "--label", "Backup", wipe_primary=True), "crypto_LUKS", "Backup",
         UUID, fs_size=no_size),
    Case("lvm2-sector1", ("pvcreate", "losetup", "blockdev"), make_lvm(1), "LVM2_member", None,
         LVM_UUID, needs_root=True, fs_size=told_size),
    Case("lvm2-sector3", ("pvcreate", "losetup", "blockdev"), make_lvm(3), "LVM2_member", None,
         LVM_UUID, needs_root=True, fs_size=told_size),
    Case("iso9660", ISO, make_iso(label="ISOLBL"), "iso9660", "ISOLBL", fs_size=iso_size),
    Case("iso9660-joliet", ISO, make_iso("-J", label="Mixed case label"), "iso9660",
         "Mixed case label", fs_size=iso_size),
    Case("iso9660-eltorito-joliet", ISO,
         make_iso("-J", "-b", "boot.img", "-no-emul-boot", label="BOOTABLE"), "iso9660",
         "BOOTABLE", fs_size=iso_size),
]  # fmt: skip
CASE_IDS = [case.name for case in CASES]
EXPECTED_OFFSET = {"lvm2-sector1": 512, "lvm2-sector3": 1536, "luks2-secondary-header": 0x4000}


@dataclass(frozen=True)
class Image:
    case: Case
    path: Path
    facts: dict[str, int]

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def missing_tools(case: Case) -> list[str]:
    missing = []
    for tool in case.tools:
        if not any(shutil.which(alternative) for alternative in tool.split("|")):
            missing.append(tool)
    return missing


@pytest.fixture(scope="session")
def make_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Image]:
    """Build each case's image once per session (or skip with the reason)."""
    directory = tmp_path_factory.mktemp("signatures")
    made: dict[str, Image] = {}

    def build(case: Case) -> Image:
        missing = missing_tools(case)
        if missing:
            pytest.skip(f"{', '.join(missing)} not installed (needed for {case.name})")
        if case.needs_root and not is_root_with_loop():
            pytest.skip(f"{case.name} needs root and loop devices")
        if case.name not in made:
            path = directory / f"{case.name}.img"
            made[case.name] = Image(case, path, case.make(path))
        return made[case.name]

    return build


@pytest.fixture(params=CASES, ids=CASE_IDS)
def image(request: pytest.FixtureRequest, make_image: Callable[[Case], Image]) -> Image:
    return make_image(request.param)


_BLKID_CACHE: dict[Path, dict[str, str]] = {}


def blkid(path: Path) -> dict[str, str]:
    """``blkid -p`` on a file, raw (-d: no M-^ encoding of bytes >= 0x80, no escaping)."""
    if path not in _BLKID_CACHE:
        if not shutil.which("blkid"):
            pytest.skip("blkid (util-linux) not installed")
        done = subprocess.run(
            ["blkid", "-p", "-d", "-o", "export", str(path)],
            capture_output=True,
            env=ENV,
            check=False,
        )
        # exit status 2: nothing found
        assert done.returncode in (0, 2), done.stderr
        lines = done.stdout.decode("utf-8", errors="replace").splitlines()
        _BLKID_CACHE[path] = dict(line.split("=", 1) for line in lines if "=" in line)
    return _BLKID_CACHE[path]


class RangeView(io.RawIOBase):
    """A read-only window [offset, offset + size) on a file, recording what was asked for."""

    def __init__(self, fh: io.BufferedReader, offset: int, size: int) -> None:
        super().__init__()
        self._fh, self._offset, self._size, self._pos = fh, offset, size, 0
        self.furthest = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + pos
        assert self._pos >= 0
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._size if n < 0 else self._pos + n
        self.furthest = max(self.furthest, end)
        end = min(end, self._size)
        if end <= self._pos:
            return b""
        self._fh.seek(self._offset + self._pos)
        data = self._fh.read(end - self._pos)
        self._pos += len(data)
        self.bytes_read += len(data)
        return data


def detect_file(path: Path) -> Content:
    with path.open("rb") as fh:
        view = RangeView(fh, 0, path.stat().st_size)
        content = detect(typing.cast(typing.BinaryIO, view), path.stat().st_size)
    assert view.furthest <= path.stat().st_size
    assert view.bytes_read <= READ_BUDGET
    return content


# --------------------------------------------------------------------------------------------
# Known values from the real tools
# --------------------------------------------------------------------------------------------


def test_matches_blkid(image: Image) -> None:
    found = blkid(image.path)
    content = detect_file(image.path)
    assert (content.kind, content.version, content.label, content.uuid) == (
        found.get("TYPE"),
        found.get("VERSION"),
        found.get("LABEL"),
        found.get("UUID"),
    )


def test_known_values(image: Image) -> None:
    case = image.case
    content = detect_file(image.path)
    assert content.kind == case.kind
    assert content.label == case.label
    if case.uuid != "*":
        assert content.uuid == case.uuid
    if "serial" in image.facts:
        serial = image.facts["serial"]
        assert content.uuid == f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
    assert content.offset_in_device == EXPECTED_OFFSET.get(case.name, 0)


def test_fs_size_agrees_with_the_tool(image: Image) -> None:
    assert image.case.fs_size is not None
    expected = image.case.fs_size(image.path, image.facts)
    content = detect_file(image.path)
    if image.case.kind == "ntfs":
        # ntfsinfo counts whole clusters; the boot sector counts sectors (less the backup one)
        assert content.fs_size is not None
        assert expected is not None
        assert expected <= content.fs_size < expected + 64 * KiB
        assert content.fs_size <= image.size
    else:
        assert content.fs_size == expected


def copy_sparse(source: Path, target: Path, offset: int) -> None:
    """Copy only the data extents of ``source`` into ``target`` at ``offset``."""
    size = source.stat().st_size
    with source.open("rb") as src, target.open("r+b") as dst:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(src.fileno(), pos, os.SEEK_DATA)
            except OSError:  # no data after pos
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(offset + start)
            remaining = end - start
            while remaining:
                chunk = src.read(min(remaining, 4 * MiB))
                dst.write(chunk)
                remaining -= len(chunk)
            pos = end


def test_detects_at_an_offset_inside_a_bigger_file(image: Image, tmp_path: Path) -> None:
    offset = 3 * MiB + 512
    bigger = tmp_path / "disk.img"
    sparse(bigger, offset + image.size + 5 * MiB)
    # something that looks like a file system before and after the window
    patch(bigger, 0, read_at(image.path, 0, 128 * KiB))
    patch(bigger, offset + image.size, read_at(image.path, 0, 128 * KiB))
    copy_sparse(image.path, bigger, offset)
    with bigger.open("rb") as fh:
        view = RangeView(fh, offset, image.size)
        content = detect(typing.cast(typing.BinaryIO, view), image.size)
    assert view.furthest <= image.size
    assert content == detect_file(image.path)


# --------------------------------------------------------------------------------------------
# Nothing there, not all there, and hostile bytes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 512, 1024, 1025, 4096, 64 * KiB, 1 * MiB, 8 * MiB])
def test_zero_filled_is_unknown(size: int) -> None:
    assert detect(io.BytesIO(bytes(size)), size) == UNKNOWN


def test_size_beyond_the_data_is_unknown_not_an_error() -> None:
    # the caller's size may be wrong (a partition past the end of a truncated image)
    assert detect(io.BytesIO(b"\xff" * 100), 16 * MiB) == UNKNOWN


CUTS = [0, 100, 512, 1024, 1025, 1536, 2048, 4096, 4097, 8192, 16 * KiB, 0x8000 + 1, 0x8800,
        0x9800, 0x10000 + 0x40, 0x10000 + 0x200, 0x11000, 0x20000, 0x40000, 1 * MiB]  # fmt: skip


def test_truncated_images_never_raise(image: Image) -> None:
    head = read_at(image.path, 0, max(CUTS))
    for cut in CUTS:
        content = detect(io.BytesIO(head[:cut]), cut)
        assert isinstance(content, Content)
        assert content.kind in (image.case.kind, "unknown"), cut
        # a stream shorter than the size it claims
        content = detect(io.BytesIO(head[:cut]), image.size)
        assert content.kind in (image.case.kind, "unknown"), cut


class StrictStream(io.BytesIO):
    """BytesIO that fails the test if anything asks for bytes past ``size``."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self.size = size
        self.total = 0

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None and n >= 0, "detect() must ask for a bounded read"
        assert self.tell() + n <= self.size, "read past the end of the device"
        self.total += n
        return super().read(n)


def check_never_raises(data: bytes, size: int) -> None:
    stream = StrictStream(data, size)
    content = detect(stream, size)
    assert isinstance(content, Content)
    assert stream.total <= READ_BUDGET


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=0x12000))
def test_random_bytes_never_raise(data: bytes) -> None:
    check_never_raises(data, len(data))


SAMPLE_BYTES = 0x11000  # covers every primary signature, the ISO descriptors and btrfs


@pytest.fixture(scope="session")
def signature_samples(make_image: Callable[[Case], Image]) -> list[tuple[str, bytes]]:
    samples = []
    for case in CASES:
        try:
            made = make_image(case)
        except pytest.skip.Exception:
            continue
        samples.append((case.name, read_at(made.path, 0, SAMPLE_BYTES)))
    if not samples:
        pytest.skip("no image-making tool installed")
    return samples


HOT_SPOTS = st.one_of(
    st.integers(0, 0x600),  # boot sectors, LVM label, LUKS header, ext superblock
    st.integers(0x8000, 0x8900),  # ISO9660 descriptors
    st.integers(0x10000, 0x10200),  # btrfs superblock
    st.integers(0, SAMPLE_BYTES - 1),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_signature_sectors_never_raise(
    signature_samples: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    _, sample = data.draw(st.sampled_from(signature_samples), label="image")
    buffer = bytearray(sample)
    for position, value in data.draw(
        st.lists(st.tuples(HOT_SPOTS, st.integers(0, 255)), min_size=1, max_size=12),
        label="mutations",
    ):
        if position < len(buffer):
            buffer[position] = value
    cut = data.draw(st.integers(0, len(buffer)), label="size")
    check_never_raises(bytes(buffer[:cut]), cut)


# --------------------------------------------------------------------------------------------
# Edge cases, judged by blkid as well
# --------------------------------------------------------------------------------------------


def test_big_endian_swap_built_here(tmp_path: Path) -> None:
    # A swap area written by a big-endian machine: blkid accepts either byte order.
    header = SWAP_HEADER_BE.build(
        {
            "version": 1,
            "last_page": 15,
            "nr_badpages": 0,
            "sws_uuid": bytes.fromhex(UUID.replace("-", "")),
            "sws_volume": b"bigendian".ljust(16, b"\0"),
            "padding": [0] * 117,
            "badpages": [0],
        }
    )
    data = bytearray(64 * KiB)
    data[: len(header)] = header
    data[4096 - 10 : 4096] = b"SWAPSPACE2"
    path = tmp_path / "swap-be.img"
    path.write_bytes(bytes(data))
    content = detect_file(path)
    assert content == Content("swap", "1", "bigendian", UUID, 16 * 4096)
    found = blkid(path)
    assert (found.get("TYPE"), found.get("LABEL"), found.get("UUID")) == ("swap", "bigendian", UUID)


def test_lvm_label_with_a_bad_crc_is_not_lvm(
    make_image: Callable[[Case], Image], tmp_path: Path
) -> None:
    lvm = make_image(CASES[CASE_IDS.index("lvm2-sector1")])
    path = tmp_path / "bad-crc.img"
    path.write_bytes(read_at(lvm.path, 0, 1 * MiB))
    patch(path, 512 + 0x48, b"\xff")  # inside the CRC-covered PV header
    assert detect_file(path) == UNKNOWN
    assert "TYPE" not in blkid(path)


def test_lvm_label_over_a_stale_ext4_wins_like_blkid(
    make_image: Callable[[Case], Image], tmp_path: Path
) -> None:
    lvm = make_image(CASES[CASE_IDS.index("lvm2-sector1")])
    ext4 = make_image(CASES[CASE_IDS.index("ext4")])
    path = tmp_path / "lvm-over-ext4.img"
    path.write_bytes(read_at(ext4.path, 0, 8 * MiB))
    patch(path, 512, read_at(lvm.path, 512, 512))  # the ext4 superblock at 1024 stays
    content = detect_file(path)
    assert content.kind == blkid(path)["TYPE"] == "LVM2_member"
    assert content.uuid == LVM_UUID
