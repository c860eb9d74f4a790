"""Issue 14's speed benchmark: ``bmap map`` of XFS, FAT32 and NTFS images against their peers.

    python bench/fs_bench.py [--rounds 5] [--only xfs|fat|ntfs ...] [--every 50] [--io-every 1]
                             [--batch 500]
                             [--rebuild] [--write]

1. Builds (once, cached in ``build/bench/`` with a JSON stamp beside each image; rebuilt
   when the recipe, the source or the tools' versions change, or with ``--rebuild``; built
   under a temporary name and renamed when done, so a broken build is never reused):

   * ``usr-xfs.img``: an XFS of ``/usr``. A sparse file sized at /usr's disk usage x 1.3 +
     512 MiB, ``mkfs.xfs -q -f`` (the defaults of the installed xfsprogs: v5, CRC, finobt,
     reflink), attached read-write to a loop device, mounted, filled by ``cp -ax /usr/.``,
     unmounted and detached (in ``finally`` blocks). ``xfs_db -r``'s ``icount``/``ifree``
     give the used inodes.
   * ``tree-fat32.img`` and ``tree-ntfs.img``: a generated tree of 100,000 files
     (``--files``) in 1,000 directories ``d000/`` .. ``d999/``, file ``i`` named
     ``d{i % 1000}/file-{i:06d}.txt`` (a long name: FAT stores it with LFN entries), every
     third empty, the others 1..9,000 bytes drawn by ``random.Random(14)``, written under
     /dev/shm (or build/bench/) and deleted after. FAT32: ``mkfs.vfat -F 32 -s 8`` (4 KiB
     clusters) on a sparse file, then ``mcopy -s -Q -i IMG d000 .. d999 ::/``. NTFS:
     ``mkntfs -Q -F -q`` on a sparse file, mounted by ``ntfs-3g -o no_detach`` (FUSE; this
     process waits for it to exit after ``umount``, so the image is complete), filled by
     ``cp -r``.

2. Times whole processes under GNU time (``report.timed_run``: wall time measured around
   it, peak RSS, CPU; ``OPENBLAS_NUM_THREADS=1``; bmap's bytecode compiled first), one
   untimed warm-up of each, then ROUNDS alternating rounds; the page cache is not dropped.

   * XFS, first a block of rounds of its own alternating ``python -m bmap map IMG`` with
     the same of the ext4 image of /usr of ``make bench`` (``usr-full.img``, when it is
     there): the per-inode comparison, kept apart because a walker that has just unmounted
     the XFS was seen to slow the process after it. Then rounds alternating ``python -m bmap
     map IMG -o x.bmap``; ``python bench/walk_fiemap.py IMG`` (loop
     attach read-only, mount ``ro,norecovery``, FS_IOC_FIEMAP of every regular file, umount,
     detach: all inside the timed process); ``walk_fiemap.py IMG --xfs-bmap EVERY``
     (``xfs_bmap -v`` once per file on every EVERY-th regular file of the sorted walk: one
     ``sh`` + one ``xfs_io`` per file); ``walk_fiemap.py IMG --xfs-io EVERY`` (the same
     sample through one ``xfs_io -r -p xfs_bmap`` per BATCH files); ``walk_fiemap.py IMG
     --xfs-io 1`` (``xfs_io`` in batches over every regular file: ``--io-every``).
     ``xfs_bmap -v`` over every file of /usr is about 1,700 s a run: only the sample is
     measured, and its time for every file is extrapolated from the sample's time per file
     (labelled as such).
   * FAT32 and NTFS: ``python -m bmap map IMG -o x.bmap`` against ``python
     bench/walk_pytsk3.py IMG`` (the analyst's pytsk3 walk listing every file's runs).

3. Medians; bmap's ms per 1000 used inodes on XFS against the ext map's of that block (the
   issue's aim: the ext map's speed per inode; the ``bench:ext`` section's figure is quoted
   too); bmap / pytsk3 on FAT32 and NTFS (the issue's target: at most 1.2x). ``--write``
   rewrites the ``bench:xfs`` and ``bench:tsk`` sections (not with fewer than 5 rounds).

Needs root (loop devices, mounts), GNU time, xfsprogs, dosfstools, mtools, ntfs-3g and
pytsk3; about 8 GiB of free disk (sparse) under build/bench/. Building took 38 s for the
XFS image, 6 s and 14 s for the FAT32 and NTFS images on the 2-core dev machine; timing
about 4 minutes (the xfs_bmap sample is most of it).
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_image  # noqa: E402
import report  # noqa: E402

ROOT = HERE.parent
BUILD = ROOT / "build" / "bench"
MIB = 1 << 20
GIB = 1 << 30
#: Bump when the way an image is made changes, so old images are rebuilt.
RECIPE = 1
SEED = 14
FILES = 100_000
DIRS = 1000
MAX_SIZE = 9000
CLUSTER = 4096
EVERY = 50
BATCH = 500
#: The batched xfs_io runs over every regular file (1) unless told otherwise.
IO_EVERY = 1
#: The issue's target for the TSK filesystems: bmap at most this many times the walk.
TSK_TARGET = 1.2
#: bmap exits 3 when the map is written but the image has warnings: still a finished map.
OK_CODES = {0, 3}
XFS_TOOLS = ("bmap", "fiemap", "xfs_bmap", "xfs_io_sample", "xfs_io")
TSK_TOOLS = ("bmap", "pytsk3")
KINDS = ("xfs", "fat", "ntfs")
#: The ext4 image of /usr of ``make bench`` (bench/make_image.py): when it is there, its
#: ``bmap map`` runs in the XFS rounds too, for the per-inode comparison under the same load.
EXT_IMAGE = BUILD / "usr-full.img"


def log(msg: str) -> None:
    print(f"fs_bench: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, **kw)


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError:
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def tool_versions() -> dict[str, str]:
    return {
        "mkfs.xfs": version(["mkfs.xfs", "-V"]),
        "mkfs.vfat": version(["mkfs.vfat", "--help"]),
        "mtools": version(["mcopy", "--version"]),
        "mkntfs": version(["mkntfs", "--version"]),
        "ntfs-3g": version(["ntfs-3g", "--version"]),
    }


# --- loop devices and mounts, always undone ----------------------------------------------------


@contextmanager
def loop_mount(image: Path, fstype: str, options: str) -> Iterator[Path]:
    """Attach ``image`` to a loop device and mount it; unmount and detach on the way out."""
    ro = ["--read-only"] if "ro" in options.split(",") else []
    dev = run(
        ["losetup", "--find", "--show", *ro, str(image)], capture_output=True, text=True
    ).stdout.strip()
    try:
        mnt = Path(tempfile.mkdtemp(prefix="bmap-fsbench-"))
        try:
            run(["mount", "-t", fstype, "-o", options, dev, str(mnt)])
            try:
                yield mnt
            finally:
                run(["umount", str(mnt)])
        finally:
            mnt.rmdir()
    finally:
        run(["losetup", "-d", dev])


@contextmanager
def ntfs3g_mount(image: Path) -> Iterator[Path]:
    """Mount ``image`` with ntfs-3g (FUSE) in the foreground; unmount and wait for it."""
    mnt = Path(tempfile.mkdtemp(prefix="bmap-fsbench-ntfs-"))
    try:
        proc = subprocess.Popen(
            ["ntfs-3g", "-o", "no_detach", str(image), str(mnt)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):  # up to 30 s for the mount to appear
                if os.path.ismount(mnt):
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"fs_bench: ntfs-3g exited {proc.returncode}")
                time.sleep(0.1)
            else:
                raise SystemExit("fs_bench: ntfs-3g did not mount in 30 s")
            try:
                yield mnt
            finally:
                run(["umount", str(mnt)])
        finally:
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
    finally:
        mnt.rmdir()


# --- the images ------------------------------------------------------------------------------


def read_stamp(image: Path, want: dict) -> dict | None:
    stamp_file = image.with_suffix(image.suffix + ".json")
    if not (image.exists() and stamp_file.exists()):
        return None
    try:
        stamp = json.loads(stamp_file.read_text())
    except ValueError:
        return None
    if all(stamp.get(k) == v for k, v in want.items()):
        return {**stamp, "image": str(image), "cached": True}
    log(f"{image.name}: stamp differs, rebuilding")
    return None


def write_stamp(image: Path, stamp: dict) -> dict:
    stamp["size_bytes"] = image.stat().st_size
    stamp["disk_usage_bytes"] = image.stat().st_blocks * 512
    stamp["built_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    image.with_suffix(image.suffix + ".json").write_text(json.dumps(stamp, indent=2) + "\n")
    return {**stamp, "image": str(image)}


def sparse_file(path: Path, size: int) -> None:
    size = -(-size // (4 * MIB)) * (4 * MIB)
    with open(path, "wb") as f:
        f.truncate(size)


def xfs_inodes(image: Path) -> dict[str, int]:
    out = run(
        ["xfs_db", "-r", "-c", "sb 0", "-c", "p icount ifree", str(image)],
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(re.findall(r"^(\w+) = (\d+)", out, re.MULTILINE))
    icount, ifree = int(fields["icount"]), int(fields["ifree"])
    return {"inode_count": icount, "free_inodes": ifree, "used_inodes": icount - ifree}


def build_xfs(rebuild: bool) -> dict:
    image = BUILD / "usr-xfs.img"
    t0 = time.monotonic()
    tree, _ = make_image.scan(make_image.SOURCE, depth=0)
    log(f"{tree.path}: {tree.entries:,} entries (scanned in {time.monotonic() - t0:.1f} s)")
    want = {
        "recipe": RECIPE,
        "source": str(tree.path),
        "source_entries": tree.entries,
        "mkfs.xfs": tool_versions()["mkfs.xfs"],
    }
    if not rebuild and (stamp := read_stamp(image, want)):
        log(f"{image.name}: cached ({stamp['used_inodes']:,} inodes used)")
        return stamp
    tmp = image.with_name(image.name + ".tmp")
    for stale in (image, image.with_suffix(".img.json"), tmp):
        stale.unlink(missing_ok=True)
    size = int(tree.disk_bytes * 1.3) + 512 * MIB
    if shutil.disk_usage(BUILD).free < tree.disk_bytes * 1.2 + GIB:
        raise SystemExit(f"fs_bench: not enough free disk under {BUILD} for {tree.path}")
    log(f"{image.name}: mkfs.xfs + cp -ax {tree.path}/. ({tree.disk_bytes / GIB:.2f} GiB)")
    t0 = time.monotonic()
    try:
        sparse_file(tmp, size)
        run(["mkfs.xfs", "-q", "-f", str(tmp)])
        with loop_mount(tmp, "xfs", "rw") as mnt:
            run(["cp", "-ax", f"{tree.path}/.", f"{mnt}/"])
            run(["sync", "-f", str(mnt)])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - t0
    os.replace(tmp, image)
    stamp = {
        **want,
        "recipe_text": f"mkfs.xfs -q -f; loop mount; cp -ax {tree.path}/.",
        "build_seconds": round(seconds, 1),
        **xfs_inodes(image),
    }
    log(f"{image.name}: built in {seconds:.0f} s, {stamp['used_inodes']:,} inodes used")
    return write_stamp(image, stamp)


def file_sizes(n: int) -> list[int]:
    rng = random.Random(SEED)
    return [0 if i % 3 == 0 else rng.randint(1, MAX_SIZE) for i in range(n)]


def make_tree(root: Path, sizes: list[int]) -> None:
    dirs = [root / f"d{d:03d}" for d in range(DIRS)]
    for d in dirs:
        d.mkdir()
    pattern = memoryview(bytes(range(256)) * (MAX_SIZE // 256 + 1))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i, size in enumerate(sizes):
        fd = os.open(dirs[i % DIRS] / f"file-{i:06d}.txt", flags, 0o644)
        try:
            if size:
                os.write(fd, pattern[(i % 251) : (i % 251) + size])
        finally:
            os.close(fd)


def tree_parent(need: int) -> Path:
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > need + 2 * GIB:
            return shm
    except OSError:
        pass
    return BUILD


def build_tsk(kind: str, files: int, rebuild: bool) -> dict:
    image = BUILD / f"tree-{'fat32' if kind == 'fat' else kind}.img"
    versions = tool_versions()
    tools = ["mkfs.vfat", "mtools"] if kind == "fat" else ["mkntfs", "ntfs-3g"]
    want = {
        "recipe": RECIPE,
        "files": files,
        "dirs": DIRS,
        "seed": SEED,
        **{t: versions[t] for t in tools},
    }
    if not rebuild and (stamp := read_stamp(image, want)):
        log(f"{image.name}: cached ({files:,} files)")
        return stamp
    tmp = image.with_name(image.name + ".tmp")
    for stale in (image, image.with_suffix(".img.json"), tmp):
        stale.unlink(missing_ok=True)
    sizes = file_sizes(files)
    data = sum(-(-s // CLUSTER) for s in sizes) * CLUSTER
    size = int(data * 1.3) + (files + DIRS) * 1024 + 256 * MIB
    tree = Path(tempfile.mkdtemp(prefix="bmap-fsbench-tree-", dir=tree_parent(data * 2)))
    try:
        t0 = time.monotonic()
        make_tree(tree, sizes)
        tree_seconds = time.monotonic() - t0
        log(f"{image.name}: {files:,} files written under {tree} in {tree_seconds:.0f} s")
        t0 = time.monotonic()
        sparse_file(tmp, size)
        subdirs = sorted(p.name for p in tree.iterdir())
        if kind == "fat":
            recipe = "mkfs.vfat -F 32 -s 8 -n BENCH; mcopy -s -Q -i IMG d000 .. d999 ::/"
            run(["mkfs.vfat", "-F", "32", "-s", "8", "-n", "BENCH", str(tmp)], capture_output=True)
            env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
            run(["mcopy", "-s", "-Q", "-i", str(tmp), *subdirs, "::/"], cwd=tree, env=env)
        else:
            recipe = "mkntfs -Q -F -q; ntfs-3g -o no_detach; cp -r TREE/. MNT/"
            run(["mkntfs", "-Q", "-F", "-q", str(tmp)], capture_output=True)
            with ntfs3g_mount(tmp) as mnt:
                run(["cp", "-r", f"{tree}/.", f"{mnt}/"])
        seconds = time.monotonic() - t0
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    os.replace(tmp, image)
    stamp = {
        **want,
        "recipe_text": recipe,
        "data_bytes": data,
        "entries": files + DIRS,
        "tree_seconds": round(tree_seconds, 1),
        "build_seconds": round(seconds, 1),
    }
    log(f"{image.name}: built in {seconds:.0f} s")
    return write_stamp(image, stamp)


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    image: dict
    tools: tuple[str, ...]
    runs: dict[str, list[report.Run]] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)  # warm-up's last stdout line
    lines: dict[str, list[str]] = field(default_factory=dict)  # each timed run's last line
    map_lines: int = 0
    code_changed: bool = False

    def median(self, tool: str, what: str = "wall") -> float:
        return statistics.median(getattr(r, what) for r in self.runs[tool])

    def field(self, tool: str, name: str) -> float:
        """A ``name=value`` of the tool's output line: the median over the timed runs."""
        values = []
        for line in self.lines.get(tool) or [self.summary.get(tool, "")]:
            m = re.search(rf"\b{name}=([\d.]+)", line)
            if m:
                values.append(float(m[1]))
        return statistics.median(values) if values else float("nan")


def command(kind: str, tool: str, image: str, out: str, every: tuple[int, int, int]) -> list[str]:
    """The command of ``tool``; ``every``: (xfs_bmap sample, xfs_io run, xfs_io batch)."""
    py = sys.executable
    if tool == "bmap":
        return [py, "-m", "bmap", "map", image, "-o", out]
    if tool == "bmap_pair":
        return [py, "-m", "bmap", "map", image, "-o", out + ".pair"]
    if tool == "bmap_ext":
        return [py, "-m", "bmap", "map", str(EXT_IMAGE), "-o", out + ".ext"]
    if tool == "pytsk3":
        return [py, str(HERE / "walk_pytsk3.py"), image]
    walk = [py, str(HERE / "walk_fiemap.py"), image]
    if tool == "fiemap":
        return walk
    if tool == "xfs_bmap":
        return [*walk, "--xfs-bmap", str(every[0])]
    step = every[0] if tool == "xfs_io_sample" else every[1]
    return [*walk, "--xfs-io", str(step), "--batch", str(every[2])]


def count_map_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(b"#"))


def bench(
    kind: str, image: dict, rounds: int, every: tuple[int, int, int], workdir: Path
) -> Result:
    tools = XFS_TOOLS if kind == "xfs" else TSK_TOOLS
    # the per-inode comparison with the ext map: a block of its own, the two maps alternating
    # (a walker that has just unmounted the XFS was seen to slow whichever process ran next)
    pair = ("bmap_pair", "bmap_ext") if kind == "xfs" and EXT_IMAGE.exists() else ()
    result = Result(kind, image, tools, {t: [] for t in (*pair, *tools)})
    path, out = image["image"], str(workdir / "x.bmap")
    before = report.code_fingerprint()

    def once(tool: str) -> tuple[report.Run, str]:
        cmd = command(kind, tool, path, out, every)
        wall, rss, cpu, code, stdout, stderr = report.timed_run(tool, cmd, workdir)
        if code not in (OK_CODES if tool.startswith("bmap") else {0}):
            raise SystemExit(f"fs_bench: {' '.join(cmd)} exited {code}:\n{stderr[-2000:]}")
        return report.Run(wall, rss, cpu), stdout

    for block in (pair, tools) if pair else (tools,):
        rounds_of(block, result, rounds, once, Path(path).name)
    result.map_lines = count_map_lines(Path(out))
    result.code_changed = report.code_fingerprint() != before
    return result


def rounds_of(tools: tuple[str, ...], result: Result, rounds: int, once, name: str) -> None:
    """One untimed warm-up of each tool, then ``rounds`` rounds alternating them."""
    log(f"{name}: warm-up of {', '.join(tools)}")
    for tool in tools:
        r, stdout = once(tool)
        if not tool.startswith("bmap"):
            result.summary[tool] = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        log(f"  warm-up {tool}: {r.wall:.2f} s, {r.rss_kib / 1024:.0f} MiB")
    for k in range(rounds):
        parts = []
        for tool in tools:
            r, stdout = once(tool)
            result.runs[tool].append(r)
            result.lines.setdefault(tool, []).append(stdout.strip().rsplit("\n", 1)[-1])
            parts.append(f"{tool} {r.wall:.2f} s")
        log(f"  round {k + 1}/{rounds}: " + ", ".join(parts))


# --- the sections ----------------------------------------------------------------------------


def ext_reference() -> tuple[float, int] | None:
    """bmap's median and the used inodes of usr-full.img in the bench:ext section."""
    try:
        text = report.BENCHMARKS.read_text()
    except OSError:
        return None
    m = re.search(r"^\| usr-full\.img \| ([\d,]+) \| ([\d.]+) s \|", text, re.MULTILINE)
    return (float(m[2]), int(m[1].replace(",", ""))) if m else None


def header(info: dict[str, str], what: str, elapsed: float, results: list[Result]) -> str:
    built = [Path(r.image["image"]).name for r in results if not r.image.get("cached")]
    return (
        f"Measured {info['date']} on {info['cpu']} ({info['nproc']} cores, {info['memory']}, "
        f"Linux {info['kernel']}); Python {info['python']}, numpy {info['numpy']}, "
        f"pytsk3 {info['pytsk3']}, {what}; bmap {info['bmap']} at {info['tree']}. Whole "
        "processes under GNU time with `OPENBLAS_NUM_THREADS=1`; page cache not dropped "
        f"(warm runs, one untimed warm-up each). Timing this part took {elapsed / 60:.1f} "
        f"min ({'built in this run: ' + ', '.join(built) if built else 'images cached'})."
    )


def notes(results: list[Result]) -> list[str]:
    out = []
    if any(r.code_changed for r in results):
        out.append(
            "**bmap's code changed while this was measured**: the times mix versions of "
            "bmap. Rerun on a tree that is not being edited.\n"
        )
    return out


def xfs_section(r: Result, rounds: int, info: dict, elapsed: float, every: int, batch: int) -> str:
    s, mib = report.fmt_seconds, report.fmt_mib
    img = r.image
    inodes = img["used_inodes"]
    bmap_ms = r.median("bmap") * 1000 / (inodes / 1000)
    ext = ext_reference()
    files = int(r.field("xfs_bmap", "files"))
    sample = int(r.field("xfs_bmap", "sample"))
    io_sample = int(r.field("xfs_io", "sample"))
    io_every = int(r.field("xfs_io", "every"))
    io_what = "every regular file" if io_every == 1 else f"every {io_every}th file"
    rows = []
    for tool, label in (
        ("bmap", "`bmap map IMG -o x.bmap`"),
        ("bmap_pair", "`bmap map IMG -o x.bmap`, in the block alternating with the ext map"),
        ("bmap_ext", "`bmap map usr-full.img -o x.bmap` (the ext4 image of /usr), same block"),
        ("fiemap", "`walk_fiemap.py IMG`: FIEMAP of every regular file"),
        ("xfs_bmap", f"`xfs_bmap -v` once per file, sample: every {every}th file ({sample:,})"),
        (
            "xfs_io_sample",
            f"`xfs_io -c 'bmap -v'`, same sample, "
            f"{r.field('xfs_io_sample', 'processes'):.0f} processes",
        ),
        (
            "xfs_io",
            f"`xfs_io -c 'bmap -v'`, {io_what} ({io_sample:,}), "
            f"{r.field('xfs_io', 'processes'):.0f} processes",
        ),
    ):
        if tool not in r.runs:
            continue
        rows.append(
            [
                label,
                s(r.median(tool)),
                f"{min(x.wall for x in r.runs[tool]):.2f} s",
                s(r.median(tool, "cpu")),
                mib(r.median(tool, "rss_kib")),
                f"{r.median('bmap') / r.median(tool):.3f}x",
            ]
        )
    main = report.table(
        [
            "command (walkers: loop attach, mount, walk, umount, detach in the process)",
            "median wall",
            "fastest",
            "CPU",
            "peak RSS",
            "bmap / this",
        ],
        rows,
    )
    # the time for every file, from the listing runs' own clocks (mount and walk excluded)
    extrap = []
    for tool in ("xfs_bmap", "xfs_io_sample", "xfs_io"):
        ms = r.field(tool, "ms_per_file")
        n = int(r.field(tool, "sample"))
        whole = ms * files / 1000
        measured = n == files
        extrap.append(
            [
                f"`{tool}`",
                f"{n:,}",
                f"{r.field(tool, 'sample_seconds'):.3f} s",
                f"{ms:.3f} ms",
                f"{files:,}",
                f"{whole:.1f} s (measured: the run listed every file)"
                if measured
                else f"**{whole:.0f} s (extrapolated, not measured)**",
                f"{r.median('bmap') / whole:.4f}x",
            ]
        )
    extrap_table = report.table(
        [
            "tool",
            "files listed",
            "their own time (median)",
            "per file",
            "regular files in the image",
            "every file",
            "bmap map (whole process) / every file",
        ],
        extrap,
    )
    parts = [
        f"bmap on XFS, in the rounds with the walkers: {bmap_ms:.2f} ms per 1000 used inodes "
        f"({inodes:,} inodes, median {r.median('bmap'):.2f} s)."
    ]
    if r.runs.get("bmap_ext"):
        ext_inodes = json.loads(EXT_IMAGE.with_suffix(".img.json").read_text())["used_inodes"]
        ext_ms = r.median("bmap_ext") * 1000 / (ext_inodes / 1000)
        pair_ms = r.median("bmap_pair") * 1000 / (inodes / 1000)
        parts.append(
            f"In a block of {len(r.runs['bmap_ext'])} rounds of their own, before the walkers "
            "(a walker that has just unmounted the XFS was seen to slow the next process), "
            f"alternating `bmap map` of this image (median {r.median('bmap_pair'):.2f} s, "
            f"**{pair_ms:.2f} ms per 1000 inodes**) with `bmap map` of the ext4 image of the "
            f"same /usr (`usr-full.img`, {ext_inodes:,} inodes, median "
            f"{r.median('bmap_ext'):.2f} s, **{ext_ms:.2f} ms per 1000**): "
            f"**XFS / ext per inode {pair_ms / ext_ms:.2f}x** (the aim: 1.00x or less; "
            f"{'met' if pair_ms <= ext_ms else 'not met'})."
        )
    if ext:
        ref_ms = ext[0] * 1000 / (ext[1] / 1000)
        parts.append(
            f"The bench:ext section above, measured at another time, gives {ext[0]:.2f} s "
            f"for {ext[1]:,} inodes, {ref_ms:.2f} ms per 1000."
        )
    per_inode = " ".join(parts)
    walks = report.table(
        ["tool", "its own count (warm-up run's last line)"],
        [[t, f"`{r.summary.get(t, '')}`"] for t in XFS_TOOLS if t != "bmap"]
        + [["bmap map lines", f"{r.map_lines:,}"]],
    )
    image = report.table(
        ["image", "source", "entries", "inodes used / allocated", "size", "built in"],
        [
            [
                Path(img["image"]).name,
                f"`{img['source']}` by `{img['recipe_text']}`",
                f"{img['source_entries']:,}",
                f"{inodes:,} / {img['inode_count']:,}",
                f"{img['size_bytes'] / GIB:.1f} GiB ({img['disk_usage_bytes'] / GIB:.1f} GiB "
                "allocated)",
                f"{img['build_seconds']:.0f} s",
            ]
        ],
    )
    return "\n".join(
        [
            "## XFS: bmap map against the kernel's FIEMAP and xfs_bmap",
            "",
            header(info, f"xfsprogs {tool_versions()['mkfs.xfs'].split()[-1]}", elapsed, [r]),
            "",
            *notes([r]),
            f"Medians of {rounds} alternating warm runs, whole processes.",
            "",
            main,
            "",
            per_inode,
            "",
            f"`xfs_bmap -v` over every file is not run (about 1,700 s a run): it is timed on "
            f"every {every}th regular file of a sorted walk of the mount (the 0th, the "
            f"{every}th, ...), one `sh` + `xfs_io` per file as the xfsprogs script does, and "
            "its time for every file extrapolated from the sample's time per file. The same "
            f"`bmap -v` through one `xfs_io -r -p xfs_bmap` per {batch} files (`-c 'open -r "
            "PATH' -c 'bmap -v' -c close` for each) is timed on that sample and on every "
            "file. Times are the listing's own clock (mount and walk excluded), medians of "
            "the timed runs:",
            "",
            extrap_table,
            "",
            "What the walks found:",
            "",
            walks,
            "",
            "The image:",
            "",
            image,
        ]
    )


def tsk_section(results: list[Result], rounds: int, info: dict, elapsed: float) -> str:
    s, mib = report.fmt_seconds, report.fmt_mib
    rows = []
    for r in results:
        ratio = r.median("bmap") / r.median("pytsk3")
        rows.append(
            [
                Path(r.image["image"]).name,
                f"{r.image['entries']:,}",
                s(r.median("bmap")),
                s(r.median("pytsk3")),
                f"**{ratio:.2f}x**",
                "yes" if ratio <= TSK_TARGET else f"no ({ratio:.2f}x > {TSK_TARGET}x)",
                s(r.median("bmap", "cpu")),
                s(r.median("pytsk3", "cpu")),
                mib(r.median("bmap", "rss_kib")),
                mib(r.median("pytsk3", "rss_kib")),
                f"{r.map_lines:,}",
            ]
        )
    main = report.table(
        [
            "image",
            "files + dirs",
            "bmap map",
            "pytsk3 walk",
            "bmap/pytsk3",
            f"target (<= {TSK_TARGET}x)",
            "CPU bmap",
            "CPU pytsk3",
            "peak RSS bmap",
            "peak RSS pytsk3",
            "bmap map lines",
        ],
        rows,
    )
    walks = report.table(
        ["image", "pytsk3 walk's own count (warm-up run's last line)"],
        [[Path(r.image["image"]).name, f"`{r.summary.get('pytsk3', '')}`"] for r in results],
    )
    images = report.table(
        ["image", "recipe", "files / dirs", "data", "size", "tree written in", "built in"],
        [
            [
                Path(r.image["image"]).name,
                f"`{r.image['recipe_text']}`",
                f"{r.image['files']:,} / {r.image['dirs']:,}",
                f"{r.image['data_bytes'] / MIB:.0f} MiB in 4 KiB clusters",
                f"{r.image['size_bytes'] / GIB:.2f} GiB ({r.image['disk_usage_bytes'] / MIB:.0f} "
                "MiB allocated)",
                f"{r.image['tree_seconds']:.0f} s",
                f"{r.image['build_seconds']:.0f} s",
            ]
            for r in results
        ],
    )
    v = tool_versions()
    return "\n".join(
        [
            "## FAT32 and NTFS: bmap map against a pytsk3 walk",
            "",
            header(info, f"{v['mtools']}, {v['mkntfs']}", elapsed, results),
            "",
            *notes(results),
            f"Medians of {rounds} alternating warm runs, whole processes: "
            "`python -m bmap map IMG -o x.bmap` against `python bench/walk_pytsk3.py IMG`. "
            f"The tree: {FILES:,} files in {DIRS:,} directories (`d000/file-000000.txt` ..), "
            f"every third empty, the others 1..{MAX_SIZE:,} bytes (`random.Random({SEED})`).",
            "",
            main,
            "",
            "What the walk found:",
            "",
            walks,
            "",
            "The images:",
            "",
            images,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (>= 5 to --write)")
    ap.add_argument("--only", action="append", choices=KINDS, help="only this (repeatable)")
    ap.add_argument("--files", type=int, default=FILES, help="files of the FAT/NTFS tree")
    ap.add_argument("--every", type=int, default=EVERY, help="xfs_bmap on every N-th file")
    ap.add_argument("--io-every", type=int, default=IO_EVERY, help="batched xfs_io: every N-th")
    ap.add_argument("--batch", type=int, default=BATCH, help="files per xfs_io process")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the images")
    ap.add_argument("--build-only", action="store_true", help="build the images, time nothing")
    ap.add_argument("--write", action="store_true", help="rewrite bench:xfs and bench:tsk")
    args = ap.parse_args(argv)
    if args.write and args.rounds < 5:
        log(f"{args.rounds} rounds: fewer than 5; BENCHMARKS.md is left alone")
        args.write = False
    if args.write and args.files != FILES:
        log(f"--files {args.files}: not the benchmark's tree; BENCHMARKS.md is left alone")
        args.write = False
    if os.geteuid() != 0:
        raise SystemExit("fs_bench: needs root (loop devices, mounts)")
    kinds = args.only or list(KINDS)
    BUILD.mkdir(parents=True, exist_ok=True)
    images = {}
    for kind in kinds:
        t0 = time.monotonic()
        if kind == "xfs":
            images[kind] = build_xfs(args.rebuild)
        else:
            images[kind] = build_tsk(kind, args.files, args.rebuild)
        images[kind]["setup_seconds"] = time.monotonic() - t0
    if args.build_only:
        return 0
    info = report.machine()
    workdir = Path(tempfile.mkdtemp(prefix="bmap-fsbench-"))
    results: dict[str, Result] = {}
    elapsed: dict[str, float] = {}
    try:
        for kind in kinds:
            t0 = time.monotonic()
            every = (args.every, args.io_every, args.batch)
            results[kind] = bench(kind, images[kind], args.rounds, every, workdir)
            elapsed[kind] = time.monotonic() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sections = {}
    if "xfs" in results:
        sections["xfs"] = xfs_section(
            results["xfs"], args.rounds, info, elapsed["xfs"], args.every, args.batch
        )
    tsk = [results[k] for k in ("fat", "ntfs") if k in results]
    if tsk:
        took = sum(elapsed[k] for k in ("fat", "ntfs") if k in results)
        sections["tsk"] = tsk_section(tsk, args.rounds, info, took)
    for name, body in sections.items():
        print(body + "\n")
        if args.write:
            report.write_section(name, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
