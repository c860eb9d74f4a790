"""Trace benchmark: one nbdkit log of 1,000,000 read requests (half at random offsets, half in
sequential runs) against the map of the large benchmark image; `bmap trace` against the
intervaltree annotator (bench/trace_intervaltree.py), whole processes, alternating, medians.
Writes the `bench:trace` section of BENCHMARKS.md. Usage: trace_bench.py [--requests N]
[--rounds N] [--no-write]"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
IMAGE = BUILD / "usr-full.img"


def build_map() -> Path:
    out = BUILD / "usr-full.map.csv"
    if not out.exists() or out.stat().st_mtime < IMAGE.stat().st_mtime:
        subprocess.run(
            [sys.executable, "-m", "bmap", "map", str(IMAGE), "-o", str(out)],
            check=True,
            capture_output=True,
        )
    return out


def build_log(requests: int) -> Path:
    out = BUILD / f"trace-{requests}.log"
    if out.exists():
        return out
    size = IMAGE.stat().st_size
    rnd = random.Random(1)
    t = 1_700_000_000.0
    lines = []
    i = 0
    with open(out.with_suffix(".tmp"), "w") as fh:
        while i < requests:
            if (i // 256) % 2 == 0:  # a run of 256 sequential 64 KiB reads
                base = rnd.randrange(0, size - 256 * 65536) // 4096 * 4096
                batch = [(base + j * 65536, 65536) for j in range(min(256, requests - i))]
            else:  # 256 reads at random offsets
                batch = [
                    (
                        rnd.randrange(0, size - 65536) // 4096 * 4096,
                        rnd.choice((4096, 8192, 16384, 65536)),
                    )
                    for _ in range(min(256, requests - i))
                ]
            for offset, count in batch:
                i += 1
                t += 0.00001
                stamp = (
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
                    + f".{int(t * 1e6) % 1000000:06d}"
                )
                lines.append(
                    f"{stamp} connection=1 Read id={i} offset={offset:#x} count={count:#x} ...\n"
                )
                lines.append(f"{stamp} connection=1 ...Read id={i} return=0\n")
            if len(lines) > 200000:
                fh.writelines(lines)
                lines = []
        fh.writelines(lines)
    out.with_suffix(".tmp").rename(out)
    return out


def timed(cmd: list[str]) -> tuple[float, int]:
    with tempfile.NamedTemporaryFile() as tf:
        subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *cmd],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )
        wall, rss = Path(tf.name).read_text().split()[-2:]
    return float(wall), int(rss) // 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    map_csv = build_map()
    log = build_log(args.requests)
    tools = {
        "bmap trace": [sys.executable, "-m", "bmap", "trace", str(map_csv), str(log)],
        "intervaltree": [
            sys.executable,
            str(ROOT / "bench" / "trace_intervaltree.py"),
            str(map_csv),
            str(log),
        ],
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
    for r in range(args.rounds):
        for name, cmd in tools.items():
            results[name].append(timed(cmd))
            print(
                f"trace: round {r + 1}: {name} {results[name][-1][0]:.2f} s "
                f"{results[name][-1][1]} MiB",
                flush=True,
            )
    med = {
        n: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v))
        for n, v in results.items()
    }
    ratio = med["intervaltree"][0] / med["bmap trace"][0]
    met = med["bmap trace"][0] <= 3 and ratio >= 10 and med["bmap trace"][1] <= 300
    table = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; "
        f"{args.requests:,} read requests (nbdkit log filter format, {log.stat().st_size / 2**20:.0f} MiB, "
        f"half in sequential runs of 64 KiB reads, half at random offsets) against the map of "
        f"usr-full.img; medians of {args.rounds} alternating runs of whole processes.\n\n"
        "| tool | wall time | peak RSS |\n|---|---|---|\n"
        + "".join(f"| {n} | {w:.2f} s | {m} MiB |\n" for n, (w, m) in med.items())
        + f"\nbmap trace is {ratio:.1f}x faster than the intervaltree annotator. Target (>= 10x, "
        f"<= 3 s, <= 300 MiB): {'met' if met else 'not met'}.\n"
    )
    print(table)
    if not args.no_write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        start, end = "<!-- bench:trace:start -->", "<!-- bench:trace:end -->"
        section = f"{start}\n## trace: bmap trace against an intervaltree annotator\n\n{table}{end}"
        if start in text:
            text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
