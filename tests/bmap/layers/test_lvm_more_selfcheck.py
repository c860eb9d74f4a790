"""The LVM images of ``tests.lvm_images_more`` are what lvs, pvck and thin_dump say they are.

These check the fixtures, not bmap: every LV and hidden sub-LV is where the tools put it, each
mirror/raid1 leg holds the LV's ext4 byte for byte, raid0/raid5/thin LVs read back as their
ext4 through their stripes, parity and pool mappings, and the metadata text holds the
segment keys a parser needs. Also: which layouts ``lvcreate`` refuses without device-mapper,
with lvm's exact words (``raid1``, ``raid5``, ``thin`` are therefore made by
``vgcfgrestore``; ``made_with`` says so and a test pins it).

All of them need root and loop devices; without them they skip and say so.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import lvm_images_more as more
from tests import lvm_truth as truth
from tests.ext_images import MiB, NeedsRoot
from tests.lvm_images import (
    BIG_FILE,
    _sparse_file,
    lvm_images_cache_fixture,  # noqa: F401  (fixture lvm_images_cache)
)
from tests.lvm_images_more import (
    KNOWN_LAYOUT_MORE,
    LVCREATE_REFUSALS,
    NAMES_MORE,
    PV_UUIDS_MORE,
    SNAPSHOT_ZERO_REFUSAL,
    LvmMoreImage,
    lvm_more_image_factory_fixture,  # noqa: F401  (fixture lvm_more_image_factory)
)
from tests.lvm_truth import LvmSession, PvPlace

pytestmark = pytest.mark.root

WITH_FS = {
    "lvm_mirror": "mir",
    "lvm_snapshot": "origin",
    "lvm_raid0": "r0",
    "lvm_raid1": "r1",
    "lvm_raid5": "r5",
    "lvm_thin": "thin1",
}
LEGS = [("lvm_mirror", "mir", leg) for leg in ("mir_mimage_0", "mir_mimage_1")] + [
    ("lvm_raid1", "r1", leg) for leg in ("r1_rimage_0", "r1_rimage_1")
]
HIDDEN = re.compile(r"_(rimage|rmeta|mimage)_\d+$|_(mlog|tmeta|tdata|pmspare)$")

# The segment keys each set's metadata text must hold (one LV section each).
METADATA_KEYS = {
    "lvm_mirror": [
        'type = "mirror"',
        "mirror_count = 2",
        'mirror_log = "mir_mlog"',
        "region_size = ",
        'mirrors = [\n"mir_mimage_0", 0,\n"mir_mimage_1", 0\n]',
    ],
    "lvm_snapshot": [
        'type = "snapshot"',
        "chunk_size = 8",
        'origin = "origin"',
        'cow_store = "snap"',
        "\nsnapshot0 {\n",
    ],
    "lvm_raid0": [
        'type = "raid0"',
        "stripe_count = 2",
        "stripe_size = 128",
        'raid0_lvs = [\n"r0_rimage_0",\n"r0_rimage_1"\n]',
    ],
    "lvm_raid1": [
        'type = "raid1"',
        "device_count = 2",
        "region_size = 4096",
        'raids = [\n"r1_rmeta_0", "r1_rimage_0",\n"r1_rmeta_1", "r1_rimage_1"\n]',
    ],
    "lvm_raid5": [
        'type = "raid5_ls"',
        "device_count = 3",
        "stripe_size = 128",
        'raids = [\n"r5_rmeta_0", "r5_rimage_0",\n"r5_rmeta_1", "r5_rimage_1",\n'
        '"r5_rmeta_2", "r5_rimage_2"\n]',
    ],
    "lvm_thin": [
        'type = "thin-pool"',
        'metadata = "pool_tmeta"',
        'pool = "pool_tdata"',
        "transaction_id = 2",
        "chunk_size = 128",
        'type = "thin"',
        'thin_pool = "pool"',
        "device_id = 1",
        "device_id = 2",
    ],
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def more_set(lvm_more_image_factory) -> Callable[[str], LvmMoreImage]:
    return lvm_more_image_factory


@pytest.fixture(scope="session")
def report(more_set) -> Callable[[str], dict[str, Any]]:
    """``report(name)``: :func:`tests.lvm_images_more.report_more` of a set, asked once."""

    @functools.cache
    def get(name: str) -> dict[str, Any]:
        return more.report_more(more_set(name).images)

    return get


@pytest.fixture(scope="session")
def thin_meta(more_set, report, tmp_path_factory) -> dict[str, Any]:
    """The thin pool's metadata LV copied out of the image: its file and thin_dump of it."""
    image = more_set("lvm_thin")
    ranges = report("lvm_thin")["maps"]["pool_tmeta"]["ranges"]
    path = tmp_path_factory.mktemp("thin") / "tmeta.bin"
    path.write_bytes(truth.read_lv(ranges, image.lv_sizes["pool_tmeta"]))
    return {"file": path, "dump": more.thin_dump(path)}


def lv_bytes(name: str, image: LvmMoreImage, rep: dict[str, Any], thin: Any, lv: str) -> bytes:
    if name == "lvm_thin":
        tdata = rep["maps"]["pool_tdata"]["ranges"]
        device = image.extra["thin_devices"][lv]
        return more.read_sparse(more.thin_map(thin["dump"], device, tdata), image.lv_sizes[lv])
    return truth.read_lv(rep["maps"][lv]["ranges"], image.lv_sizes[lv])


# --------------------------------------------------------------------------------------------
# the builds


@pytest.mark.parametrize("name", NAMES_MORE)
def test_set_builds_and_describes_itself(more_set, name):
    image = more_set(name)
    want = KNOWN_LAYOUT_MORE[name]
    assert (image.vg, image.made_with, len(image.images)) == (
        want["vg"],
        want["made_with"],
        want["disks"],
    )
    assert all(p.exists() for p in image.images)
    assert image.pv_uuids == PV_UUIDS_MORE[name]
    assert all(fs.stat().st_size == image.lv_sizes[lv] for lv, fs in image.filesystems.items())
    assert image.copies == want["copies"]
    assert len(image.metadata_texts) == len(image.images)
    assert image.lvs_json is not None and image.lvs_json.exists()
    assert image.commands and all(c.startswith(("lvm ", "thin_restore ")) for c in image.commands)
    assert sum(p.stat().st_blocks * 512 for p in image.images) < 40 * MiB
    if image.made_with == "vgcfgrestore":
        assert (image.images[0].parent / "restore.vg").exists()
        assert any(c.startswith("lvm vgcfgrestore ") for c in image.commands)


@pytest.mark.parametrize("name", NAMES_MORE)
def test_layout_as_lvs_reports_it(more_set, report, name):
    image = more_set(name)
    got = report(name)
    assert more.layout_of(got["segments"], list(image.pvs)) == KNOWN_LAYOUT_MORE[name]["lvs"]
    pvs = {(p["image"], p["pv_offset"]): p for p in got["pvs"]}
    for place, uuid in zip(image.pvs, image.pv_uuids):
        pv = pvs[(place.image, place.offset)]
        assert (pv["pv_uuid"], pv["vg_name"], pv["pe_start"]) == (uuid, image.vg, 1 * MiB)
        assert pv["vg_extent_size"] == 1 * MiB
    for seg in got["segments"]:
        # Sub-LVs are hidden (lvs brackets them) and name their parent; the rest are not.
        assert seg["hidden"] == bool(HIDDEN.search(seg["lv_name"])), seg["lv_name"]
        if seg["hidden"] and seg["lv_name"] != "lvol0_pmspare":
            assert seg["lv_parent"] and seg["lv_name"].startswith(seg["lv_parent"] + "_")
        assert seg["lv_size"] == image.lv_sizes[seg["lv_name"]]


@pytest.mark.parametrize("name", NAMES_MORE)
def test_metadata_text_has_the_segment_keys(more_set, name):
    image = more_set(name)
    texts = [p.read_text() for p in image.metadata_texts]
    assert len({re.search(r"seqno (\d+)", t)[1] for t in texts}) == 1  # type: ignore[index]
    for key in METADATA_KEYS[name]:
        assert key in texts[0], key
    if image.made_with == "vgcfgrestore":
        assert "Write from vgcfgrestore" in texts[0]


@pytest.mark.parametrize("name", NAMES_MORE)
def test_metadata_text_is_the_one_on_disk(more_set, name):
    """The saved text is pvck's newest record: the same bytes are in the image's ring."""
    image = more_set(name)
    text = image.metadata_texts[0].read_text()
    body = text.split("---\n", 1)[1].rsplit("---", 1)[0].encode()
    with open(image.images[0], "rb") as fh:
        head = fh.read(1 * MiB)
    assert body.strip() and body.strip() in head


# --------------------------------------------------------------------------------------------
# the bytes


@pytest.mark.parametrize(("name", "lv", "leg"), LEGS)
def test_each_leg_holds_the_filesystem(more_set, report, name, lv, leg):
    image = more_set(name)
    maps = report(name)["maps"]
    want = sha256(image.filesystems[lv].read_bytes())
    leg_bytes = truth.read_lv(maps[leg]["ranges"], image.lv_sizes[leg])
    assert len(leg_bytes) == image.lv_sizes[lv]
    # The leg holds the LV from its byte 0 (raid1: data_offset 0; mirror: no header).
    assert sha256(leg_bytes) == want
    assert leg_bytes[0x438:0x43A] == b"\x53\xef"
    index = image.copies[lv].index(leg)
    assert sha256(truth.read_lv(maps[lv]["copies"][index], image.lv_sizes[lv])) == want


@pytest.mark.parametrize("name", NAMES_MORE)
def test_lv_reads_as_its_filesystem(more_set, report, thin_meta, name):
    image = more_set(name)
    lv = WITH_FS[name]
    data = lv_bytes(name, image, report(name), thin_meta, lv)
    assert sha256(data) == sha256(image.filesystems[lv].read_bytes())
    assert data[0x438:0x43A] == b"\x53\xef"


@pytest.mark.parametrize("name", NAMES_MORE)
def test_big_file_crosses_a_boundary(more_set, report, thin_meta, name):
    """The big file read from the disks through the layout is its content, and it is not one
    run on one disk (it crosses a segment, a chunk or a pool-block boundary)."""
    image = more_set(name)
    lv = WITH_FS[name]
    rep = report(name)
    legs = image.copies.get(lv) or [lv]
    crossing = False
    for leg in legs:
        if name == "lvm_thin":
            tdata = rep["maps"]["pool_tdata"]["ranges"]
            ranges = more.thin_map(thin_meta["dump"], image.extra["thin_devices"][lv], tdata)
        else:
            ranges = rep["maps"][leg]["ranges"]
        pieces = truth.lv_file_extents(image.filesystems[lv], BIG_FILE, ranges)
        data = b"".join(more.read_ranges([p]) for p in sorted(pieces, key=lambda p: p.file_offset))
        assert data == image.big_files[lv].content()
        runs = sorted((p.image, p.start, p.end) for p in pieces)
        joined = [runs[0]]
        for img, start, end in runs[1:]:
            if img == joined[-1][0] and start == joined[-1][2]:
                joined[-1] = (img, joined[-1][1], end)
            else:
                joined.append((img, start, end))
        crossing |= len(joined) > 1
    assert crossing


def test_raid5_parity_is_the_xor_of_each_row(more_set, report):
    image = more_set("lvm_raid5")
    maps = report("lvm_raid5")["maps"]
    chunk, n = image.extra["stripe_size"], image.extra["devices"]
    rimages = [truth.read_lv(maps[f"r5_rimage_{i}"]["ranges"], 4 * MiB) for i in range(n)]
    rows = 4 * MiB // chunk
    assert len(maps["r5"]["parity"]) == rows
    nonzero = 0
    for row in range(rows):
        acc = 0
        for rimage in rimages:
            acc ^= int.from_bytes(rimage[row * chunk : (row + 1) * chunk], "little")
        assert acc == 0, f"row {row}"
        parity = more.read_ranges(maps["r5"]["parity"][row])
        nonzero += any(parity)
    assert nonzero > 10
    # Any one rimage can be rebuilt from the other two: the LV reads the same without it.
    data, _ = more.raid5_ls_chunks(image.lv_sizes["r5"], chunk, n)
    lost = 0
    rebuilt = bytearray()
    for _, dev, off in data:
        if dev != lost:
            rebuilt += rimages[dev][off : off + chunk]
        else:
            a, b = (rimages[d][off : off + chunk] for d in range(n) if d != lost)
            rebuilt += bytes(x ^ y for x, y in zip(a, b))
    assert sha256(bytes(rebuilt)) == sha256(image.filesystems["r5"].read_bytes())


def test_raid5_chunk_placement_left_symmetric():
    """md's ALGORITHM_LEFT_SYMMETRIC on 3 devices: parity on 2, 1, 0, 2, ...; data follows the
    parity device and wraps."""
    data, parity = more.raid5_ls_chunks(6 * 64, 64, 3)
    assert parity == [(2, 0), (1, 64), (0, 128)]
    assert [(d, off) for _, d, off in data] == [
        (0, 0),
        (1, 0),
        (2, 64),
        (0, 64),
        (1, 128),
        (2, 128),
    ]


@pytest.mark.parametrize(
    ("name", "lvs"),
    [
        ("lvm_mirror", ["mir_mlog"]),
        ("lvm_snapshot", ["snap"]),
        ("lvm_raid1", ["r1_rmeta_0", "r1_rmeta_1"]),
        ("lvm_raid5", ["r5_rmeta_0", "r5_rmeta_1", "r5_rmeta_2"]),
        ("lvm_thin", ["lvol0_pmspare"]),
    ],
)
def test_logs_cow_and_rmeta_are_zero(more_set, report, name, lvs):
    """Nothing was activated: the kernel never wrote a mirror log, a dm-raid superblock or a
    snapshot header; lvm itself writes none of them with ``-Zn``."""
    image = more_set(name)
    for lv in lvs:
        assert not any(truth.read_lv(report(name)["maps"][lv]["ranges"], image.lv_sizes[lv]))


def test_snapshot_as_lvs_reports_it(more_set, report):
    image = more_set("lvm_snapshot")
    segs = {s["lv_name"]: s for s in report("lvm_snapshot")["segments"]}
    assert segs["origin"]["lv_attr"][0] == "o" and segs["snap"]["lv_attr"][0] == "s"
    assert segs["snap"]["origin"] == "origin"
    assert segs["snap"]["chunk_size"] == image.extra["chunk_size"] == 4096
    assert "snapshot0" not in segs  # in the metadata only
    # No exceptions: the snapshot reads as its origin.
    assert image.extra["snap_reads_as"] == "origin" and image.extra["cow_is_zero"]


def test_thin_pool_metadata(more_set, report, thin_meta):
    image = more_set("lvm_thin")
    rep = report("lvm_thin")
    segs = {s["lv_name"]: s for s in rep["segments"]}
    check = more.thin_check(thin_meta["file"])
    assert check.returncode == 0, check.stderr
    dump = thin_meta["dump"]
    assert dump["transaction"] == image.extra["transaction_id"] == 2
    assert dump["data_block_size"] == image.extra["chunk_size"] == segs["pool"]["chunk_size"]
    assert dump["nr_data_blocks"] == image.lv_sizes["pool_tdata"] // image.extra["chunk_size"]
    assert segs["pool"]["data_lv"].strip("[]") == "pool_tdata"
    assert segs["pool"]["metadata_lv"].strip("[]") == "pool_tmeta"
    assert segs["pool"]["transaction_id"] == "2"
    for lv, device in image.extra["thin_devices"].items():
        assert segs[lv]["pool_lv"] == "pool"
        assert int(segs[lv]["thin_id"]) == device
        assert device in dump["devices"]
        assert segs[lv]["areas"] == []  # no extents of its own
    assert dump["devices"][1]["mapped_blocks"] == image.extra["thin1_mapped_chunks"]
    # The mapping is scattered: thin1's chunks are not in pool order.
    blocks = [d for _, d, _ in sorted(dump["devices"][1]["mappings"])]
    assert blocks != sorted(blocks)
    # thin2: two chunks of a pattern, the rest unmapped (zeros).
    thin2 = lv_bytes("lvm_thin", image, rep, thin_meta, "thin2")
    chunk = image.extra["chunk_size"]
    pattern = more._data(image.extra["thin2"]["seed"], 2 * chunk)
    assert thin2[chunk : 3 * chunk] == pattern
    assert not any(thin2[:chunk]) and not any(thin2[3 * chunk :])


# --------------------------------------------------------------------------------------------
# what lvm2 refuses without device-mapper


def _scratch_vg(tmp_path: Path, session: LvmSession, disks: int) -> list[str]:
    devs = []
    for i in range(disks):
        disk = tmp_path / f"d{i}.img"
        _sparse_file(disk, 16 * MiB)
        devs.append(session.attach(PvPlace(disk, 0, 16 * MiB, None, i + 1), read_only=False))
    for dev in devs:
        session.run("pvcreate", "--norestorefile", dev)
    session.run("vgcreate", "-s", "1m", "vgx", *devs)
    return devs


@pytest.mark.parametrize("kind", list(LVCREATE_REFUSALS))
def test_lvcreate_refuses_without_device_mapper(tmp_path, kind):
    case = LVCREATE_REFUSALS[kind]
    try:
        session = LvmSession()
    except NeedsRoot as exc:
        pytest.skip(str(exc))
    with session:
        _scratch_vg(tmp_path, session, 3)
        for lv in case.get("setup", []):
            session.run("lvcreate", "-an", "-Zn", "-y", "-L", "4m", "-n", lv, "vgx")
        args = [a.replace("VG/", "vgx/") for a in case["args"]]
        snapshot = "-s" in args
        zero = [] if snapshot else ["-Zn"]
        tail = [] if snapshot else ["vgx"]
        proc = session.run("lvcreate", "-an", *zero, "-y", *args, *tail, ok=range(1, 256))
        assert case["error"] in proc.stderr, proc.stderr
        if snapshot:
            proc = session.run("lvcreate", "-an", "-Zn", "-y", *args, ok=range(1, 256))
            assert SNAPSHOT_ZERO_REFUSAL in proc.stderr, proc.stderr
        assert "r1" not in session.run("lvs", "-a", "--noheadings", "-o", "lv_name").stdout


def test_lvconvert_to_raid_or_thin_needs_activation(tmp_path):
    try:
        session = LvmSession()
    except NeedsRoot as exc:
        pytest.skip(str(exc))
    with session:
        _scratch_vg(tmp_path, session, 3)
        session.run("lvcreate", "-an", "-Zn", "-y", "-L", "4m", "-n", "lin", "vgx")
        for segtype in ("raid1", "raid5"):
            extra = ["-m1"] if segtype == "raid1" else []
            proc = session.run(
                "lvconvert", "-y", "--type", segtype, *extra, "vgx/lin", ok=range(1, 256)
            )
            assert "vgx/lin must be active to perform this operation." in proc.stderr
        proc = session.run("lvconvert", "-y", "-Zn", "--type", "thin-pool", "vgx/lin", ok=(5,))
        assert "thin-pool: Required device-mapper target(s) not detected" in proc.stderr


# --------------------------------------------------------------------------------------------
# hygiene


@pytest.mark.parametrize("name", NAMES_MORE)
def test_no_loop_device_left(more_set, report, name):
    report(name)
    for image in more_set(name).images:
        assert truth.loops_of(image) == []
