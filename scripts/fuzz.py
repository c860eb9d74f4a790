"""Coverage-guided fuzzing of bmap's entry points for untrusted bytes (atheris: libFuzzer for
Python). ``make fuzz`` runs every target for a while; the test suite runs each briefly.

    python scripts/fuzz.py [TARGET...] [--seconds N | --runs N] [--keep] [--seed N]

Each target (tests/fuzz/targets.py) runs in its own process (the image target in rounds of
500 inputs, a fresh process each: atheris's instrumentation grows its process by 1 to 2 MiB
an input), on its corpus in
build/fuzz/corpus/TARGET, seeded from the samples the first time. An input that crashes (an
exception other than the project's own, a failed check), takes more than 10 s or more than
2 GiB is written to tests/fuzz/crashers/TARGET/ with ``--keep`` (to be kept as a regression
test: tests/fuzz/test_fuzz.py replays every file there), else to build/fuzz/crashes/TARGET/.
Prints, per target: runs, executions per second, coverage (libFuzzer's ``cov``), corpus
size and crashes; exits 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import MAX_LEN, SCRATCH, TARGETS, seeds  # noqa: E402

#: Inputs per fuzzing process, for the targets that need rounds (see :func:`run`); the others
#: run in one process (2-minute campaigns of up to 372,680 inputs stayed within the limit).
ROUND_RUNS = {"image": 500}
STATS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)(?: .*?exec/s: (\d+))?")


def _remove_scratch_of_dead_processes() -> None:
    """A target writes its input to ``SCRATCH/bmap-fuzz-PID.*`` and removes it; a process
    that libFuzzer ends (out of memory, a timeout) leaves its file behind."""
    for path in SCRATCH.glob("bmap-fuzz-*"):
        pid = path.name.removeprefix("bmap-fuzz-").split(".")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


def run(
    target: str, seconds: int | None, runs: int | None, keep: bool, seed: int | None = None
) -> dict[str, object]:
    corpus = ROOT / "build" / "fuzz" / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for name, data in seeds(target):
            digest = hashlib.sha1(data).hexdigest()[:12]
            (corpus / f"seed-{name}-{digest}").write_bytes(data[:MAX_LEN])
    crashes = ROOT / "tests" / "fuzz" / "crashers" if keep else ROOT / "build" / "fuzz" / "crashes"
    crashes = crashes / target
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    options = [
        f"-max_len={MAX_LEN}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    # The image target runs in rounds of ROUND_RUNS inputs, each a fresh process on the same
    # corpus (so coverage carries over): atheris's instrumentation of the parsers grows its
    # process by 1 to 2 MiB an input, after some 400 MiB for the corpus, which would end a
    # long campaign at the 2 GiB limit with a false out-of-memory (the same inputs run
    # uninstrumented stay flat at 91 MiB).
    start = time.monotonic()
    total_runs, rounds, last = 0, 0, ("0", "0", "0", "0", "0", "")
    proc = None
    while True:
        size = ROUND_RUNS.get(target)
        left_runs = None if runs is None else runs - total_runs
        round_runs = (
            size if left_runs is None else left_runs if size is None else min(size, left_runs)
        )
        # libFuzzer counts the corpus it loads first (and one empty input) in -runs: a round
        # of a grown corpus would else try nothing new.
        loaded = sum(1 for _ in corpus.iterdir()) + 1 if size is not None else 0
        round_options = [*options] + (
            [f"-runs={round_runs + loaded}"] if round_runs is not None else []
        )
        if seed is not None:
            round_options.append(f"-seed={seed + rounds}")
        rounds += 1
        if seconds is not None:
            left = seconds - (time.monotonic() - start)
            if left < 1:
                break
            round_options.append(f"-max_total_time={max(1, int(left))}")
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.run_one", target, *round_options, str(corpus)],
            cwd=ROOT,
            # A fixed seed explores the same inputs only where coverage does not depend on
            # the order of a set of strings.
            env={**os.environ, "PYTHONHASHSEED": "0"} if seed is not None else None,
            capture_output=True,
            text=True,
            errors="replace",
        )
        _remove_scratch_of_dead_processes()
        stats = STATS.findall(proc.stderr)
        if stats:
            last = stats[-1]
        done = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        executed = int(done.group(1)) if done else int(last[0])
        inited = re.search(r"#(\d+)\s+INITED", proc.stderr)
        new_inputs = executed - (int(inited.group(1)) if inited and size is not None else 0)
        total_runs += new_inputs if size is not None else executed
        if proc.returncode != 0 or new_inputs <= 0 or (runs is not None and total_runs >= runs):
            break
        if (seconds is None and runs is None) or size is None:
            break  # one process: it ran to its time or its count
    elapsed = time.monotonic() - start
    found = sorted(set(crashes.iterdir()) - before)
    result = {
        "target": target,
        "exit": proc.returncode if proc is not None else 0,
        "seconds": round(elapsed, 1),
        "runs": total_runs,
        "cov": int(last[1]),
        "features": int(last[2]),
        "corpus": int(last[3]),
        "exec_per_s": round(total_runs / elapsed) if elapsed else 0,
        "crashes": [str(p.relative_to(ROOT)) for p in found],
    }
    if proc is not None and proc.returncode != 0 and not found:
        result["error"] = proc.stderr[-2000:]
    elif found and proc is not None:
        result["report"] = proc.stderr[-4000:]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGETS)}; default: all"
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--seconds", type=int, help="time per target (default 60)")
    group.add_argument("--runs", type=int, help="inputs per target")
    ap.add_argument("--keep", action="store_true", help="crashers go to tests/fuzz/crashers")
    ap.add_argument(
        "--seed",
        type=int,
        help="libFuzzer's random seed (round N of a target uses SEED + N): the same inputs "
        "every run, as the test suite's short campaign needs; default: a new seed each run",
    )
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"no target {', '.join(unknown)} (targets: {', '.join(TARGETS)})")
    seconds = args.seconds if args.seconds or args.runs else 60
    failed = False
    print("| target | seconds | runs | exec/s | cov | features | corpus | crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in args.targets or list(TARGETS):
        r = run(target, seconds, args.runs, args.keep, args.seed)
        print(
            f"| {target} | {r['seconds']} | {r['runs']} | {r['exec_per_s']} | {r['cov']} | "
            f"{r['features']} | {r['corpus']} | {len(r['crashes'])} |",
            flush=True,
        )
        for key in ("error", "report"):
            if key in r:
                print(r[key], file=sys.stderr)
        failed |= r["exit"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
