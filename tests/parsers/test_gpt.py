"""GPT against sfdisk and sgdisk, damage handling, 4096-byte sectors, and random bytes."""

from __future__ import annotations

import io
import json
import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import gpt
from parsers.errors import DamagedError, NotThisFormat, ParserError
from tests.conftest import TRUTH, run_tool, sfdisk_json


def open_gpt(path, sector_size=None) -> gpt.GPT:
    data = path.read_bytes()
    fh = io.BytesIO(data)
    ss = sector_size or gpt.probe_sector_size(fh, len(data))
    return gpt.GPT(fh, len(data), ss)


def assert_equals_sfdisk(table: gpt.GPT, truth: dict) -> None:
    assert truth["label"] == "gpt"
    assert table.header.disk_guid == truth["id"]
    assert table.header.first_usable_lba == truth["firstlba"]
    assert table.header.last_usable_lba == truth["lastlba"]
    expected = [
        (
            int(re.search(r"(\d+)$", p["node"]).group(1)),
            p["start"],
            p["size"],
            p["type"],
            p["uuid"],
            p.get("name", ""),
        )
        for p in truth["partitions"]
    ]
    got = [
        (p.number, p.first_lba, p.num_sectors, p.type_guid, p.unique_guid, p.name)
        for p in table.partitions
    ]
    assert got == expected


def test_gpt_512_equals_sfdisk(sample):
    path = sample("gpt-512")
    table = open_gpt(path)
    assert table.sector_size == 512
    assert table.source == "primary"
    assert table.problems == []
    assert_equals_sfdisk(table, sfdisk_json(path))


def test_gpt_512_names_and_types_equal_sgdisk(sample):
    """sgdisk -p prints the type code and the UTF-16 name as it decodes it."""
    path = sample("gpt-512")
    out = run_tool("sgdisk", "-p", str(path)).stdout
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+([0-9A-F]{4})\s+(.*)$", out, re.M)
    codes = {
        "EF00": "EFI System",
        "8300": "Linux filesystem",
        "8200": "Linux swap",
        "8E00": "Linux LVM",
    }
    table = open_gpt(path)
    assert [(p.number, p.first_lba, p.last_lba, p.type_name, p.name) for p in table.partitions] == [
        (int(n), int(s), int(e), codes[c], name) for n, s, e, c, name in rows
    ]
    assert table.partitions[3].name == "données ☃"


def test_gpt_4k_equals_sfdisk_on_a_4k_loop_device(sample):
    """The truth was taken by sfdisk on a loop device with 4096-byte sectors when the sample
    was made (sfdisk assumes 512 on a plain file); test_layout re-checks it live."""
    path = sample("gpt-4k")
    table = open_gpt(path)
    assert table.sector_size == 4096
    truth = json.loads((TRUTH / "gpt-4k.sfdisk.json").read_text())["partitiontable"]
    assert truth["sectorsize"] == 4096
    assert_equals_sfdisk(table, truth)


def test_damaged_primary_header_uses_backup(sample):
    path = sample("gpt-damaged-primary")
    out = run_tool("sgdisk", "-v", str(path), check=False).stdout
    assert "CRC" in out or "corrupt" in out  # sgdisk agrees the main header is damaged
    table = open_gpt(path)
    assert table.source == "backup"
    assert table.primary_header is None
    messages = " ".join(str(p) for p in table.problems)
    assert "header CRC32 mismatch" in messages and "backup GPT" in messages
    # The partitions are the undamaged disk's.
    assert_equals_sfdisk(table, sfdisk_json(sample("gpt-512")))


def test_damaged_primary_entries_uses_backup(sample):
    path = sample("gpt-damaged-entries")
    table = open_gpt(path)
    assert table.source == "backup"
    assert table.primary_header is not None
    assert any("entry array CRC32 mismatch" in str(p) for p in table.problems)
    assert_equals_sfdisk(table, sfdisk_json(sample("gpt-512")))


def test_truncated_disk_reports_missing_backup(sample):
    table = open_gpt(sample("truncated"))
    assert table.source == "primary"
    assert any(
        p.structure == "gpt-backup-header" and "outside the disk" in p.reason
        for p in table.problems
    )


def test_structures_cover_both_copies(sample):
    table = open_gpt(sample("gpt-512"))
    kinds = {kind: (loc.offset, loc.size) for kind, loc in table.structures}
    assert kinds == {
        "gpt-header": (512, 512),
        "gpt-entries": (1024, 128 * 128),
        "gpt-backup-header": (32 * 1024 * 1024 - 512, 512),
        "gpt-backup-entries": (32 * 1024 * 1024 - 512 - 128 * 128, 128 * 128),
    }


def test_zeros_are_not_a_gpt():
    with pytest.raises(NotThisFormat):
        gpt.GPT(io.BytesIO(bytes(1 << 16)), 1 << 16, 512)
    assert gpt.probe_sector_size(io.BytesIO(bytes(1 << 16)), 1 << 16) is None


def test_name_decoding_stops_at_nul_and_survives_lone_surrogates():
    raw = "ab".encode("utf-16-le") + b"\x00\xd8" + b"\0\0" + "zz".encode("utf-16-le")
    assert gpt.decode_name(raw.ljust(72, b"\0")) == "ab\ufffd"


def _header_sector(**fields) -> bytes:
    values = dict(
        signature=b"EFI PART",
        revision=0x10000,
        header_size=92,
        header_crc32=0,
        reserved=0,
        my_lba=1,
        alternate_lba=127,
        first_usable_lba=34,
        last_usable_lba=94,
        disk_guid=bytes(16),
        partition_entry_lba=2,
        num_entries=128,
        len_entry=128,
        entries_crc32=zlib.crc32(bytes(128 * 128)),
    )
    values.update(fields)
    raw = bytearray(gpt.Header.build(values))
    if "header_crc32" not in fields:
        raw[16:20] = zlib.crc32(bytes(raw)).to_bytes(4, "little")
    return bytes(raw).ljust(512, b"\0")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_entries=1 << 30), "absurd"),
        (dict(len_entry=7), "entry size"),
        (dict(header_size=4000), "header size"),
        (dict(first_usable_lba=100, last_usable_lba=50), "first usable"),
        (dict(header_crc32=1), "CRC32"),
    ],
)
def test_hostile_headers_are_damaged(fields, message):
    with pytest.raises(DamagedError, match=message):
        gpt.parse_header(_header_sector(**fields), 512, 512)


@settings(max_examples=300)
@given(st.binary(max_size=2048), st.integers(0, 1 << 24), st.sampled_from([512, 4096]))
def test_random_bytes_raise_only_parser_errors(data, disk_size, ss):
    try:
        gpt.GPT(io.BytesIO(data), disk_size, ss)
    except ParserError:
        pass


@settings(max_examples=300)
@given(st.integers(0, 91), st.integers(0, 255), st.integers(0, 32 * 1024))
def test_mutated_headers_never_crash(position, value, size_kib):
    """A valid header with one byte changed and a disk of any size: our errors only."""
    sector = bytearray(_header_sector())
    sector[position] = value
    disk = bytes(512) + bytes(sector) + bytes(128 * 128)
    disk = disk.ljust(size_kib * 1024, b"\0")[: max(size_kib * 1024, 0)]
    try:
        table = gpt.GPT(io.BytesIO(disk), len(disk), 512)
        assert table.partitions == ()
    except ParserError:
        pass
