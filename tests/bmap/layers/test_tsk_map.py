"""The pytsk3 layer (FAT12/16/32, exFAT, NTFS, ISO9660) against truth from outside bmap.

- every file's bytes, read back from the image at the map's ranges in file-offset order,
  equal what was written into the filesystem (tests/tsk_images.py keeps the sources);
- the map's files, directories and NTFS streams are the ones ``fls -r -p`` lists, and each
  file's ranges are the sectors (FAT, exFAT) or clusters (NTFS) ``istat`` lists;
- the FAT structures sit where ``fsck.fat -v`` says and where the boot sector, decoded by
  hand in tests/tsk_truth.py, puts them; free space equals fsck.fat's free clusters; the
  exFAT and ISO9660 structures where their boot sector and volume descriptors say;
- the lines cover every byte of the volume, the innermost ones once on FAT;
- an NTFS in an LV of two segments (lvm_gpt) and one laid in two swapped pieces map through
  their placement; the EFI system partition of a GPT disk maps its files;
- deleted entries are findings, never lines; damaged filesystems give findings, never
  tracebacks; TSK never reads outside its volume.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bmap.errors import Severity
from bmap.images import Image, RangeStream
from bmap.images.streams import MappedReader
from bmap.layers import tsk
from bmap.layers.content import Volume
from bmap.layers.mapper import map_images
from bmap.layers.placement import Placement, Segment
from bmap.model.blockmap import MapBuilder
from bmap.model.intervals import subtract, union
from bmap.store.mapfile import dumps_map
from parsers.probe import Content
from tests import lvm_truth
from tests import tsk_truth as T
from tests.bmap.layers.test_map_samples import assert_covers_exactly_once
from tests.hostile.craft import NtfsVolume, copy_image, encode_run
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_gpt_image_fixture,
    lvm_images_cache_fixture,
    scratch_copy,
)
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    ESP_OFFSET,
    ESP_SIZE,
    source_files,
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)
from tests.ufs_images import SYMLINK

FAT_IMAGES = ["fat12", "fat16", "fat32"]
ALL_IMAGES = [*FAT_IMAGES, "ntfs", "exfat", "iso", "hfsplus", "ufs1", "ufs1_be"]


@pytest.fixture(scope="module")
def mapped(tsk_image_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            path = tsk_image_factory(name)
            with Image(path) as image:
                bmap = map_images([image])
            cache[name] = (path, bmap, bmap.to_dataframe())
        return cache[name]

    return get


def ranges_by_path(frame, types=("f",), kinds=None):
    """``{path: [(file_offset, start, end)]}`` of the chosen lines, sorted by file offset."""
    sel = frame[frame["type"].isin(types)]
    if kinds is not None:
        sel = sel[sel["kind"].isin(kinds)]
    out = defaultdict(list)
    for path, fo, start, end in zip(sel["path"], sel["file_offset"], sel["start"], sel["end"]):
        out[path].append((int(fo), int(start), int(end)))
    return {k: sorted(v) for k, v in out.items()}


def contents(image: Path, runs, size: int) -> bytes:
    """A file's bytes from its runs: each run at its file offset, holes as zeros."""
    out = bytearray(max([size] + [fo + (e - s) for fo, s, e in runs]))
    with open(image, "rb") as fh:
        for fo, s, e in runs:
            fh.seek(s)
            out[fo : fo + e - s] = fh.read(e - s)
    return bytes(out[:size])


def structure(frame, kind):
    sel = frame[(frame["type"] == "m") & (frame["kind"] == kind)]
    return sorted(zip(sel["start"].tolist(), sel["end"].tolist()))


# -- contents -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_file_bytes_at_the_map_ranges_equal_the_sources(mapped, name):
    image, _, frame = mapped(name)
    files = ranges_by_path(frame)
    sources = source_files(image)
    checked = 0
    for path, content in sources.items():
        if name == "ntfs" and path.startswith("/packed/"):
            continue  # compressed: the stored ranges are not the content (below)
        if not content:
            assert path not in files, f"{path}: an empty file has no lines"
            continue
        assert path in files, f"{path} is not in the map"
        assert contents(image, files[path], len(content)) == content, path
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name", ["fat12", "fat16", "fat32", "exfat", "ntfs"])
def test_the_fragmented_file_has_several_runs(mapped, name):
    _, _, frame = mapped(name)
    runs = ranges_by_path(frame)["/frag.bin"]
    gaps = [b[1] - a[2] for a, b in itertools.pairwise(runs)]
    assert any(g != 0 for g in gaps), runs
    # Offsets inside the file follow each other.
    assert [fo for fo, _, _ in runs] == list(np.cumsum([0] + [e - s for _, s, e in runs[:-1]]))


def test_fat_files_cover_whole_clusters(mapped):
    image, _, frame = mapped("fat16")
    boot = T.boot_sector_fat(image)
    cluster = boot["bytes_per_sector"] * boot["sectors_per_cluster"]
    for path, content in source_files(image).items():
        if content:
            runs = ranges_by_path(frame)[path]
            assert sum(e - s for _, s, e in runs) == -(-len(content) // cluster) * cluster


# -- fls and istat --------------------------------------------------------------------------


def _fls_expected(image: Path, offset_sectors: int = 0):
    """fls's allocated names, without TSK's virtual files and the volume label."""
    listed = {}
    for entry in T.fls(image, offset_sectors):
        if entry.deleted or entry.type.startswith(("v/", "V/")) or "$OrphanFiles" in entry.path:
            continue
        if entry.path.endswith("(Volume Label Entry)"):
            continue
        listed[entry.path] = entry
    return listed


def _stream_of(path: str) -> str:
    """An NTFS ``path:name:$TYPE`` as fls lists it: ``path:name`` (``path`` for the
    directory index ``$I30`` and an unnamed attribute)."""
    m = re.fullmatch(r"(.*?):([^:]*):(\$[A-Z_]+)", path)
    if not m:
        return path
    base, name, _ = m.groups()
    return base + (":" + name if name and name != "$I30" else "")


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_the_map_names_what_fls_lists(mapped, name):
    image, _, frame = mapped(name)
    listed = _fls_expected(image)
    named = set(frame[frame["type"].isin(["f", "d"])]["path"])
    system = frame["kind"].str.startswith(("mft", "ntfs-", "exfat-"))
    named |= set(frame[system & (frame["kind"] != "mft-record")]["path"])
    named.discard("")
    # Every name the map gives is one fls lists (or "/"), streams and attributes included
    # (an MFT record is named by its file, which fls lists only by its streams).
    assert {_stream_of(p) for p in named} - {"/"} <= set(listed)
    # Every non-empty source file is in both.
    for path, content in source_files(image).items():
        assert path in listed, f"fls does not list {path}"
        if content and not (name == "ntfs" and path.startswith("/packed/")):
            assert path in named, path
    if name == "ntfs":  # and every system file fls lists (its data may be resident)
        system = {p for p in listed if p.startswith("/$") and "$OrphanFiles" not in p}
        records = set(frame[frame["kind"] == "mft-record"]["path"])
        assert {p.split(":")[0] for p in system} <= records


@pytest.mark.parametrize("name", [*FAT_IMAGES, "exfat"])
def test_fat_file_ranges_are_the_sectors_istat_lists(mapped, name):
    image, _, frame = mapped(name)
    listed = _fls_expected(image)
    files = ranges_by_path(frame, ("f", "d"))
    if name == "exfat":
        with open(image, "rb") as fh:
            boot = fh.read(512)
        cluster_sectors = 1 << boot[109]
    else:
        cluster_sectors = T.boot_sector_fat(image)["sectors_per_cluster"]
    compared = 0
    for path, runs in files.items():
        if path not in listed or path == "/":
            continue
        _, attrs = T.istat(image, listed[path].meta)
        sectors = [a for a in attrs if a.header == "Sectors:"]
        assert sectors, path
        # istat lists the sectors inside the size (a line padded with 0s); the map's lines
        # hold whole clusters: the same sectors, in file order, and the cluster's tail.
        want = [x for a in sectors for x in a.blocks if x != 0]
        got = [x for _, s, e in runs for x in range(s // 512, e // 512)]
        assert got[: len(want)] == want, path
        assert len(got) - len(want) < cluster_sectors, path
        compared += 1
    assert compared >= 8


def test_ntfs_runs_are_the_clusters_istat_lists(mapped):
    image, _, frame = mapped("ntfs")
    listed = _fls_expected(image)
    files = ranges_by_path(frame)
    sources = source_files(image)
    compared = 0
    for path, content in sources.items():
        if not content or path.startswith("/packed/") or path not in files:
            continue
        _, attrs = T.istat(image, listed[path].meta)
        stream = path.split(":", 1)[1] if ":" in path else None
        (attr,) = [
            a
            for a in attrs
            if a.header.startswith("Type: $DATA")
            and (f"Name: {stream} " in a.header if stream else "Name: N/A" in a.header)
        ]
        got = sorted(x for _, s, e in files[path] for x in range(s // 4096, e // 4096))
        if "Resident" in attr.header and "Non-Resident" not in attr.header:
            assert len(files[path]) == 1 and files[path][0][2] - files[path][0][1] == len(content)
        else:
            assert got == sorted(attr.blocks), path
        compared += 1
    assert compared >= 6


# -- NTFS specifics ----------------------------------------------------------------------------


def test_ntfs_resident_data_lies_inside_its_mft_record(mapped):
    image, _, frame = mapped("ntfs")
    ((offset, start, end),) = ranges_by_path(frame)["/README.txt"]
    assert offset == 0
    records = ranges_by_path(frame, ("m",), ["mft-record"])["/README.txt"]
    ((_, rec_start, rec_end),) = records
    assert rec_start <= start < end <= rec_end and rec_end - rec_start == 1024
    assert T.read_ranges(image, [(start, end)]) == source_files(image)["/README.txt"]
    mft = structure(frame, "mft")
    assert any(lo <= rec_start and rec_end <= hi for lo, hi in mft)


def test_ntfs_hard_links_and_streams_are_named(mapped):
    _, _, frame = mapped("ntfs")
    files = ranges_by_path(frame)
    assert [r[1:] for r in files["/hardlink.bin"]] == [r[1:] for r in files["/docs/big.bin"]]
    assert "/docs/big.bin:bigstream" in files and "/docs/big.bin:small" in files
    # The small stream is resident: inside the file's MFT record.
    ((_, s, e),) = files["/docs/big.bin:small"]
    ((_, rs, re_),) = ranges_by_path(frame, ("m",), ["mft-record"])["/docs/big.bin"]
    assert rs <= s < e <= re_


def test_ntfs_compressed_file_names_its_stored_ranges_only(mapped):
    image, _, frame = mapped("ntfs")
    listed = _fls_expected(image)
    text, attrs = T.istat(image, listed["/packed/text.txt"].meta)
    (attr,) = [a for a in attrs if a.header.startswith("Type: $DATA")]
    runs = ranges_by_path(frame)["/packed/text.txt"]
    stored = sum(e - s for _, s, e in runs)
    if "Compressed" not in text:
        pytest.skip("ntfs-3g did not compress the file")
    assert 0 < stored < len(source_files(image)["/packed/text.txt"])
    # The stored clusters are those istat lists, without the sparse ones it prints as 0.
    got = sorted(x for _, s, e in runs for x in range(s // 4096, e // 4096))
    assert got == sorted(b for b in attr.blocks if b != 0)


def test_ntfs_system_files_are_metadata(mapped):
    _, _, frame = mapped("ntfs")
    kinds = set(frame[frame["type"] == "m"]["kind"])
    assert {"mft", "mft-mirror", "ntfs-log", "ntfs-bitmap", "ntfs-boot", "ntfs-upcase"} <= kinds
    assert {"ntfs-secure", "ntfs-extend", "mft-record"} <= kinds
    (boot,) = structure(frame, "ntfs-boot")
    assert boot[0] == 0
    assert not (frame["path"].str.startswith("/$MFT") & (frame["type"] == "f")).any()


# -- FAT structures against fsck.fat and the boot sector --------------------------------------


@pytest.mark.parametrize("name", FAT_IMAGES)
def test_fat_structures_where_fsck_fat_and_the_boot_sector_say(mapped, name):
    image, _, frame = mapped(name)
    fsck = T.fsck_fat(image)
    boot = T.boot_sector_fat(image)
    bps = boot["bytes_per_sector"]
    assert structure(frame, "fat-boot-sector") == [(0, bps)]
    fat_bytes = boot["fat_sectors"] * bps
    assert (
        fsck["bytes_per_fat"] == fat_bytes and fsck["first_fat"] == boot["reserved_sectors"] * bps
    )
    assert structure(frame, "fat") == [(fsck["first_fat"], fsck["first_fat"] + fat_bytes)]
    assert structure(frame, "fat-backup") == [
        (fsck["first_fat"] + i * fat_bytes, fsck["first_fat"] + (i + 1) * fat_bytes)
        for i in range(1, fsck["fats"])
    ]
    if name == "fat32":
        assert structure(frame, "fat-fsinfo") == [
            (boot["fsinfo_sector"] * bps, (boot["fsinfo_sector"] + 1) * bps)
        ]
        backup = boot["backup_boot_sector"] * bps
        assert structure(frame, "fat-boot-sector-backup") == [(backup, backup + bps)]
        assert structure(frame, "fat-root-dir") == []
        assert "/" in set(frame[frame["type"] == "d"]["path"])
    else:
        assert structure(frame, "fat-root-dir") == [(fsck["root_dir"], fsck["data_start"])]
        assert fsck["data_start"] - fsck["root_dir"] == boot["root_entries"] * 32
    # Free space: the clusters fsck.fat counts free.
    unalloc = frame[(frame["type"] == "u") & (frame["kind"] == "unallocated")]
    free = int((unalloc["end"] - unalloc["start"]).sum())
    assert free == (fsck["total_clusters"] - fsck["used_clusters"]) * fsck["bytes_per_cluster"]


#: ``-f`` of TSK's tools for each image.
TSK_TYPE = {"fat12": "fat", "fat16": "fat", "fat32": "fat", "ntfs": "ntfs", "exfat": "exfat"}
TSK_TYPE |= {"iso": "iso9660", "hfsplus": "hfs", "ufs1": "ufs1", "ufs1_be": "ufs1"}


# Not ISO9660: it has no allocation table, and TSK's block walk there calls the system area
# and the volume descriptors free (blocks 0-31) and everything up to the last file's end used.
@pytest.mark.parametrize("name", [n for n in ALL_IMAGES if n != "iso"])
def test_unallocated_is_what_tsks_block_walk_calls_free(mapped, name):
    """``u unallocated`` is every block ``blkls -l -e`` calls free, less what a line of the
    map holds (a free block in use is a finding instead). TSK also calls free the sectors
    after the last whole cluster (bmap's ``*-tail``)."""
    image, _bmap, frame = mapped(name)
    free_kinds = ["unallocated", "fat-tail", "exfat-tail", "ntfs-tail"]
    free, listed = T.blkls_free(image, TSK_TYPE[name])
    claimed = frame[frame["type"].isin(["f", "d", "m"])]
    expect = subtract(
        (np.array([r[0] for r in free], np.int64), np.array([r[1] for r in free], np.int64)),
        union(claimed["start"].to_numpy(), claimed["end"].to_numpy()),
    )
    unalloc = frame[(frame["type"] == "u") & frame["kind"].isin(free_kinds)]
    # Only the blocks TSK lists (not the volume slack after the filesystem).
    unalloc = unalloc[unalloc["start"] < listed]
    got = union(unalloc["start"].to_numpy(), np.minimum(unalloc["end"], listed).to_numpy())
    assert got[0].tolist() == expect[0].tolist() and got[1].tolist() == expect[1].tolist()
    if name != "hfsplus":  # xorriso leaves no free block
        assert len(got[0]) > 0


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_byte_is_covered(mapped, name):
    image, bmap, frame = mapped(name)
    size = image.stat().st_size
    inner = frame[frame["type"] != "v"]
    s, e = union(inner["start"].to_numpy(), inner["end"].to_numpy())
    assert s.tolist() == [0] and e.tolist() == [size]
    assert bmap.covered_bytes() == size
    assert not [f for f in bmap.findings if "gives no place" in f.message], bmap.findings
    if name in [*FAT_IMAGES, "hfsplus", "ufs1", "ufs1_be"]:
        assert_covers_exactly_once(frame, size)


@pytest.mark.parametrize("name", FAT_IMAGES)
def test_deleted_entries_are_findings_not_lines(mapped, name):
    image, bmap, frame = mapped(name)
    # FAT marks a deleted entry by its first byte: fls and bmap show "_one.txt".
    deleted = [e for e in T.fls(image) if e.deleted and "$OrphanFiles" not in e.path]
    assert "/dir1/_one.txt" in {e.path for e in deleted}
    paths = set(frame["path"])
    assert not paths & {e.path for e in deleted}
    assert not any("one.txt" in p or "ILL0" in p or "ILL2" in p for p in paths)
    (finding,) = [f for f in bmap.findings if "deleted" in f.message]
    assert "'/dir1/_one.txt'" in finding.message and finding.severity == Severity.INFO
    assert finding.message.startswith(f"{len(deleted)} deleted")


def test_fat_volume_label_and_virtual_files_are_not_files(mapped):
    _, _, frame = mapped("fat16")
    paths = set(frame["path"])
    assert not any("Volume Label" in p or p.startswith("/$") for p in paths)


# -- the EFI system partition ----------------------------------------------------------------


def test_an_esp_in_a_gpt_disk_maps_its_files(tsk_image_factory):
    disk = tsk_image_factory("esp_in_gpt")
    with Image(disk) as image:
        bmap = map_images([image])
    frame = bmap.to_dataframe()
    assert not any("holds vfat" in f.message for f in bmap.findings)
    text = dumps_map(bmap)
    files = ranges_by_path(frame[frame["device"] == "/dev/sda1"])
    for path, content in source_files(disk).items():
        runs = files[path]
        assert all(ESP_OFFSET <= s < e <= ESP_OFFSET + ESP_SIZE for _, s, e in runs)
        assert contents(disk, runs, len(content)) == content, path
    first = files["/EFI/BOOT/BOOTX64.EFI"][0]
    assert f"1 {first[1]:x} " in text and " f /dev/sda1 /EFI/BOOT/BOOTX64.EFI\n" in text
    assert structure(frame, "fat-boot-sector") == [(ESP_OFFSET, ESP_OFFSET + 512)]
    assert_covers_exactly_once(frame, disk.stat().st_size)
    # fls on the partition agrees.
    listed = _fls_expected(disk, ESP_OFFSET // 512)
    assert set(source_files(disk)) <= set(listed)


# -- ISO9660 -------------------------------------------------------------------------------------


def test_iso_structures(mapped):
    image, _, frame = mapped("iso")
    vds = structure(frame, "iso-volume-descriptor")
    assert vds[0] == (16 * 2048, 17 * 2048) and len(vds) >= 3  # primary, Joliet, terminator
    assert structure(frame, "iso-system-area") == [(0, 16 * 2048)]
    with open(image, "rb") as fh:
        fh.seek(16 * 2048)
        pvd = fh.read(2048)
    l_table = int.from_bytes(pvd[140:144], "little") * 2048
    m_table = int.from_bytes(pvd[148:152], "big") * 2048
    tables = [lo for lo, _ in structure(frame, "iso-path-table")]
    assert l_table in tables and m_table in tables


# -- UFS -----------------------------------------------------------------------------------------


def test_ufs_structures_where_fsstat_says(mapped):
    """Each cylinder group's superblock copy, header and inode table at the fragments
    ``fsstat`` lists for the group; the superblock at 8 KiB."""
    image, _, frame = mapped("ufs1")
    text = T._tool("fsstat", "-f", "ufs1", image)
    fragment = int(re.search(r"^Fragment Size: (\d+)", text, re.MULTILINE).group(1))
    want: dict[str, list] = {"ufs-superblock-backup": [], "ufs-cg": [], "ufs-inodes": []}
    names = {"Super Block": "ufs-superblock-backup", "Group Desc": "ufs-cg"}
    names["Inode Table"] = "ufs-inodes"
    for line in text.splitlines():
        m = re.match(r"\s+(Super Block|Group Desc|Inode Table): (\d+) - (\d+)", line)
        if m:
            lo, hi = int(m.group(2)) * fragment, (int(m.group(3)) + 1) * fragment
            want[names[m.group(1)]].append((lo, hi))
    assert len(want["ufs-cg"]) >= 4
    # fsstat lists group 0's copy beside the primary (fragments 8-15, at 8 KiB): that one is
    # the superblock itself.
    want["ufs-superblock-backup"].remove((8192, 16384))
    assert structure(frame, "ufs-superblock") == [(8192, 16384)]
    for kind, ranges in want.items():
        assert structure(frame, kind) == sorted(ranges), kind


def test_ufs_indirect_blocks_are_metadata_of_their_file(mapped):
    """istat's "Indirect Blocks" of the 1.2 MiB file are an ``m ufs-indirect`` line named by
    it; its data ends in a whole block, as its last block lies past the 12 direct ones."""
    image, _, frame = mapped("ufs1")
    entry = next(e for e in T.fls(image) if e.path == "/big.bin")
    text = T._tool("istat", "-f", "ufs1", image, str(entry.inode))
    indirect = [int(b) for b in text.split("Indirect Blocks:", 1)[1].split()]
    fragment = 1024
    sel = frame[(frame["kind"] == "ufs-indirect") & (frame["path"] == "/big.bin")]
    got = sorted(zip(sel["start"], sel["end"]))
    assert got == [(min(indirect) * fragment, (max(indirect) + 1) * fragment)]
    assert len(indirect) == max(indirect) - min(indirect) + 1
    size = len(source_files(image)["/big.bin"])
    runs = ranges_by_path(frame)["/big.bin"]
    assert sum(e - s for _, s, e in runs) == -(-size // 8192) * 8192


def test_ufs_symlink_and_empty_file_have_no_lines(mapped):
    """A short symlink lives in its inode (a fast symlink), an empty file has no block."""
    _, _, frame = mapped("ufs1")
    assert SYMLINK[0] not in set(frame["path"])
    assert "/empty.txt" not in set(frame["path"])


def test_ufs2_which_tsk_cannot_open_still_names_its_structures(tsk_image_factory):
    """TSK 4.15 does not find makefs's UFS2 (its superblock at 8 KiB): one error finding, and
    the structures and free space from bmap's own reading of the cylinder groups; the files'
    blocks are unreferenced."""
    image = tsk_image_factory("ufs2")
    with Image(image) as img:
        bmap = map_images([img])
    frame = bmap.to_dataframe()
    (finding,) = [f for f in bmap.findings if f.source == "/dev/sda tsk"]
    assert "its files are not mapped" in finding.message
    assert len(structure(frame, "ufs-cg")) >= 4 and structure(frame, "ufs-inodes")
    assert not frame["type"].isin(["f", "d"]).any()
    unalloc = frame[frame["kind"] == "unallocated"]
    assert (unalloc["end"] - unalloc["start"]).sum() > 0
    assert_covers_exactly_once(frame, image.stat().st_size)


def _ufs1_inode_offset(image: Path, inode: int) -> int:
    """Where UFS1 inode ``inode`` lies, from fsstat's group 0 inode table (a fragment number)
    and 128-byte inodes; only group 0's inodes here."""
    text = T._tool("fsstat", "-f", "ufs1", image)
    fragment = int(re.search(r"^Fragment Size: (\d+)", text, re.MULTILINE).group(1))
    first = int(re.search(r"Inode Table: (\d+) - ", text).group(1))
    return first * fragment + inode * 128


@pytest.mark.parametrize("case", ["huge size", "garbage indirect block"])
def test_a_ufs_inode_whose_tree_would_stall_tsk(mapped, tmp_path, case):
    """A file claiming 2**62 bytes makes TSK's run list builder walk its whole (sparse) tree:
    TSK is shown it shorter, with a finding, and the map finishes with the file's real blocks.
    An indirect address pointing at a block of random bytes (2**40 bytes claimed) reaches far
    more blocks than the inode holds: TSK is shown it empty."""
    image, _, frame = mapped("ufs1")
    inode = next(e.inode for e in T.fls(image) if e.path == "/big.bin")
    at = _ufs1_inode_offset(image, inode)
    data = bytearray(image.read_bytes())
    if case == "huge size":
        data[at + 8 : at + 16] = (1 << 62).to_bytes(8, "little")
    else:
        random_block = min(s for _, s, _ in ranges_by_path(frame)["/fill/f00.bin"])
        data[at + 8 : at + 16] = (1 << 40).to_bytes(8, "little")
        data[at + 88 : at + 92] = (random_block // 1024).to_bytes(4, "little")  # di_ib[0]
    crafted = tmp_path / "crafted.img"
    crafted.write_bytes(bytes(data))
    with Image(crafted) as img:
        bmap = map_images([img])
    messages = [f.message for f in bmap.findings if f"inode {inode}:" in f.message]
    assert len(messages) == 1, bmap.findings
    got = bmap.to_dataframe()
    mine = got[got["path"] == "/big.bin"]
    if case == "huge size":
        assert "spans more than" in messages[0]
        want = ranges_by_path(frame, types=("f", "m"))["/big.bin"]
        assert ranges_by_path(got, types=("f", "m"))["/big.bin"] == want
    else:
        assert "shown it empty" in messages[0]
        assert mine.empty
    assert bmap.covered_bytes() == crafted.stat().st_size


# -- damage and hostile input -------------------------------------------------------------------


def test_an_error_inside_tsk_is_a_finding_naming_the_structure(tsk_image_factory, tmp_path):
    """The ESP's FAT32 with its root directory cluster set to 0: detection still says vfat,
    TSK cannot open the root directory; a finding names it and the partition is covered."""
    disk = tsk_image_factory("esp_in_gpt")
    broken = tmp_path / "broken.img"
    broken.write_bytes(disk.read_bytes())
    with open(broken, "r+b") as fh:
        fh.seek(ESP_OFFSET + 44)  # BPB_RootClus
        fh.write(bytes(4))
    with Image(broken) as image:
        bmap = map_images([image])
    (finding,) = [f for f in bmap.findings if f.source == "/dev/sda1 tsk"]
    assert finding.severity == Severity.ERROR and "directory '/'" in finding.message
    frame = bmap.to_dataframe()
    assert structure(frame, "fat") and not (frame["type"] == "f").any()
    assert bmap.covered_bytes() == broken.stat().st_size


def zeros_volume(content: Content, size: int, offset: int) -> Volume:
    """A volume of ``size`` zero bytes at ``offset`` of disk 1 that detection called
    ``content``."""
    zeros = bytes(size)

    class Zeros:
        def pread(self, at, length):
            return zeros[at : at + length]

    return Volume(
        device="/dev/sda1",
        disk=1,
        offset=offset,
        stream=RangeStream(Zeros(), 0, size),
        placement=Placement.contiguous(1, offset, size),
        content=content,
    )


def test_a_filesystem_tsk_cannot_open_is_one_finding_and_no_lines():
    """Content that detection called vfat but TSK cannot open: a finding, nothing mapped."""
    volume = zeros_volume(Content("vfat", "FAT32", None, None, 4 << 20), 4 << 20, 1 << 20)
    builder = MapBuilder()
    (finding,) = tsk.map_volume(volume, builder)
    assert finding.source == "/dev/sda1 tsk" and finding.offset == 1 << 20
    assert "cannot open the vfat filesystem" in finding.message
    assert builder.extent_count() == 0


def test_tsk_never_reads_outside_its_volume(tsk_image_factory):
    image = tsk_image_factory("fat16")
    data = image.read_bytes()

    class Recorder:
        def __init__(self):
            self.reads = []

        def pread(self, offset, size):
            self.reads.append((offset, size))
            return data[offset : offset + size]

    source = Recorder()
    stream = RangeStream(source, 0, len(data))
    img = tsk.VolumeImage(stream.view(0, len(data) // 2))
    assert img.read(len(data) // 2 - 100, 4096) == data[len(data) // 2 - 100 : len(data) // 2]
    assert img.read(len(data), 512) == b""
    assert all(o + s <= len(data) // 2 for o, s in source.reads)


def test_a_directory_loop_is_walked_once(tsk_image_factory, tmp_path):
    """FAT16 where /dir1/dir2 points back at /dir1's cluster: the walk ends, each directory is
    read once, and the map still covers everything."""
    image = tsk_image_factory("fat16")
    looped = tmp_path / "loop.img"
    data = bytearray(image.read_bytes())
    boot = T.boot_sector_fat(image)
    bps, spc = boot["bytes_per_sector"], boot["sectors_per_cluster"]
    root = (boot["reserved_sectors"] + boot["fats"] * boot["fat_sectors"]) * bps
    data_start = root + boot["root_entries"] * 32

    def entries(at, count):
        for i in range(count):
            yield at + 32 * i, bytes(data[at + 32 * i : at + 32 * i + 32])

    (dir1,) = [o for o, e in entries(root, boot["root_entries"]) if e[:11] == b"DIR1       "]
    dir1_cluster = int.from_bytes(data[dir1 + 26 : dir1 + 28], "little")
    at = data_start + (dir1_cluster - 2) * spc * bps
    (dir2,) = [o for o, e in entries(at, spc * bps // 32) if e[:11] == b"DIR2       "]
    data[dir2 + 26 : dir2 + 28] = dir1_cluster.to_bytes(2, "little")
    looped.write_bytes(bytes(data))
    with Image(looped) as img:
        bmap = map_images([img])
    frame = bmap.to_dataframe()
    paths = frame[frame["type"] == "d"]["path"].tolist()
    assert max(p.count("/") for p in paths) < 10
    assert bmap.covered_bytes() == len(data)


def test_a_file_whose_runs_tsk_drops_is_a_finding(tsk_image_factory, tmp_path):
    """/docs/big.bin's data run moved to cluster 2**40 (its record's fixups kept valid): TSK
    drops the file's data attributes without an error; a warning names the file, whose
    clusters stay unnamed. (A FAT entry claiming 4 GiB goes further: TSK drops the name.)"""
    crafted = copy_image(tsk_image_factory("ntfs"), tmp_path)
    volume = NtfsVolume.read(crafted)
    n = volume.find("big.bin", volume.find("docs", 5))
    record = volume.record(n)
    volume.write_record(n, volume.set_runs(record, 0x80, encode_run(50, 1 << 40) + b"\0"))
    with Image(crafted) as img:
        bmap = map_images([img])
    (finding,) = [f for f in bmap.findings if "gives no place" in f.message]
    assert finding.severity == Severity.WARNING and "'/docs/big.bin'" in finding.message
    frame = bmap.to_dataframe()
    assert frame[(frame["path"] == "/docs/big.bin") & (frame["type"] == "f")].empty


@pytest.mark.parametrize("name", ["fat32", "fat16"])
def test_a_truncated_filesystem_maps_what_is_there(tsk_image_factory, tmp_path, name):
    """Cut to its first 3 MiB (FAT16: fewer clusters left than FAT12's limit, still read as
    the 16-bit FAT the boot sector's count says, so no cluster in use reads as free): an
    error says so, and what is there maps."""
    image = tsk_image_factory(name)
    cut = tmp_path / "cut.img"
    cut.write_bytes(image.read_bytes()[: 3 * (1 << 20)])
    with Image(cut) as img:
        bmap = map_images([img])
    frame = bmap.to_dataframe()
    assert (frame["end"] <= 3 << 20).all()
    assert bmap.covered_bytes() == 3 << 20
    assert any("claims" in f.message for f in bmap.findings if f.severity == Severity.ERROR)
    assert not [f for f in bmap.findings if "free in the allocation table" in f.message]


def test_describe_says_what_tsk_reads(tsk_image_factory):
    image = tsk_image_factory("fat16")
    data = image.read_bytes()
    boot = T.boot_sector_fat(image)

    class Bytes:
        def pread(self, offset, size):
            return data[offset : offset + size]

    facts = tsk.describe(RangeStream(Bytes(), 0, len(data)), len(data))
    assert facts is not None
    fsck = T.fsck_fat(image)
    assert (facts["type"], facts["cluster_size"], facts["size"]) == (
        "fat16",
        fsck["bytes_per_cluster"],
        boot["total_sectors"] * boot["bytes_per_sector"],
    )
    # Free space as fsck.fat counts it: the clusters no file or directory holds.
    free_clusters = fsck["total_clusters"] - fsck["used_clusters"]
    assert facts["free_bytes"] == free_clusters * fsck["bytes_per_cluster"]
    assert facts["used_bytes"] + facts["free_bytes"] == facts["size"]
    zeros = bytes(1 << 20)

    class Zeros:
        def pread(self, offset, size):
            return zeros[offset : offset + size]

    assert tsk.describe(RangeStream(Zeros(), 0, len(zeros)), len(zeros)) is None


def test_a_volume_in_pieces_maps_through_its_placement(tsk_image_factory):
    """The NTFS as a device of two pieces laid on a disk in the other order (as an LV may
    lie): every line is the contiguous map's, cut where the pieces meet and moved with its
    piece."""
    image = tsk_image_factory("ntfs")
    data = image.read_bytes()
    half = len(data) // 2
    disk = data[half:] + data[:half]  # the device's second half first
    first_at = len(data) - half  # where the device's first half lies on the disk

    class Bytes:
        def __init__(self, blob):
            self.blob = blob

        def pread(self, offset, size):
            return self.blob[offset : offset + size]

    on_disk = Bytes(disk)
    reader = MappedReader([(0, half, on_disk, first_at), (half, len(data), on_disk, 0)], len(data))
    content = Content("ntfs", None, None, None, len(data))
    flat = Volume(
        "/dev/vg/lv",
        1,
        0,
        RangeStream(Bytes(data), 0, len(data)),
        Placement.contiguous(1, 0, len(data)),
        content,
    )
    split = Volume(
        "/dev/vg/lv",
        1,
        None,
        reader.stream(),
        Placement([Segment(0, half, 1, first_at), Segment(half, len(data), 1, 0)]),
        content,
    )

    def lines(volume):
        builder = MapBuilder()
        tsk.map_volume(volume, builder)
        frame = builder.build().to_dataframe()
        cols = (frame[c].tolist() for c in ("type", "kind", "path", "start", "end", "file_offset"))
        return list(zip(*cols))

    want = []
    for t, k, p, s, e, fo in lines(flat):
        for lo, hi in ((s, min(e, half)), (max(s, half), e)):
            if lo < hi:
                shift = first_at if lo < half else -half
                offset = fo + (lo - s) if fo is not pd.NA and fo is not None else fo
                want.append((t, k, p, lo + shift, hi + shift, offset))
    got = lines(split)
    assert sorted(map(str, got)) == sorted(map(str, want))
    assert any(t == "f" for t, *_ in got)


@pytest.mark.parametrize("name", ["fat16", "fat32", "ntfs", "exfat", "iso", "hfsplus", "ufs1"])
def test_damaged_metadata_gives_findings_never_tracebacks(tsk_image_factory, tmp_path, name):
    """Bytes of the first 256 KiB after the boot region (FATs, root directories, the MFT's
    first records, volume descriptors) overwritten at random, eight images per filesystem: each
    maps, every line lies inside the disk, and every byte is covered."""
    image = tsk_image_factory(name)
    data = image.read_bytes()
    rng = random.Random(f"tsk-damage-{name}")
    for round_ in range(8):
        broken = bytearray(data)
        for _ in range(64):
            # After the boot region (exFAT's is 24 sectors), so that detection still says
            # what it is: boot sector damage is the test above.
            at = rng.randrange(24 * 512, min(len(data), 256 << 10))
            broken[at : at + 4] = rng.randbytes(4)
        path = tmp_path / f"{name}-{round_}.img"
        path.write_bytes(bytes(broken))
        with Image(path) as img:
            bmap = map_images([img])
        frame = bmap.to_dataframe()
        assert (frame["end"] <= len(data)).all() and (frame["start"] >= 0).all()
        assert bmap.covered_bytes() == len(data), round_


def test_exfat_structures_where_the_boot_sector_says(mapped):
    """Offsets decoded by hand from the exFAT boot sector (Microsoft's exFAT specification,
    3.1); the bitmap and up-case table start at the sectors istat lists for them."""
    image, _, frame = mapped("exfat")
    with open(image, "rb") as fh:
        boot = fh.read(512)

    def u(at, size):
        return int.from_bytes(boot[at : at + size], "little")

    bps, spc = 1 << boot[108], 1 << boot[109]
    fat_offset, fat_length, heap, count = u(80, 4), u(84, 4), u(88, 4), u(92, 4)
    assert structure(frame, "exfat-boot-region") == [(0, 12 * bps)]
    assert structure(frame, "exfat-boot-region-backup") == [(12 * bps, 24 * bps)]
    assert structure(frame, "exfat-fat") == [(fat_offset * bps, (fat_offset + fat_length) * bps)]
    listed = {e.path: e for e in T.fls(image)}
    for kind, name in (("exfat-bitmap", "/$ALLOC_BITMAP"), ("exfat-upcase", "/$UPCASE_TABLE")):
        _, attrs = T.istat(image, listed[name].meta)
        first = attrs[0].blocks[0]
        ((start, end),) = structure(frame, kind)
        assert start == first * bps and (end - start) % (spc * bps) == 0
    # The heap ends the clusters; every byte after the boot regions is named.
    lines = frame[frame["type"] != "v"]
    assert lines["end"].max() == image.stat().st_size
    assert heap * bps + count * spc * bps <= image.stat().st_size


def test_ntfs_in_an_lvm_volume_of_two_segments(tsk_image_factory, lvm_gpt_image):
    """An NTFS written into lvm_gpt's LV ``data`` (two segments with 4 MiB of free extents
    between them): its files map through the LV, in disk coordinates, and their bytes read
    back from the disk at the map's ranges are the files'."""
    ntfs = tsk_image_factory("ntfs_small")
    content = ntfs.read_bytes()
    with scratch_copy(lvm_gpt_image) as lvm:
        ranges = lvm_truth.physical_ranges(lvm.images)["data"]
        assert len(content) == lvm.lv_sizes["data"]
        for r in lvm_truth.lv_to_disk(ranges, 0, len(content)):  # every byte, zeros too
            with open(r.image, "r+b") as fh:
                fh.seek(r.start)
                fh.write(content[r.lv_offset : r.lv_offset + r.end - r.start])
        disk = lvm.images[0]
        with Image(disk) as image:
            bmap = map_images([image])
        frame = bmap.to_dataframe()
        inside = frame[frame["device"] == "/dev/vg0/data"]
        assert not any("holds ntfs" in f.message for f in bmap.findings)
        files = ranges_by_path(inside)
        for path, data in source_files(ntfs).items():
            assert contents(disk, files[path], len(data)) == data, path
        # big.bin lies in both segments, every line inside one of them.
        segments = sorted((r.start, r.end) for r in ranges)
        big = files["/big.bin"]
        for lo, hi in segments:
            assert any(lo <= s < hi for _, s, _ in big)
        assert all(any(lo <= s and e <= hi for lo, hi in segments) for _, s, e in big)
        assert structure(inside, "ntfs-boot")[0][0] == segments[0][0]
        assert bmap.covered_bytes() == disk.stat().st_size


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_kind_is_documented(mapped, name):
    """Each ``m`` and ``u`` kind of the map is in docs/format.md's section for these
    filesystems (its table and its unused kinds)."""
    docs = (Path(__file__).resolve().parents[3] / "docs" / "format.md").read_text()
    section = docs[docs.index("### FAT, exFAT, NTFS, ISO9660") :]
    section = section[: section.index("\n### ", 1)]
    documented = set(re.findall(r"`([a-z0-9-]+)(?: <path>)?`", section))
    _, _, frame = mapped(name)
    kinds = set(frame.loc[frame["type"].isin(["m", "u"]), "kind"])
    assert kinds <= documented, kinds - documented
    assert kinds & {"fat", "exfat-fat", "mft", "iso-volume-descriptor", "hfs-catalog", "ufs-cg"}


def test_an_mft_record_across_two_runs_is_named_in_two_pieces():
    """$MFT in two runs whose boundary falls inside record 3 (512-byte clusters, 1 KiB
    records): the record's pieces, with their offsets in the record; a record past $MFT's end
    has none."""
    volume = zeros_volume(Content("ntfs", None, None, None, 1 << 20), 1 << 20, 0)
    mapper = tsk._Mapper(None, "ntfs", volume, MapBuilder())
    # Logical bytes [0, 3584) at 0x10000, then [3584, 8192) at 0x40000.
    mapper.mft_runs = ([0, 3584], [0x10000, 0x40000], [3584, 4608])
    mapper.mft_record = 1024
    assert mapper.record_at(2) == [(0x10000 + 2048, 0x10000 + 3072, 0)]
    assert mapper.record_at(3) == [(0x10000 + 3072, 0x10000 + 3584, 0), (0x40000, 0x40200, 512)]
    assert mapper.record_at(4) == [(0x40200, 0x40600, 0)]
    assert mapper.record_at(8) is None
    # A resident value spanning the seam lands in both pieces, at its offsets in the value.
    obj = mapper.window.add(0, "/", b"x", 3)
    mapper.place_in_record(obj, mapper.record_at(3), 400, 700)
    got = list(zip(mapper.window.start, mapper.window.end, mapper.window.offset))
    assert got == [(0x10000 + 3072 + 400, 0x10000 + 3584, 0), (0x40000, 0x40000 + 188, 112)]
