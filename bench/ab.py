"""A/B: the same ``bmap`` command from two source trees, in alternating whole-process runs.

    python bench/ab.py --a OLD_TREE --b NEW_TREE [--rounds 15] [--env-b NAME=VALUE ...] \
        -- map IMAGE -o /dev/null

Each round runs A then B (the order alternates every round, so that neither always runs
second on a warm cache), each as ``python -m bmap ARGS`` with ``PYTHONPATH`` set to its tree
(the trees' bytecode compiled first, as an install does). Wall time is measured around the
child; peak RSS is GNU time's (``/usr/bin/time``, the child's own ``ru_maxrss``). Prints the
medians, the fastest runs and B/A. ``--env-a`` / ``--env-b`` set variables for one side only
(to compare settings in one tree).
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

TIME = "/usr/bin/time"


def run_once(tree: Path, args: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    with tempfile.NamedTemporaryFile("r") as report:
        child_env = {**os.environ, "PYTHONPATH": str(tree), **env}
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-o", report.name, "-f", "%M %U %S", sys.executable, "-m", "bmap", *args],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/tmp",
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 3):
            raise SystemExit(f"{tree}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
        rss, user, system = report.read().split()[-3:]
    return wall, int(rss), float(user) + float(system)


def parse_env(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--env-a", action="append", default=[])
    parser.add_argument("--env-b", action="append", default=[])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- and the bmap arguments")
    opts = parser.parse_args()
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    for tree in (opts.a, opts.b):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "bmap", "parsers"], cwd=tree, check=True
        )
    sides = {"A": (opts.a, parse_env(opts.env_a)), "B": (opts.b, parse_env(opts.env_b))}
    for tree, env in sides.values():  # one untimed warm-up each
        run_once(tree, args, env)
    results: dict[str, list[tuple[float, int, float]]] = {"A": [], "B": []}
    for round_ in range(opts.rounds):
        order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
        for name in order:
            tree, env = sides[name]
            results[name].append(run_once(tree, args, env))
    print(f"bmap {' '.join(args)}: {opts.rounds} alternating rounds")
    medians = {}
    for name, (tree, env) in sides.items():
        walls = [r[0] for r in results[name]]
        medians[name] = statistics.median(walls)
        rss = statistics.median(r[1] for r in results[name]) / 1024
        cpu = statistics.median(r[2] for r in results[name])
        setting = f" {' '.join(f'{k}={v}' for k, v in env.items())}" if env else ""
        print(
            f"  {name} {tree}{setting}: median {medians[name]:.3f} s, fastest "
            f"{min(walls):.3f} s, slowest {max(walls):.3f} s, CPU {cpu:.2f} s, "
            f"peak RSS {rss:.0f} MiB"
        )
    print(f"  B/A (medians): {medians['B'] / medians['A']:.3f}")


if __name__ == "__main__":
    main()
