"""A real UEFI boot, traced live by ``bmap serve``: the reads name the EFI system partition's
files (issue #14).

The disk is made by the real tools: sgdisk (a GPT, one EFI system partition), mkfs.vfat
(FAT32) and mtools (mmd, mcopy) for its files, grub-mkstandalone for
``/EFI/BOOT/BOOTX64.EFI`` (GRUB for x86_64-efi with an embedded config that finds and runs
``/EFI/BOOT/grub.cfg``). That grub.cfg prints a line, prints ``/EFI/BMAP/hello.txt`` and halts,
which powers the machine off. qemu-system-x86_64 (q35, TCG) with Debian's OVMF firmware boots
it from ``$uri``: OVMF reads the GPT, the ESP's FAT, and loads the default boot file;
GRUB reads its config and the text file, and halts.

Ground truth from outside bmap: where each file's clusters are comes from mtools'
``mshowfat`` (the cluster chain) and the boot sector's geometry decoded here by hand
(reserved sectors, FATs, sectors per FAT, sectors per cluster); the bytes the guest read
there are the file's own bytes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sha256_file, tool

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GRUB_EFI = Path("/usr/lib/grub/x86_64-efi")
DISK_SIZE = 64 << 20
ESP_START = 1 << 20
ESP_SIZE = 40 << 20
QEMU_TIMEOUT = 120
EMBEDDED_CFG = """\
search --no-floppy --file --set=root /EFI/BOOT/grub.cfg
configfile /EFI/BOOT/grub.cfg
"""
GRUB_CFG = """\
echo "bmap uefi test: grub.cfg read"
cat /EFI/BMAP/hello.txt
halt
"""
HELLO = "hello from the ESP\n"
GRUB_MODULES = "part_gpt fat search search_fs_file configfile cat echo halt"
#: What the guest reads, by name, and what it has no reason to read.
BOOT_FILES = ("/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/grub.cfg", "/EFI/BMAP/hello.txt")
BYSTANDER = "/EFI/BMAP/bystander.bin"


@dataclass(frozen=True)
class EspDisk:
    raw: Path
    esp: Path
    files: dict[str, bytes]


def _require_tools() -> None:
    for name in ("qemu-system-x86_64", "sgdisk", "mkfs.vfat", "mcopy", "mmd", "mshowfat"):
        tool(name)
    tool("grub-mkstandalone")
    if not OVMF_CODE.exists() or not OVMF_VARS.exists():
        pytest.skip("Debian's OVMF firmware is not installed (apt-get install ovmf)")
    if not GRUB_EFI.is_dir():
        pytest.skip("GRUB's x86_64-efi modules are missing (apt-get install grub-efi-amd64-bin)")


def qemu_command(drive: str, vars_fd: Path, serial: Path) -> list[str]:
    """qemu-system-x86_64 with OVMF (q35, TCG), one AHCI disk, the serial port to a file."""
    return [
        "timeout",
        str(QEMU_TIMEOUT),
        tool("qemu-system-x86_64"),
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "256",
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-drive",
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,file={vars_fd}",
        "-drive",
        f"{drive},if=none,id=d0,snapshot=on",
        "-device",
        "ide-hd,drive=d0",
        "-serial",
        f"file:{serial}",
        "-no-reboot",
    ]


def build_esp_disk(folder: Path) -> EspDisk:
    cfg = folder / "embed.cfg"
    cfg.write_text(EMBEDDED_CFG)
    efi = folder / "BOOTX64.EFI"
    subprocess.run(
        [
            tool("grub-mkstandalone"), "-O", "x86_64-efi",
            f"--install-modules={GRUB_MODULES}", f"--modules={GRUB_MODULES}",
            "--locales=", "--themes=", "--fonts=", "-o", str(efi),
            f"boot/grub/grub.cfg={cfg}",
        ],
        check=True,
    )  # fmt: skip
    # In this order on the disk: mtools allocates clusters as it goes. The pad keeps the
    # bystander away from what the firmware and GRUB read ahead (whole 32 KiB blocks and
    # more) around hello.txt.
    files = {
        "/EFI/BOOT/BOOTX64.EFI": efi.read_bytes(),
        "/EFI/BOOT/grub.cfg": GRUB_CFG.encode(),
        "/EFI/BMAP/hello.txt": HELLO.encode(),
        "/EFI/BMAP/pad.bin": bytes(1 << 20),
        BYSTANDER: bytes(range(256)) * 1200,
    }
    esp = folder / "esp.img"
    with open(esp, "wb") as fh:
        fh.truncate(ESP_SIZE)
    subprocess.run(
        [tool("mkfs.vfat"), "-F", "32", "-n", "ESP", str(esp)], check=True, capture_output=True
    )
    subprocess.run(
        [tool("mmd"), "-i", str(esp), "::/EFI", "::/EFI/BOOT", "::/EFI/BMAP"], check=True
    )
    for path, data in files.items():
        src = folder / Path(path).name
        src.write_bytes(data)
        subprocess.run([tool("mcopy"), "-i", str(esp), str(src), f"::{path}"], check=True)
    raw = folder / "uefi.img"
    with open(raw, "wb") as fh:
        fh.truncate(DISK_SIZE)
    subprocess.run(
        [
            tool("sgdisk"),
            "-n",
            f"1:{ESP_START // 512}:+{ESP_SIZE >> 20}M",
            "-t",
            "1:ef00",
            str(raw),
        ],
        check=True,
        capture_output=True,
    )
    with open(raw, "r+b") as out, open(esp, "rb") as src:
        out.seek(ESP_START)
        shutil.copyfileobj(src, out)
    return EspDisk(raw, esp, files)


@pytest.fixture(scope="module")
def esp_disk(tmp_path_factory: pytest.TempPathFactory) -> EspDisk:
    _require_tools()
    return build_esp_disk(tmp_path_factory.mktemp("uefi-disk"))


@dataclass(frozen=True)
class Trace:
    rows: list[dict]
    serial: str


@pytest.fixture(scope="module")
def uefi_trace(esp_disk: EspDisk, tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """``bmap serve uefi.img --run 'qemu-system-x86_64 (OVMF) ... file=$uri,format=raw'``."""
    scratch = tmp_path_factory.mktemp("uefi-serve")
    vars_fd = scratch / "vars.fd"
    shutil.copy(OVMF_VARS, vars_fd)
    serial = scratch / "serial.log"
    before = sha256_file(esp_disk.raw)
    client = " ".join(
        arg if "$uri" in arg else shlex.quote(arg)
        for arg in qemu_command('file="$uri",format=raw', vars_fd, serial)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bmap", "serve", str(esp_disk.raw), "-f", "jsonl", "--run", client],
        capture_output=True,
        text=True,
        timeout=QEMU_TIMEOUT + 60,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--run command exited" not in proc.stderr, proc.stderr
    assert sha256_file(esp_disk.raw) == before
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return Trace(rows, serial.read_text(errors="replace"))


def fat_geometry(esp: Path) -> tuple[int, int]:
    """(first data byte, cluster size) of a FAT32 volume, decoded from its boot sector."""
    boot = esp.read_bytes()[:512]
    bytes_per_sector, sectors_per_cluster, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    (fat_size,) = struct.unpack_from("<I", boot, 36)
    first_data = (reserved + fats * fat_size) * bytes_per_sector
    return first_data, sectors_per_cluster * bytes_per_sector


def clusters_of(esp: Path, path: str) -> list[int]:
    """The file's cluster chain, in order, by mtools' mshowfat (``<2-5><9>``)."""
    out = subprocess.run(
        [tool("mshowfat"), "-i", str(esp), f"::{path}"], check=True, capture_output=True, text=True
    ).stdout
    chain: list[int] = []
    for first, last in re.findall(r"<(\d+)(?:-(\d+))?>", out):
        chain += range(int(first), int(last or first) + 1)
    return chain


def truth_ranges(esp_disk: EspDisk, path: str) -> list[tuple[int, int]]:
    """The file's bytes on the disk, cluster by cluster (whole clusters)."""
    first_data, cluster = fat_geometry(esp_disk.esp)
    return [
        (ESP_START + first_data + (c - 2) * cluster, ESP_START + first_data + (c - 1) * cluster)
        for c in clusters_of(esp_disk.esp, path)
    ]


def test_the_guest_boots_through_grub_and_powers_off(uefi_trace):
    assert "bmap uefi test: grub.cfg read" in uefi_trace.serial
    assert HELLO.strip() in uefi_trace.serial


def test_the_reads_name_the_esp_files_the_firmware_and_grub_read(uefi_trace):
    named = [r["path"] for r in uefi_trace.rows if r["type"] == "f"]
    order = list(dict.fromkeys(named))
    # Firmware loads BOOTX64.EFI, which reads its config, which prints hello.txt.
    assert [p for p in order if p in BOOT_FILES] == list(BOOT_FILES), order
    assert BYSTANDER not in named
    assert all(r["device"] == "/dev/sda1" for r in uefi_trace.rows if r["type"] in "fd")
    # The directories on the way are named too.
    dirs = {r["path"] for r in uefi_trace.rows if r["type"] == "d"}
    assert {"/EFI", "/EFI/BOOT"} <= dirs, dirs
    # Every read lies under a named object: nothing of it is left as bare partition.
    bare = [r for r in uefi_trace.rows if r["type"] in ("v", "p")]
    assert not bare, bare[:5]


def test_each_file_read_lies_in_its_clusters_by_mtools(esp_disk, uefi_trace):
    """The disk ranges the trace gives each boot file lie inside that file's clusters as
    mshowfat chains them, and the bytes there are the file's own."""
    image = esp_disk.raw.read_bytes()
    for path in BOOT_FILES:
        truth = truth_ranges(esp_disk, path)
        data = b"".join(image[lo:hi] for lo, hi in truth)
        assert data[: len(esp_disk.files[path])] == esp_disk.files[path]
        reads = [rng for r in uefi_trace.rows if r.get("path") == path for rng in r["disk_ranges"]]
        assert reads, path
        # Consecutive clusters make one piece: a read may span them.
        spans: list[list[int]] = []
        for lo, hi in truth:
            if spans and spans[-1][1] == lo:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])
        for start, end in reads:
            assert any(lo <= start and end <= hi for lo, hi in spans), (path, start, end)
        # Each read piece's offset inside the file ("ranges") agrees with the cluster chain.
        cluster = truth[0][1] - truth[0][0]
        for row in (r for r in uefi_trace.rows if r.get("path") == path):
            for (start, _), (inside, _) in zip(row["disk_ranges"], row["ranges"]):
                index = next(i for i, (lo, hi) in enumerate(truth) if lo <= start < hi)
                assert inside == index * cluster + (start - truth[index][0]), (path, start)
