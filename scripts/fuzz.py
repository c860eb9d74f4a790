"""Coverage-guided fuzzing of bmap's entry points for untrusted bytes (atheris: libFuzzer for
Python). ``make fuzz`` runs every target for a while; the test suite runs each briefly.

    python scripts/fuzz.py [TARGET...] [--seconds N | --runs N] [--keep]

Each target (tests/fuzz/targets.py) runs in its own process with its corpus in
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
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import MAX_LEN, TARGETS, seeds  # noqa: E402

STATS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)(?: .*?exec/s: (\d+))?")


def run(target: str, seconds: int | None, runs: int | None, keep: bool) -> dict[str, object]:
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
    if seconds is not None:
        options.append(f"-max_total_time={seconds}")
    if runs is not None:
        options.append(f"-runs={runs}")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run_one", target, *options, str(corpus)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
    )
    elapsed = time.monotonic() - start
    found = sorted(set(crashes.iterdir()) - before)
    stats = STATS.findall(proc.stderr)
    last = stats[-1] if stats else ("0", "0", "0", "0", "0", "")
    result = {
        "target": target,
        "exit": proc.returncode,
        "seconds": round(elapsed, 1),
        "runs": int(last[0]),
        "cov": int(last[1]),
        "features": int(last[2]),
        "corpus": int(last[3]),
        "exec_per_s": round(int(last[0]) / elapsed) if elapsed else 0,
        "crashes": [str(p.relative_to(ROOT)) for p in found],
    }
    if proc.returncode != 0 and not found:
        result["error"] = proc.stderr[-2000:]
    elif found:
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
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"no target {', '.join(unknown)} (targets: {', '.join(TARGETS)})")
    seconds = args.seconds if args.seconds or args.runs else 60
    failed = False
    print("| target | seconds | runs | exec/s | cov | features | corpus | crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in args.targets or list(TARGETS):
        r = run(target, seconds, args.runs, args.keep)
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
