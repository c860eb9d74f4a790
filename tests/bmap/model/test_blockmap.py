"""The map builder and the finished map: coverage against a plain union of intervals."""

from __future__ import annotations

import numpy as np
import pytest

from bmap.model import blockmap
from bmap.model.blockmap import TYPE_CODE, MapBuilder
from bmap.model.intervals import total


def union_covered(bmap, disk=None) -> int:
    """What covered_bytes must say: the union of every non-v line, per disk, summed."""
    out = 0
    for d in np.unique(bmap.disk).tolist():
        if disk is not None and d != disk:
            continue
        sel = (bmap.disk == d) & (bmap.type_code != TYPE_CODE["v"])
        out += total((bmap.start[sel], bmap.end[sel]))
    return out


def random_map(seed: int, lines: int):
    rng = np.random.default_rng(seed)
    builder = MapBuilder()
    for d in (1, 2, 3):
        size = int(rng.integers(1 << 20, 1 << 30))
        builder.add_object_extent("v", f"/dev/sd{d}", d, 0, size)
        obj = builder.add_object("f", f"/dev/sd{d}1", path="/x")
        starts = rng.integers(0, size, lines)
        # Nested, touching, overlapping and disjoint ranges, some past the others' ends.
        ends = starts + rng.choice([1, 512, 4096, 1 << 20], lines) * rng.integers(1, 4, lines)
        builder.add_extents(obj, d, starts, np.minimum(ends, size))
    return builder.build()


@pytest.mark.parametrize("seed", range(5))
def test_covered_bytes_is_the_union_of_the_lines(seed, monkeypatch):
    # Chunks smaller than the map, so the furthest end is carried from chunk to chunk.
    monkeypatch.setattr(blockmap, "COVER_CHUNK", 97)
    bmap = random_map(seed, 2000)
    assert bmap.covered_bytes() == union_covered(bmap)
    for d in (1, 2, 3, 4):
        assert bmap.covered_bytes(d) == union_covered(bmap, d)


def test_covered_bytes_ignores_whole_disk_lines():
    builder = MapBuilder()
    builder.add_object_extent("v", "/dev/sda", 1, 0, 1 << 20)
    builder.add_object_extent("p", "/dev/sda1", 1, 4096, 8192)
    builder.add_object_extent("u", "/dev/sda", 1, 8192, 12288, kind="unpartitioned")
    assert builder.build().covered_bytes() == 8192
    assert MapBuilder().build().covered_bytes() == 0
