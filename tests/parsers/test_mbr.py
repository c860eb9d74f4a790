"""MBR and EBR chains against sfdisk, hand-built edge cases, and random bytes."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import mbr
from parsers.errors import NotThisFormat, ParserError, TruncatedError
from tests.conftest import sfdisk_json


def open_mbr(path) -> mbr.MBR:
    data = path.read_bytes()
    return mbr.MBR(io.BytesIO(data), len(data))


@pytest.mark.parametrize("name", ["mbr-extended", "mbr-4-primaries-tiny"])
def test_partitions_equal_sfdisk(sample, name):
    path = sample(name)
    truth = sfdisk_json(path)
    table = open_mbr(path)
    found = list(table.primary) + list(table.chain.logical)
    expected = [
        (
            int(p["node"].removeprefix(str(path))),
            p["start"],
            p["size"],
            int(p["type"], 16),
            bool(p.get("bootable")),
        )
        for p in truth["partitions"]
    ]
    got = [(p.number, p.start_lba, p.num_sectors, p.type_id, p.bootable) for p in found]
    assert got == expected
    assert f"0x{table.disk_signature:08x}" == truth["id"]
    assert table.chain.problems == ()


def test_extended_chain_ebrs_hold_their_logicals(sample):
    """Each EBR found is a real boot record whose data entry points at a logical partition."""
    path = sample("mbr-extended")
    data = path.read_bytes()
    table = open_mbr(path)
    starts = {p.start_lba for p in table.chain.logical}
    assert len(table.chain.ebrs) == 3
    for ebr in table.chain.ebrs:
        sector = data[ebr.offset : ebr.offset + 512]
        assert sector[510:512] == b"\x55\xaa"
        rel_start = struct.unpack_from("<I", sector, 446 + 8)[0]
        assert ebr.offset // 512 + rel_start in starts


def test_ebr_loop_is_cut_and_reported(sample):
    path = sample("ebr-loop")
    table = open_mbr(path)
    chain = table.chain
    assert [p.number for p in chain.logical] == [5, 6, 7]
    assert len(chain.ebrs) == 3
    assert len(chain.problems) == 1
    assert "loop" in str(chain.problems[0])


def _entry(status=0, type_id=0, start=0, size=0) -> dict:
    return dict(
        status=status,
        chs_first=b"\0\0\0",
        type_id=type_id,
        chs_last=b"\0\0\0",
        start_lba=start,
        num_sectors=size,
    )


def _sector(entries) -> bytes:
    entries = list(entries) + [_entry()] * (4 - len(entries))
    return mbr.MBRSector.build(
        dict(
            bootcode=b"\0" * 440,
            disk_signature=0x1234,
            reserved=b"\0\0",
            entries=entries,
            boot_signature=b"\x55\xaa",
        )
    )


def _disk(sectors: dict[int, bytes], size_sectors: int) -> io.BytesIO:
    buf = bytearray(size_sectors * 512)
    for lba, data in sectors.items():
        buf[lba * 512 : lba * 512 + 512] = data
    return io.BytesIO(bytes(buf))


def test_ebr_self_loop_built_with_construct():
    disk = _disk(
        {
            0: _sector([_entry(0, 0x05, 100, 1000)]),
            100: _sector([_entry(0, 0x83, 10, 50), _entry(0, 0x05, 0, 100)]),
        },
        2000,
    )
    table = mbr.MBR(disk, 2000 * 512)
    assert [(p.number, p.start_lba) for p in table.chain.logical] == [(5, 110)]
    assert "loop" in str(table.chain.problems[0])


def test_ebr_link_outside_extended_is_reported():
    disk = _disk(
        {
            0: _sector([_entry(0, 0x0F, 100, 1000)]),
            100: _sector([_entry(0, 0x83, 10, 50), _entry(0, 0x05, 5000, 100)]),
        },
        2000,
    )
    table = mbr.MBR(disk, 2000 * 512)
    assert len(table.chain.logical) == 1
    assert "leaves the extended partition" in str(table.chain.problems[0])


def test_ebr_without_signature_is_reported():
    disk = _disk({0: _sector([_entry(0, 0x85, 100, 1000)])}, 2000)
    table = mbr.MBR(disk, 2000 * 512)
    assert table.chain.logical == ()
    assert "0x55AA" in str(table.chain.problems[0])


def test_long_chain_is_bounded():
    sectors = {0: _sector([_entry(0, 0x05, 1, 10_000)])}
    for i in range(1, 400):
        sectors[i] = _sector([_entry(0, 0x83, 1000, 1), _entry(0, 0x05, i, 1)])
    table = mbr.MBR(_disk(sectors, 10_001), 10_001 * 512)
    assert len(table.chain.ebrs) == mbr.MAX_EBRS
    assert "longer than" in str(table.chain.problems[-1])


def test_protective_and_hybrid():
    table = mbr.MBR(_disk({0: _sector([_entry(0, 0xEE, 1, 99)])}, 100), 100 * 512)
    assert table.is_protective and not table.is_hybrid
    table = mbr.MBR(
        _disk({0: _sector([_entry(0, 0xEE, 1, 50), _entry(0x80, 0x0C, 60, 10)])}, 100), 100 * 512
    )
    assert table.is_hybrid


def test_zero_sector_is_not_an_mbr():
    with pytest.raises(NotThisFormat):
        mbr.MBR(io.BytesIO(bytes(4096)), 4096)


def test_short_image_is_truncated():
    with pytest.raises(TruncatedError):
        mbr.MBR(io.BytesIO(b"\x55\xaa" * 100), 200)


def test_boot_sector_status_bytes_are_not_an_mbr():
    sector = bytearray(_sector([_entry(0, 0x83, 1, 10)]))
    sector[446] = 0x12
    with pytest.raises(NotThisFormat, match="status byte"):
        mbr.MBR(io.BytesIO(bytes(sector) + bytes(4096)), 4608)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=4096), st.integers(min_value=0, max_value=1 << 20))
def test_random_bytes_raise_only_parser_errors(data, claimed_size):
    try:
        table = mbr.MBR(io.BytesIO(data), claimed_size)
        table.chain  # noqa: B018 - walking the chain is the point
    except ParserError:
        pass


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7),
            st.sampled_from([0x05, 0x0F, 0x85, 0x83, 0]),
            st.integers(0, 40),
            st.integers(0, 40),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_chains_stay_bounded(links):
    """Chains of EBRs pointing anywhere, including at themselves, never hang or crash."""
    sectors = {0: _sector([_entry(0, 0x05, 1, 40)])}
    for i, (lba, type_id, start, size) in enumerate(links):
        sectors[lba + 1] = _sector([_entry(0, 0x83, 1, 1), _entry(0, type_id, start, size)])
        del i
    table = mbr.MBR(_disk(sectors, 48), 48 * 512)
    chain = table.chain
    assert len(chain.ebrs) <= 8
