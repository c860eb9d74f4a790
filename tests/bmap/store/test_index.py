"""The index answers exactly what a brute-force scan of the lines answers, innermost first."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bmap.model.blockmap import TYPE_CODE
from bmap.store.index import MapIndex

intervals = st.lists(
    st.tuples(
        st.integers(1, 2), st.integers(0, 200), st.integers(1, 60), st.sampled_from(list("vpldfmu"))
    ),
    max_size=60,
)


def brute_force(lines, disk, start, end):
    hits = [
        i
        for i, (d, s, length, _) in enumerate(lines)
        if d == disk and s < end and s + length > start
    ]
    return sorted(hits, key=lambda i: (lines[i][2], -min(TYPE_CODE[lines[i][3]], 3), i))


def build(lines):
    return MapIndex(
        [d for d, _, _, _ in lines],
        [s for _, s, _, _ in lines],
        [s + n for _, s, n, _ in lines],
        [TYPE_CODE[t] for *_, t in lines],
    )


@settings(max_examples=300)
@given(
    intervals,
    st.lists(
        st.tuples(st.integers(1, 2), st.integers(0, 270), st.integers(1, 30)),
        min_size=1,
        max_size=20,
    ),
)
def test_overlapping_equals_brute_force(lines, queries):
    index = build(lines)
    hits = index.overlapping(
        [q[0] for q in queries], [q[1] for q in queries], [q[1] + q[2] for q in queries]
    )
    for qi, (disk, start, length) in enumerate(queries):
        got = hits.row[hits.query == qi].tolist()
        assert got == brute_force(lines, disk, start, start + length)


def test_nested_lines_answer_innermost_first_with_offsets():
    # disk [0,1000), partition [100,900), file in two pieces, the second before the first.
    index = MapIndex(
        disk=[1, 1, 1, 1],
        start=[0, 100, 500, 200],
        end=[1000, 900, 600, 300],
        type_code=[TYPE_CODE["v"], TYPE_CODE["p"], TYPE_CODE["f"], TYPE_CODE["f"]],
        file_offset=[0, 0, 0, 100],
    )
    hits = index.lookup(1, [250, 550, 950])
    assert hits.row[hits.query == 0].tolist() == [3, 1, 0]
    assert hits.offset[hits.query == 0].tolist() == [150, 150, 250]
    assert hits.row[hits.query == 1].tolist() == [2, 1, 0]
    assert hits.offset[hits.query == 1].tolist() == [50, 450, 550]
    assert hits.row[hits.query == 2].tolist() == [0]
    assert index.innermost(1, [250, 550, 950, 5000]).tolist() == [3, 2, 0, -1]


def test_identical_ranges_all_answer():
    """Hard links: the same range under several names, all reported."""
    index = MapIndex(
        [1, 1, 1, 1], [0, 10, 10, 10], [100, 20, 20, 20], [TYPE_CODE["v"]] + [TYPE_CODE["f"]] * 3
    )
    hits = index.lookup(1, 15)
    assert sorted(hits.row.tolist()[:3]) == [1, 2, 3]
    assert hits.row.tolist()[3] == 0
    assert len(index.by_disk[1][0]) == 4


def test_deep_nesting_falls_back_to_a_scan():
    n = 200
    index = MapIndex(np.ones(n), np.arange(n), 1000 - np.arange(n), np.full(n, TYPE_CODE["f"]))
    assert len(index.by_disk[1][1]) > 0
    hits = index.lookup(1, 500)
    assert len(hits) == n
    assert hits.row[0] == n - 1  # the smallest range first


def test_a_million_queries_in_one_call():
    rng = np.random.default_rng(1)
    starts = np.arange(0, 1 << 30, 1 << 12)
    index = MapIndex(
        np.ones(len(starts)), starts, starts + (1 << 12), np.full(len(starts), TYPE_CODE["f"])
    )
    queries = rng.integers(0, 1 << 30, 1_000_000)
    rows = index.innermost(1, queries)
    assert np.array_equal(rows, queries >> 12)


def test_offsets_past_1_pib_and_disks_never_alias():
    """Each disk has its own layers: a line past 2**50 is indexed, a query at 2**50 on disk 1
    finds nothing at offset 0 of disk 1 (the key once packed the disk above bit 50), and the
    same range on two disks answers per disk."""
    v, f = TYPE_CODE["v"], TYPE_CODE["f"]
    big = 1 << 55
    index = MapIndex([1, 1, 2, 2], [0, 0, 0, big], [512, big + 10, 512, big + 4096], [f, v, f, f])
    assert index.lookup(1, 1 << 50).row.tolist() == [1]  # only the disk line reaches there
    assert index.lookup(1, 100).row.tolist() == [0, 1]
    assert index.lookup(2, big + 1).row.tolist() == [3]
    assert index.lookup(2, 100).row.tolist() == [2]
    assert index.lookup(3, 100).row.tolist() == []
    top = (1 << 63) - 1
    assert len(index.overlapping(1, top - 1, top)) == 0
