"""bmap on crafted hostile inputs (``tests/hostile/craft.py``), each run in a subprocess.

For every case: (a) the exit code is not 1 (internal error), the process was not killed and
stderr holds no traceback; (b) it ended before :data:`KILL_AFTER_SECONDS` (a hang guard: the
tests assert no wall-clock speed, the project's rule; each case's seconds are printed and kept
in docs/hostile.md); (c) its peak RSS stayed
under :data:`MAX_RSS_MIB`; (d) for ``bmap map``, every line of the map lies inside its disk;
(e) the inputs' sha256 did not change; and, where docs/cli.md prescribes an exit code for the
input, that one.

Cases that fail today are strict xfails whose reason says what happens: when a fix makes one
pass, the XPASS fails the run, telling whoever fixed it to remove the mark.

Each case's outcome (exit code, seconds, MiB, the first stderr line) is printed (``pytest
-rA`` shows it) and, when ``BMAP_HOSTILE_RESULTS`` names a file, appended to it as a JSON line.

Run: ``BMAP_TEST_CACHE=/work/cache .venv/bin/python -m pytest tests/hostile -rA`` (as root:
the LVM bases are made on loop devices).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.hostile import craft
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_images_cache_fixture,
    lvm_two_image_fixture,
    lvm_whole_image_fixture,
)
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)
from tests.ufs_images import BUILDERS as _UFS_BUILDERS  # noqa: F401 - joins tsk_images

# Thresholds. A real 32-48 MiB image maps in about 0.3 s and 40 MiB; these leave room for a
# slow shared machine while still catching a quadratic loop or a blow-up of one object per
# claimed count.
KILL_AFTER_SECONDS = 60  # (b) wall clock; the whole process group is killed then: a hang
MAX_RSS_MIB = 600  # (c) peak RSS of the bmap process (ru_maxrss)

XFAIL: dict[str, str] = {}
"""Case name -> what happens today, for a case that fails (a strict xfail). The GPT and LVM
ones (the 65,536-entry GPTs at 10.7-13.9 s, a 16 MiB ring of broken records at 18 s) were
fixed by 51fb99d and the lazy metadata tokenizer; the two ISO9660 hangs inside The Sleuth
Kit's C code by not giving it a volume past tsk.ISO_MAX_PATH_ENTRIES or
tsk.ISO_MAX_DIRECTORY_BYTES."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Bases:
    """The base images, made on first use (an LVM set needs root and loop devices)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def gpt512(self) -> Path:
        return self.request.getfixturevalue("sample")("gpt-512")

    def lvm_whole(self) -> Path:
        return self.request.getfixturevalue("lvm_whole_image").images[0]

    def lvm_two(self) -> tuple[Path, Path]:
        images = self.request.getfixturevalue("lvm_two_image").images
        return images[0], images[1]

    def lvm_big_mda(self) -> Path:
        return self.request.getfixturevalue("hostile_big_mda")

    def tsk(self, name: str) -> Path:
        """A Sleuth Kit image of tests/tsk_images.py, built into its cache on first use
        (skipped where its tools or root are missing)."""
        return Path(self.request.getfixturevalue("tsk_image_factory")(name))


@pytest.fixture(scope="session")
def hostile_big_mda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices for pvcreate")
    return craft.build_lvm_big_mda(tmp_path_factory.mktemp("big-mda"))


class Outcome:
    def __init__(self, code: int, seconds: float, rss_mib: float, stderr: str, killed: bool):
        self.code, self.seconds, self.rss_mib = code, seconds, rss_mib
        self.stderr, self.killed = stderr, killed

    @property
    def first_stderr_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        tb = next((line for line in reversed(lines) if re.match(r"\w+(Error|Exception)", line)), "")
        return tb or (lines[0] if lines else "")


# Linux keeps, across exec, the largest RSS a process ever had (ru_maxrss): a child forked
# from pytest starts with pytest's own RSS (100 MiB and growing). So a small launcher, forked
# from pytest, starts bmap (forked from the launcher's small fresh image) and writes bmap's own
# exit status and ru_maxrss (KiB) from os.wait4.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_bmap(argv: list[str], workdir: Path) -> Outcome:
    """``python -m bmap ARGV`` in its own process group (through :data:`_LAUNCHER`); the group
    is killed after KILL_AFTER_SECONDS."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    err_path = workdir / "stderr.txt"
    status_path = workdir / "status.txt"
    status_path.unlink(missing_ok=True)
    with open(workdir / "stdout.txt", "wb") as out, open(err_path, "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                str(status_path),
                sys.executable,
                "-m",
                "bmap",
                *argv,
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(KILL_AFTER_SECONDS, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.monotonic() - start
    code, rss_kib = os.waitstatus_to_exitcode(status), usage.ru_maxrss
    # bmap's own figures; absent when the group was killed (then the launcher's: its RSS is
    # pytest's at the fork, and the killed bmap's is lost)
    if status_path.exists():
        code, rss_kib = map(int, status_path.read_text().split())
    stderr = err_path.read_text(errors="replace")
    return Outcome(code, seconds, rss_kib / 1024, stderr, killed.is_set())


def map_lines_outside(map_path: Path, images: list[Path]) -> list[str]:
    """Lines of a text map (docs/format.md) that do not lie inside their disk."""
    sizes = {n: p.stat().st_size for n, p in enumerate(images, 1)}
    bad = []
    with open(map_path, errors="replace") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            disk, start, end, _ = line.split(" ", 3)
            s, e = int(start, 16), int(end, 16)
            if not 0 <= s < e <= sizes.get(int(disk), -1):
                bad.append(line.rstrip("\n"))
                if len(bad) >= 5:
                    break
    return bad


def _named_paths(text: str) -> set[str]:
    """The paths of the ``f`` and ``d`` lines of a text map (BMAP-FORMAT: four fields split on
    single spaces, then the ID: ``<device> <path>``; no escaped characters in these names)."""
    named = set()
    for line in text.splitlines():
        fields = line.split(" ", 4)
        if len(fields) == 5 and fields[3] in ("f", "d"):
            named.add(fields[4].split(" ", 1)[1])
    return named


def _param(name: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", [_param(name) for name in craft.CASES])
def test_crafted(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    case = craft.CASES[name](_Bases(request), tmp_path / "in")
    before = {p: _sha256(p) for p in case.inputs}
    outcome = run_bmap(case.argv, tmp_path)
    record = {
        "case": name,
        "command": "bmap " + " ".join(Path(a).name if a.startswith("/") else a for a in case.argv),
        "exit": outcome.code,
        "seconds": round(outcome.seconds, 2),
        "peak_mib": round(outcome.rss_mib, 1),
        "stderr": outcome.first_stderr_line[:300],
        "killed": outcome.killed,
        "note": case.note,
    }
    print(json.dumps(record))
    request.node.user_properties.append(("outcome", json.dumps(record)))
    results = os.environ.get("BMAP_HOSTILE_RESULTS")
    if results:
        with open(results, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    problems = []
    if outcome.killed:
        problems.append(f"killed after {KILL_AFTER_SECONDS} s")
    elif outcome.code < 0:
        problems.append(f"killed by signal {-outcome.code}")
    if outcome.code == 1:
        problems.append(f"exit 1 (internal error): {outcome.first_stderr_line}")
    if "Traceback" in outcome.stderr:
        problems.append(f"a traceback on stderr: {outcome.first_stderr_line}")
    if case.expect_exit is not None and outcome.code not in case.expect_exit:
        problems.append(f"exit {outcome.code}, docs/cli.md says {case.expect_exit}")
    if outcome.rss_mib >= MAX_RSS_MIB:
        problems.append(f"peak RSS {outcome.rss_mib:.0f} MiB (limit {MAX_RSS_MIB})")
    if case.map_out is not None and case.map_out.exists():
        bad = map_lines_outside(case.map_out, case.map_images)
        if bad:
            problems.append(f"map lines outside their disk: {bad}")
    if case.expect_findings or case.expect_objects:
        text = case.map_out.read_text() if case.map_out and case.map_out.exists() else ""
        found = [line for line in text.splitlines() if line.startswith("# finding ")]
        for want in case.expect_findings:
            if not any(want in line for line in found):
                problems.append(f"no finding says {want!r} (findings: {found[:8]})")
        named = _named_paths(text)
        for path in case.expect_objects:
            if path not in named:
                problems.append(f"{path} is not named in the map")
    changed = [str(p) for p, digest in before.items() if _sha256(p) != digest]
    if changed:
        problems.append(f"inputs changed: {changed}")
    assert not problems, f"{name} ({' '.join(case.argv)}): " + "; ".join(problems)
