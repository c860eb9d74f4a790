"""Maps of the sample disks against sfdisk, sgdisk and the bytes themselves.

The partition lines must equal ``sfdisk --json`` exactly; the table structures must sit where
the tools say; and the innermost lines must cover every byte of every disk exactly once.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.layers.partitions import discover
from tests.conftest import TRUTH, run_tool, sfdisk_json

NODE_NUMBER = re.compile(r"(\d+)$")
PARTITIONED = [
    "mbr-extended",
    "mbr-4-primaries-tiny",
    "gpt-512",
    "gpt-damaged-primary",
    "gpt-damaged-entries",
    "ebr-loop",
]


def map_of(path):
    with Image(path) as image:
        return map_images([image]).to_dataframe()


RANK = {"v": 0, "p": 1, "l": 2}


def innermost_lines(frame):
    """Lines that contain no other line (computed naively: quadratic, for small maps).

    A line contains another that lies within it and is smaller, or that covers the same
    bytes one layer further in (a partition and the swap area that fills it).
    """
    rows = frame.to_dict("records")
    result = []
    for i, a in enumerate(rows):
        contains = any(
            j != i
            and b["disk"] == a["disk"]
            and a["start"] <= b["start"]
            and b["end"] <= a["end"]
            and (
                (b["end"] - b["start"]) < (a["end"] - a["start"])
                or RANK.get(b["type"], 3) > RANK.get(a["type"], 3)
            )
            for j, b in enumerate(rows)
        )
        if not contains:
            result.append(a)
    return result


def assert_covers_exactly_once(frame, disk_size, disk=1):
    cover = np.zeros(disk_size // 512, dtype=np.int32)
    for line in innermost_lines(frame[frame["disk"] == disk]):
        assert line["start"] % 512 == 0 and line["end"] % 512 == 0
        cover[line["start"] // 512 : line["end"] // 512] += 1
    assert cover.min() == 1 and cover.max() == 1, (
        f"sectors covered 0 times: {np.flatnonzero(cover == 0)[:5]}, "
        f"twice: {np.flatnonzero(cover > 1)[:5]}"
    )


def sfdisk_partitions(path, truth=None):
    truth = truth or sfdisk_json(path)
    ss = truth.get("sectorsize", 512)
    return sorted(
        (
            "/dev/sda" + NODE_NUMBER.search(p["node"]).group(1),
            p["start"] * ss,
            (p["start"] + p["size"]) * ss,
        )
        for p in truth["partitions"]
    )


def p_lines(frame):
    p = frame[frame["type"] == "p"]
    return sorted(zip(p["device"], p["start"].tolist(), p["end"].tolist()))


@pytest.mark.parametrize("name", ["mbr-extended", "mbr-4-primaries-tiny", "gpt-512"])
def test_partition_lines_equal_sfdisk(sample, name):
    path = sample(name)
    assert p_lines(map_of(path)) == sfdisk_partitions(path)


@pytest.mark.parametrize("name", [*PARTITIONED, "gpt-4k", "whole-disk-ext4", "truncated"])
def test_innermost_lines_cover_every_byte_once(sample, name):
    path = sample(name)
    assert_covers_exactly_once(map_of(path), path.stat().st_size)


def test_gpt_structures_where_sgdisk_says(sample):
    path = sample("gpt-512")
    out = run_tool("sgdisk", "-p", str(path)).stdout
    first, last = map(
        int,
        re.search(
            r"Main partition table begins at sector (\d+) and ends at "
            r"sector (\d+)",
            out,
        ).groups(),
    )
    frame = map_of(path)
    m = frame[frame["type"] == "m"].set_index("kind")
    size = path.stat().st_size
    assert (m.loc["mbr", "start"], m.loc["mbr", "end"]) == (0, 512)
    assert (m.loc["gpt-header", "start"], m.loc["gpt-header", "end"]) == (512, 1024)
    assert (m.loc["gpt-entries", "start"], m.loc["gpt-entries", "end"]) == (
        first * 512,
        (last + 1) * 512,
    )
    n_array = last - first + 1
    assert (m.loc["gpt-backup-header", "start"], m.loc["gpt-backup-header", "end"]) == (
        size - 512,
        size,
    )
    assert (m.loc["gpt-backup-entries", "start"], m.loc["gpt-backup-entries", "end"]) == (
        size - 512 - n_array * 512,
        size - 512,
    )


def test_gaps_are_unpartitioned_and_swap_is_named(sample):
    path = sample("gpt-512")
    frame = map_of(path)
    u = frame[(frame["type"] == "u") & (frame["kind"] == "unpartitioned")]
    assert set(u["device"]) == {"/dev/sda"}
    # sgdisk says 8125 free sectors inside the usable area; add the 2048-34 alignment gap's
    # complement: everything between structures and partitions.
    out = run_tool("sgdisk", "-p", str(path)).stdout
    free = int(re.search(r"Total free space is (\d+) sectors", out).group(1))
    assert int((u["end"] - u["start"]).sum()) == free * 512
    swap = frame[(frame["type"] == "m") & (frame["kind"] == "swap")]
    assert swap[["device", "start", "end"]].values.tolist() == [["/dev/sda3", 0x1600000, 0x1A00000]]


def test_mbr_extended_structures(sample):
    path = sample("mbr-extended")
    frame = map_of(path)
    ebrs = frame[(frame["type"] == "m") & (frame["kind"] == "ebr")]
    data = path.read_bytes()
    assert len(ebrs) == 3
    assert set(ebrs["device"]) == {"/dev/sda4"}
    for start in ebrs["start"]:
        assert data[start + 510 : start + 512] == b"\x55\xaa"
    inside = frame[(frame["type"] == "u") & (frame["device"] == "/dev/sda4")]
    assert len(inside) > 0  # the gaps between logical partitions are named inside sda4


def test_gpt_4k_live_on_a_4k_loop_device(sample, loop_device):
    """sfdisk on a loop device with 4096-byte sectors is the truth; bmap reads the device."""
    path = sample("gpt-4k")
    dev = loop_device(path, 4096)
    truth = sfdisk_json(dev)
    assert truth["sectorsize"] == 4096
    expected = sfdisk_partitions(dev, truth)
    with Image(dev) as image:
        assert image.is_block_device and image.sector_size == 4096
        disk = discover(image)
        assert disk.sector_size == 4096
        frame = map_images([image]).to_dataframe()
    assert p_lines(frame) == expected
    stored = json.loads((TRUTH / "gpt-4k.sfdisk.json").read_text())["partitiontable"]
    assert sfdisk_partitions(dev, stored) == expected


def test_ebr_loop_maps_what_precedes_the_loop(sample):
    path = sample("ebr-loop")
    with Image(path) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    before = json.loads((TRUTH / "ebr-loop.before-patch.sfdisk.json").read_text())
    assert p_lines(frame) == sfdisk_partitions(path, before["partitiontable"])
    assert [str(f.severity) for f in bmap.findings if "loop" in f.message] == ["error"]


def test_truncated_image_maps_what_is_there(sample):
    path = sample("truncated")
    with Image(path) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    size = path.stat().st_size
    assert frame["end"].max() == size
    full = dict((d, (s, e)) for d, s, e in sfdisk_partitions(sample("gpt-512")))
    lines = dict((d, (s, e)) for d, s, e in p_lines(frame))
    assert lines["/dev/sda1"] == full["/dev/sda1"]
    assert lines["/dev/sda2"] == (full["/dev/sda2"][0], size)
    assert "/dev/sda3" not in lines
    errors = [f for f in bmap.findings if str(f.severity) == "error"]
    assert {f.source for f in errors if f.source.count(" ") == 0} == {
        "/dev/sda2",
        "/dev/sda3",
        "/dev/sda4",
    }
    # The ext4 in the cut partition says the filesystem is larger than what is left of it.
    assert any(f.source == "/dev/sda2 superblock" and "claims" in f.message for f in errors)


def test_whole_disk_filesystem_is_the_disk_itself(sample):
    path = sample("whole-disk-ext4")
    with Image(path) as image:
        disk = discover(image)
    assert disk.scheme == "none"
    assert disk.content.kind == "ext4"
    blkid = run_tool("blkid", "-p", "-o", "export", str(path)).stdout
    assert f"TYPE={disk.content.kind}" in blkid
    assert f"LABEL={disk.content.label}" in blkid


def test_two_disks_are_numbered_in_order(sample):
    a, b = sample("gpt-512"), sample("mbr-extended")
    with Image(a, 1) as ia, Image(b, 2) as ib:
        frame = map_images([ia, ib]).to_dataframe()
    assert frame[frame["type"] == "v"][["disk", "device"]].values.tolist() == [
        [1, "/dev/sda"],
        [2, "/dev/sdb"],
    ]
    second = frame[(frame["disk"] == 2) & (frame["type"] == "p")]
    assert sorted(zip(second["device"], second["start"], second["end"])) == [
        (d.replace("sda", "sdb"), s, e) for d, s, e in sfdisk_partitions(b)
    ]
    assert_covers_exactly_once(frame, b.stat().st_size, disk=2)


def test_whole_disk_filesystem_not_mapped_inside_is_covered_as_unmapped(tmp_path):
    """mkfs.btrfs on a disk with no table: bmap does not read btrfs; the disk is still
    covered, by one u unmapped line, and a finding says why."""
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as fh:
        fh.truncate(128 << 20)
    run_tool("mkfs.btrfs", "-q", "-L", "WHOLE", str(image))
    with Image(image) as img:
        bmap = map_images([img])
    frame = bmap.to_dataframe()
    assert frame[["type", "kind", "start", "end"]].values.tolist() == [
        ["v", "disk", 0, 128 << 20],
        ["u", "unmapped", 0, 128 << 20],
    ]
    assert any("holds btrfs" in f.message for f in bmap.findings)
    assert_covers_exactly_once(frame, 128 << 20)
