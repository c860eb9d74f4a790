"""Issue 13's scale series: ``bmap map`` of synthetic ext4 trees of 375,000 to 1,500,000 files.

    python bench/scale.py [--sizes 375000,750000,1500000] [--rounds 3] [--write] [--rebuild]

1. For each size N, builds (once, cached) ``build/bench/scale-N.img``: a tree of N regular
   files spread round-robin over 1,000 directories ``d000/`` .. ``d999/`` (file ``i`` is
   ``d{i % 1000}/f{i}``), every third file (``i % 3 == 0``) empty and the others of a size
   drawn uniformly from 1..9,000 bytes by ``random.Random(SEED)`` (the same seed for every
   N, so the smaller trees are prefixes of the larger ones); the content is a fixed byte
   pattern, cut to size. The tree is written under ``/dev/shm`` when there is memory to
   spare (else under ``build/bench/``), then ``mke2fs -q -F -t ext4 -b 4096 -N (N + 100000)
   -d TREE`` makes a sparse image sized at the files' allocated bytes x 1.3, plus 256 bytes
   per inode, plus 1 GiB; the tree is deleted afterwards. A JSON stamp beside the image (N,
   seed, recipe, mke2fs version, ``dumpe2fs -h``'s inode counts) makes the next run reuse
   it; ``--rebuild`` rebuilds. Images are built under a temporary name and renamed when
   mke2fs succeeded, so a broken build is never reused. An empty 8 MiB ext4
   (``build/bench/scale-tiny.img``) is made once for bmap's start-up memory.
2. For each image: one untimed warm-up of each tool, then ROUNDS rounds alternating
   ``python -m bmap map IMG -o DIR/xK.bmap`` (a fresh output each run, deleted after), the
   same with ``--memory-limit 256M`` (its map's sha256 compared with the first's),
   ``python bench/walk_pytsk3.py IMG`` (the analyst's pytsk3 walk; skipped, saying how to
   install it, when pytsk3 does not import), ``e2fsck -fn IMG`` (read-only: ``-n`` opens the
   image read-only and answers no; its exit code is recorded, 1 and 4 are findings, not
   failures of the bench) and ``python -m bmap map TINY`` (the start-up reference). Each is a
   whole process started by ``/usr/bin/time -f '%e %M'`` with ``report.child_env()``
   (``OPENBLAS_NUM_THREADS=1``, bmap's bytecode compiled first): wall time measured around
   it, peak RSS as GNU time reports it. The page cache is not dropped (warm runs).
3. Medians per tool. Bytes per inode above start-up = (median peak RSS of bmap on the image
   - median peak RSS of bmap on the tiny image) / used inodes (``dumpe2fs -h``: Inode count
   - Free inodes). Ratio = median bmap wall / median pytsk3 wall.
4. Prints a Markdown section; ``--write`` rewrites the ``bench:scale`` section of
   BENCHMARKS.md after every image (so an interrupted series keeps what it measured). The
   targets are judged on the 1,500,000-file image: peak RSS at most 300 MiB, at most 150
   bytes per inode above start-up, wall time at most 0.5x the pytsk3 walk, and with
   ``--memory-limit 256M`` the same map, every run's peak RSS within 256 MiB.

Needs GNU time (``/usr/bin/time``), e2fsprogs (mke2fs, dumpe2fs, e2fsck), about 10 GiB of
free disk for the 1,500,000-file image (about 20 GiB for all three, sparse) and, for the
tree, about 8 GiB in /dev/shm or on disk. Building the largest image takes a few minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402

ROOT = HERE.parent
BUILD = ROOT / "build" / "bench"
TINY = BUILD / "scale-tiny.img"
#: Bump when the way an image is made changes, so old images are rebuilt.
RECIPE = 1
SEED = 13
DIRS = 1000
MAX_SIZE = 9000
#: Inodes asked of mke2fs beyond the files (the issue: ``-N 1600000`` for 1,500,000 files).
EXTRA_INODES = 100_000
BLOCK = 4096
MIB = 1 << 20
GIB = 1 << 30
DEFAULT_SIZES = (375_000, 750_000, 1_500_000)
#: The image the targets are judged on, and the targets (issue 13).
TARGET_FILES = 1_500_000
TARGET_RSS_KIB = 300 * 1024
TARGET_BYTES_PER_INODE = 150
TARGET_RATIO = 0.5
TODAY_RSS = "733 MiB"
TIME = report.TIME
TOOLS = ("bmap", "budget", "pytsk3", "e2fsck", "startup")
#: The budget the issue asks the 1,500,000-file map to fit in, with the same map.
BUDGET = "256M"
BUDGET_KIB = 256 * 1024
#: bmap exits 3 when the map is written but the image has warnings; e2fsck -n exits 1 or 4
#: when it finds something (it never writes), 8 and above when it could not check.
OK_CODES = {
    "bmap": {0, 3},
    "budget": {0, 3, 9},  # 9: over the budget, a filesystem left out (judged, not a failure)
    "pytsk3": {0},
    "e2fsck": {0, 1, 4},
    "startup": {0, 3},
}
INSTALL_PYTSK3 = (
    f"{sys.executable} -m pip install -r bench/requirements.txt (or `make bench`, which does)"
)


def log(msg: str) -> None:
    print(f"scale: {msg}", file=sys.stderr, flush=True)


# --- the trees and images -------------------------------------------------------------------


def file_sizes(n: int, seed: int = SEED) -> list[int]:
    """The size of each of the ``n`` files: every third empty, the rest 1..MAX_SIZE bytes."""
    rng = random.Random(seed)
    return [0 if i % 3 == 0 else rng.randint(1, MAX_SIZE) for i in range(n)]


def allocated_bytes(sizes: list[int]) -> int:
    """What the files take in 4 KiB blocks (data only)."""
    return sum(-(-s // BLOCK) for s in sizes) * BLOCK


def make_tree(root: Path, sizes: list[int]) -> None:
    """Write the tree: ``d000`` .. ``d999``, file ``i`` in ``d{i % DIRS}``."""
    dirs = [os.path.join(root, f"d{d:03d}") for d in range(DIRS)]
    for d in dirs:
        os.mkdir(d)
    pattern = memoryview(bytes(range(256)) * (MAX_SIZE // 256 + 1))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = time.monotonic()
    for i, size in enumerate(sizes):
        fd = os.open(f"{dirs[i % DIRS]}/f{i}", flags, 0o644)
        try:
            if size:
                os.write(fd, pattern[:size])
        finally:
            os.close(fd)
        if i and i % 250_000 == 0:
            log(f"  {i:,} files written ({time.monotonic() - t0:.0f} s)")


def mke2fs_version() -> str:
    out = subprocess.run(["mke2fs", "-V"], capture_output=True, text=True, check=False)
    text = (out.stderr + out.stdout).strip().splitlines()
    return text[0] if text else "unknown"


def dumpe2fs_header(image: Path) -> dict[str, int]:
    """Inode and block counts from ``dumpe2fs -h`` (used inodes = count - free)."""
    out = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    fields = {}
    for key in ("Inode count", "Free inodes", "Block count", "Free blocks", "Block size"):
        m = re.search(rf"^{key}:\s+(\d+)", out, re.MULTILINE)
        if m:
            fields[key.lower().replace(" ", "_")] = int(m.group(1))
    fields["used_inodes"] = fields["inode_count"] - fields["free_inodes"]
    return fields


def tree_parent(need: int) -> Path:
    """/dev/shm when it and the memory can hold the tree with room to spare, else build/."""
    shm = Path("/dev/shm")
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(re.search(r"^MemAvailable:\s+(\d+)", meminfo, re.MULTILINE)[1]) * 1024
        if shm.is_dir() and min(available, shutil.disk_usage(shm).free) > need + 6 * GIB:
            return shm
    except (OSError, TypeError):
        pass
    return BUILD


def build_image(n: int, rebuild: bool) -> dict:
    """Build ``build/bench/scale-N.img`` unless its stamp matches; return the stamp."""
    BUILD.mkdir(parents=True, exist_ok=True)
    image = BUILD / f"scale-{n}.img"
    stamp_file = image.with_suffix(".img.json")
    want = {"recipe": RECIPE, "files": n, "dirs": DIRS, "seed": SEED, "mke2fs": mke2fs_version()}
    if not rebuild and image.exists() and stamp_file.exists():
        try:
            stamp = json.loads(stamp_file.read_text())
        except ValueError:
            stamp = {}
        if all(stamp.get(k) == v for k, v in want.items()):
            log(f"{image.name}: cached ({stamp['used_inodes']:,} inodes used)")
            return {**stamp, "image": str(image), "cached": True}
        log(f"{image.name}: stamp differs, rebuilding")
    sizes = file_sizes(n)
    data = allocated_bytes(sizes)
    inodes = n + EXTRA_INODES
    size = int(data * 1.3) + inodes * 256 + GIB
    size = -(-size // (4 * MIB)) * (4 * MIB)
    free = shutil.disk_usage(BUILD).free
    if free < data * 1.2 + GIB:
        raise SystemExit(f"scale: {BUILD} has {free / GIB:.1f} GiB free, need {data / GIB:.1f}")
    tmp = image.with_name(image.name + ".tmp")
    for stale in (image, stamp_file, tmp):
        stale.unlink(missing_ok=True)
    tree = Path(tempfile.mkdtemp(prefix=f"bmap-scale-{n}-", dir=tree_parent(int(data * 1.2))))
    try:
        log(f"{image.name}: writing {n:,} files ({data / GIB:.2f} GiB in blocks) under {tree}")
        t0 = time.monotonic()
        make_tree(tree, sizes)
        tree_seconds = time.monotonic() - t0
        cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-N", str(inodes)]
        cmd += ["-d", str(tree), str(tmp), f"{size // 1024}k"]
        log(f"{image.name}: tree in {tree_seconds:.0f} s; {' '.join(cmd)}")
        t1 = time.monotonic()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        mke2fs_seconds = time.monotonic() - t1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    os.replace(tmp, image)
    stamp = {
        **want,
        "empty_files": sum(1 for s in sizes if s == 0),
        "file_bytes": sum(sizes),
        "command": [*cmd[:-4], "-d", "TREE", str(image), cmd[-1]],
        "tree_in": "/dev/shm (tmpfs)" if str(tree).startswith("/dev/shm") else str(BUILD),
        "size_bytes": size,
        "disk_usage_bytes": os.stat(image).st_blocks * 512,
        "tree_seconds": round(tree_seconds, 1),
        "mke2fs_seconds": round(mke2fs_seconds, 1),
        "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **dumpe2fs_header(image),
    }
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    log(
        f"{image.name}: built in {tree_seconds + mke2fs_seconds:.0f} s (tree "
        f"{tree_seconds:.0f} s, mke2fs {mke2fs_seconds:.0f} s), {stamp['used_inodes']:,} "
        f"inodes used of {stamp['inode_count']:,}"
    )
    return {**stamp, "image": str(image)}


def ensure_tiny(rebuild: bool) -> Path:
    """An empty 8 MiB ext4: what ``bmap map`` costs before it has anything to map."""
    if rebuild or not TINY.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        TINY.unlink(missing_ok=True)
        cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), str(TINY), "8M"]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return TINY


# --- the runs -------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_kib: int
    code: int


@dataclass
class Result:
    image: dict
    runs: dict[str, list[Run]] = field(default_factory=lambda: {t: [] for t in TOOLS})
    summary: dict[str, str] = field(default_factory=dict)  # last stdout line of a tool
    map_lines: int = 0
    code_changed: bool = False
    #: sha256 of each map written, by tool (``bmap``, ``budget``): the budget's must be the same
    digests: dict[str, set[str]] = field(default_factory=lambda: {"bmap": set(), "budget": set()})

    def median(self, tool: str, what: str) -> float:
        return statistics.median(getattr(r, what) for r in self.runs[tool])

    def has(self, tool: str) -> bool:
        return bool(self.runs[tool])

    @property
    def files(self) -> int:
        return int(self.image["files"])

    @property
    def inodes(self) -> int:
        return int(self.image["used_inodes"])

    def bytes_per_inode(self) -> float:
        above = self.median("bmap", "rss_kib") - self.median("startup", "rss_kib")
        return above * 1024 / self.inodes

    def ratio(self) -> float:
        return self.median("bmap", "wall") / self.median("pytsk3", "wall")


def command(tool: str, image: str, out: Path) -> list[str]:
    if tool == "bmap":
        return [sys.executable, "-m", "bmap", "map", image, "-o", str(out)]
    if tool == "budget":
        return [
            sys.executable,
            "-m",
            "bmap",
            "map",
            image,
            "-o",
            str(out),
            "--memory-limit",
            BUDGET,
        ]
    if tool == "startup":
        return [sys.executable, "-m", "bmap", "map", str(TINY), "-o", str(out)]
    if tool == "pytsk3":
        return [sys.executable, str(HERE / "walk_pytsk3.py"), image]
    return ["e2fsck", "-fn", image]


def run_once(tool: str, cmd: list[str], workdir: Path) -> tuple[Run, str]:
    """One whole process (:func:`report.timed_run`): wall time, peak RSS (KiB), exit code;
    its stdout."""
    wall, rss_kib, _, code, stdout, stderr = report.timed_run(tool, cmd, workdir)
    if code not in OK_CODES[tool]:
        raise SystemExit(f"scale: {' '.join(cmd)} exited {code}:\n{stderr[-2000:]}")
    return Run(wall, rss_kib, code), stdout


def count_map_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(b"#"))


def pytsk3_available() -> bool:
    probe = [sys.executable, "-c", "import pytsk3"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def bench_image(image: dict, rounds: int, tools: list[str], workdir: Path) -> Result:
    result = Result(image)
    path = image["image"]
    seq = 0

    def one(tool: str) -> tuple[Run, str]:
        nonlocal seq
        seq += 1
        out = workdir / f"x{seq}.bmap"
        run, stdout = run_once(tool, command(tool, path, out), workdir)
        if tool == "bmap":
            result.map_lines = count_map_lines(out)
        if tool in result.digests and out.exists():
            result.digests[tool].add(hashlib.sha256(out.read_bytes()).hexdigest())
        out.unlink(missing_ok=True)
        return run, stdout

    log(f"{Path(path).name}: {result.inodes:,} inodes used; warm-up")
    before = report.code_fingerprint()
    for tool in tools:
        run, stdout = one(tool)
        lines = stdout.strip().splitlines()
        result.summary[tool] = lines[-1] if lines else ""
        log(f"  warm-up {tool}: {run.wall:.2f} s, {run.rss_kib / 1024:.0f} MiB, exit {run.code}")
    for r in range(rounds):
        parts = []
        for tool in tools:
            run, _ = one(tool)
            result.runs[tool].append(run)
            parts.append(f"{tool} {run.wall:.2f} s {run.rss_kib / 1024:.0f} MiB")
        log(f"  round {r + 1}/{rounds}: " + ", ".join(parts))
    if report.code_fingerprint() != before:
        result.code_changed = True
        log(f"  warning: bmap's sources changed while {Path(path).name} was measured")
    return result


# --- the report -----------------------------------------------------------------------------


def judge(met: bool, text: str) -> str:
    return ("met" if met else "NOT met") + f" ({text})"


def targets(results: list[Result]) -> str:
    big = [r for r in results if r.files == TARGET_FILES]
    if not big:
        return f"Targets (judged on the {TARGET_FILES:,}-file image): not measured in this run."
    r = big[0]
    rss = r.median("bmap", "rss_kib")
    bpi = r.bytes_per_inode()
    parts = [
        "peak RSS at most 300 MiB: "
        + judge(
            rss <= TARGET_RSS_KIB,
            f"{rss / 1024:.0f} MiB {'<=' if rss <= TARGET_RSS_KIB else '>'} 300 MiB; "
            f"{TODAY_RSS} when the issue was written",
        ),
        "at most 150 bytes per inode above start-up: "
        + judge(
            bpi <= TARGET_BYTES_PER_INODE,
            f"{bpi:.0f} {'<=' if bpi <= TARGET_BYTES_PER_INODE else '>'} 150",
        ),
    ]
    if r.has("pytsk3"):
        ratio = r.ratio()
        parts.append(
            "wall time at most 0.5x the pytsk3 walk: "
            + judge(
                ratio <= TARGET_RATIO,
                f"{r.median('bmap', 'wall'):.2f} s / {r.median('pytsk3', 'wall'):.2f} s = "
                f"{ratio:.2f}x {'<=' if ratio <= TARGET_RATIO else '>'} 0.5x",
            )
        )
    else:
        parts.append("wall time at most 0.5x the pytsk3 walk: not judged (pytsk3 not installed)")
    if r.has("budget"):
        same = r.digests["budget"] == r.digests["bmap"] and len(r.digests["bmap"]) == 1
        worst = max(run.rss_kib for run in r.runs["budget"])
        codes = sorted({run.code for run in r.runs["budget"]})
        parts.append(
            f"`--memory-limit {BUDGET}` gives the same map within that budget: "
            + judge(
                same and worst <= BUDGET_KIB,
                f"{'the same map' if same else 'NOT the same map'} (exit {codes}); highest peak "
                f"RSS of its runs {worst / 1024:.0f} MiB {'<=' if worst <= BUDGET_KIB else '>'} "
                f"{BUDGET_KIB // 1024} MiB",
            )
        )
    return f"Targets on the {TARGET_FILES:,}-file image:\n\n" + "\n".join(f"* {p}" for p in parts)


def budget_map(r: Result) -> str:
    """Whether the runs under the budget wrote the unlimited runs' map, and their exits."""
    if not r.has("budget"):
        return "not run"
    codes = sorted({run.code for run in r.runs["budget"]})
    same = r.digests["budget"] == r.digests["bmap"] and len(r.digests["bmap"]) == 1
    return ("the same" if same else "differs") + f" (exit {', '.join(map(str, codes))})"


def tables(results: list[Result], rounds: int) -> str:
    s, mib = report.fmt_seconds, report.fmt_mib

    def med(r: Result, tool: str, what: str) -> str:
        if not r.has(tool):
            return "not run"
        return s(r.median(tool, "wall")) if what == "wall" else mib(r.median(tool, "rss_kib"))

    main = report.table(
        [
            "files",
            "inodes used",
            "bmap map",
            "peak RSS bmap",
            "bytes / inode above start-up",
            f"peak RSS with --memory-limit {BUDGET}",
            "its map",
            "pytsk3 walk",
            "peak RSS pytsk3",
            "e2fsck -fn",
            "peak RSS e2fsck",
            "bmap/pytsk3",
            "bmap/e2fsck",
            "bmap map lines",
        ],
        [
            [
                f"{r.files:,}",
                f"{r.inodes:,}",
                med(r, "bmap", "wall"),
                med(r, "bmap", "rss"),
                f"{r.bytes_per_inode():.0f}",
                med(r, "budget", "rss"),
                budget_map(r),
                med(r, "pytsk3", "wall"),
                med(r, "pytsk3", "rss"),
                med(r, "e2fsck", "wall"),
                med(r, "e2fsck", "rss"),
                f"{r.ratio():.2f}x" if r.has("pytsk3") else "-",
                f"{r.median('bmap', 'wall') / r.median('e2fsck', 'wall'):.2f}x"
                if r.has("e2fsck")
                else "-",
                f"{r.map_lines:,}",
            ]
            for r in results
        ],
    )
    startup = ", ".join(
        f"{mib(r.median('startup', 'rss_kib'))} / {s(r.median('startup', 'wall'))}" for r in results
    )
    images = report.table(
        [
            "image",
            "files (empty)",
            "bytes in files",
            "inodes used / total",
            "size (allocated)",
            "built in (tree + mke2fs)",
            "e2fsck -fn exit codes",
            "pytsk3 walk's count (warm-up)",
        ],
        [
            [
                Path(r.image["image"]).name,
                f"{r.files:,} ({r.image['empty_files']:,})",
                f"{r.image['file_bytes'] / GIB:.2f} GiB",
                f"{r.inodes:,} / {r.image['inode_count']:,}",
                f"{r.image['size_bytes'] / GIB:.1f} GiB "
                f"({r.image['disk_usage_bytes'] / GIB:.1f} GiB)",
                f"{r.image['tree_seconds'] + r.image['mke2fs_seconds']:.0f} s "
                f"({r.image['tree_seconds']:.0f} + {r.image['mke2fs_seconds']:.0f} s)",
                ", ".join(sorted({str(x.code) for x in r.runs["e2fsck"]})) or "-",
                f"`{r.summary.get('pytsk3', '')}`" if r.has("pytsk3") else "not run",
            ]
            for r in results
        ],
    )
    return "\n\n".join(
        [
            f"Medians of {rounds} alternating warm runs (wall time; peak RSS of the process). "
            "Bytes per inode above start-up: (median peak RSS of `bmap map` on the image - "
            "median peak RSS of `bmap map` on an empty 8 MiB ext4) / used inodes. Start-up "
            f"reference (peak RSS / wall), per image: {startup}.",
            main,
            targets(results),
            "The images (built once, cached in build/bench/ with a JSON stamp):",
            images,
        ]
    )


def section(results: list[Result], rounds: int, info: dict[str, str]) -> str:
    files = sorted(r.files for r in results)
    span = f"{files[0]:,} to {files[-1]:,} files" if len(files) > 1 else f"{files[0]:,} files"
    date = time.strftime("%Y-%m-%d", time.gmtime())
    notes = []
    if any(r.code_changed for r in results) or len({r.image["fingerprint"] for r in results}) > 1:
        notes.append(
            "**bmap's code changed while this was measured**: its times and RSS mix versions "
            "of bmap. Rerun on a tree that is not being edited.\n"
        )
    return "\n".join(
        [
            f"## Scale: bmap map of synthetic ext4 trees, {span} ({date}, issue 13)",
            "",
            f"Measured on {report.machine_line(info)}; pytsk3 {info['pytsk3']}, mke2fs "
            f"{info['mke2fs']}; bmap {info['bmap']} at {info['tree']}. `bench/scale.py`.",
            "",
            f"The trees: N regular files over {DIRS:,} directories (`d000/` .. `d999/`, file i "
            f"in directory i mod {DIRS:,}), every third file empty, the others of a size drawn "
            f"uniformly from 1..{MAX_SIZE:,} bytes (`random.Random({SEED})`, a fixed byte "
            f"pattern as content); each image made by `mke2fs -q -F -t ext4 -b {BLOCK} "
            f"-N (N + {EXTRA_INODES:,}) -d TREE` on a sparse file of the files' allocated "
            "bytes x 1.3 + 256 bytes per inode + 1 GiB.",
            "",
            "Commands timed, each a whole process under `/usr/bin/time -f '%e %M'` with "
            "`OPENBLAS_NUM_THREADS=1`, alternating, page cache not dropped, one untimed "
            "warm-up each: `python -m bmap map IMAGE -o /tmp/.../xK.bmap` (a fresh output "
            "each run), the same with `--memory-limit 256M` (its map compared with the first's by "
            "sha256), `python bench/walk_pytsk3.py IMAGE`, `e2fsck -fn IMAGE` (read-only), "
            "`python -m bmap map scale-tiny.img -o /tmp/.../xK.bmap`.",
            "",
            *notes,
            tables(results, rounds),
        ]
    )


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not sizes or min(sizes) < DIRS:
        raise argparse.ArgumentTypeError(f"sizes must be at least {DIRS}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="numbers of files, comma-separated, measured in this order "
        "(default 375000,750000,1500000)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per image (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the images")
    ap.add_argument(
        "--write", action="store_true", help="rewrite the bench:scale section of BENCHMARKS.md"
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not os.access(TIME, os.X_OK):
        raise SystemExit(f"scale: {TIME} is missing: apt-get install time")
    for tool in ("mke2fs", "dumpe2fs"):
        if shutil.which(tool) is None:
            raise SystemExit(f"scale: {tool} is missing: apt-get install e2fsprogs")
    tools = ["bmap", "budget"]
    if pytsk3_available():
        tools.append("pytsk3")
    else:
        log(f"pytsk3 does not import: the pytsk3 walk is skipped. Install it: {INSTALL_PYTSK3}")
    if shutil.which("e2fsck"):
        tools.append("e2fsck")
    else:
        log("e2fsck is missing (apt-get install e2fsprogs): skipped")
    tools.append("startup")
    start = time.monotonic()
    ensure_tiny(args.rebuild)
    info = report.machine()
    workdir = Path(tempfile.mkdtemp(prefix="bmap-scale-"))
    results: list[Result] = []
    try:
        for n in args.sizes:
            image = build_image(n, args.rebuild)
            image["fingerprint"] = report.code_fingerprint()
            results.append(bench_image(image, args.rounds, tools, workdir))
            results.sort(key=lambda r: r.files)
            if args.write:
                report.write_section("scale", section(results, args.rounds, info))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(section(results, args.rounds, info))
    log(f"done in {(time.monotonic() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
