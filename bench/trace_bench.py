"""Trace benchmark: ``bmap trace`` against a straightforward intervaltree annotator.

    python bench/trace_bench.py [--requests 1000000] [--rounds 5] [--follow-requests 1000000]
                                [--no-follow] [--no-write]

1. The map of the large benchmark image (``build/bench/usr-full.img``, made by
   bench/make_image.py) as CSV, and an nbdkit log-filter log (nbdkit 1.24+ format) of
   REQUESTS reads: half in runs of 256 sequential 64 KiB reads, half at random 4 KiB-aligned
   offsets with lengths of 4, 8, 16 or 64 KiB (seed 1). Both are cached in build/bench/.
2. One untimed warm-up of each, which also checks the work: ``bmap trace --summary -f csv``
   must account for every byte the log asked for, and the intervaltree annotator must print
   one line per request.
3. ROUNDS rounds alternating ``python -m bmap trace MAP LOG`` and
   ``python bench/trace_intervaltree.py MAP LOG``, whole processes, output to /dev/null,
   timed with nothing else running (wall time measured here, GNU time's peak RSS of the
   largest process). Then two untimed runs of each whose summed PSS over the process tree
   (bmap forks a worker that shares the map with it) is sampled from /proc every 20 ms.
4. ``--follow``: a log of FOLLOW_REQUESTS requests is appended to a file in 2,000-request
   pieces while ``bmap trace --follow`` reads it; bmap's RSS is sampled as the log grows, to
   show that memory stays flat: the RSS at the end may be at most FLAT_SLACK_MIB above the
   RSS at half of the log. (It rises over the first few hundred thousand requests, then
   stays level: a million-request log measured 140 MiB after loading, 166 MiB from
   300,000 requests to the end.) Then SIGINT.
5. Writes the ``bench:trace`` section of BENCHMARKS.md (unless --no-write or fewer than 5
   rounds). Target: at least 10x faster than the intervaltree annotator, at most 3 s and
   300 MiB for the million requests, constant memory in --follow mode.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402

ROOT = HERE.parent
BUILD = ROOT / "build" / "bench"
IMAGE = BUILD / "usr-full.img"
TIME = "/usr/bin/time"
TARGET_SECONDS = 3.0
TARGET_RATIO = 10.0
TARGET_RSS_MIB = 300
#: --follow memory is called constant when the RSS at the end is at most this much above
#: the RSS once half of the log was read.
FLAT_SLACK_MIB = 10


def log(msg: str) -> None:
    print(f"trace bench: {msg}", file=sys.stderr, flush=True)


def build_map() -> Path:
    out = BUILD / "usr-full.map.csv"
    if not out.exists() or out.stat().st_mtime < IMAGE.stat().st_mtime:
        log(f"mapping {IMAGE.name}")
        subprocess.run(
            [sys.executable, "-m", "bmap", "map", str(IMAGE), "-o", str(out)],
            check=True,
            capture_output=True,
            env=report.child_env(),
        )
    return out


def log_lines(requests: int, size: int, seed: int = 1):
    """(offset, count) of each request, and the lines of an nbdkit log asking for them."""
    rnd = random.Random(seed)
    t = 1_700_000_000.0
    i = 0
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
            yield (
                count,
                (
                    f"{stamp} connection=1 Read id={i} offset={offset:#x} count={count:#x} ...\n"
                    f"{stamp} connection=1 ...Read id={i} return=0\n"
                ),
            )


def build_log(requests: int) -> tuple[Path, int]:
    out = BUILD / f"trace-{requests}.log"
    total_file = out.with_suffix(".bytes")
    if out.exists() and total_file.exists():
        return out, int(total_file.read_text())
    log(f"writing {out.name}")
    total = 0
    with open(out.with_suffix(".tmp"), "w") as fh:
        chunk = []
        for count, lines in log_lines(requests, IMAGE.stat().st_size):
            total += count
            chunk.append(lines)
            if len(chunk) >= 100_000:
                fh.writelines(chunk)
                chunk = []
        fh.writelines(chunk)
    out.with_suffix(".tmp").rename(out)
    total_file.write_text(str(total))
    return out, total


def _descendants(pid: int) -> list[int]:
    """A process and all its descendants, from /proc/PID/task/TID/children."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    return found


def tree_pss_kib(pid: int) -> int:
    """The memory of a process and its descendants: the sum of their PSS (proportional set
    size: a page shared by two processes, as bmap's forked worker shares the map with its
    parent, counts half in each), from /proc/PID/smaps_rollup."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class Sampler:
    """Samples the summed PSS of a process tree every ``period`` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - start, tree_pss_kib(self.pid)))
            time.sleep(period)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max((kib for _, kib in self.samples), default=0)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and GNU time's peak RSS (KiB, the largest single process), with nothing
    else running: memory is sampled in separate runs (:func:`peak_memory`)."""
    with tempfile.NamedTemporaryFile() as tf:
        start = time.monotonic()
        code = subprocess.run(
            [TIME, "-f", "%M", "-o", tf.name, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=report.child_env(),
        ).returncode
        wall = time.monotonic() - start
        if code:
            raise SystemExit(f"trace bench: {' '.join(cmd)} exited with {code}")
        return wall, int(Path(tf.name).read_text().split()[-1])


def peak_memory(cmd: list[str]) -> int:
    """Peak summed PSS of the process tree (KiB), sampled every 20 ms in an untimed run."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=report.child_env()
    )
    sampler = Sampler(proc.pid)
    code = proc.wait()
    peak = sampler.stop()
    if code:
        raise SystemExit(f"trace bench: {' '.join(cmd)} exited with {code}")
    return peak


def check_work(map_csv: Path, log_path: Path, requests: int, total: int) -> str:
    """What the warm-up runs did: bmap's summary must hold every byte of the log, the
    intervaltree annotator must print a line per request."""
    summary = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmap",
            "trace",
            "--summary",
            "-f",
            "csv",
            str(map_csv),
            str(log_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=report.child_env(),
    ).stdout
    rows = list(csv.DictReader(summary.splitlines()))
    read = sum(int(r["bytes_read"]) for r in rows)
    named = sum(1 for r in rows if r["type"])
    if read != total:
        raise SystemExit(f"trace bench: bmap's summary reads {read} bytes, the log asks {total}")
    lines = subprocess.run(
        [sys.executable, str(HERE / "trace_intervaltree.py"), str(map_csv), str(log_path)],
        capture_output=True,
        text=True,
        check=True,
        env=report.child_env(),
    ).stdout.count("\n")
    if lines != requests:
        raise SystemExit(f"trace bench: the intervaltree annotator printed {lines} lines")
    return (
        f"bmap's `--summary` accounts for all {total:,} bytes read ({named:,} objects named); "
        f"the intervaltree annotator printed {lines:,} lines, one per request"
    )


def follow(map_csv: Path, requests: int) -> dict[str, object]:
    """RSS of ``bmap trace --follow`` while a log grows to REQUESTS requests."""
    with tempfile.TemporaryDirectory(prefix="bmap-follow-") as tmp:
        log_path = Path(tmp) / "live.log"
        log_path.write_text("")
        out_path = Path(tmp) / "out.txt"
        with open(out_path, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bmap", "trace", "--follow", str(map_csv), str(log_path)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=report.child_env(),
            )
            time.sleep(1.0)  # map loaded
            marks: list[tuple[int, int]] = []
            start = time.monotonic()
            pieces = []
            for _, lines in log_lines(requests, IMAGE.stat().st_size, seed=2):
                pieces.append(lines)
                if len(pieces) == 2000:
                    with open(log_path, "a") as fh:
                        fh.writelines(pieces)
                    pieces = []
                    done = len(marks) * 2000 + 2000
                    time.sleep(0.005)
                    marks.append((done, tree_pss_kib(proc.pid)))
            with open(log_path, "a") as fh:
                fh.writelines(pieces)
            # Wait until bmap has caught up: its output stops growing.
            last, still = -1, 0
            while still < 10:
                size = out_path.stat().st_size
                still = still + 1 if size == last else 0
                last = size
                time.sleep(0.1)
            elapsed = time.monotonic() - start
            end_rss = tree_pss_kib(proc.pid)
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
        records = out_path.read_text().count("\n")
    fifth = next(kib for done, kib in marks if done >= requests // 5)
    half = next(kib for done, kib in marks if done >= requests // 2)
    return {
        "requests": requests,
        "records": records,
        "seconds": elapsed,
        "rss_fifth": fifth,
        "rss_half": half,
        "rss_end": end_rss,
        "rss_max": max([kib for _, kib in marks] + [end_rss]),
        "flat": end_rss - half <= FLAT_SLACK_MIB * 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--follow-requests", type=int, default=1_000_000)
    ap.add_argument("--no-follow", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.rounds < 5:
        log(f"{args.rounds} rounds: fewer than 5; BENCHMARKS.md is left alone")
        args.no_write = True
    if not IMAGE.exists():
        raise SystemExit("trace bench: build/bench/usr-full.img is missing: run bench/run.py first")
    info = report.machine()
    map_csv = build_map()
    log_path, total = build_log(args.requests)
    log("warm-up and checks")
    checked = check_work(map_csv, log_path, args.requests, total)
    tools = {
        "bmap trace": [sys.executable, "-m", "bmap", "trace", str(map_csv), str(log_path)],
        "intervaltree": [
            sys.executable,
            str(HERE / "trace_intervaltree.py"),
            str(map_csv),
            str(log_path),
        ],
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
    for r in range(args.rounds):
        for name, cmd in tools.items():
            runs[name].append(timed(cmd))
            wall, gnu = runs[name][-1]
            log(f"round {r + 1}: {name} {wall:.2f} s (largest process {gnu // 1024} MiB)")
    log("memory runs")
    pss = {name: max(peak_memory(cmd) for _ in range(2)) for name, cmd in tools.items()}
    med = {
        name: (statistics.median(w for w, _ in v), pss[name], statistics.median(g for _, g in v))
        for name, v in runs.items()
    }
    bmap_wall, bmap_peak, _ = med["bmap trace"]
    ratio = med["intervaltree"][0] / bmap_wall
    met = (
        bmap_wall <= TARGET_SECONDS and ratio >= TARGET_RATIO and bmap_peak / 1024 <= TARGET_RSS_MIB
    )
    followed = None if args.no_follow else follow(map_csv, args.follow_requests)
    walls = {name: ", ".join(f"{w:.2f}" for w, _ in v) for name, v in runs.items()}
    lines = [
        "## trace: bmap trace against an intervaltree annotator",
        "",
        f"Measured {info['date']} on {info['cpu']} ({info['nproc']} cores, {info['memory']}, "
        f"Linux {info['kernel']}); Python {info['python']}, numpy {info['numpy']}, "
        f"intervaltree {info['intervaltree']}; bmap {info['bmap']} at {info['tree']}.",
        "",
        f"{args.requests:,} read requests in nbdkit's log-filter format "
        f"({log_path.stat().st_size / 2**20:.0f} MiB; half in runs of sequential 64 KiB reads, "
        "half at random offsets) against the CSV map of usr-full.img; whole processes, output "
        f"to /dev/null, medians of {args.rounds} alternating warm runs timed with nothing else "
        "running. Peak memory is the summed PSS of the process tree (bmap forks a worker "
        "that scans and annotates while the parent writes; PSS counts the pages they share "
        "once), the larger of two further runs sampled every 20 ms; GNU time's peak RSS of "
        "the timed runs is the largest single process.",
        "",
        "| tool | wall time | peak PSS (process tree) | peak RSS (largest process) | runs (s) |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {w:.2f} s | {p / 1024:.0f} MiB | {g / 1024:.0f} MiB | {walls[name]} |"
            for name, (w, p, g) in med.items()
        ),
        "",
        f"Checked in the warm-up: {checked}.",
        "",
        f"**bmap trace is {ratio:.1f}x faster than the intervaltree annotator.** Target "
        f"(>= {TARGET_RATIO:.0f}x, <= {TARGET_SECONDS:.0f} s, <= {TARGET_RSS_MIB} MiB): "
        + ("**met**." if met else "**not met**."),
    ]
    if followed:
        f = followed
        lines += [
            "",
            f"`--follow`: a log growing to {f['requests']:,} requests in pieces of 2,000 "
            f"(written as fast as bmap read it; {f['records']:,} records printed in "
            f"{f['seconds']:.1f} s): RSS {f['rss_fifth'] / 1024:.0f} MiB after a fifth of the "
            f"log, {f['rss_half'] / 1024:.0f} MiB at half, {f['rss_end'] / 1024:.0f} MiB at "
            f"the end (largest seen {f['rss_max'] / 1024:.0f} MiB): "
            + (
                f"constant over the second half (within {FLAT_SLACK_MIB} MiB)."
                if f["flat"]
                else f"**grows** by more than {FLAT_SLACK_MIB} MiB over the second half."
            ),
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        report.write_section("trace", body)


if __name__ == "__main__":
    main()
