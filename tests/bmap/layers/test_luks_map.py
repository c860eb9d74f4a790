"""LUKS1 and LUKS2 volumes made by cryptsetup: header copies, keyslot areas and data named where
``cryptsetup luksDump`` says they are, on a whole disk and inside a GPT partition; damaged
and crafted headers give findings.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.model.blockmap import TYPES
from parsers.luks import read_layout
from tests.conftest import run_tool, tool

pytestmark = pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="needs cryptsetup")

SIZE = 32 << 20
#: PBKDF2 with few iterations: argon2 (LUKS2's default) with forced iterations takes minutes.
FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


def luks_format(path: Path, version: int, keyfile: Path, size: int = SIZE) -> Path:
    """A LUKS volume on a plain file, by cryptsetup (no device-mapper needed)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    run_tool(
        tool("cryptsetup"),
        "luksFormat",
        "--type",
        f"luks{version}",
        "--batch-mode",
        *FAST,
        str(path),
        str(keyfile),
    )
    return path


def add_key(path: Path, keyfile: Path, slot: int | None = None) -> None:
    where = ["--key-slot", str(slot)] if slot is not None else []
    run_tool(
        tool("cryptsetup"),
        "luksAddKey",
        "--batch-mode",
        *FAST,
        *where,
        "--key-file",
        str(keyfile),
        str(path),
        str(keyfile),
    )


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    return key


def dump(path: Path) -> str:
    return run_tool(tool("cryptsetup"), "luksDump", str(path)).stdout


def dump_truth(path: Path) -> dict:
    """What ``cryptsetup luksDump`` says: header copies, keyslot areas, data offset, cipher,
    in bytes."""
    text = dump(path)
    version = int(re.search(r"^Version:\s+(\d)", text, re.M).group(1))
    if version == 1:
        key_bytes = int(re.search(r"^MK bits:\s+(\d+)", text, re.M).group(1)) // 8
        slots = {}
        for m in re.finditer(
            r"^Key Slot (\d): ENABLED\n(?:\t.*\n)*?\tKey material offset:\s+(\d+)\n"
            r"\tAF stripes:\s+(\d+)",
            text,
            re.M,
        ):
            offset, stripes = int(m.group(2)) * 512, int(m.group(3))
            slots[m.group(1)] = (offset, -(-key_bytes * stripes // 512) * 512)
        cipher = "-".join(
            re.search(rf"^Cipher {w}:\s+(\S+)", text, re.M).group(1) for w in ("name", "mode")
        )
        return {
            "version": 1,
            "headers": [(0, 592)],  # the phdr and its eight keyslot descriptors
            "keyslots": slots,
            "data": int(re.search(r"^Payload offset:\s+(\d+)", text, re.M).group(1)) * 512,
            "cipher": cipher,
        }
    metadata = json.loads(
        run_tool(tool("cryptsetup"), "luksDump", "--dump-json-metadata", str(path)).stdout
    )
    hdr = int(re.search(r"^Metadata area:\s+(\d+) \[bytes\]", text, re.M).group(1))
    return {
        "version": 2,
        "headers": [(0, hdr), (hdr, hdr)],
        "keyslots": {
            n: (int(k["area"]["offset"]), int(k["area"]["size"]))
            for n, k in metadata["keyslots"].items()
        },
        "data": int(metadata["segments"]["0"]["offset"]),
        "cipher": metadata["segments"]["0"]["encryption"],
    }


def lines_of(path: Path):
    with Image(path) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    return bmap, frame


def ranges(frame, kind: str, offset: int = 0) -> list[tuple[int, int]]:
    rows = frame[frame.kind == kind]
    return sorted((int(s) - offset, int(e) - int(s)) for s, e in zip(rows.start, rows.end))


def check_against_dump(path: Path, frame, truth: dict, offset: int = 0, size: int = SIZE):
    assert ranges(frame, "luks-header", offset) == truth["headers"]
    assert ranges(frame, "luks-keyslots", offset) == sorted(truth["keyslots"].values())
    assert ranges(frame, "luks-payload", offset) == [(truth["data"], size - truth["data"])]
    # The rest before the data is luks-unused (or a disabled slot's area): every byte named
    # once.
    inner = frame[frame.type.isin(["m", "u"]) & frame.kind.str.startswith(("luks", "volume"))]
    spans = sorted((int(s) - offset, int(e) - offset) for s, e in zip(inner.start, inner.end))
    at = 0
    for start, end in spans:
        assert start == at, f"gap or overlap at {at:#x}"
        at = end
    assert at == size


@pytest.mark.parametrize("version", [1, 2])
def test_a_luks_volume_is_named_where_luksdump_says(version, tmp_path, keyfile):
    image = luks_format(tmp_path / f"luks{version}.img", version, keyfile)
    add_key(image, keyfile)  # two keyslots
    truth = dump_truth(image)
    assert len(truth["keyslots"]) == 2
    bmap, frame = lines_of(image)
    check_against_dump(image, frame, truth)
    assert not bmap.findings
    with open(image, "rb") as fh:
        layout = read_layout(fh, SIZE)
    assert layout.cipher == truth["cipher"]
    assert sorted(a.name for a in layout.keyslots) == sorted(truth["keyslots"])


def test_a_disabled_luks1_slot_is_where_cryptsetup_puts_its_next_key(tmp_path, keyfile):
    """Disabled slots keep the areas cryptsetup laid out: the map names slot 5's area before
    any key is in it, and luksAddKey then writes the key material exactly there."""
    image = luks_format(tmp_path / "luks1.img", 1, keyfile)
    _, frame = lines_of(image)
    disabled = ranges(frame, "luks-keyslots-disabled")
    assert len(disabled) == 7
    add_key(image, keyfile, slot=5)
    assert dump_truth(image)["keyslots"]["5"] in disabled


def test_bmap_info_shows_cipher_and_keyslots_as_luksdump(tmp_path, keyfile):
    from click.testing import CliRunner

    from bmap.cli import main

    image = luks_format(tmp_path / "luks2.img", 2, keyfile)
    add_key(image, keyfile)
    truth = dump_truth(image)
    result = CliRunner().invoke(main, ["info", "--json", str(image)])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)["disks"][0]["filesystem"]
    assert facts["type"] == "LUKS2"
    assert facts["cipher"] == truth["cipher"]
    assert facts["keyslots"] == 2
    assert facts["data_offset"] == truth["data"]
    text = CliRunner().invoke(main, ["info", str(image)]).stdout
    assert f"LUKS2: cipher {truth['cipher']}" in text
    assert "keyslots 2" in text
    # Nothing of the key material: no salt or digest luksDump shows is in bmap's output.
    salts = re.findall(r"Salt:\s+((?:[0-9a-f]{2} )+)", dump(image))
    assert salts
    for salt in salts:
        assert salt.replace(" ", "")[:16] not in (result.stdout + text).replace(" ", "")


def test_luks_inside_a_gpt_partition(tmp_path, keyfile):
    """A disk by sgdisk whose second partition is a LUKS2 volume made by cryptsetup."""
    part_size = 24 << 20
    volume = luks_format(tmp_path / "part.img", 2, keyfile, part_size)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fh:
        fh.truncate(64 << 20)
    run_tool(tool("sgdisk"), "-n", "1:2048:+4M", "-n", f"2:0:+{part_size >> 10}K", str(disk))
    start = 2048 * 512 + (4 << 20)
    with open(disk, "r+b") as out, open(volume, "rb") as src:
        out.seek(start)
        shutil.copyfileobj(src, out)
    truth = dump_truth(volume)
    bmap, frame = lines_of(disk)
    on_part = frame[frame.device == "/dev/sda2"]
    check_against_dump(disk, on_part, truth, offset=start, size=part_size)
    assert not [f for f in bmap.findings if "sda2" in f.source]
    assert set(on_part.type) <= set(TYPES)


def rewrite_luks2(path: Path, edit) -> None:
    """Rewrite both LUKS2 header copies' JSON with ``edit(metadata) -> text`` and put their
    sha256 checksums right again, as cryptsetup computes them (over the header area with the
    checksum field zeroed)."""
    data = bytearray(path.read_bytes())
    hdr = int.from_bytes(data[8:16], "big")
    metadata = json.loads(data[4096:hdr].split(b"\0", 1)[0])
    text = edit(metadata).encode()
    assert len(text) < hdr - 4096
    for base in (0, hdr):
        area = data[base : base + hdr]
        area[4096:hdr] = text + bytes(hdr - 4096 - len(text))
        area[0x1C0:0x200] = bytes(64)
        area[0x1C0:0x1E0] = hashlib.sha256(bytes(area)).digest()
        data[base : base + hdr] = area
    path.write_bytes(bytes(data))


def test_the_rewritten_checksums_are_cryptsetups(tmp_path, keyfile):
    """The crafted headers below are only hostile if their checksums hold: the same rewrite
    with the metadata unchanged (but re-serialised) is a header cryptsetup opens."""
    image = luks_format(tmp_path / "luks2.img", 2, keyfile)
    rewrite_luks2(image, lambda m: json.dumps(m, separators=(",", ":")))
    run_tool(tool("cryptsetup"), "isLuks", "--debug", str(image))
    run_tool(tool("cryptsetup"), "luksDump", str(image))
    data = bytearray(image.read_bytes())
    data[4096 + 3] ^= 1  # and one byte off is a header it refuses
    image.write_bytes(bytes(data))
    assert (
        "checksum"
        in run_tool(
            tool("cryptsetup"), "luksDump", "--debug", str(image), check=False
        ).stdout.lower()
    )


def test_crafted_luks2_metadata_gives_findings_not_tracebacks(tmp_path, keyfile):
    image = luks_format(tmp_path / "luks2.img", 2, keyfile)

    def hostile(metadata: dict) -> str:
        area = metadata["keyslots"]["0"]["area"]
        metadata["keyslots"] = {
            str(n): {"type": "luks2", "area": {**area, "offset": str(4096 * n)}} for n in range(40)
        }
        metadata["keyslots"]["7"]["area"]["offset"] = "9" * 20  # past int64
        metadata["keyslots"]["8"]["area"]["offset"] = str(SIZE - 4096)  # runs past the end
        metadata["segments"]["0"]["offset"] = str(1 << 40)  # past the device
        return json.dumps(metadata, separators=(",", ":"))

    rewrite_luks2(image, hostile)
    bmap, frame = lines_of(image)
    messages = " | ".join(f.message for f in bmap.findings)
    assert "checksum" not in messages  # the crafted headers' checksums hold
    assert "the first 32 are used" in messages
    assert "offset or size unreadable" in messages
    assert "runs past the device's end" in messages
    assert "past the device's end" in messages
    assert "overlaps another LUKS area" in messages
    assert (frame.end <= SIZE).all() and (frame.start < frame.end).all()
    assert "luks-payload" not in set(frame.kind)


def test_deeply_nested_luks2_json_is_a_finding(tmp_path, keyfile):
    image = luks_format(tmp_path / "luks2.img", 2, keyfile)
    rewrite_luks2(image, lambda m: "[" * 5000 + "]" * 5000)
    bmap, frame = lines_of(image)
    assert any("nested too deep" in f.message for f in bmap.findings)
    assert "luks-payload" not in set(frame.kind)


def test_a_damaged_primary_luks2_header_uses_the_secondary(tmp_path, keyfile):
    image = luks_format(tmp_path / "luks2.img", 2, keyfile)
    truth = dump_truth(image)
    data = bytearray(image.read_bytes())
    data[4096 + 10] ^= 0xFF  # inside the primary's JSON: its checksum no longer holds
    image.write_bytes(bytes(data))
    bmap, frame = lines_of(image)
    assert any("luks2-header" in f.source and "checksum" in f.message for f in bmap.findings)
    # Both copies still named; the keyslots and data from the secondary's metadata.
    check_against_dump(image, frame, truth)
