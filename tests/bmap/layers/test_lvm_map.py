"""The LVM map against lvs, pvs and pvck on images made by pvcreate, vgcreate and lvcreate.

- every LV's ``l`` lines equal the physical ranges ``lvs --segments`` reports (striped LVs
  chunk by chunk, an LV in two segments, a linear LV across two disks);
- free extents equal ``pvs --segments``; the label sector and metadata areas equal pvck;
- a file inside an LV lies where debugfs (on the LV's own ext4) and the segments say, and its
  bytes read back from those disk ranges equal the file;
- a damaged newest metadata record: the previous one is used, as ``pvck --repair`` with that
  record makes lvs say; a missing PV is a finding and the rest is mapped.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from click.testing import CliRunner

from bmap.cli import main
from bmap.images import open_images
from bmap.layers.mapper import map_images
from tests import lvm_truth as L
from tests.bmap.layers.test_ext_map import assert_nested_and_covering
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_image_factory_fixture,
    lvm_images_cache_fixture,
)

CASES = ["lvm_gpt", "lvm_whole", "lvm_two"]


@pytest.fixture(scope="module")
def mapped(lvm_image_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            case = lvm_image_factory(name)
            images = open_images(case.images)
            try:
                bmap = map_images(images)
            finally:
                for image in images:
                    image.close()
            cache[name] = (case, bmap, bmap.to_dataframe())
        return cache[name]

    return get


def coalesce(runs):
    out = []
    for disk, start, end, offset in sorted(runs, key=lambda r: (r[3], r[0], r[1])):
        if (
            out
            and out[-1][0] == disk
            and out[-1][2] == start
            and out[-1][3] + (out[-1][2] - out[-1][1]) == offset
        ):
            out[-1] = (disk, out[-1][1], end, out[-1][3])
        else:
            out.append((disk, start, end, offset))
    return out


def disk_of(case):
    return {path: i for i, path in enumerate(case.images, start=1)}


def our_lines(frame, type_, device, path=""):
    sel = frame[(frame["type"] == type_) & (frame["device"] == device)]
    if path:
        sel = sel[sel["path"] == path]
    return [
        (int(d), int(s), int(e), int(o))
        for d, s, e, o in zip(sel["disk"], sel["start"], sel["end"], sel["file_offset"])
    ]


@pytest.mark.parametrize("name", CASES)
def test_lv_lines_equal_lvs(mapped, name):
    case, bmap, frame = mapped(name)
    truth = L.physical_ranges(case.images)
    disks = disk_of(case)
    assert truth, "lvs reports LVs"
    for lv, ranges in truth.items():
        want = coalesce((disks[r.image], r.start, r.end, r.lv_offset) for r in ranges)
        got = coalesce(our_lines(frame, "l", f"/dev/{case.vg}/{lv}"))
        assert got == want, lv
    assert not [f for f in bmap.findings if f.severity >= 1], bmap.findings


@pytest.mark.parametrize("name", CASES)
def test_free_extents_equal_pvs(mapped, name):
    case, _bmap, frame = mapped(name)
    disks = disk_of(case)
    want = sorted((disks[f.image], f.start, f.end) for f in L.free_pe_ranges(case.images))
    sel = frame[(frame["type"] == "u") & (frame["kind"] == "free-extents")]
    got = sorted(zip(sel["disk"].tolist(), sel["start"].tolist(), sel["end"].tolist()))
    assert got == want


@pytest.mark.parametrize("name", CASES)
def test_label_and_metadata_areas_equal_pvck(mapped, name):
    case, _bmap, frame = mapped(name)
    for place in case.pvs:
        dump = L.pvck_dump(place.image, place.offset, place.size)
        on_disk = frame[frame["disk"] == place.disk]
        label = on_disk[on_disk["kind"] == "pv-label"]
        assert list(zip(label["start"], label["end"])) == [dump["label_sector"]]
        areas = on_disk[on_disk["kind"].isin(["lvm-metadata", "lvm-metadata-backup"])]
        assert sorted(zip(areas["start"], areas["end"])) == sorted(dump["metadata_areas_disk"])


@pytest.mark.parametrize("name", CASES)
def test_files_inside_lvs_are_where_the_segments_put_them(mapped, name):
    case, _bmap, frame = mapped(name)
    truth = L.physical_ranges(case.images)
    disks = disk_of(case)
    assert case.big_files
    for lv, big in case.big_files.items():
        want = coalesce(
            (disks[r.image], r.start, r.end, r.file_offset)
            for r in L.lv_file_extents(case.filesystems[lv], big.path, truth[lv])
        )
        path = big.path.decode() if isinstance(big.path, bytes) else big.path
        got = coalesce(our_lines(frame, "f", f"/dev/{case.vg}/{lv}", path))
        assert got == want, lv
        # And the bytes there are the file's.
        content = bytearray(big.size)
        for disk, start, end, offset in got:
            with open(case.images[disk - 1], "rb") as fh:
                fh.seek(start)
                piece = fh.read(end - start)
            piece = piece[: max(0, min(len(piece), big.size - offset))]
            content[offset : offset + len(piece)] = piece
        assert bytes(content) == big.content(), lv


@pytest.mark.parametrize("name", CASES)
def test_lines_nest_and_cover_every_disk(mapped, name):
    case, _bmap, frame = mapped(name)
    for disk, image in enumerate(case.images, start=1):
        assert_nested_and_covering(frame, image.stat().st_size, disk)


def test_damaged_newest_record_falls_back_to_the_previous(mapped):
    case, bmap, frame = mapped("lvm_damaged_meta")
    truth = L.fallback_truth(case.images[0], case.damage.get("previous_seqno", 2))
    disks = disk_of(case)
    for lv, ranges in truth["ranges"].items():
        want = coalesce((disks[r.image], r.start, r.end, r.lv_offset) for r in ranges)
        assert coalesce(our_lines(frame, "l", f"/dev/{case.vg}/{lv}")) == want, lv
    assert set(frame[frame["type"] == "l"]["device"]) == {
        f"/dev/{case.vg}/{lv}" for lv in truth["ranges"]
    }
    free = sorted((disks[f.image], f.start, f.end) for f in truth["free"])
    sel = frame[frame["kind"] == "free-extents"]
    assert sorted(zip(sel["disk"], sel["start"], sel["end"])) == free
    messages = " ".join(f.message for f in bmap.findings)
    assert "CRC mismatch" in messages and "older record" in messages


def test_missing_pv_is_a_finding_and_the_rest_is_mapped(mapped, lvm_image_factory):
    case, bmap, frame = mapped("lvm_missing_pv")
    full = lvm_image_factory("lvm_two")
    truth = L.physical_ranges(full.images)
    assert any("none of the images" in f.message for f in bmap.findings)
    # The linear LV's part on the present disk is mapped; the striped LV's contents are not.
    span = [r for r in truth["span"] if r.image == full.images[0]]
    want = coalesce((1, r.start, r.end, r.lv_offset) for r in span)
    assert coalesce(our_lines(frame, "l", f"/dev/{case.vg}/span")) == want
    # A striped segment with a stripe on the missing PV cannot be placed at all.
    assert not (frame["device"] == f"/dev/{case.vg}/striped").any()
    unplaced = {f.source for f in bmap.findings if "could be placed" in f.message}
    assert unplaced == {f"/dev/{case.vg}/striped", f"/dev/{case.vg}/span"}
    assert_nested_and_covering(frame, case.images[0].stat().st_size, 1)


def test_wrapped_metadata_record_is_read(mapped):
    case, bmap, frame = mapped("lvm_wrapped_meta")
    truth = L.physical_ranges(case.images)
    lvs = set(frame[frame["type"] == "l"]["device"])
    assert lvs == {f"/dev/{case.vg}/{lv}" for lv in truth}
    assert not [f for f in bmap.findings if f.severity >= 1], bmap.findings


def test_info_lists_what_lvs_lists(lvm_image_factory):
    case = lvm_image_factory("lvm_two")
    segments = L.lvs_segments(case.images)
    result = CliRunner().invoke(main, ["info", "--json", *map(str, case.images)])
    (vg,) = json.loads(result.stdout)["volume_groups"]
    assert vg["name"] == case.vg
    sizes = defaultdict(int)
    for seg in segments:
        sizes[seg["lv_name"]] += seg["seg_size"]
    assert {lv["name"]: lv["size"] for lv in vg["lvs"]} == dict(sizes)
    assert {pv["uuid"] for pv in vg["pvs"]} == set(case.pv_uuids)
    text = CliRunner().invoke(main, ["info", *map(str, case.images)]).stdout
    assert f"VG {case.vg}" in text and "2 stripes of 64.0 KiB" in text
