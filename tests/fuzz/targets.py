"""Fuzz targets: bmap's entry points for untrusted bytes, each a function of one input.

Every target feeds ``data`` to one entry point and lets only the project's own errors pass
(:class:`bmap.errors.BmapError`, :class:`parsers.errors.ParserError`): anything else escaping is
a crash (atheris reports it and keeps the input). Besides not crashing, each checks what must
hold of its output: map lines inside the disk, ranges not empty, requests inside int64.

- ``image``: the bytes as a disk image file, opened by format detection (raw, qcow2, VHD, ...)
  and mapped (every table, volume manager and filesystem the mapper knows), the map written.
- ``info``: the same, shown as ``bmap info`` shows it (text and JSON): no control character
  of an image's names reaches the text.
- ``container``: the bytes as a container file (qcow2, VHD, VHDX, VMDK, E01), opened by
  its reader alone and its virtual disk read at its start, middle and end and at offsets the
  input picks: every read is as long as asked inside the disk and short only at its end.
- ``lvm_metadata``: LVM2 metadata text to a volume group.
- ``map_file``: a map file in any of the three formats, read and looked up.
- ``trace_log``: an I/O log in every log format, and the nbdkit block scanner.

Run by ``scripts/fuzz.py`` (atheris, coverage-guided, seeded by ``seeds()``), and replayed
by ``tests/fuzz/test_fuzz.py`` on every kept crasher.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
_FILE = SCRATCH / f"bmap-fuzz-{os.getpid()}.img"

EWF_SIGNATURE = b"EVF\x09\x0d\x0a\xff\x00"
MAX_LEN = 1 << 20
"""Inputs are at most this long (an image of 1 MiB holds an MBR, a GPT, an LVM label and a
small filesystem)."""


def _allowed() -> tuple[type[BaseException], ...]:
    from bmap.errors import BmapError
    from parsers.errors import ParserError

    return (BmapError, ParserError)


@contextmanager
def _opened(data: bytes, path: Path = _FILE) -> Iterator[list[Any] | None]:
    """The bytes written to ``path`` and opened as images (None when opening raises one of
    the project's errors); closed and removed afterwards."""
    from bmap.images import open_images

    path.write_bytes(data)
    try:
        try:
            opened = open_images([path])
        except _allowed():
            yield None
            return
        try:
            yield opened
        finally:
            for one in opened:
                one.close()
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _tsk_in_process() -> Iterator[None]:
    """The Sleuth Kit in this process, not a child (bmap/layers/isolate.py): libFuzzer sees
    the coverage of the layer's Python, and a crash in TSK's C code as the crash it is."""
    before = os.environ.get("BMAP_IN_PROCESS")
    os.environ["BMAP_IN_PROCESS"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["BMAP_IN_PROCESS"]
        else:
            os.environ["BMAP_IN_PROCESS"] = before


def image(data: bytes) -> None:
    from bmap.layers.mapper import map_images
    from bmap.store.mapfile import dumps_map

    with _tsk_in_process(), _opened(data) as opened:
        if opened is None:
            return
        try:
            bmap = map_images(opened)
            text = dumps_map(bmap)
        except _allowed():
            return
        size = opened[0].size
    assert text.startswith("# bmap-format")
    assert bool((bmap.end > bmap.start).all()), "an empty or reversed line"
    assert len(bmap) == 0 or int(bmap.end.max()) <= size, "a line past the disk's end"


def info(data: bytes) -> None:
    """What ``bmap info`` shows of the bytes as an image: the tables and contents (text and
    JSON) and the volume groups; text that holds no control character but newlines."""
    import json

    from bmap.cli.render import disk_dict, disk_tree, vg_dict, vg_tree
    from bmap.layers.lvm import assemble, find_pvs
    from bmap.layers.partitions import discover

    with _tsk_in_process(), _opened(data) as opened:
        if opened is None:
            return
        try:
            disks = [discover(image) for image in opened]
            views, _ = assemble(find_pvs(disks)[0])
            lines = [line for d in disks for line in disk_tree(d, True)]
            lines += [line for v in views for line in vg_tree(v)]
            json.dumps({"disks": [disk_dict(d) for d in disks], "vgs": [vg_dict(v) for v in views]})
        except _allowed():
            return
        for line in lines:
            assert not any(ord(c) < 32 for c in line), f"a control character in {line!r}"


def container(data: bytes) -> None:
    import hashlib

    from bmap.images.containers import VirtualDisk

    # libewf finds an E01 by its name.
    path = _FILE.with_suffix(".E01") if data.startswith(EWF_SIGNATURE) else _FILE
    with _opened(data, path) as opened:
        if opened is None or not isinstance(opened[0], VirtualDisk):
            return  # not a container: the image target's work
        disk = opened[0]
        size = disk.size
        assert size >= 0
        digest = hashlib.sha256(data).digest()
        picks = [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 32, 8)]
        offsets = [0, size // 2, max(size - 4096, 0)] + [p % (size + 1) for p in picks]
        for offset in offsets:
            want = 65536
            try:
                got = disk.pread(offset, want)
            except _allowed():
                continue
            assert len(got) == max(0, min(want, size - offset)), (offset, len(got), size)


def lvm_metadata(data: bytes) -> None:
    from parsers.lvm2.metadata import parse_config, volume_group
    from parsers.lvm2.pv import MetadataRecord

    text = data.decode("utf-8", "surrogateescape")
    try:
        config = parse_config(text)
        vgs = [k for k, v in config.items() if isinstance(v, dict) and "seqno" in v]
        if len(vgs) != 1 or not isinstance(config[vgs[0]]["seqno"], int):
            return
        record = MetadataRecord(
            0, 0, len(data), False, text, config[vgs[0]]["seqno"], vgs[0], config
        )
        vg = volume_group(record)
    except _allowed():
        return
    assert vg.extent_size > 0
    for lv in vg.lvs:
        for seg in lv.segments:
            assert seg.start_extent >= 0 and seg.extent_count >= 0


def map_file(data: bytes) -> None:
    from bmap.store.lookup import lookup
    from bmap.store.mapfile import read_map

    _FILE.write_bytes(data)
    try:
        try:
            frame = read_map(_FILE)
        except _allowed():
            return
        assert bool((frame["end"] >= frame["start"]).all())
        assert bool((frame["start"] >= 0).all())
        if len(frame):
            disk = int(frame["disk"].iloc[0])
            lookup(frame, disk, [(0, 1), (int(frame["start"].iloc[-1]), 1 << 20)], "fuzz", 100)
    finally:
        _FILE.unlink(missing_ok=True)


def trace_log(data: bytes) -> None:
    from bmap.trace.logs import LOG_FORMATS, parse
    from bmap.trace.nbdkit import NbdkitParser
    from bmap.trace.requests import Columns

    lines = data.decode("utf-8", "replace").split("\n")
    for fmt in LOG_FORMATS:
        try:
            requests, _ = parse(lines, fmt)
        except _allowed():
            continue
        for r in requests:
            assert r.offset >= 0 and r.length >= 0 and r.offset + r.length < 1 << 63
        Columns.of(requests)
    parser = NbdkitParser()
    cut = data.rfind(b"\n") + 1
    try:
        block = parser.feed_block(data[:cut], 1)
    except _allowed():
        return
    assert bool(((block.offset >= 0) & (block.length >= 0)).all())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": image,
    "info": info,
    "container": container,
    "lvm_metadata": lvm_metadata,
    "map_file": map_file,
    "trace_log": trace_log,
}


def seeds(target: str) -> Iterator[tuple[str, bytes]]:
    """Starting inputs: parts of the bundled samples and of the test suite's own texts."""
    import lzma

    samples = ROOT / "samples"
    if target in ("image", "info"):
        for packed in sorted(samples.glob("*.img.xz")):
            with lzma.open(packed) as fh:
                head = fh.read(MAX_LEN)
            yield packed.name, head
        yield from _luks_seeds()
        yield from _xfs_seeds()
        yield from _tsk_seeds()
    elif target == "container":
        yield from _container_seeds()
    elif target == "lvm_metadata":
        from tests.parsers.test_lvm2 import SAMPLE

        yield "sample", SAMPLE.encode()
    elif target == "map_file":
        yield "text", b"# bmap-format 1\n1 0 100000 v /dev/sda\n1 0 200 m /dev/sda mbr\n"
        yield (
            "csv",
            (
                b"disk,start,end,type,device,kind,path,file_offset,inode\n"
                b"1,0,1048576,v,/dev/sda,disk,,,\n1,4096,8192,f,/dev/sda1,file,/a,0,12\n"
            ),
        )
        yield (
            "jsonl",
            (
                b'{"disk": 1, "start": 0, "end": 10, "type": "v", "device": "/dev/sda", '
                b'"kind": "disk", "path": "", "file_offset": null, "inode": null}\n'
            ),
        )
    elif target == "trace_log":
        from tests.bmap.trace.test_trace import LOG

        yield "nbdkit", LOG.encode()
        yield "csv", b"0,512\n0x1000,4096,read,1.5\n"
        yield "qemu", b"12@1.5:blk_co_preadv blk 0x1 bs 0x2 offset 0 bytes 512 flags 0x0\n"
        yield "blkparse", b"  8,0    1        1     0.000100000  1234  C   R 0 + 8 [0]\n"


def _xfs_seeds() -> Iterator[tuple[str, bytes]]:
    """The first MiB of a v5 and a v4 XFS by mkfs.xfs (AG 0's headers, B+tree roots and first
    inode chunk lie there), where mkfs.xfs is installed."""
    import shutil
    import subprocess

    mkfs = shutil.which("mkfs.xfs")
    if mkfs is None:
        return
    env = {**os.environ, "TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in (("xfs-v5", []), ("xfs-v4", ["-m", "crc=0"])):
            out = Path(tmp) / f"{name}.img"
            with out.open("wb") as fh:
                fh.truncate(64 << 20)
            result = subprocess.run(
                [mkfs, "-q", "-f", *options, str(out)], env=env, capture_output=True, check=False
            )
            if result.returncode == 0:  # a mkfs.xfs that refuses v4 gives no seed
                with out.open("rb") as fh:
                    yield name, fh.read(MAX_LEN)


#: Why a Sleuth Kit seed was not made (its tool is missing or failed): seed name -> reason.
TSK_SEEDS_SKIPPED: dict[str, str] = {}


def _tsk_seeds() -> Iterator[tuple[str, bytes]]:
    """Small FAT12, FAT16, exFAT, NTFS and ISO9660 volumes made by the real tools, for the
    Sleuth Kit layer: made once per process (:func:`_tsk_seed_list`)."""
    yield from _tsk_seed_list()


@functools.cache
def _tsk_seed_list() -> tuple[tuple[str, bytes], ...]:
    """The seeds of :func:`_tsk_seeds`, each at most :data:`MAX_LEN` bytes (one FAT16 needs
    4,085 clusters, 2.1 MiB at one sector each: its first MiB holds the boot sector, both FATs,
    the root directory and the files, written first). A seed whose tool is missing or fails is
    left out, its reason in :data:`TSK_SEEDS_SKIPPED` and a warning."""
    import shutil
    import subprocess
    import warnings

    made: list[tuple[str, bytes]] = []
    mtools_env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / "note.txt"
        small.write_bytes(b"bmap fuzz seed: a small file\n")
        big = work / "data.bin"
        big.write_bytes(bytes(range(256)) * 80)  # 20 KiB: a few clusters, a FAT chain
        src = work / "src"
        (src / "dir" / "sub").mkdir(parents=True)
        (src / "README.TXT").write_bytes(small.read_bytes())
        (src / "dir" / "data.bin").write_bytes(big.read_bytes())
        (src / "dir" / "sub" / "A long name.txt").write_bytes(b"deep\n" * 100)

        def build(name: str, tools: tuple[str, ...], size: int, steps: list[list[str]]) -> None:
            missing = [t for t in tools if shutil.which(t) is None]
            if missing:
                TSK_SEEDS_SKIPPED[name] = f"{', '.join(missing)} not installed"
                return
            out = work / f"{name}.img"
            if size:
                with out.open("wb") as fh:
                    fh.truncate(size)
            for step in steps:
                argv = [str(out) if arg == "IMG" else arg for arg in step]
                result = subprocess.run(
                    argv, env=mtools_env, capture_output=True, cwd=work, check=False
                )
                if result.returncode != 0:
                    error = result.stderr.decode(errors="replace").strip().splitlines()
                    TSK_SEEDS_SKIPPED[name] = f"{argv[0]} failed: {error[-1] if error else ''}"
                    return
            with out.open("rb") as fh:
                made.append((name, fh.read(MAX_LEN)))

        def fat(bits: int, cluster: list[str]) -> list[list[str]]:
            return [
                ["mkfs.vfat", "-F", str(bits), *cluster, "-n", f"SEED{bits}", "--invariant",
                 "-i", f"{bits}{bits}{bits}{bits}", "IMG"],
                ["mcopy", "-i", "IMG", str(small), "::/README.TXT"],
                ["mmd", "-i", "IMG", "::/dir", "::/dir/sub"],
                ["mcopy", "-i", "IMG", str(big), "::/dir/data.bin"],
                ["mcopy", "-i", "IMG", str(small), "::/dir/sub/A long name.txt"],
            ]  # fmt: skip

        fat_tools = ("mkfs.vfat", "mcopy", "mmd")
        build("tsk-fat12", fat_tools, MAX_LEN, fat(12, []))
        build("tsk-fat16", fat_tools, 2200 * 1024, fat(16, ["-s", "1"]))
        exfat = ["mkfs.exfat", "-b", "4096", "-c", "4096", "-L", "SEEDEX", "IMG"]
        build("tsk-exfat", ("mkfs.exfat",), MAX_LEN, [exfat])
        # mkntfs's smallest volume: 1 MiB and the sector of its backup boot sector (the seed
        # is the first MiB); files written by ntfscp, without a mount.
        build(
            "tsk-ntfs",
            ("mkntfs", "ntfscp"),
            MAX_LEN + 512,
            [
                ["mkntfs", "-Q", "-F", "-q", "-L", "SEEDNTFS", "IMG"],
                ["ntfscp", "IMG", str(small), "/note.txt"],
                ["ntfscp", "IMG", str(big), "/data.bin"],
            ],
        )
        iso = ["genisoimage", "-quiet", "-R", "-J", "-V", "SEEDISO", "-o", "IMG", str(src)]
        build("tsk-iso", ("genisoimage",), 0, [iso])
        # UFS1 as makefs writes it (TSK reads it; UFS2 only through parsers/ufs.py).
        ufs = ["makefs", "-t", "ffs", "-o", "version=1", "-s", "1m", "IMG", str(src)]
        build("tsk-ufs1", ("makefs",), 0, [ufs])
        # HFS+: xorriso's hybrid, then the Apple_HFS partition cut out of it.
        hfs = ["xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-o", "IMG", str(src)]
        build("tsk-hfsplus", ("xorriso",), 0, [hfs])
        for i, (name, image) in enumerate(made):
            if name == "tsk-hfsplus":
                from tests.tsk_images import apple_partitions

                hybrid = work / "hybrid.iso"
                hybrid.write_bytes(image)
                parts = [(o, n) for k, o, n in apple_partitions(hybrid) if k == "Apple_HFS"]
                if parts:
                    made[i] = (name, image[parts[0][0] : parts[0][0] + parts[0][1]][:MAX_LEN])
                else:
                    del made[i]
                    TSK_SEEDS_SKIPPED[name] = "xorriso wrote no Apple_HFS partition"
                break
    for name, reason in sorted(TSK_SEEDS_SKIPPED.items()):
        warnings.warn(f"fuzz seed {name} not made: {reason}", stacklevel=2)
    return tuple(made)


def _luks_seeds() -> Iterator[tuple[str, bytes]]:
    """A LUKS1 and a LUKS2 volume of 1 MiB by cryptsetup (its data within the first MiB),
    where cryptsetup is installed."""
    import shutil
    import subprocess

    cryptsetup = shutil.which("cryptsetup")
    if cryptsetup is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        key.write_bytes(bytes(32))
        for version, layout in (
            ("luks1", ["--align-payload", "1024"]),
            ("luks2", ["--luks2-metadata-size", "16k", "--luks2-keyslots-size", "256k"]),
        ):
            out = Path(tmp) / f"{version}.img"
            with out.open("wb") as fh:
                fh.truncate(MAX_LEN)
            subprocess.run(
                [cryptsetup, "luksFormat", "--type", version, "--batch-mode", "--pbkdf",
                 "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-size", "256",
                 *layout, str(out), str(key)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            yield version, out.read_bytes()[:MAX_LEN]


def _container_seeds() -> Iterator[tuple[str, bytes]]:
    """The first MiB of a sample as each container ``qemu-img convert`` writes (skipped
    where qemu-img is missing); an E01 by ``ewfacquirestream`` where it is installed. Not
    VHDX: its metadata lies past the first MiB."""
    import lzma
    import shutil
    import subprocess

    with lzma.open(ROOT / "samples" / "gpt-512.img.xz") as fh:
        head = fh.read(MAX_LEN)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "head.img"
        raw.write_bytes(head)
        qemu_img = shutil.which("qemu-img")
        for fmt, options in (
            ("qcow2", ["-o", "cluster_size=4096"]),
            ("vpc", ["-o", "subformat=dynamic"]),
            ("vmdk", ["-o", "subformat=monolithicSparse"]),
        ):
            if qemu_img is None:
                break
            out = Path(tmp) / f"head.{fmt}"
            subprocess.run(
                [qemu_img, "convert", "-q", "-f", "raw", "-O", fmt, *options, str(raw), str(out)],
                check=True,
            )
            yield fmt, out.read_bytes()[:MAX_LEN]
        acquire = shutil.which("ewfacquirestream")
        if acquire is not None:
            target = Path(tmp) / "head"
            with raw.open("rb") as stdin:
                subprocess.run(
                    [acquire, "-q", "-t", str(target), "-c", "best", "-S", "1.4GiB"],
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )
            yield "e01", (Path(tmp) / "head.E01").read_bytes()[:MAX_LEN]
