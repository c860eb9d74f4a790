"""Map formats against each other: write and load time and file size of the /usr map.

    python bench/map_formats.py [--image build/bench/usr-full.img] [--rounds 5] [--write]

1. Maps the /usr ext4 image the ext benches build (bench/run.py caches it under build/bench;
   this script never builds one: run ``make bench`` first) once, in this process.
2. For each format (the text map, CSV, JSON lines, Parquet) writes the map ``--rounds`` times
   with ``bmap.store.mapfile.write_map`` and loads it as many times with ``bmap.read_map``
   (the DataFrame ``lookup``, ``trace`` and ``report`` work on), rounds alternating between the
   formats; medians of wall time (``time.perf_counter``), and the file's size.
3. Checks that every format loads the same rows (text: the columns it keeps).
4. Prints a Markdown section; ``--write`` rewrites the ``bench:formats`` section of
   BENCHMARKS.md. Before timing it waits (at most ``--quiet-wait`` seconds) for the 1-minute
   load average to fall below 1.0, and says in the section if it did not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import ROOT, machine, machine_line, write_section

from bmap.images import open_images
from bmap.layers.mapper import map_images
from bmap.store.mapfile import read_map, write_map

FORMATS = (("bmap", "bmap"), ("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet"))
DEFAULT_IMAGE = ROOT / "build" / "bench" / "usr-full.img"
TEXT_COLUMNS = ["disk", "start", "end", "type", "device", "kind", "path"]


def log(msg: str) -> None:
    print(f"[formats] {msg}", file=sys.stderr, flush=True)


def wait_for_quiet(limit: float, threshold: float = 1.0) -> tuple[bool, float]:
    """Wait until the 1-minute load average is below ``threshold``, for at most ``limit``
    seconds: ``(quiet, load when timing starts)``."""
    deadline = time.monotonic() + limit
    while True:
        load = os.getloadavg()[0]
        if load < threshold:
            return True, load
        if time.monotonic() >= deadline:
            return False, load
        log(f"load {load:.2f}: waiting for it to fall below {threshold}")
        time.sleep(min(20.0, max(0.0, deadline - time.monotonic())))


def bench(image: Path, rounds: int, workdir: Path) -> tuple[dict[str, dict[str, float]], int]:
    log(f"mapping {image}")
    opened = open_images([image])
    try:
        bmap = map_images(opened)
    finally:
        for i in opened:
            i.close()
    lines = len(bmap)
    times: dict[str, dict[str, list[float]]] = {f: {"write": [], "load": []} for f, _ in FORMATS}
    sizes: dict[str, int] = {}
    frames = {}
    for r in range(rounds):
        # Formats in a rotated order each round: none always runs first, on a cold cache.
        order = FORMATS[r % len(FORMATS) :] + FORMATS[: r % len(FORMATS)]
        for fmt, suffix in order:
            path = workdir / f"usr.{suffix}"
            t0 = time.perf_counter()
            write_map(bmap, path, fmt)
            times[fmt]["write"].append(time.perf_counter() - t0)
            sizes[fmt] = path.stat().st_size
            t0 = time.perf_counter()
            frame = read_map(path)
            times[fmt]["load"].append(time.perf_counter() - t0)
            if r == 0:
                frames[fmt] = frame
            del frame
        log(f"round {r + 1}/{rounds} done")
    reference = frames["csv"]
    for fmt, frame in frames.items():
        columns = TEXT_COLUMNS if fmt == "bmap" else list(reference.columns)
        if not frame[columns].equals(reference[columns]):
            raise SystemExit(f"the {fmt} map does not load the same rows as the csv map")
    medians = {
        fmt: {
            "write": statistics.median(t["write"]),
            "load": statistics.median(t["load"]),
            "size": float(sizes[fmt]),
        }
        for fmt, t in times.items()
    }
    return medians, lines


def section(
    medians: dict[str, dict[str, float]],
    lines: int,
    image: Path,
    rounds: int,
    quiet: bool,
    load: float,
) -> str:
    info = machine()
    text = medians["bmap"]
    rows = []
    for fmt, m in medians.items():
        rows.append(
            f"| {fmt} | {m['write']:.2f} s | {m['load']:.2f} s | {m['size'] / 2**20:.1f} MiB | "
            f"{m['size'] / lines:.1f} | {m['write'] / text['write']:.2f}x | "
            f"{m['load'] / text['load']:.2f}x | {m['size'] / text['size']:.2f}x |"
        )
    calm = (
        f"load average {load:.2f} when timing started"
        if quiet
        else f"**the machine was busy: load average {load:.2f} after waiting; times are "
        "inflated and their ratios less sure**"
    )
    return "\n".join(
        [
            "## Map formats: write, load, size (bench/map_formats.py)",
            "",
            f"{machine_line(info)}; pyarrow {_version('pyarrow')}, pandas {_version('pandas')}; "
            f"{info['tree']}.",
            "",
            f"The map of `{image.name}` (ext4 of /usr: {lines:,} lines) written with "
            "`bmap.store.mapfile.write_map` and loaded with `bmap.read_map` (the DataFrame "
            "`lookup`, `trace` and `report` use), in one process; medians of "
            f"{rounds} rounds, the formats in rotated order each round; {calm}. Every format "
            "loads the same rows (the text map: the columns it keeps).",
            "",
            "| format | write | load | size | bytes/line | write vs text | load vs text | "
            "size vs text |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Parquet (zstd, one row group per 65,536 lines) also keeps what the text map "
            "cannot: file offsets and inodes, with the header's images and findings in its "
            "metadata.",
        ]
    )


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=600,
        metavar="SECONDS",
        help="wait at most this long for the load average to fall below 1.0 (default 600)",
    )
    ap.add_argument(
        "--write", action="store_true", help="rewrite the bench:formats section of BENCHMARKS.md"
    )
    args = ap.parse_args(argv)
    if not args.image.exists():
        log(f"{args.image}: no such image; build it with `make bench` (bench/run.py)")
        return 1
    quiet, load = wait_for_quiet(args.quiet_wait)
    with tempfile.TemporaryDirectory(prefix="bmap-formats-") as tmp:
        medians, lines = bench(args.image, args.rounds, Path(tmp))
    body = section(medians, lines, args.image, args.rounds, quiet, load)
    print(body)
    if args.write:
        write_section("formats", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
