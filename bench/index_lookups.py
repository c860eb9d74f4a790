"""Point lookups: bmap.store.index.MapIndex against the intervaltree package.

    python bench/index_lookups.py [--lines 1000000] [--queries 1000000] [--rounds 5] [--no-write]

A synthetic map of one disk line, one partition line and LINES disjoint file lines inside the
partition (4 KiB-aligned, random lengths of 4 KiB to 256 KiB, random gaps of 0 to 60 KiB), built
with numpy (seed 1). QUERIES random byte offsets, uniform over the disk, are asked of both:

* MapIndex: one vectorised ``lookup(1, offsets)`` (every line holding each byte, innermost
  first: the file, then the partition, then the disk);
* intervaltree: ``tree.at(offset)`` for each offset (every interval holding it, unordered),
  as a Python caller would.

Rounds alternate between the two; the median of ROUNDS is reported as queries/second, with
the build time of each index. Both must find the same number of hits, and the lines hit by the
first 2,000 queries are compared one by one. Writes the ``bench:index`` section of
BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from intervaltree import IntervalTree

from bmap.model.blockmap import TYPE_CODE
from bmap.store.index import MapIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

BLOCK = 4096
CHECKED = 2000


def synthetic_map(lines: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    """disk, start, end, type_code, file_offset of the map; row 0 the disk, row 1 the partition."""
    rng = np.random.default_rng(seed)
    part_start = 1 << 20
    lengths = rng.integers(1, 65, lines, dtype=np.int64) * BLOCK
    gaps = rng.integers(0, 16, lines, dtype=np.int64) * BLOCK
    starts = part_start + np.cumsum(gaps + lengths) - lengths
    ends = starts + lengths
    part_end = int(ends[-1]) + (1 << 20)
    disk_end = part_end + (1 << 20)
    start = np.concatenate(([0, part_start], starts))
    end = np.concatenate(([disk_end, part_end], ends))
    type_code = np.concatenate(
        ([TYPE_CODE["v"], TYPE_CODE["p"]], np.full(lines, TYPE_CODE["f"], dtype=np.int64))
    )
    file_offset = np.concatenate(([0, 0], np.zeros(lines, dtype=np.int64)))
    disk = np.ones(lines + 2, dtype=np.int64)
    return disk, start, end, type_code, file_offset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    info = report.machine()

    disk, start, end, type_code, file_offset = synthetic_map(args.lines)
    rng = np.random.default_rng(2)
    offsets = rng.integers(0, int(end[0]), args.queries, dtype=np.int64)
    print(
        f"index: map of {len(start)} lines over {end[0] / 2**30:.1f} GiB, "
        f"{args.queries} queries, {args.rounds} rounds",
        file=sys.stderr,
    )

    t0 = time.perf_counter()
    index = MapIndex(disk, start, end, type_code, file_offset)
    build_mapindex = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree = IntervalTree.from_tuples(zip(start.tolist(), end.tolist(), range(len(start))))
    build_tree = time.perf_counter() - t0
    print(
        f"index: built MapIndex in {build_mapindex:.2f} s, IntervalTree in {build_tree:.1f} s",
        file=sys.stderr,
    )

    # Same answers: hit counts over all queries, hit rows for the first CHECKED.
    hits = index.lookup(1, offsets)
    sample = offsets[:CHECKED].tolist()
    mine = [set() for _ in sample]
    for q, r in zip(hits.query.tolist(), hits.row.tolist()):
        if q >= CHECKED:
            break
        mine[q].add(r)
    theirs = [{iv.data for iv in tree.at(p)} for p in sample]
    if mine != theirs:
        bad = next(i for i in range(CHECKED) if mine[i] != theirs[i])
        raise SystemExit(
            f"index: answers differ at query {bad} (offset {sample[bad]}): "
            f"MapIndex {sorted(mine[bad])}, intervaltree {sorted(theirs[bad])}"
        )

    point_list = offsets.tolist()
    times: dict[str, list[float]] = {"MapIndex": [], "intervaltree": []}
    counts: dict[str, int] = {}
    for r in range(args.rounds):
        gc.collect()
        t0 = time.perf_counter()
        hits = index.lookup(1, offsets)
        times["MapIndex"].append(time.perf_counter() - t0)
        counts["MapIndex"] = len(hits)
        del hits
        gc.collect()
        t0 = time.perf_counter()
        at = tree.at
        n = 0
        for p in point_list:
            n += len(at(p))
        times["intervaltree"].append(time.perf_counter() - t0)
        counts["intervaltree"] = n
        print(
            f"index: round {r + 1}: MapIndex {times['MapIndex'][-1]:.3f} s, "
            f"intervaltree {times['intervaltree'][-1]:.1f} s",
            file=sys.stderr,
        )
    if counts["MapIndex"] != counts["intervaltree"]:
        raise SystemExit(f"index: hit counts differ: {counts}")

    med = {k: statistics.median(v) for k, v in times.items()}
    qps = {k: args.queries / v for k, v in med.items()}
    speedup = med["intervaltree"] / med["MapIndex"]
    header = ["index", "build", "median time for all queries", "queries/s", "hits"]
    rows = [
        [
            "bmap.store.index.MapIndex (one vectorised lookup)",
            report.fmt_seconds(build_mapindex),
            f"{med['MapIndex']:.3f} s",
            f"{qps['MapIndex']:,.0f}",
            f"{counts['MapIndex']:,}",
        ],
        [
            f"intervaltree {info['intervaltree']} (`tree.at(p)` per query)",
            report.fmt_seconds(build_tree),
            f"{med['intervaltree']:.2f} s",
            f"{qps['intervaltree']:,.0f}",
            f"{counts['intervaltree']:,}",
        ],
    ]
    text = report.table(header, rows)
    print(text)
    print(f"MapIndex is {speedup:.0f}x faster per query")
    if args.no_write:
        return 0
    body = "\n".join(
        [
            "## Point lookups: MapIndex against intervaltree",
            "",
            f"Measured {report.machine_line(info)}; intervaltree {info['intervaltree']}.",
            "",
            f"Synthetic map: {args.lines:,} disjoint file lines inside one partition inside one "
            f"disk ({len(start):,} lines, {end[0] / 2**30:.0f} GiB); {args.queries:,} random byte "
            f"offsets over the disk; median of {args.rounds} alternating rounds; both answers "
            f"checked equal (hit counts, and the lines of the first {CHECKED:,} queries). "
            "`bench/index_lookups.py`.",
            "",
            text,
            "",
            f"MapIndex answers {speedup:.0f}x as many queries per second, and orders each answer "
            "innermost first, which intervaltree does not.",
        ]
    )
    report.write_section("index", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
