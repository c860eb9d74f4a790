"""Lines spilled to sorted runs on disk and merged: the same map as one sorted in memory.

The reference is the builder with no budget, which sorts every line at once in memory; the
runs, their merge and the files under the map's columns must give it back exactly, ties and
all, and leave nothing behind in the temporary directory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bmap.images import open_image
from bmap.layers.mapper import map_images
from bmap.model.blockmap import MapBuilder
from bmap.store.mapfile import TEXT_FORMATS, dumps_map
from tests.conftest import is_root, manifest

COLUMNS = ("disk", "start", "end", "type_code", "obj", "file_offset")


def fill(builder: MapBuilder, seed: int, lines: int) -> MapBuilder:
    """Lines of every type over three disks, in chunks and one at a time, with many exact
    duplicates (the same object and range, other file offsets) whose order only the order
    of adding decides."""
    rng = np.random.default_rng(seed)
    for d in (3, 1, 2):
        size = 1 << 24
        builder.add_object_extent("v", f"/dev/sd{d}", d, 0, size)
        builder.add_object_extent("p", f"/dev/sd{d}1", d, 4096, size // 2)
        objs = [builder.add_object("f", f"/dev/sd{d}1", path=f"/f{i}") for i in range(5)]
        objs.append(builder.add_object("m", f"/dev/sd{d}1", kind="inode-table"))
        for _ in range(4):
            n = lines // 4
            starts = rng.integers(0, 64, n) * 4096  # few distinct starts: many ties
            ends = starts + rng.integers(1, 3, n) * 4096
            builder.add_extents(rng.choice(objs, n), d, starts, ends, rng.integers(0, 9, n))
            builder.add_extent(objs[0], d, 0, 4096, int(rng.integers(0, 9)))
    return builder


@pytest.mark.parametrize("spill_lines", [1, 7, 300, 5000])
@pytest.mark.parametrize("seed", range(3))
def test_a_spilled_map_equals_the_map_sorted_in_memory(spill_lines, seed, tmp_path):
    reference = fill(MapBuilder(), seed, 4000).build()
    builder = fill(MapBuilder(spill_lines=spill_lines, temp_dir=str(tmp_path)), seed, 4000)
    assert builder._runs, "the builder must have spilled"
    spilled = builder.build()
    assert spilled.merged is not None
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(spilled, column), getattr(reference, column))
    assert spilled.covered_bytes() == reference.covered_bytes()
    for fmt in TEXT_FORMATS:  # dumps_map: the formats a string holds
        assert dumps_map(spilled, fmt) == dumps_map(reference, fmt)
    # The runs and merged columns are unnamed files: nothing is left in the directory.
    assert list(tmp_path.iterdir()) == []


def test_the_builder_holds_at_most_its_spill_lines(tmp_path):
    builder = MapBuilder(spill_lines=1000, temp_dir=str(tmp_path))
    obj = builder.add_object("f", "/dev/sda1", path="/big")
    for i in range(50):
        builder.add_extents(
            obj, 1, np.arange(300) * 512 + i * 300 * 512, np.arange(1, 301) * 512 + i * 300 * 512
        )
        assert builder._held_lines() <= 1000
    assert builder.extent_count() == 15000
    bmap = builder.build()
    assert len(bmap) == 15000
    assert np.all(np.diff(bmap.start) > 0)


def test_the_default_spill_share_follows_the_budget():
    assert MapBuilder().spill_lines is None  # no budget, no spill
    assert MapBuilder(memory_limit=1536 << 20).spill_lines == (1536 << 20) // 8 // 100
    assert MapBuilder(memory_limit=1 << 20).spill_lines == 1 << 16  # the floor


def test_a_temporary_directory_that_cannot_be_written_keeps_the_lines_in_memory(tmp_path):
    missing = tmp_path / "gone"
    reference = fill(MapBuilder(), 0, 2000).build()
    builder = fill(MapBuilder(spill_lines=100, temp_dir=str(missing)), 0, 2000)
    bmap = builder.build()
    assert bmap.merged is None
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(bmap, column), getattr(reference, column))
    [finding] = bmap.findings
    assert finding.source == "map spill"
    assert "held in memory" in finding.message
    assert str(finding.severity) == "info"


@pytest.mark.skipif(not is_root(), reason="mounts a small tmpfs: needs root")
def test_a_merge_that_runs_out_of_room_sorts_in_memory(tmp_path):
    # The runs (about 390 KB) fit in 512 KiB; the merge's output (as much again) does not.
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        reference = fill(MapBuilder(), 1, 3000).build()
        builder = fill(MapBuilder(spill_lines=1000, temp_dir=str(small)), 1, 3000)
        assert len(builder._runs) >= 2
        bmap = builder.build()
        assert bmap.merged is None
        for column in COLUMNS:
            np.testing.assert_array_equal(getattr(bmap, column), getattr(reference, column))
        assert any(f.source == "map spill" and "cannot merge" in f.message for f in bmap.findings)
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def map_of(path: Path, **kwargs) -> str:
    image = open_image(path)
    try:
        return dumps_map(map_images([image], **kwargs))
    finally:
        image.close()


@pytest.mark.parametrize("name", [m["file"].removesuffix(".img.xz") for m in manifest()])
def test_every_sample_maps_the_same_spilled(name, sample, tmp_path):
    path = sample(name)
    try:
        reference = map_of(path, memory_limit=None)
    except Exception as exc:  # a sample that is no disk is refused the same either way
        with pytest.raises(type(exc)):
            map_of(path, spill_lines=50, temp_dir=str(tmp_path))
        return
    assert map_of(path, spill_lines=50, temp_dir=str(tmp_path)) == reference


def test_a_filesystem_maps_the_same_spilled(small_ext4, tmp_path):
    reference = map_of(small_ext4, memory_limit=None)
    assert map_of(small_ext4, spill_lines=64, temp_dir=str(tmp_path)) == reference
    assert reference.count("\n") > 5 * 64  # several runs


def rss_file_kib() -> int:
    """The process's resident pages of mapped files (``RssFile`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_writing_a_merged_map_gives_its_pages_back(tmp_path):
    # 1,000,000 lines: 43 MB of merged columns under the map. A pass over them a part at a
    # time must not leave them resident (without the release it leaves about 41 MiB).
    builder = MapBuilder(spill_lines=200_000, temp_dir=str(tmp_path))
    obj = builder.add_object("f", "/dev/sda1", path="/big")
    for i in range(10):
        starts = (np.arange(100_000, dtype=np.int64) * 10 + i) * 4096
        builder.add_extents(obj, 1, starts, starts + 4096, starts)
    bmap = builder.build()
    assert bmap.merged is not None and len(bmap) == 1_000_000
    before = rss_file_kib()
    with open(os.devnull, "w") as sink:
        from bmap.store.mapfile import write_map

        write_map(bmap, sink, "bmap")
    assert bmap.covered_bytes() == 1_000_000 * 4096
    grown = rss_file_kib() - before
    assert grown < 8 << 10, f"{grown} KiB of the merged columns stayed resident"


def test_the_cli_takes_a_temporary_directory(small_ext4, tmp_path):
    from click.testing import CliRunner

    from bmap.cli import main

    out = tmp_path / "m.bmap"
    runs = tmp_path / "runs"
    runs.mkdir()
    result = CliRunner().invoke(
        main, ["map", str(small_ext4), "-o", str(out), "--temp-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == map_of(small_ext4)
    missing = CliRunner().invoke(
        main, ["map", str(small_ext4), "-o", str(out), "--temp-dir", str(tmp_path / "no")]
    )
    assert missing.exit_code == 2
    assert "--temp-dir" in missing.output
