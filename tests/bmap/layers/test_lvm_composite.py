"""LVs made of sub-volumes: mirror, raid1, raid0, raid5, thin, snapshot.

lvm2 here cannot create most of them without device-mapper (tests/lvm_images_more.py says
which were made by lvcreate/lvconvert and which through vgcfgrestore of edited metadata);
the truth is what ``lvs -a --segments`` reports for every LV and hidden sub-LV.
"""

from __future__ import annotations

import pytest

from bmap.images import open_images
from bmap.layers.mapper import map_images
from tests.bmap.layers.test_ext_map import assert_nested_and_covering
from tests.bmap.layers.test_lvm_map import coalesce, our_lines
from tests.lvm_images import lvm_images_cache_fixture  # noqa: F401 - pytest fixture
from tests.lvm_images_more import (  # noqa: F401 - pytest fixture
    lvm_more_image_factory_fixture,
    report_more,
)

ALL = ["lvm_mirror", "lvm_snapshot", "lvm_raid0", "lvm_raid1", "lvm_raid5", "lvm_thin"]


@pytest.fixture(scope="module")
def mapped(lvm_more_image_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            case = lvm_more_image_factory(name)
            images = open_images(case.images)
            try:
                bmap = map_images(images)
            finally:
                for image in images:
                    image.close()
            cache[name] = (case, bmap, bmap.to_dataframe(), report_more(case.images))
        return cache[name]

    return get


def ranges_of(case, truth_ranges):
    disks = {path: i for i, path in enumerate(case.images, start=1)}
    return coalesce((disks[r.image], r.start, r.end, r.lv_offset) for r in truth_ranges)


@pytest.mark.parametrize("name", ALL)
def test_every_lv_and_sub_lv_with_extents_has_its_lines(mapped, name):
    case, _bmap, frame, truth = mapped(name)
    checked = 0
    for lv, entry in truth["maps"].items():
        if "copies" in entry or "parity" in entry or not entry["ranges"]:
            continue  # composite LVs: checked below
        got = coalesce(our_lines(frame, "l", f"/dev/{case.vg}/{lv}"))
        assert got == ranges_of(case, entry["ranges"]), lv
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name", ALL)
def test_lines_nest_and_cover(mapped, name):
    case, _bmap, frame, _truth = mapped(name)
    for disk, image in enumerate(case.images, start=1):
        assert_nested_and_covering(frame, image.stat().st_size, disk)


@pytest.mark.parametrize("name", ["lvm_mirror", "lvm_raid1"])
def test_mirrored_contents_go_through_the_first_leg(mapped, name):
    case, bmap, frame, truth = mapped(name)
    (lv, legs) = next(iter(case.copies.items()))
    first = truth["maps"][legs[0]]["ranges"]
    assert coalesce(our_lines(frame, "l", f"/dev/{case.vg}/{lv}")) == ranges_of(case, first)
    notes = [f.message for f in bmap.findings if f.source == f"/dev/{case.vg}/{lv}"]
    assert any(f"through leg {legs[0]}" in n and legs[1] in n for n in notes), notes
    # The file inside reads back from the disk ranges bmap gives.
    big = case.big_files[lv]
    assert_file_reads_back(case, frame, lv, big)


def assert_file_reads_back(case, frame, lv, big):
    path = big.path.decode() if isinstance(big.path, bytes) else big.path
    lines = our_lines(frame, "f", f"/dev/{case.vg}/{lv}", path)
    assert lines
    content = bytearray(big.size)
    for disk, start, end, offset in lines:
        with open(case.images[disk - 1], "rb") as fh:
            fh.seek(start)
            piece = fh.read(end - start)
        piece = piece[: max(0, min(len(piece), big.size - offset))]
        content[offset : offset + len(piece)] = piece
    assert bytes(content) == big.content()


def test_raid0_contents_are_placed_chunk_by_chunk(mapped):
    case, _bmap, frame, truth = mapped("lvm_raid0")
    lv = next(iter(case.big_files))
    want = ranges_of(case, truth["maps"][lv]["ranges"])
    assert coalesce(our_lines(frame, "l", f"/dev/{case.vg}/{lv}")) == want
    assert_file_reads_back(case, frame, lv, case.big_files[lv])


def test_snapshot_origin_is_mapped_and_the_cow_named(mapped):
    case, bmap, frame, _truth = mapped("lvm_snapshot")
    lv = next(iter(case.big_files))
    assert_file_reads_back(case, frame, lv, case.big_files[lv])
    notes = " ".join(f.message for f in bmap.findings)
    assert "snapshot of origin origin" in notes and "copy-on-write area is LV snap" in notes


@pytest.mark.parametrize(
    "name, words",
    [
        ("lvm_raid5", "segment type raid5_ls: its contents are not mapped yet"),
        ("lvm_thin", "thin volume in pool pool"),
    ],
)
def test_unsupported_contents_are_a_clear_finding(mapped, name, words):
    _case, bmap, frame, _truth = mapped(name)
    assert any(words in f.message for f in bmap.findings)
    assert not (frame["type"] == "f").any()
    if name == "lvm_thin":
        assert any("thin pool: data in pool_tdata" in f.message for f in bmap.findings)
