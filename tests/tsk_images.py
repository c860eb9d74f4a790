"""FAT, exFAT, NTFS and ISO9660 test images made by the real tools, for the pytsk3 layer.

- FAT12/16/32: ``mkfs.vfat`` and mtools (``mcopy``, ``mmd``, ``mdel``): long names,
  subdirectories, a deleted file, and a file fragmented by deleting every other filler and
  (FAT32) setting the FSInfo next-free hint to 0xFFFFFFFF, so that mtools reuses the holes.
- ``esp_in_gpt``: a GPT disk whose EFI system partition (FAT32) holds ``/EFI/BOOT/BOOTX64.EFI``
  and friends, written with ``mcopy -i disk@@offset``.
- NTFS: ``mkntfs -Q -F``, files written through the ``ntfs-3g`` FUSE mount
  (``streams_interface=windows`` for alternate data streams): a small resident file, a
  resident and a non-resident stream, a hard link, a compressed directory's file, a file
  fragmented by filling the volume and deleting every other filler, and a deleted file.
- exFAT: ``mkfs.exfat``, files written through ``mount.exfat-fuse`` on a loop device.
- ISO9660: ``genisoimage -R -J``.
- HFS+: ``xorriso -as mkisofs -hfsplus``, cut out of the hybrid image at its ``Apple_HFS``
  partition (Debian 12 has no mkfs.hfsplus).

Each image is built once into ``$BMAP_TEST_CACHE/<version>`` (or pytest's temporary
directory), as :mod:`tests.ext_images` does, and every source file's bytes are kept beside it
(:func:`source_files`), so a test compares what the map says against what was written. Every
mount and loop device is undone in a ``finally``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ext_images import NeedsRoot, cache_root_of, cached_file, is_root, run, tool_path
from tests.ext_images import _data as data  # deterministic, incompressible bytes

IMAGES_VERSION = "tsk-images-3"
MiB = 1 << 20
KiB = 1 << 10
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}

#: GPT layout of ``esp_in_gpt``: the ESP at 1 MiB, 40 MiB long, then a small Linux partition.
ESP_OFFSET = 1 * MiB
ESP_SIZE = 40 * MiB


def compressible(seed: str, size: int) -> bytes:
    """Deterministic bytes that compress well (for NTFS compression)."""
    line = (seed.encode() + b" compressible line of text\n") * 4
    return (line * (size // len(line) + 1))[:size]


# --------------------------------------------------------------------------------------------
# FAT


def _mtools(*args: str | os.PathLike[str]) -> str:
    return run(*args, env=MTOOLS_ENV)


def _fat_tree(files: dict[str, bytes], seed: str) -> None:
    """What every FAT image holds (paths are those a test expects back)."""
    files["/README.TXT"] = b"bmap FAT test image " + seed.encode() + b"\n"
    files["/A long file name with spaces.txt"] = data(seed + "long", 3000)
    files["/dir1/dir2/deep.txt"] = b"deep\n" * 400
    files["/dir1/Mixed Case Name.bin"] = data(seed + "mixed", 10 * KiB)
    files["/empty.txt"] = b""
    files["/big.bin"] = data(seed + "big", 150 * KiB)
    files["/données ☃.txt"] = b"unicode name\n"


def _set_fsinfo_next_free(image: Path, offset: int = 0) -> None:
    """FAT32: the FSInfo next-free hint to 0xFFFFFFFF (unknown), so mtools searches from the
    start and fills the holes before the end."""
    with open(image, "r+b") as fh:
        fh.seek(offset)
        boot = fh.read(512)
        fsinfo = int.from_bytes(boot[48:50], "little")
        fh.seek(offset + fsinfo * 512 + 492)
        fh.write(b"\xff\xff\xff\xff")


def fill_fat(
    image: str, files: dict[str, bytes], work: Path, seed: str, fat32: bool, offset: int = 0
) -> None:
    """Write ``files`` into the FAT at ``image`` (an mtools spec, maybe ``disk@@offset``),
    with fillers deleted around a fragmented file and a deleted file left behind."""
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    made_dirs: set[str] = set()
    for index, path in enumerate(sorted(files)):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            folder = "/" + "/".join(parts[:i])
            if folder not in made_dirs:
                _mtools("mmd", "-i", image, "::" + folder)
                made_dirs.add(folder)
        local = src / f"file{index}"
        local.write_bytes(files[path])
        _mtools("mcopy", "-i", image, local, "::" + path)
    # Fillers, every other one deleted: the next file goes into the holes.
    for i in range(8):
        local = src / f"filler{i}"
        local.write_bytes(data(f"{seed}-filler{i}", 6 * KiB))
        _mtools("mcopy", "-i", image, local, f"::/FILL{i}.BIN")
    for i in range(0, 8, 2):
        _mtools("mdel", "-i", image, f"::/FILL{i}.BIN")
    if fat32:
        _set_fsinfo_next_free(Path(image.split("@@")[0]), offset)
    frag = data(seed + "frag", 20 * KiB)
    local = src / "frag"
    local.write_bytes(frag)
    _mtools("mcopy", "-i", image, local, "::/frag.bin")
    files["/frag.bin"] = frag
    for i in range(1, 8, 2):
        files[f"/FILL{i}.BIN"] = data(f"{seed}-filler{i}", 6 * KiB)
    # A deleted file whose clusters nothing reuses.
    if "/dir1" not in made_dirs:
        _mtools("mmd", "-i", image, "::/dir1")
    local = src / "gone"
    local.write_bytes(data(seed + "gone", 5 * KiB))
    _mtools("mcopy", "-i", image, local, "::/dir1/gone.txt")
    _mtools("mdel", "-i", image, "::/dir1/gone.txt")


def build_fat(
    image: Path, work: Path, bits: int, size: int, label: str, serial: str
) -> dict[str, bytes]:
    with open(image, "wb") as fh:
        fh.truncate(size)
    run("mkfs.vfat", "-F", str(bits), "-n", label, "--invariant", "-i", serial, image)
    files: dict[str, bytes] = {}
    _fat_tree(files, label)
    fill_fat(str(image), files, work, label, fat32=bits == 32)
    run("fsck.fat", "-n", image)
    return files


def build_fat12(image: Path, work: Path) -> dict[str, bytes]:
    return build_fat(image, work, 12, 3 * MiB, "FAT12IMG", "12120012")


def build_fat16(image: Path, work: Path) -> dict[str, bytes]:
    return build_fat(image, work, 16, 20 * MiB, "FAT16IMG", "16160016")


def build_fat32(image: Path, work: Path) -> dict[str, bytes]:
    return build_fat(image, work, 32, 40 * MiB, "FAT32IMG", "32320032")


def build_esp_in_gpt(disk: Path, work: Path) -> dict[str, bytes]:
    """A GPT disk: partition 1 the ESP (FAT32, 40 MiB at 1 MiB), partition 2 a 2 MiB Linux
    partition left empty. The ESP holds a boot loader's files."""
    total = ESP_OFFSET + ESP_SIZE + 3 * MiB
    with open(disk, "wb") as fh:
        fh.truncate(total)
    run(
        "sgdisk",
        "--disk-guid",
        "B3A9C1D0-0000-4000-8000-0000000000F1",
        "-n",
        f"1:{ESP_OFFSET // 512}:+{ESP_SIZE // 512}",
        "-t",
        "1:ef00",
        "-c",
        "1:EFI System",
        "-n",
        "2:0:+2M",
        "-t",
        "2:8300",
        disk,
    )
    run(
        "mkfs.vfat",
        "-F",
        "32",
        "-n",
        "ESP",
        "--invariant",
        "-i",
        "e5e5e5e5",
        "--offset",
        str(ESP_OFFSET // 512),
        disk,
        str(ESP_SIZE // 1024),
    )
    files = {
        "/EFI/BOOT/BOOTX64.EFI": data("shim", 900 * KiB),
        "/EFI/BOOT/grubx64.efi": data("grub", 1200 * KiB),
        "/EFI/debian/grub.cfg": b"search --no-floppy --fs-uuid --set=root 1234\n" * 10,
        "/startup.nsh": b"\\EFI\\BOOT\\BOOTX64.EFI\r\n",
    }
    fill_fat(f"{disk}@@{ESP_OFFSET}", files, work, "esp", fat32=True, offset=ESP_OFFSET)
    return files


# --------------------------------------------------------------------------------------------
# NTFS and exFAT through FUSE


@contextlib.contextmanager
def fuse_mount(args: list[str], mnt: Path) -> Iterator[Path]:
    """Mount with a FUSE driver (``args`` ends with the device); unmount in every case."""
    if not is_root():
        raise NeedsRoot("FUSE mounts need root here")
    mnt.mkdir(parents=True, exist_ok=True)
    run(*args, mnt)
    try:
        yield mnt
    finally:
        for _ in range(20):
            proc = subprocess.run(
                [tool_path("umount"), str(mnt)], capture_output=True, text=True, check=False
            )
            if proc.returncode == 0 or not os.path.ismount(mnt):
                break
            time.sleep(0.2)
        # The FUSE daemon writes its last blocks as it exits: wait for it to let go.
        for _ in range(50):
            if not os.path.ismount(mnt):
                break
            time.sleep(0.1)


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    if not is_root():
        raise NeedsRoot("a loop device needs root")
    dev = run("losetup", "--find", "--show", image).strip()
    try:
        yield dev
    finally:
        subprocess.run([tool_path("losetup"), "--detach", dev], check=False)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _first_block(path: Path) -> int:
    """The physical block of a file's first block (the FIBMAP ioctl, which ntfs-3g answers)."""
    with open(path, "rb") as fh:
        answer = fcntl.ioctl(fh.fileno(), 1, struct.pack("i", 0))  # FIBMAP
    return int(struct.unpack("i", answer)[0])


def _fill_up(folder: Path, seed: str, size: int, limit: int = 1000) -> dict[str, bytes]:
    """Files of ``size`` bytes in ``folder`` until the volume is full: name -> contents (a
    last, partly written file is removed)."""
    made: dict[str, bytes] = {}
    for i in range(limit):
        name = f"f{i:03d}.bin"
        content = data(f"{seed}{i}", size)
        try:
            (folder / name).write_bytes(content)
        except OSError:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
            break
        made[name] = content
    return made


def build_ntfs(image: Path, work: Path) -> dict[str, bytes]:
    """NTFS, 4 KiB clusters, 24 MiB, written through ntfs-3g."""
    with open(image, "wb") as fh:
        fh.truncate(24 * MiB)
    run("mkntfs", "-Q", "-F", "-c", "4096", "-L", "NTFSIMG", "-U", image)
    files: dict[str, bytes] = {
        "/README.txt": b"resident: this small file lives in its MFT record\n",
        "/docs/big.bin": data("ntfs-big", 200 * KiB),
        "/docs/deeper/leaf.txt": data("ntfs-leaf", 9000),
        "/A long name with spaces.dat": data("ntfs-long", 5000),
        "/données ☃.txt": data("ntfs-unicode", 7000),
        "/empty.txt": b"",
    }
    streams = {
        "/docs/big.bin:small": b"a resident stream\n",
        "/docs/big.bin:bigstream": data("ntfs-stream", 40 * KiB),
    }
    mnt = work / "mnt"
    opts = "streams_interface=windows"
    with fuse_mount(["ntfs-3g", "-o", opts, str(image)], mnt):
        _write_tree(mnt, files)
        for path, content in streams.items():
            (mnt / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            with open(str(mnt) + path, "wb") as fh:
                fh.write(content)
        os.link(mnt / "docs" / "big.bin", mnt / "hardlink.bin")
        files["/hardlink.bin"] = files["/docs/big.bin"]
        packed = mnt / "packed"
        packed.mkdir()
        with contextlib.suppress(OSError):  # ntfs-3g compresses what a flagged dir holds
            os.setxattr(packed, "system.ntfs_attrib_be", (0x800).to_bytes(4, "big"))
        files["/packed/text.txt"] = compressible("ntfs-packed", 100 * KiB)
        (packed / "text.txt").write_bytes(files["/packed/text.txt"])
        (mnt / "gone.txt").write_bytes(data("ntfs-gone", 3000))
        # Fill the volume, then free every other filler: the next big file fragments.
        (mnt / "fill").mkdir()
        fillers = _fill_up(mnt / "fill", "ntfs-fill", 128 * KiB)
    with fuse_mount(["ntfs-3g", "-o", opts, str(image)], mnt):
        # Every other filler in the order of their first cluster (FIBMAP), so that each hole
        # is one filler long.
        by_place = sorted(fillers, key=lambda name: _first_block(mnt / "fill" / name))
        gone = set(by_place[::2])
        for name in gone:
            (mnt / "fill" / name).unlink()
        (mnt / "gone.txt").unlink()
    with fuse_mount(["ntfs-3g", "-o", opts, str(image)], mnt):
        files["/frag.bin"] = data("ntfs-frag", 3 * MiB)
        (mnt / "frag.bin").write_bytes(files["/frag.bin"])
    for name in sorted(set(fillers) - gone):
        files[f"/fill/{name}"] = fillers[name]
    files.update(streams)
    return files


def build_ntfs_small(image: Path, work: Path) -> dict[str, bytes]:
    """An 8 MiB NTFS (4 KiB clusters) for an 8 MiB LV: a file big enough to cross the LV's
    segments, a stream and a resident file."""
    with open(image, "wb") as fh:
        fh.truncate(8 * MiB)
    run("mkntfs", "-Q", "-F", "-c", "4096", "-L", "NTFSLV", image)
    files = {
        "/big.bin": data("ntfs-lv-big", 3 * MiB),
        "/docs/notes.txt": data("ntfs-lv-notes", 20 * KiB),
        "/tiny.txt": b"resident in its MFT record\n",
        "/big.bin:ads": data("ntfs-lv-ads", 12 * KiB),
    }
    with fuse_mount(
        ["ntfs-3g", "-o", "streams_interface=windows", str(image)], work / "mnt"
    ) as mnt:
        for path, content in files.items():
            target = str(mnt) + path
            os.makedirs(os.path.dirname(target.split(":")[0]), exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(content)
    return files


def build_exfat(image: Path, work: Path) -> dict[str, bytes]:
    """exFAT, 32 MiB, 4 KiB clusters, written through exfat-fuse on a loop device."""
    with open(image, "wb") as fh:
        fh.truncate(32 * MiB)
    run("mkfs.exfat", "-c", "4096", "-n", "EXFATIMG", image)
    files: dict[str, bytes] = {
        "/README.txt": b"bmap exFAT test image\n",
        "/dir1/dir2/deep.txt": b"deep\n" * 400,
        "/A long name with spaces.dat": data("exfat-long", 5000),
        "/big.bin": data("exfat-big", 300 * KiB),
        "/données ☃.txt": data("exfat-unicode", 7000),
        "/empty.txt": b"",
    }
    fillers = {f"/fill/f{i}.bin": data(f"exfat-fill{i}", 8 * KiB) for i in range(10)}
    mnt = work / "mnt"
    with loop_device(image) as dev:
        with fuse_mount(["mount.exfat-fuse", dev], mnt):
            _write_tree(mnt, files)
            _write_tree(mnt, fillers)
            (mnt / "gone.txt").write_bytes(data("exfat-gone", 3000))
        with fuse_mount(["mount.exfat-fuse", dev], mnt):
            for i in range(0, 10, 2):
                (mnt / f"fill/f{i}.bin").unlink()
            (mnt / "gone.txt").unlink()
            files["/frag.bin"] = data("exfat-frag", 30 * KiB)
            (mnt / "frag.bin").write_bytes(files["/frag.bin"])
    for i in range(1, 10, 2):
        files[f"/fill/f{i}.bin"] = fillers[f"/fill/f{i}.bin"]
    return files


# --------------------------------------------------------------------------------------------
# ISO9660


def build_iso(image: Path, work: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {
        "/README.TXT": b"bmap ISO9660 test image\n",
        "/boot/vmlinuz": data("iso-kernel", 700 * KiB),
        "/boot/initrd.img": data("iso-initrd", 300 * KiB),
        "/docs/deeper/leaf.txt": b"leaf\n" * 300,
        "/empty.txt": b"",
    }
    src = work / "src"
    _write_tree(src, files)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (1_700_000_000, 1_700_000_000))
    run("genisoimage", "-quiet", "-R", "-J", "-V", "ISOIMG", "-o", image, src)
    return files


# --------------------------------------------------------------------------------------------
# HFS+

#: Apple partition map entries (Inside Macintosh: Devices): "PM", the map's entry count,
#: the partition's first block and block count, its name and type.
_APM_ENTRY = struct.Struct(">2s2xIII32s32s")


def apple_partitions(image: Path) -> list[tuple[str, int, int]]:
    """``(type, byte offset, byte length)`` of each Apple partition map entry, decoded by hand:
    the driver descriptor ("ER") at block 0 gives the block size, the map starts at block 1."""
    with open(image, "rb") as fh:
        ddr = fh.read(512)
        block = int.from_bytes(ddr[2:4], "big") if ddr[:2] == b"ER" else 512
        out = []
        fh.seek(block)
        first = _APM_ENTRY.unpack(fh.read(_APM_ENTRY.size))
        for i in range(first[1]):
            fh.seek(block * (1 + i))
            sig, _count, start, length, _name, kind = _APM_ENTRY.unpack(fh.read(_APM_ENTRY.size))
            if sig != b"PM":
                break
            out.append((kind.split(b"\0")[0].decode(), start * block, length * block))
    return out


def build_hfsplus(image: Path, work: Path) -> dict[str, bytes]:
    """An HFS+ volume made by xorriso (``-hfsplus``: the HFS+ side of a hybrid ISO, the only
    HFS+ writer in Debian 12), cut out of the hybrid image at its ``Apple_HFS`` partition.
    Many files, so that the catalog B-tree has several nodes."""
    files: dict[str, bytes] = {
        "/README.TXT": b"bmap HFS+ test image\n",
        "/System/Library/kernel": data("hfs-kernel", 900 * KiB),
        "/System/Library/Extensions/deep/leaf.txt": b"leaf\n" * 300,
        "/empty.txt": b"",
        "/näme with spaces.txt": b"a decomposed name\n",
        "/odd.bin": data("hfs-odd", 4097),
    }
    for i in range(300):
        files[f"/many/file{i:03d}.txt"] = f"file {i}\n".encode() * (i % 7 + 1)
    src = work / "src"
    _write_tree(src, files)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (1_700_000_000, 1_700_000_000))
    hybrid = work / "hybrid.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-V", "BMAPHFS", "-o", hybrid, src)
    (hfs,) = [(o, n) for kind, o, n in apple_partitions(hybrid) if kind == "Apple_HFS"]
    with open(hybrid, "rb") as fh, open(image, "wb") as out:
        fh.seek(hfs[0])
        out.write(fh.read(hfs[1]))
    return files


# --------------------------------------------------------------------------------------------
# the cache

BUILDERS: dict[str, Callable[[Path, Path], dict[str, bytes]]] = {
    "fat12": build_fat12,
    "fat16": build_fat16,
    "fat32": build_fat32,
    "esp_in_gpt": build_esp_in_gpt,
    "ntfs": build_ntfs,
    "ntfs_small": build_ntfs_small,
    "exfat": build_exfat,
    "iso": build_iso,
    "hfsplus": build_hfsplus,
}
#: The tools each image needs.
TOOLS = {
    "fat12": ("mkfs.vfat", "mcopy", "fsck.fat"),
    "fat16": ("mkfs.vfat", "mcopy", "fsck.fat"),
    "fat32": ("mkfs.vfat", "mcopy", "fsck.fat"),
    "esp_in_gpt": ("mkfs.vfat", "mcopy", "sgdisk"),
    "ntfs": ("mkntfs", "ntfs-3g"),
    "ntfs_small": ("mkntfs", "ntfs-3g"),
    "exfat": ("mkfs.exfat", "mount.exfat-fuse", "losetup"),
    "iso": ("genisoimage",),
    "hfsplus": ("xorriso",),
}


def _save_sources(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir()
    for i, (path, content) in enumerate(sorted(files.items())):
        (folder / f"{i:04d}").write_bytes(content)
        (folder / f"{i:04d}.path").write_bytes(path.encode())


def source_files(image: Path) -> dict[str, bytes]:
    """What was written into ``image``: path -> contents."""
    folder = image.with_suffix(".files")
    out = {}
    for meta in sorted(folder.glob("*.path")):
        out[meta.read_bytes().decode()] = meta.with_suffix("").read_bytes()
    return out


def tsk_image(name: str, cache_root: Path) -> Path:
    """The image ``name`` (a key of :data:`BUILDERS`), built once into the cache."""
    for tool in TOOLS[name]:
        tool_path(tool)  # FileNotFoundError: the caller skips
    folder = cache_root / IMAGES_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    sources = folder / f"{name}.files"

    def build(partial: Path, work: Path) -> None:
        # The source files beside the image, in place before the image is.
        staged = work / f"{name}.files"
        _save_sources(staged, BUILDERS[name](partial, work))
        shutil.rmtree(sources, ignore_errors=True)
        staged.rename(sources)

    return cached_file(folder, f"{name}.img", build)


@pytest.fixture(scope="session", name="tsk_images_cache")
def tsk_images_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cache_root_of(tmp_path_factory, "tsk-images")


@pytest.fixture(scope="session", name="tsk_image_factory")
def tsk_image_factory_fixture(tsk_images_cache: Path) -> Callable[[str], Path]:
    """``tsk_image_factory("fat32")`` -> Path; skips when a tool or root is missing."""

    def get(name: str) -> Path:
        try:
            return tsk_image(name, tsk_images_cache)
        except (NeedsRoot, FileNotFoundError) as exc:
            pytest.skip(str(exc))

    return get
