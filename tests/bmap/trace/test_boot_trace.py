"""A real guest boot from a qcow2, traced live by ``bmap serve`` (issue #11).

The disk is made by the real tools: sfdisk (an MBR, one bootable partition at 1 MiB), mke2fs
-d (ext4 without ``64bit``, which extlinux 6.04 cannot read), extlinux --install on a loop
mount, syslinux's mbr.bin in the first 440 bytes, qemu-img convert to qcow2. Its
extlinux.conf runs poweroff.c32 at once. qemu-system-x86_64 (SeaBIOS, TCG) boots it from
``$uri``: SeaBIOS reads the MBR, the MBR the partition's boot sector, that sector
ldlinux.sys, ldlinux.sys walks the filesystem to ldlinux.c32, which reads extlinux.conf and
loads poweroff.c32, and the guest powers off, which ends qemu and the trace.

Ground truth from outside bmap: sfdisk for the partition, debugfs ``blocks``/``stat``/``imap``
for each file's and inode's place. ``bmap map`` of the raw image must agree with it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmap.cli import main
from tests import ext_truth as T
from tests.conftest import is_root, sfdisk_json, sha256_file, tool
from tests.ext_images import run

pytestmark = pytest.mark.root

SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
DISK_SIZE = 64 << 20
PART_START = 1 << 20
#: The boot files, in the order the guest needs them. poweroff.c32 lists libcom32.c32 as
#: DT_NEEDED: it is on the disk for an ldlinux that loads it (Debian 12's 6.04 never reads it).
BOOT_FILES = (
    "/boot/extlinux/ldlinux.sys",
    "/boot/extlinux/ldlinux.c32",
    "/boot/extlinux/extlinux.conf",
    "/boot/extlinux/poweroff.c32",
)
EXTLINUX_DIRS = ("/", "/boot", "/boot/extlinux")
#: Files the guest has no reason to read.
BYSTANDERS = ("/data/big.bin", "/etc/hostname", "/etc/motd")
EXTLINUX_CONF = """\
SERIAL 0 115200
DEFAULT off
PROMPT 0
TIMEOUT 0
LABEL off
  COM32 poweroff.c32
"""
#: Every qemu run is capped: a guest that does not power off fails the test, never hangs it.
QEMU_TIMEOUT = 60


def qemu_command(drive: str, serial: Path) -> list[str]:
    """qemu-system-x86_64 booting one IDE disk with SeaBIOS, under TCG (no KVM needed).

    ``snapshot=on``: an ide-hd needs a writable drive, and the served disk is read-only; qemu
    keeps the guest's writes (there are none) in a temporary overlay of its own.
    """
    return [
        "timeout",
        str(QEMU_TIMEOUT),
        tool("qemu-system-x86_64"),
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "64",
        "-accel",
        "tcg",
        "-drive",
        f"{drive},if=ide,snapshot=on",
        "-serial",
        f"file:{serial}",
    ]


@dataclass(frozen=True)
class BootDisk:
    raw: Path
    qcow2: Path
    part_offset: int
    block_size: int


def _require_boot_tools() -> None:
    if not is_root():
        pytest.skip("needs root to loop-mount the partition for extlinux --install")
    if not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no loop devices (/dev/loop-control missing)")
    for name in ("qemu-system-x86_64", "extlinux", "qemu-img", "sfdisk", "mke2fs", "debugfs"):
        tool(name)
    if not SYSLINUX_MBR.exists() or not (SYSLINUX_BIOS / "poweroff.c32").exists():
        pytest.skip("syslinux's BIOS files are not installed (apt-get install syslinux-common)")


def _make_tree(tree: Path) -> None:
    boot = tree / "boot" / "extlinux"
    boot.mkdir(parents=True)
    (boot / "extlinux.conf").write_text(EXTLINUX_CONF)
    for module in ("poweroff.c32", "libcom32.c32"):
        shutil.copy(SYSLINUX_BIOS / module, boot / module)
    (tree / "etc").mkdir()
    (tree / "etc" / "hostname").write_text("bootdemo\n")
    (tree / "etc" / "motd").write_text("A disk that boots only to power off.\n" * 40)
    (tree / "data").mkdir()
    (tree / "data" / "big.bin").write_bytes(bytes(range(256)) * 1200)


def _loop_mounts_of(image: Path) -> tuple[str, str]:
    """What the kernel still holds of ``image``: its loop devices and the mounts of those."""
    loops = run("losetup", "--associated", image).strip()
    devices = [line.split(":", 1)[0] for line in loops.splitlines()]
    mounts = "".join(
        line
        for line in Path("/proc/mounts").read_text().splitlines(keepends=True)
        if line.split(" ", 1)[0] in devices
    )
    return loops, mounts


def build_boot_disk(folder: Path) -> BootDisk:
    raw = folder / "boot.img"
    with open(raw, "wb") as fh:
        fh.truncate(DISK_SIZE)
    sfdisk_script = f"label: dos\nstart={PART_START // 512}, type=83, bootable\n"
    subprocess.run([tool("sfdisk"), "-q", str(raw)], input=sfdisk_script, text=True, check=True)
    [part] = sfdisk_json(raw)["partitions"]
    assert part["start"] * 512 == PART_START and part["bootable"]
    part_size = part["size"] * 512
    tree = folder / "tree"
    _make_tree(tree)
    # extlinux 6.04 reads no 64bit ext4 (its group descriptors are 64 bytes then).
    run(
        "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^64bit", "-L", "bootdemo",
        "-E", f"offset={PART_START}", "-d", tree, raw, f"{part_size // 1024}k",
    )  # fmt: skip
    mnt = folder / "mnt"
    mnt.mkdir()
    # Every loop device and mount is released on every way out, a failed install included.
    with contextlib.ExitStack() as held:
        dev = run(
            "losetup", "--find", "--show", "--offset", str(PART_START),
            "--sizelimit", str(part_size), raw,
        ).strip()  # fmt: skip
        held.callback(subprocess.run, [tool("losetup"), "--detach", dev], check=False)
        run("mount", "-t", "ext4", dev, mnt)
        held.callback(subprocess.run, [tool("umount"), str(mnt)], check=True)
        run("extlinux", "--install", mnt / "boot" / "extlinux")
    assert _loop_mounts_of(raw) == ("", "")
    subprocess.run(
        ["dd", f"if={SYSLINUX_MBR}", f"of={raw}", "bs=440", "count=1", "conv=notrunc"],
        check=True,
        capture_output=True,
    )
    qcow2 = folder / "boot.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    block_size = int(T.dumpe2fs_header(raw, PART_START)["Block size"])
    return BootDisk(raw, qcow2, PART_START, block_size)


@pytest.fixture(scope="module")
def boot_disk(tmp_path_factory: pytest.TempPathFactory) -> BootDisk:
    """The bootable disk, checked to power off by itself when qemu boots the qcow2."""
    _require_boot_tools()
    disk = build_boot_disk(tmp_path_factory.mktemp("boot-disk"))
    scratch = tmp_path_factory.mktemp("boot-check")
    serial = scratch / "serial.log"
    cmd = qemu_command(f"file={disk.qcow2},format=qcow2", serial)
    # No -no-reboot here: a guest that resets boots again until the timeout, so only a
    # power-off ends qemu in time.
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)}
    )
    assert proc.returncode == 0, f"the guest did not power off: {proc.returncode} {proc.stderr}"
    # ldlinux writes its banner to the serial port only once extlinux.conf's SERIAL is read.
    assert "SYSLINUX" in serial.read_text(errors="replace")
    return disk


@dataclass(frozen=True)
class BootTrace:
    rows: list[dict]
    stderr: str
    tmpdir: Path
    serial: Path
    sha256_before: str


def _processes_naming(*needles: str) -> list[str]:
    """Live processes (zombies aside) whose command line holds one of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n.encode() in cmdline for n in needles):
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.fixture(scope="module")
def boot_trace(boot_disk: BootDisk, tmp_path_factory: pytest.TempPathFactory) -> BootTrace:
    """``bmap serve disk.qcow2 --run 'qemu-system-x86_64 ... file=$uri,format=raw'``, once.

    A TMPDIR of its own: bmap's server folder and qemu's snapshot overlay go there, so what
    is left behind can be seen."""
    tmpdir = tmp_path_factory.mktemp("serve-tmp")
    serial = tmp_path_factory.mktemp("serve-serial") / "serial.log"
    before = sha256_file(boot_disk.qcow2)
    # -no-reboot: should the guest reset, qemu ends instead of booting again.
    client = " ".join(
        arg if "$uri" in arg else shlex.quote(arg)
        for arg in [*qemu_command('file="$uri",format=raw', serial), "-no-reboot"]
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmap",
            "serve",
            str(boot_disk.qcow2),
            "-f",
            "jsonl",
            "--run",
            client,
        ],
        capture_output=True,
        text=True,
        timeout=QEMU_TIMEOUT + 60,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "(qcow2, read by qemu-nbd)" in proc.stderr
    assert "--run command exited" not in proc.stderr, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return BootTrace(rows, proc.stderr, tmpdir, serial, before)


def _name(row: dict) -> str:
    """A record's object as the text output names it: a path, or device and structure."""
    return row["path"] or f"{row['device']} {row['kind']}"


def _first_reads(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(_name(r) for r in rows))


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def _debugfs_blocks(disk: BootDisk, paths: list[str]) -> dict[str, list[int]]:
    """debugfs ``blocks``: each file's blocks, in file order."""
    sections = T.debugfs_run(disk.raw, [f'blocks "{p}"' for p in paths], disk.part_offset)
    return {p: [int(b) for b in out.split()] for p, (_, out) in zip(paths, sections)}


def _to_disk(disk: BootDisk, blocks: list[int], start: int, end: int) -> list[list[int]]:
    """File bytes ``[start, end)`` as disk byte ranges, by debugfs' block list."""
    bs = disk.block_size
    out = []
    for index in range(start // bs, (end - 1) // bs + 1):
        block_start = disk.part_offset + blocks[index] * bs
        lo = max(start, index * bs) - index * bs
        hi = min(end, (index + 1) * bs) - index * bs
        out.append([block_start + lo, block_start + hi])
    return _merge(out)


def test_the_guest_reads_the_boot_chain_in_order(boot_trace):
    """MBR, the partition's boot sector, ldlinux.sys, the filesystem's way down to
    /boot/extlinux, ldlinux.c32, extlinux.conf, poweroff.c32: the order of a BIOS boot."""
    first = _first_reads(boot_trace.rows)
    expected = [
        "/dev/sda mbr",
        "/dev/sda1 boot-block",
        "/boot/extlinux/ldlinux.sys",
        "/dev/sda1 superblock",
        "/",
        "/boot",
        "/boot/extlinux",
        "/boot/extlinux/ldlinux.c32",
        "/boot/extlinux/extlinux.conf",
        "/boot/extlinux/poweroff.c32",
    ]
    assert [name for name in first if name in expected] == expected, first
    assert first[:3] == expected[:3], first  # firmware, MBR code, boot sector: nothing else
    # Nothing but the boot chain: no bystander file, no journal, no bitmap, no free space.
    allowed = {
        *expected,
        "/boot/extlinux/libcom32.c32",
        "/dev/sda1 group-descriptors",
        "/dev/sda1 inode-table",
    }
    assert set(first) <= allowed, set(first) - allowed
    assert {(r["op"], r["status"], r["disk"]) for r in boot_trace.rows} == {("read", "ok", 1)}
    # poweroff.c32 is the last thing read: the guest powered off with it.
    assert _name(boot_trace.rows[-1]) == "/boot/extlinux/poweroff.c32"
    assert "SYSLINUX" in boot_trace.serial.read_text(errors="replace")


def test_mbr_and_boot_sector_offsets(boot_disk, boot_trace):
    """The MBR at 0 (what SeaBIOS loads at 0x7c00: syslinux's mbr.bin), then the first
    sector of the bootable partition sfdisk made (extlinux's boot sector, 0x55aa-signed)."""
    by_name: dict[str, list[list[int]]] = {}
    for row in boot_trace.rows:
        by_name.setdefault(_name(row), []).extend(row["disk_ranges"])
    assert _merge(by_name["/dev/sda mbr"]) == [[0, 512]]
    [part] = sfdisk_json(boot_disk.raw)["partitions"]
    start = part["start"] * 512
    assert _merge(by_name["/dev/sda1 boot-block"]) == [[start, start + 512]]
    with open(boot_disk.raw, "rb") as fh:
        assert fh.read(440) == SYSLINUX_MBR.read_bytes()[:440]
        fh.seek(start + 510)
        assert fh.read(2) == b"\x55\xaa"


def test_file_reads_are_where_debugfs_has_the_files(boot_disk, boot_trace):
    """Every read of a file or directory maps, by debugfs ``blocks``, from the file offsets
    the trace gives to the disk offsets it gives; each boot file is read whole (up to its
    last 512-byte sector); the inode of each was inside an inode-table read."""
    paths = sorted({r["path"] for r in boot_trace.rows if r["path"]})
    blocks = _debugfs_blocks(boot_disk, paths)
    for row in boot_trace.rows:
        if not row["path"]:
            continue
        want = _merge(
            [
                d
                for start, end in row["ranges"]
                for d in _to_disk(boot_disk, blocks[row["path"]], start, end)
            ]
        )
        assert _merge(row["disk_ranges"]) == want, row
    stats = T.debugfs_stat_all(boot_disk.raw, paths, boot_disk.part_offset)
    for path in BOOT_FILES:
        read = _merge([r for row in boot_trace.rows if row["path"] == path for r in row["ranges"]])
        size = stats[path]["size"]
        assert read == [[0, -(-size // 512) * 512]], (path, read, size)
    inodes = {path: stats[path]["inode"] for path in paths}
    where = T.inode_locations(boot_disk.raw, inodes.values(), boot_disk.part_offset)
    table_reads = _merge(
        [r for row in boot_trace.rows if row["kind"] == "inode-table" for r in row["disk_ranges"]]
    )
    for path, inode in inodes.items():
        at = boot_disk.part_offset + where[inode]
        assert any(lo <= at < hi for lo, hi in table_reads), (path, inode, hex(at))


def test_the_trace_names_what_bmap_map_of_the_raw_disk_names(boot_disk, boot_trace, tmp_path):
    """Served from the qcow2, mapped from the raw image: every read lies inside an extent
    that ``bmap map`` of the raw image gives the same name."""
    map_file = tmp_path / "boot.jsonl"
    result = CliRunner().invoke(main, ["map", str(boot_disk.raw), "-o", str(map_file)])
    assert result.exit_code == 0, result.output
    extents = [json.loads(line) for line in map_file.read_text().splitlines()]
    named: dict[str, list[list[int]]] = {}
    for e in extents:
        if e["type"] not in ("v", "p", "u"):
            named.setdefault(_name(e), []).append([e["start"], e["end"]])
    for row in boot_trace.rows:
        for lo, hi in row["disk_ranges"]:
            assert any(a <= lo and hi <= b for a, b in named[_name(row)]), (row, named[_name(row)])
    blocks = _debugfs_blocks(boot_disk, [*BOOT_FILES, *BYSTANDERS])
    for path in (*BOOT_FILES, *BYSTANDERS):
        whole = len(blocks[path]) * boot_disk.block_size
        assert _merge(named[path]) == _to_disk(boot_disk, blocks[path], 0, whole), path


def test_the_qcow2_is_unchanged_and_nothing_is_left(boot_disk, boot_trace):
    assert sha256_file(boot_disk.qcow2) == boot_trace.sha256_before
    assert not list(boot_trace.tmpdir.iterdir())  # bmap-serve-*, qemu's overlay: all gone
    left = _processes_naming(str(boot_trace.tmpdir), str(boot_disk.qcow2))
    assert not left, left  # nbdkit, qemu-nbd, qemu-system-x86_64
    assert _loop_mounts_of(boot_disk.raw) == ("", "")
