"""The LVM test images and the outside truth about them agree with each other.

These tests check the fixtures, not bmap: that each image has what it was built to have (a
GPT partition holding a PV, an LV in two segments with free extents between them, two
stripes, an LV spanning two PVs, a second metadata area, a damaged newest metadata record,
a missing PV) and that lvs, pvs, vgs and pvck tell the same story about it as the builders'
own copy logic. The LVM parser's tests rely on both.

All of them need root and loop devices (the lvm tools only work on block devices); without
them they skip and say so.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import lvm_truth as truth
from tests.conftest import sfdisk_json
from tests.ext_images import KiB, MiB, NeedsRoot, tool_path
from tests.lvm_images import (
    GPT_PV_OFFSET,
    GPT_PV_SIZE,
    KNOWN_LAYOUT,
    NAMES,
    PV_UUIDS,
    LvmImage,
    lvm_image_factory_fixture,  # noqa: F401  (fixture lvm_image_factory)
    lvm_images_cache_fixture,  # noqa: F401  (fixture lvm_images_cache)
    scratch_copy,
)

pytestmark = pytest.mark.root

WITH_FS = [
    ("lvm_gpt", "root"),
    ("lvm_gpt", "data"),
    ("lvm_whole", "lv1"),
    ("lvm_two", "striped"),
    ("lvm_two", "span"),
]
HEALTHY = ["lvm_gpt", "lvm_whole", "lvm_two"]
LAYOUTS = [*HEALTHY, "lvm_wrapped_meta"]  # the sets whose metadata lvm reads
LVM_GPT_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"  # sgdisk's 8E00


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def lvm_set(lvm_image_factory) -> Callable[[str], LvmImage]:
    return lvm_image_factory


@pytest.fixture(scope="session")
def report(lvm_set) -> Callable[[str], dict[str, Any]]:
    """``report(name)``: :func:`tests.lvm_truth.lvm_report` of a set, asked once."""

    @functools.cache
    def get(name: str) -> dict[str, Any]:
        return truth.lvm_report(lvm_set(name).images)

    return get


@pytest.fixture(scope="session")
def pvck(lvm_set) -> Callable[[str], list[dict[str, Any]]]:
    """``pvck(name)``: :func:`tests.lvm_truth.pvck_dump` of each PV of a set, in order."""

    @functools.cache
    def get(name: str) -> list[dict[str, Any]]:
        return [truth.pvck_dump(p.image, p.offset, p.size) for p in lvm_set(name).pvs]

    return get


def read_at(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


# --------------------------------------------------------------------------------------------
# the builds


@pytest.mark.parametrize("name", NAMES)
def test_set_builds_and_describes_itself(lvm_set, name):
    image = lvm_set(name)
    assert image.images and all(p.exists() for p in image.images)
    assert all(fs.stat().st_size == image.lv_sizes[lv] for lv, fs in image.filesystems.items())
    # Sparse: the whole set holds a few MiB of data whatever its nominal size.
    assert sum(p.stat().st_blocks * 512 for p in image.images) < 40 * MiB


@pytest.mark.parametrize(("name", "lv"), WITH_FS)
def test_lv_read_through_the_tools_layout_is_its_filesystem(lvm_set, report, name, lv):
    image = lvm_set(name)
    ranges = report(name)["ranges"][lv]
    lv_bytes = truth.read_lv(ranges, image.lv_sizes[lv])
    assert sha256(lv_bytes) == sha256(image.filesystems[lv].read_bytes())
    assert lv_bytes[0x438:0x43A] == b"\x53\xef"  # the ext4 superblock magic, 1 KiB in


# --------------------------------------------------------------------------------------------
# layouts: the numbers the builders aimed for, as the tools report them


@pytest.mark.parametrize("name", LAYOUTS)
def test_known_layout(lvm_set, report, name):
    want = KNOWN_LAYOUT[name]
    image = lvm_set(name)
    got = report(name)
    assert [(p.offset, p.size, p.partition) for p in image.pvs] == want["pvs"]
    pvs = {(p["image"], p["pv_offset"]): p for p in got["pvs"]}
    for place, uuid in zip(image.pvs, PV_UUIDS[name]):
        pv = pvs[(place.image, place.offset)]
        assert (pv["pv_uuid"], pv["vg_name"]) == (uuid, want["vg"])
        assert pv["pe_start"] == want["pe_start"]
        assert pv["vg_extent_size"] == want["extent_size"]
        assert pv["partition"] == place.partition
    areas: dict[str, list[tuple[int, int, int]]] = {}
    for seg in got["segments"]:
        for area in seg["pe_ranges"]:
            index = [(p.image, p.offset) for p in image.pvs].index(
                (area["image"], area["pv_offset"])
            )
            areas.setdefault(seg["lv_name"], []).append((index, area["first_pe"], area["last_pe"]))
    assert areas == want["lvs"]
    for lv, (stripes, chunk) in want.get("stripes", {}).items():
        seg = next(s for s in got["segments"] if s["lv_name"] == lv)
        assert (seg["segtype"], seg["stripes"], seg["stripe_size"]) == ("striped", stripes, chunk)


def test_lvm_gpt_in_disk_bytes(lvm_set, report):
    disk = lvm_set("lvm_gpt").images[0]
    table = sfdisk_json(disk)
    assert table["label"] == "gpt"
    part = table["partitions"][1]
    assert (part["start"] * 512, part["size"] * 512) == (GPT_PV_OFFSET, GPT_PV_SIZE)
    assert part["type"] == LVM_GPT_TYPE
    got = report("lvm_gpt")
    base = GPT_PV_OFFSET + 1 * MiB  # partition 2 + pe_start; 1 MiB extents
    assert got["ranges"]["root"] == [truth.PhysicalRange(disk, base, base + 8 * MiB, 0)]
    assert got["ranges"]["data"] == [
        truth.PhysicalRange(disk, base + 8 * MiB, base + 12 * MiB, 0),
        truth.PhysicalRange(disk, base + 16 * MiB, base + 20 * MiB, 4 * MiB),
    ]
    pv_end = GPT_PV_OFFSET + GPT_PV_SIZE
    assert got["free"] == [
        truth.FreeRange(disk, base + 12 * MiB, base + 16 * MiB),  # where "gap" was
        truth.FreeRange(disk, base + 20 * MiB, pv_end),  # 39 extents end at the partition end
    ]
    assert [s["lv_attr"][0] for s in got["segments"]] == ["-", "-", "-"]


def test_lvm_two_in_disk_bytes(lvm_set, report):
    one, two = lvm_set("lvm_two").images
    got = report("lvm_two")
    assert got["ranges"]["span"] == [
        truth.PhysicalRange(one, 1 * MiB + 2 * 2 * MiB, 1 * MiB + 7 * 2 * MiB, 0),
        truth.PhysicalRange(two, 1 * MiB + 3 * 2 * MiB, 1 * MiB + 5 * 2 * MiB, 10 * MiB),
    ]
    striped = got["ranges"]["striped"]
    assert len(striped) == 8 * MiB // (64 * KiB)
    for k, r in enumerate(striped):
        # chunk k: stripe k % 2, at (k // 2) * 64 KiB into that stripe's PE 0-1.
        start = 1 * MiB + (k // 2) * 64 * KiB
        assert r == truth.PhysicalRange((one, two)[k % 2], start, start + 64 * KiB, k * 64 * KiB)
    assert got["free"] == [
        truth.FreeRange(two, 1 * MiB + 2 * 2 * MiB, 1 * MiB + 3 * 2 * MiB),
        truth.FreeRange(two, 1 * MiB + 5 * 2 * MiB, 1 * MiB + 7 * 2 * MiB),
    ]


def test_lvm_whole_in_disk_bytes(lvm_set, report):
    disk = lvm_set("lvm_whole").images[0]
    got = report("lvm_whole")
    assert got["ranges"]["lv1"] == [truth.PhysicalRange(disk, 1 * MiB, 13 * MiB, 0)]
    # 7 extents of 4 MiB: the last 2 MiB before the second metadata area are no extent.
    assert got["free"] == [truth.FreeRange(disk, 13 * MiB, 29 * MiB)]
    assert got["vgs"][0]["vg_mda_count"] == 2


@pytest.mark.parametrize("name", LAYOUTS)
def test_lv_and_free_extents_tile_each_data_area(lvm_set, report, name):
    got = report(name)
    for pv in got["pvs"]:
        start = pv["pv_offset"] + pv["pe_start"]
        end = start + pv["pv_pe_count"] * pv["vg_extent_size"]
        pieces = sorted(
            [
                (r.start, r.end)
                for rs in got["ranges"].values()
                for r in rs
                if r.image == pv["image"]
            ]
            + [(f.start, f.end) for f in got["free"] if f.image == pv["image"]]
        )
        pos = start
        for lo, hi in pieces:
            assert lo == pos, f"{name}: gap or overlap at {pos:#x}"
            pos = hi
        assert pos == end
        used = sum(hi - lo for lo, hi in pieces) - sum(
            f.end - f.start for f in got["free"] if f.image == pv["image"]
        )
        assert used == pv["pv_pe_alloc_count"] * pv["vg_extent_size"]


@pytest.mark.parametrize(("name", "lv"), WITH_FS)
def test_big_file_crosses_the_lvs_boundaries(lvm_set, report, name, lv):
    image = lvm_set(name)
    ranges = report(name)["ranges"][lv]
    big = image.big_files[lv]
    pieces = truth.lv_file_extents(image.filesystems[lv], big.path, ranges)
    assert [p.file_offset for p in pieces] == sorted(p.file_offset for p in pieces)
    content = b"".join(read_at(p.image, p.start, p.end) for p in pieces)
    assert content == big.content()
    if lv == "data":  # both segments
        assert {
            next(i for i, r in enumerate(ranges) if r.start <= p.start < r.end) for p in pieces
        } == {0, 1}
    if lv in ("striped", "span"):  # both PVs
        assert {p.image for p in pieces} == set(image.images)
    if lv == "striped":  # chunk by chunk: no piece is larger than a chunk
        assert max(p.end - p.start for p in pieces) <= 64 * KiB


# --------------------------------------------------------------------------------------------
# pvck: labels and metadata areas


@pytest.mark.parametrize("name", HEALTHY)
def test_pvck_finds_label_and_metadata_areas(lvm_set, report, pvck, name):
    image = lvm_set(name)
    vg = report(name)["vgs"][0]
    for place, uuid, dump in zip(image.pvs, PV_UUIDS[name], pvck(name)):
        assert dump["exit_code"] == 0 and dump["checks"] == []
        label = dump["label_header"]
        assert (label["at"], label["id"], label["sector"], label["type"]) == (
            512,
            "LABELONE",
            1,
            "LVM2 001",
        )
        assert dump["label_sector"] == (place.offset + 512, place.offset + 1024)
        sector = read_at(place.image, place.offset + 512, place.offset + 1024)
        assert sector[:8] == b"LABELONE"
        # The label crc covers the sector from offset_xl (byte 20) on.
        assert truth.lvm_crc32(sector[20:]) == label["crc"]
        pv = dump["pv_header"]
        assert pv["pv_uuid"] == uuid.replace("-", "")
        assert pv["device_size"] == place.size
        assert pv["data_areas"] == [
            {"at": 584, "offset": KNOWN_LAYOUT[name]["pe_start"], "size": 0}
        ]
        areas = pv["metadata_areas"]
        assert areas[0]["offset"] == 4096 and areas[0]["size"] == 1 * MiB - 4096
        if name == "lvm_whole":  # --pvmetadatacopies 2: the disk's last MiB
            assert [(a["offset"], a["size"]) for a in areas[1:]] == [(31 * MiB, 1 * MiB)]
        else:
            assert len(areas) == 1
        assert len(dump["mda_headers"]) == len(areas)
        newest = set()
        for mda, area, records in zip(dump["mda_headers"], areas, dump["records"]):
            assert (mda["at"], mda["start"], mda["size"]) == (area["offset"],) * 2 + (area["size"],)
            raw = read_at(place.image, place.offset + mda["at"], place.offset + mda["at"] + 512)
            assert raw[4:20] == b" LVM2 x[5A%r0N*>"
            assert truth.lvm_crc32(raw[4:]) == mda["checksum"]
            commit = mda["raw_locns"][0]
            assert commit["role"] == "commit" and commit["flags"] == 0
            start = place.offset + mda["start"] + commit["offset"]
            assert start + commit["size"] <= place.offset + mda["start"] + mda["size"]  # no wrap
            text = read_at(place.image, start, start + commit["size"])
            assert truth.lvm_crc32(text) == commit["checksum"]
            assert text.startswith(f"{image.vg} {{".encode()) and text.endswith(b"\n\0")
            # pvck's records: every one inside the ring, the newest is what raw_locn points at.
            assert all(
                mda["start"] < r["at"] and r["at"] + r["length"] <= mda["start"] + mda["size"]
                for r in records
            )
            last = max(records, key=lambda r: r["seqno"])
            assert (last["at"], last["length"], last["crc"]) == (
                mda["start"] + commit["offset"],
                commit["size"],
                commit["checksum"],
            )
            assert last["seqno"] == vg["vg_seqno"]
            newest.add(commit["checksum"])
        assert len(newest) == 1  # every area holds the same newest record
        assert [t["crc"] for t in dump["metadata_text"]] == [
            m["raw_locns"][0]["checksum"] for m in dump["mda_headers"]
        ]


# --------------------------------------------------------------------------------------------
# the damaged image


def test_damaged_newest_record_fails_its_checksum(lvm_set, pvck):
    image = lvm_set("lvm_damaged_meta")
    damage = image.damage
    disk = image.images[0]
    dump = pvck("lvm_damaged_meta")[0]
    assert dump["exit_code"] == 5
    start, end = damage["record_start"], damage["record_end"]
    assert dump["checks"] == [
        f"metadata text at {start} crc does not match mda_header_1.raw_locn[0].checksum"
    ]
    mda = dump["mda_headers"][0]
    commit = mda["raw_locns"][0]
    assert commit["checksum"] == damage["raw_locn_checksum"]
    assert (mda["at"], commit["at"]) == (damage["mda_header"], damage["raw_locn"])
    assert (start, end) == (
        mda["start"] + commit["offset"],
        mda["start"] + commit["offset"] + commit["size"],
    )
    text = read_at(disk, start, end)
    crc = truth.lvm_crc32(text)
    assert crc == dump["metadata_text"][0]["crc"] == damage["crc_after"] != commit["checksum"]
    for change in damage["changed"]:
        assert start <= change["offset"] < end
        now = read_at(disk, change["offset"], change["offset"] + len(change["new"]))
        assert now == change["new"].encode() == b"LV"
    assert b"\nLV2 {" in text  # still good text: only the checksum tells
    # Undo the change in memory: then the checksum matches again.
    fixed = bytearray(text)
    for change in damage["changed"]:
        pos = change["offset"] - start
        fixed[pos : pos + len(change["old"])] = change["old"].encode()
    assert truth.lvm_crc32(bytes(fixed)) == commit["checksum"]


def test_damaged_previous_record_is_intact(lvm_set, pvck):
    image = lvm_set("lvm_damaged_meta")
    previous = image.damage["previous_record"]
    records = pvck("lvm_damaged_meta")[0]["records"][0]
    assert [r["seqno"] for r in records] == [1, 2, 3]
    second = next(r for r in records if r["seqno"] == previous["seqno"])
    assert (second["at"], second["at"] + second["length"], second["crc"]) == (
        previous["start"],
        previous["end"],
        previous["crc"],
    )
    assert previous["end"] <= image.damage["record_start"]  # the records do not overlap
    text = read_at(image.images[0], previous["start"], previous["end"])
    assert truth.lvm_crc32(text) == previous["crc"]
    assert b"\nlv1 {" in text and b"lv2" not in text and b"LV2" not in text


def test_damaged_vg_is_not_found_by_lvm(lvm_set):
    image = lvm_set("lvm_damaged_meta")
    disk = image.images[0]
    with truth.session_over([disk]) as session:
        proc = session.run("vgs", ok=(0, 5))
        assert "Checksum error on" in proc.stderr
        assert f"at offset {image.damage['record_start']}." in proc.stderr
        assert session.vgs_info() == []
        assert session.lvs_segments() == []
        (pv,) = session.pvs_info()
        assert (pv["vg_name"], pv["pv_uuid"]) == ("[unknown]", PV_UUIDS["lvm_damaged_meta"][0])
        assert session.free_pe_ranges() == []


def test_damaged_fallback_is_the_previous_record(lvm_set):
    """LVM does not fall back by itself; pvck --repair with record 2 on a copy says what the
    fallback is: lv1 alone, lv2's extent free."""
    image = lvm_set("lvm_damaged_meta")
    disk = image.images[0]
    fallback = truth.fallback_truth(disk, image.damage["previous_record"]["seqno"])
    assert fallback["vgs"][0]["vg_seqno"] == 2
    assert [s["lv_name"] for s in fallback["segments"]] == image.damage["lvs_in_previous_record"]
    assert fallback["ranges"]["lv1"] == [truth.PhysicalRange(disk, 1 * MiB, 9 * MiB, 0)]
    assert fallback["free"] == [truth.FreeRange(disk, 9 * MiB, 21 * MiB)]  # PE 2 (lv2) .. 4
    lv1 = truth.read_lv(fallback["ranges"]["lv1"], image.lv_sizes["lv1"])
    assert sha256(lv1) == sha256(image.filesystems["lv1"].read_bytes())
    assert truth.loops_of(disk) == []


# --------------------------------------------------------------------------------------------
# the wrapped metadata ring


def test_wrapped_newest_record(lvm_set, report):
    image = lvm_set("lvm_wrapped_meta")
    ring = image.ring
    disk = image.images[0]
    dump = truth.pvck_dump(disk)
    assert dump["exit_code"] == 0 and dump["checks"] == []
    (mda,) = dump["mda_headers"]
    assert (mda["start"], mda["size"]) == KNOWN_LAYOUT["lvm_wrapped_meta"]["metadata_area"]
    commit = mda["raw_locns"][0]
    assert commit["role"] == "commit wrapped"  # pvck's own word for it
    assert commit["offset"] + commit["size"] > mda["size"]
    assert (commit["offset"], commit["size"], commit["checksum"]) == (
        ring["offset"],
        ring["size"],
        ring["checksum"],
    )
    (first, second) = ring["parts"]
    assert first == [mda["start"] + commit["offset"], mda["start"] + mda["size"]]
    assert second[0] == mda["start"] + 512  # right after the mda_header, not at the area start
    assert (first[1] - first[0]) + (second[1] - second[0]) == commit["size"]
    text = read_at(disk, *first) + read_at(disk, *second)
    assert truth.lvm_crc32(text) == commit["checksum"] == dump["metadata_text"][0]["crc"]
    assert text.startswith(b"vgr {") and text.endswith(b"\n\0")
    # lvm itself reads the wrapped record: the VG is there at the newest seqno.
    got = report("lvm_wrapped_meta")
    assert got["vgs"][0]["vg_seqno"] == ring["seqno"] == dump["metadata_text"][0]["seqno"]
    assert sorted(got["ranges"]) == [f"lv{i}" for i in range(8)]
    newest = [r for r in dump["records"][0] if r["seqno"] == ring["seqno"]]
    assert [(r["at"], r["length"]) for r in newest] == [(first[0], commit["size"])]
    pieces = [(a, b) for _m, a, b, seqno in dump["records_disk"] if seqno == ring["seqno"]]
    assert pieces == [tuple(first), tuple(second)]


# --------------------------------------------------------------------------------------------
# the missing PV


def test_missing_pv_is_reported(lvm_set):
    image = lvm_set("lvm_missing_pv")
    assert len(image.images) == 1 and len(image.missing_pv_uuids) == 1
    got = truth.lvm_report(image.images)
    (vg,) = got["vgs"]
    assert (vg["vg_name"], vg["pv_count"], vg["vg_missing_pv_count"]) == ("vg2", 2, 1)
    assert vg["vg_attr"][3] == "p"  # partial
    missing = [p for p in got["pvs"] if p["missing"]]
    assert [p["pv_uuid"] for p in missing] == list(image.missing_pv_uuids)
    assert missing[0]["image"] is None
    for seg in got["segments"]:
        assert seg["lv_attr"][8] == "p"
    span = [s for s in got["segments"] if s["lv_name"] == "span"]
    assert [a["missing"] for s in span for a in s["pe_ranges"]] == [False, True]
    striped = next(s for s in got["segments"] if s["lv_name"] == "striped")
    assert [a["missing"] for a in striped["pe_ranges"]] == [False, True]
    # Only what is on the one image: the first 10 MiB of span, the even chunks of striped.
    disk = image.images[0]
    assert got["ranges"]["span"] == [truth.PhysicalRange(disk, 5 * MiB, 15 * MiB, 0)]
    assert [r.lv_offset for r in got["ranges"]["striped"]] == list(range(0, 8 * MiB, 128 * KiB))
    with pytest.raises(ValueError, match="on no given image"):
        truth.read_lv(got["ranges"]["span"], image.lv_sizes["span"])


# --------------------------------------------------------------------------------------------
# the isolation itself


def test_lvm_conf_is_valid_and_filters_to_the_session():
    try:
        session = truth.LvmSession()
    except NeedsRoot as exc:
        pytest.skip(str(exc))
    with session:
        proc = subprocess.run(
            [tool_path("lvmconfig"), "--validate"],
            capture_output=True,
            text=True,
            env=session.env,
            check=False,
        )
        assert proc.returncode == 0 and "LVM configuration valid" in proc.stdout, proc.stderr
        assert 'filter = [ "r|.*|" ]' in session.conf_text
        with pytest.raises(RuntimeError):
            session.run("pvcreate", "/dev/loop-control")  # rejected by the filter
    assert not session.dir.exists()


def test_a_failing_session_detaches_its_loops(lvm_set):
    disk = lvm_set("lvm_whole").images[0]
    with pytest.raises(RuntimeError, match="on purpose"), truth.session_over([disk]) as session:
        assert truth.loops_of(disk)
        raise RuntimeError("on purpose")
    assert truth.loops_of(disk) == []
    assert not session.dir.exists()


def test_scratch_copy_is_writable_and_goes_away(lvm_set):
    image = lvm_set("lvm_whole")
    with scratch_copy(image) as copy:
        assert copy.images[0] != image.images[0]
        assert copy.pvs[0].image == copy.images[0]
        assert sha256(copy.images[0].read_bytes()) == sha256(image.images[0].read_bytes())
        with open(copy.images[0], "r+b") as fh:
            fh.write(b"\xff")
        folder = copy.images[0].parent
    assert not folder.exists()


@pytest.mark.parametrize("name", NAMES)
def test_no_loop_device_left_behind(lvm_set, report, name):
    report(name)
    for path in lvm_set(name).images:
        assert truth.loops_of(path) == []
