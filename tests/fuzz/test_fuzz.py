"""The fuzz campaign's short run in the test suite, and its regression tests.

- Every seed (the heads of the bundled samples, the test suite's logs and maps) and every
  crasher ever kept in tests/fuzz/crashers/TARGET/ goes through its target here, in process:
  only the project's errors may escape, and the target's checks must hold.
- Each target runs a short coverage-guided campaign (atheris, 1000 inputs) from a fixed seed,
  so that a run explores the same inputs every time and a failure here is a regression, not
  the luck of the draw; ``make fuzz`` runs long campaigns from new seeds (scripts/fuzz.py),
  and what they find is kept in tests/fuzz/crashers/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import MAX_LEN, ROOT, TARGETS, seeds

CRASHERS = Path(__file__).resolve().parent / "crashers"


def _inputs() -> list[tuple[str, str, Path | None]]:
    cases: list[tuple[str, str, Path | None]] = [
        (target, f"seed-{name}", None) for target in TARGETS for name, _ in seeds(target)
    ]
    for target in TARGETS:
        folder = CRASHERS / target
        if folder.is_dir():
            cases += [(target, path.name, path) for path in sorted(folder.iterdir())]
    return cases


@pytest.mark.parametrize(("target", "name", "path"), _inputs(), ids=lambda v: str(v))
def test_seed_or_kept_crasher_passes_its_target(target, name, path):
    if path is None:
        data = dict(seeds(target))[name.removeprefix("seed-")][:MAX_LEN]
    else:
        data = path.read_bytes()
    TARGETS[target](data)


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_short_campaign_finds_no_crash(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install .[test])")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fuzz.py"),
            target,
            "--runs",
            "1000",
            "--seed",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {target} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    runs, cov, crashes = int(cells[2]), int(cells[4]), int(cells[7])
    assert runs >= 1000 and cov > 0 and crashes == 0, row
