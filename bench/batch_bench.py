"""Issue 15's batch benchmark: ``bmap batch`` of 40 images on a local Dask cluster of one
worker against two, and a plain loop (the same task function, in one process, no Dask) for
Dask's overhead.

    python bench/batch_bench.py [--rounds 3] [--write]

The fleet: 20 entries of the ext4 copy of a quarter of /usr that bench/run.py builds
(``build/bench/usr-quarter.img``, one file linked 20 times), the Sleuth Kit family's test
images (FAT, exFAT, NTFS, ISO9660, HFS+, UFS) and the bundled samples, 40 in all, one of them
all zeros (no disk: a failed entry). ``--no-sha256``: the hashes would time the disk, not the
mapping. Runs alternate (loop, 1 worker, 2 workers), whole processes under GNU time; medians.
``--write`` rewrites the ``bench:batch`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import report  # noqa: E402

USR = ROOT / "build" / "bench" / "usr-quarter.img"
LOOP = """
import sys, time
from bmap.fleet.batch import Options, entries_from, map_entry, write_image_table
from pathlib import Path
entries = entries_from([sys.argv[1]])
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
rows = [map_entry(e, Options(str(out), 1536 << 20, False)) for e in entries]
write_image_table(rows, out / "images.parquet")
print(len(rows), sum(1 for r in rows if r["error"]))
"""


def fleet(folder: Path) -> int:
    """The 40 entries, as links in ``folder``."""
    from tests.tsk_images import tsk_image
    from tests.ufs_images import BUILDERS as _ufs  # noqa: F401 - registers the UFS images

    cache = ROOT / "build" / "bench" / "tsk-images"
    for i in range(20):
        os.symlink(USR, folder / f"usr-{i:02d}.img")
    names = ["fat12", "fat16", "fat32", "esp_in_gpt", "ntfs", "exfat", "iso", "hfsplus"]
    names += ["ufs1", "ufs2"]
    for name in names:
        os.symlink(tsk_image(name, cache), folder / f"{name}.img")
    for sample in sorted((ROOT / "samples").glob("*.img.xz")):
        with lzma.open(sample) as src, open(folder / sample.name.removesuffix(".xz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return len(list(folder.iterdir()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="rewrite bench:batch")
    args = ap.parse_args(argv)
    if not USR.exists():
        print(f"{USR} is missing: run bench/run.py once to build it", file=sys.stderr)
        return 1
    report.compile_bytecode()
    info = report.machine()
    work = Path(tempfile.mkdtemp(prefix="bmap-batch-bench-"))
    try:
        folder = work / "fleet"
        folder.mkdir()
        count = fleet(folder)
        bmap = [sys.executable, "-m", "bmap", "batch", str(folder), "--no-sha256"]
        kinds = {
            "loop": lambda out: [sys.executable, "-c", LOOP, str(folder), str(out)],
            "1 worker": lambda out: [*bmap, "--out", str(out), "--workers", "1"],
            "2 workers": lambda out: [*bmap, "--out", str(out), "--workers", "2"],
        }
        runs: dict[str, list[report.Run]] = {k: [] for k in kinds}
        codes: dict[str, set[int]] = {k: set() for k in kinds}
        t0 = time.monotonic()
        for r in range(args.rounds + 1):  # the first round warms the page cache, untimed
            for kind, cmd in kinds.items():
                out = work / f"out-{r}-{kind.replace(' ', '')}"
                wall, rss, cpu, code, _, _ = report.timed_run(f"{kind}-{r}", cmd(out), work)
                shutil.rmtree(out, ignore_errors=True)
                if r:
                    runs[kind].append(report.Run(wall, rss, cpu))
                    codes[kind].add(code)
        took = time.monotonic() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(x.wall for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x.cpu for x in v) for k, v in runs.items()}
    rows = [
        [
            kind,
            report.fmt_seconds(med[kind]),
            report.fmt_seconds(cpu[kind]),
            ", ".join(str(c) for c in sorted(codes[kind])),
        ]
        for kind in kinds
    ]
    body = "\n".join(
        [
            "## bmap batch: 40 images on Dask, one worker against two",
            "",
            f"Measured {report.machine_line(info)}. Timing took {took / 60:.1f} min.",
            "",
            f"{count} entries: 20 links to the ext4 copy of a quarter of /usr "
            "(`build/bench/usr-quarter.img`), the Sleuth Kit family's test images (FAT12/16/32, "
            "an ESP in a GPT, NTFS, exFAT, ISO9660, HFS+, UFS1, UFS2) and the bundled samples "
            "(one of them all zeros: a failed entry, exit 10). `--no-sha256`. Medians of "
            f"{args.rounds} alternating warm runs, whole processes; `loop` maps the same "
            "entries with the same task function in one process, without Dask.",
            "",
            report.table(
                ["run", "wall", "CPU (parent process tree)", "exit codes"],
                rows,
            ),
            "",
            f"- 2 workers against 1: **{med['1 worker'] / med['2 workers']:.2f}x** "
            "(the aim: near 2x on 2 cores).",
            f"- Dask's overhead, 1 worker against the plain loop: "
            f"{report.fmt_seconds(med['1 worker'] - med['loop'])} "
            f"({med['1 worker'] / med['loop']:.2f}x): the local cluster's start and stop, "
            "shipping each task and its row, and the worker's own imports.",
        ]
    )
    print(body)
    if args.write:
        report.write_section("batch", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
