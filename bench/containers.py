"""Map one disk as raw and as each container, in alternating whole-process runs.

    python bench/containers.py [IMAGE] [--rounds 7] [--out build/bench/containers]

IMAGE (default: build/bench/usr-full.img, made by ``make bench``) is converted once with
``qemu-img convert`` to qcow2 (plain, deflate, zstd) and VMDK (monolithicSparse); each round
maps the raw image and every container with ``python -m bmap map X -o /dev/null`` in a new
order (rotated every round, so that none always runs on a cache the other warmed). Prints
the median and fastest wall time of each, its ratio to raw, and the peak RSS; with
``--markdown`` a table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"

#: name -> qemu-img convert arguments (None: the raw image itself).
VARIANTS: dict[str, list[str] | None] = {
    "raw": None,
    "qcow2": ["-O", "qcow2"],
    "qcow2 deflate": ["-O", "qcow2", "-c"],
    "qcow2 zstd": ["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
    "vmdk sparse": ["-O", "vmdk", "-o", "subformat=monolithicSparse"],
}


def make(image: Path, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, args in VARIANTS.items():
        if args is None:
            made[name] = image
            continue
        target = out / f"{image.stem}.{name.replace(' ', '-')}"
        if not target.exists() or target.stat().st_mtime < image.stat().st_mtime:
            subprocess.run(
                ["qemu-img", "convert", "-q", "-f", "raw", *args, str(image), str(target)],
                check=True,
            )
        made[name] = target
    return made


def run_once(path: Path) -> tuple[float, int]:
    args = [str(path), "-o", "/dev/null"]
    with tempfile.NamedTemporaryFile("r") as report:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-o", report.name, "-f", "%M", sys.executable, "-m", "bmap", "map", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/tmp",
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 3):
            raise SystemExit(f"{path}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
        rss = int(report.read().split()[-1])
    return wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, default=ROOT / "build/bench/usr-full.img")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "build/bench/containers")
    parser.add_argument("--markdown", action="store_true")
    opts = parser.parse_args()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "bmap"), str(ROOT / "parsers")],
        check=True,
    )
    made = make(opts.image, opts.out)
    names = list(made)
    times: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, int] = dict.fromkeys(names, 0)
    for r in range(opts.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            wall, peak = run_once(made[name])
            times[name].append(wall)
            rss[name] = max(rss[name], peak)
    raw = statistics.median(times["raw"])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append(
            (name, made[name].stat().st_size, med, min(times[name]), med / raw, rss[name] // 1024)
        )
    if opts.markdown:
        print("| image | file size | median | fastest | vs raw | peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, size, med, fast, ratio, peak in rows:
            print(
                f"| {name} | {size / 2**20:.0f} MiB | {med:.2f} s | {fast:.2f} s | "
                f"{ratio:.2f}x | {peak} MiB |"
            )
    else:
        for name, size, med, fast, ratio, peak in rows:
            print(
                f"{name:14} {size / 2**20:7.0f} MiB  median {med:6.2f} s  fastest {fast:6.2f} s"
                f"  {ratio:5.2f}x raw  {peak} MiB"
            )


if __name__ == "__main__":
    main()
