"""Every image is identified before anything maps it: containers bmap cannot read are refused
with one line and exit 8, never read as raw; the map header says what held each disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bmap.errors import ContainerError, ExitCode
from bmap.images import IMAGE_FORMATS, open_image
from tests.bmap.cli.test_cli import one_line_error, run
from tests.conftest import sha256_file


def _compress(tool: str, *args: str):
    def make(src: Path, out: Path) -> Path:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
        with open(out, "wb") as fh:
            subprocess.run([tool, *args, "-c", str(src)], stdout=fh, check=True)
        return out

    return make


def _qemu(fmt: str):
    def make(src: Path, out: Path) -> Path:
        if shutil.which("qemu-img") is None:
            pytest.skip("qemu-img is not installed (Debian: qemu-utils)")
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(src), str(out)], check=True
        )
        return out

    return make


def _dmg_trailer(src: Path, out: Path) -> Path:
    # No tool here writes UDIF; its mark is a 512-byte 'koly' trailer (version 4) at the end.
    trailer = b"koly" + (4).to_bytes(4, "big") + (512).to_bytes(4, "big")
    out.write_bytes(src.read_bytes() + trailer + bytes(512 - len(trailer)))
    return out


REFUSED = {
    "xz": (_compress("xz"), "xz-compressed"),
    "gzip": (_compress("gzip"), "gzip-compressed"),
    "bzip2": (_compress("bzip2"), "bzip2-compressed"),
    "zstd": (_compress("zstd", "-q"), "zstd-compressed"),
    "vdi": (_qemu("vdi"), "VirtualBox VDI"),
    "qed": (_qemu("qed"), "QED image"),
    "parallels": (_qemu("parallels"), "Parallels image"),
    "dmg": (_dmg_trailer, "Apple disk image"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_container_bmap_cannot_read_is_refused_not_read_as_raw(name, sample, tmp_path):
    """The disk inside each of these holds an MBR and an ext4; read as raw, some would still
    show a partition table and map garbage, so each is refused on its own mark."""
    make, words = REFUSED[name]
    image = make(sample("mbr-extended"), tmp_path / f"disk.{name}")
    before = sha256_file(image)
    with pytest.raises(ContainerError, match=words):
        open_image(image)
    result = run("map", image, "-o", tmp_path / "out.bmap")
    assert result.exit_code == ExitCode.CONTAINER
    one_line_error(result, str(image), words, "cannot read it")
    assert not (tmp_path / "out.bmap").exists()
    result = run("info", image)
    assert result.exit_code == ExitCode.CONTAINER
    assert sha256_file(image) == before


def test_every_format_has_a_name_and_raw_comes_last():
    names = [f.name for f in IMAGE_FORMATS]
    assert names[-1] == "raw"
    assert all(f.recognises(b"") is False for f in IMAGE_FORMATS[:-1])


def test_a_raw_disk_whose_sectors_hold_a_container_mark_elsewhere_stays_raw(sample, tmp_path):
    """Only a mark at the container's own place counts: 'QFI\\xfb' inside the disk is data."""
    raw = bytearray(sample("gpt-512").read_bytes())
    raw[0x100000:0x100004] = b"QFI\xfb"
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(raw))
    with open_image(image) as disk:
        assert disk.format == "raw"
        assert disk.container is None


@pytest.mark.parametrize(
    "args", [("-O", "qcow2"), ("-O", "vmdk", "-o", "subformat=monolithicFlat")]
)
def test_lookup_and_trace_take_a_container_as_their_map(args, sample, tmp_path):
    """A VMDK descriptor is text starting with '#', as a map is: it is still an image."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (Debian: qemu-utils)")
    raw = sample("gpt-512")
    image = tmp_path / "disk.img"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", *args, str(raw), str(image)], check=True
    )
    want = run("lookup", raw, "0xadd800", "--json")
    got = run("lookup", image, "0xadd800", "--json")
    assert got.exit_code == 0, got.stderr
    assert json.loads(got.stdout) == json.loads(want.stdout)
    assert "/data/big.bin" in got.stdout
    log = tmp_path / "reads.csv"
    log.write_text("0xadd800,4096\n")
    traced = run("trace", image, log)
    assert traced.exit_code == 0, traced.stderr
    assert "/data/big.bin" in traced.stdout
