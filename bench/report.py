"""Shared by the benchmark scripts: the machine's description and BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md between ``<!-- bench:NAME:start -->`` and
``<!-- bench:NAME:end -->``; rewriting a section leaves the rest of the file as it was. A
missing file is created with a short introduction.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"

INTRO = """\
# Benchmarks

Measured by `make bench` (bench/run.py; see bench/README.md), which rewrites the sections
between the `bench:` markers below and leaves the rest of this file alone.

* **ext**: `bmap map` of ext4 images of real trees (`mke2fs -t ext4 -d /usr` and two
  subtrees of it), timed as whole processes against the script a forensic analyst would
  write with pytsk3 (walk the tree, list every file's data runs) and the same walk with
  dissect.extfs. Runs alternate between the three tools; medians of wall time and of peak
  RSS over at least five warm runs (page cache not dropped; one untimed warm-up each).
  Target: `bmap map` (complete, with all metadata) at most 0.5x the pytsk3 walk's time, at
  most 150 MiB peak RSS, cost linear in the number of inodes.
* **index**: `bmap.store.index.MapIndex` answering 1,000,000 random point lookups on a synthetic
  map of 1,000,000 lines, against the `intervaltree` package (bench/index_lookups.py).

To rerun: `make bench` (everything), or `.venv/bin/python bench/run.py --help` and
`.venv/bin/python bench/index_lookups.py --help` for parts of it.
"""


def _first(pattern: str, text: str, default: str = "?") -> str:
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(1).strip() if m else default


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        cpuinfo = meminfo = ""
    mem_kib = int(_first(r"^MemTotal:\s+(\d+)", meminfo, "0"))
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    info = {
        "date": date,
        "cpu": _first(r"^model name\s*:\s*(.*)$", cpuinfo),
        "nproc": str(os.cpu_count() or "?"),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pytsk3": _version("pytsk3"),
        "dissect.extfs": _version("dissect.extfs"),
        "intervaltree": _version("intervaltree"),
        "bmap": _version("bmap"),
    }
    info["tree"] = f"{source_tree()} (sources {code_fingerprint()})"
    try:
        mke2fs = subprocess.run(["mke2fs", "-V"], capture_output=True, text=True)
        info["mke2fs"] = (mke2fs.stderr or mke2fs.stdout).splitlines()[0].split()[1]
    except (OSError, IndexError):
        info["mke2fs"] = "?"
    return info


def source_tree() -> str:
    """The commit of the bmap tree measured, and whether it had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "--",
                "bmap",
                "parsers",
                "reports",
                "pyproject.toml",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes to bmap's code" if dirty else "")


def code_fingerprint() -> str:
    """A hash of bmap's Python sources, to notice when they change in the middle of a run."""
    h = hashlib.sha256()
    for package in ("bmap", "parsers", "reports"):
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0")
            try:
                h.update(path.read_bytes())
            except OSError:
                pass
    return h.hexdigest()[:12]


def machine_line(info: dict[str, str]) -> str:
    return (
        f"{info['date']}; {info['cpu']}, {info['nproc']} cores, {info['memory']}; "
        f"Linux {info['kernel']}; Python {info['python']}, numpy {info['numpy']}"
    )


def child_env() -> dict[str, str]:
    """The environment of every timed child: one BLAS thread, as the issue asks.

    Also compiles bmap's bytecode first (once per process): a pip install does that, but an
    editable install under ``PYTHONDONTWRITEBYTECODE`` (set on the development machines)
    never writes it, and compiling the sources costs every run of ``bmap`` about 0.1 s that
    no installed copy pays. The peers' libraries are pip-installed, with their bytecode.
    """
    compile_bytecode()
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


_compiled = False


def compile_bytecode() -> None:
    global _compiled
    if not _compiled:
        dirs = [str(ROOT / package) for package in ("bmap", "parsers", "reports")]
        subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True)
        _compiled = True


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the ``bench:NAME`` section of BENCHMARKS.md with ``body``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    if start in text and end in text and text.index(start) < text.index(end):
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"wrote the {name} section of {path}", file=sys.stderr)


#: GNU time (Debian package ``time``): starts each timed child and reports its peak RSS.
TIME = "/usr/bin/time"


@dataclass
class Run:
    """One timed whole process: wall seconds, peak RSS (KiB), CPU seconds."""

    wall: float
    rss_kib: int
    cpu: float


def timed_run(name: str, cmd: list[str], workdir: Path) -> tuple[float, int, float, int, str, str]:
    """One whole process under GNU time: ``(wall seconds, peak RSS in KiB, CPU seconds, exit
    code, stdout, stderr)``, with :func:`child_env`.

    GNU time forks the child from a small process: a child forked from this Python process
    would report this process's own RSS as a floor in its ``ru_maxrss`` (Linux carries the
    high-water mark of the forked image across ``exec``).
    """
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    time_path = workdir / f"{name}.time"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%e %M %U %S", "-o", str(time_path), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=child_env(),
            check=False,
        )
        wall = time.perf_counter() - t0
    _, rss_kib, user, system = time_path.read_text().split()[-4:]
    return (
        wall,
        int(rss_kib),
        float(user) + float(system),
        proc.returncode,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )


def fmt_seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
