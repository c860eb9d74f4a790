"""bmaptool benchmark: ``bmaptool copy`` with bmap's XML against ``bmaptool create``'s.

    python bench/bmaptool_bench.py [--size-mib 64] [--rounds 5] [--write]

1. The old-data image (``build/bench/bmaptool-old-data.img``, made once): an ext4 of SIZE
   MiB by ``mke2fs -d`` from a tree of 200 files (about 12 MiB), whose free blocks then held
   a file of ``OLD-DELETED-DATA`` that ``debugfs -w`` wrote and removed: the free space is
   old bytes, not holes, as on an image that was used before it was shipped.
2. Its two maps: ``bmap map IMG -f bmaptool`` and ``bmaptool create IMG``.
3. ROUNDS rounds alternating the two: the target (a file of the image's size, filled with
   another pattern before each run, untimed) behind a loop device, and ``bmaptool copy
   --bmap X IMG /dev/loopN`` timed as a whole process (bmaptool syncs the device at its end).
   Without root, the target is a regular file (bmaptool truncates it first: its unlisted
   blocks read as zeros instead of the old pattern).
4. After each variant's first run the target is checked: every listed block equals the
   image, every other block still holds the target's pattern (bmaptool wrote nothing there),
   and ``e2fsck -fn`` passes on it. Bytes written are the listed blocks' bytes (what the XML
   maps, the last block clipped at the image's end).
5. With ``--write``, the ``bench:bmaptool`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import report  # noqa: E402

from tests.bmap.store.test_bmaptool import (  # noqa: E402
    TARGET_FILL,
    build_old_data_ext4,
    fill,
)

BUILD = ROOT / "build" / "bench"
MiB = 1 << 20


def log(msg: str) -> None:
    print(f"bmaptool bench: {msg}", file=sys.stderr, flush=True)


def build_image(size_mib: int) -> Path:
    image = BUILD / f"bmaptool-old-data-{size_mib}m.img"
    if not image.exists():
        log(f"building {image.name}")
        BUILD.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=BUILD) as work:
            partial = Path(work) / image.name
            build_old_data_ext4(
                partial, Path(work), size=size_mib * MiB, files=200, max_size=128 << 10
            )
            partial.rename(image)
    return image


def ranges_of(xml: Path) -> tuple[int, int, list[tuple[int, int]]]:
    root = ET.parse(xml).getroot()
    block = int(root.find("BlockSize").text.strip())  # type: ignore[union-attr]
    size = int(root.find("ImageSize").text.strip())  # type: ignore[union-attr]
    ranges = []
    for element in root.find("BlockMap"):  # type: ignore[union-attr]
        first, _, last = element.text.strip().partition("-")  # type: ignore[union-attr]
        ranges.append((int(first), int(last or first)))
    return block, size, ranges


def bytes_listed(xml: Path) -> int:
    block, size, ranges = ranges_of(xml)
    return sum(min((b + 1) * block, size) - a * block for a, b in ranges)


def check_target(image: Path, target: Path, xml: Path, pattern_kept: bool) -> None:
    """Listed blocks equal the image; the others hold the pattern (or zeros, for a file
    target bmaptool truncated)."""
    block, size, ranges = ranges_of(xml)
    other = (TARGET_FILL * (block // len(TARGET_FILL) + 2))[: block * 2]
    with open(image, "rb") as img, open(target, "rb") as tgt:
        pos = 0
        for first, last in [*ranges, (-(-size // block), -(-size // block) - 1)]:
            start, end = first * block, min((last + 1) * block, size)
            while pos < start and pos < size:
                tgt.seek(pos)
                n = min(block, size - pos)
                got = tgt.read(n)
                phase = pos % len(TARGET_FILL)
                want = other[phase : phase + n] if pattern_kept else bytes(n)
                if got != want:
                    raise SystemExit(f"{xml.name}: unlisted block at {pos:#x} was written")
                pos += block
            if end > start:
                img.seek(start)
                tgt.seek(start)
                a = hashlib.sha256(img.read(end - start)).digest()
                if a != hashlib.sha256(tgt.read(end - start)).digest():
                    raise SystemExit(f"{xml.name}: blocks {first}-{last} differ from the image")
            pos = max(pos, end)
    subprocess.run(["e2fsck", "-fn", str(target)], check=True, capture_output=True)


def copy_once(image: Path, xml: Path, target: Path, use_loop: bool) -> float:
    fill(target, image.stat().st_size, TARGET_FILL)
    os.sync()
    dev = str(target)
    if use_loop:
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(target)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    try:
        started = time.perf_counter()
        subprocess.run(
            ["bmaptool", "-q", "copy", "--bmap", str(xml), str(image), dev],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started
    finally:
        if use_loop:
            subprocess.run(["losetup", "--detach", dev], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md's section")
    args = parser.parse_args()

    image = build_image(args.size_mib)
    use_loop = os.geteuid() == 0 and Path("/dev/loop-control").exists()
    with tempfile.TemporaryDirectory(dir=BUILD) as work_dir:
        work = Path(work_dir)
        ours, theirs = work / "bmap.bmap", work / "create.bmap"
        subprocess.run(
            [sys.executable, "-m", "bmap", "map", str(image), "-f", "bmaptool", "-o", str(ours)],
            check=True,
            capture_output=True,
            env=report.child_env(),
        )
        subprocess.run(["bmaptool", "-q", "create", "-o", str(theirs), str(image)], check=True)
        variants = {"bmap map --format bmaptool": ours, "bmaptool create": theirs}
        target = work / "target.img"
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, xml in variants.items():  # one untimed run each, checked
            copy_once(image, xml, target, use_loop)
            check_target(image, target, xml, pattern_kept=use_loop)
            log(f"{name}: checked the target")
        for round_ in range(args.rounds):
            order = list(variants.items())
            if round_ % 2:
                order.reverse()
            for name, xml in order:
                times[name].append(copy_once(image, xml, target, use_loop))
            log(f"round {round_ + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()))
        written = {name: bytes_listed(xml) for name, xml in variants.items()}

    size = image.stat().st_size
    rows = []
    for name in variants:
        median = statistics.median(times[name])
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        rows.append(
            f"| {name} | {written[name] / MiB:.1f} MiB ({written[name] * 100 / size:.0f}%) | "
            f"{median:.3f} s | {runs} |"
        )
    mine, its = (written[n] for n in variants)
    t_mine, t_its = (statistics.median(times[n]) for n in variants)
    info = report.machine()
    target_kind = "a loop device over a file" if use_loop else "a regular file (not root)"
    body = f"""## bmaptool: flashing with bmap's XML against bmaptool create's (issue 15)

Measured {report.machine_line(info)}; bmaptool {_bmaptool_version()}; {info["tree"]}.
`bench/bmaptool_bench.py --rounds {args.rounds}`.

The image: build/bench/{image.name}, an ext4 of {size / MiB:.0f} MiB made by `mke2fs -d` from
200 files, whose free blocks then held a file of old bytes that `debugfs -w` wrote and
removed (free space full of old data, no holes). The target: {target_kind} of the image's
size, filled with another pattern before each run (untimed). Each run is `bmaptool copy
--bmap X IMAGE TARGET` as a whole process, wall time, medians of {args.rounds} alternating
runs. Bytes written: what the XML lists. Checked after each variant's first run: every listed
block equals the image, every other block still holds the target's pattern, and `e2fsck -fn`
passes on the target.

| XML | bytes written | wall time (median) | runs (s) |
|---|---|---|---|
{chr(10).join(rows)}

bmap's XML writes {mine / its * 100:.0f}% of the bytes bmaptool create's writes, in
{t_mine / t_its * 100:.0f}% of the time.
"""
    print(body)
    if args.write:
        report.write_section("bmaptool", body)


def _bmaptool_version() -> str:
    done = subprocess.run(["bmaptool", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().split()[-1]


if __name__ == "__main__":
    main()
