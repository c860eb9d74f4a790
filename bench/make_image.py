"""Build (once, cached) the ext4 images the benchmark maps.

Three images of real trees, all made with ``mke2fs -q -F -t ext4 -d SOURCE``:

* ``build/bench/usr-full.img``: ``/usr`` itself (about 140,000 entries on the dev machine);
* ``build/bench/usr-half.img`` and ``build/bench/usr-quarter.img``: the real subtrees of
  ``/usr`` (at most three levels down) whose entry counts are nearest to 1/2 and 1/4 of
  ``/usr``'s, for the growth series. ``--half DIR`` / ``--quarter DIR`` pick them by hand.

Each image is sparse, sized at the tree's disk usage times 1.3 plus 256 MiB. Next to each
image a JSON stamp records the source tree, its entry count, the mke2fs version and what
``dumpe2fs -h`` says of the result; an image is rebuilt only when it is missing or its stamp
does not match (the tree grew or shrank, or another mke2fs). Images are built under a
temporary name and renamed when mke2fs succeeded, so a broken build is never reused.

Run alone: ``python bench/make_image.py`` (``--force`` rebuilds, ``--only full``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
SOURCE = Path("/usr")
#: Bump when the way an image is made changes, so old images are rebuilt.
RECIPE = 1
MIB = 1 << 20
#: Subtrees considered for the smaller images: at most this many levels below SOURCE.
PICK_DEPTH = 3
#: ext4's default bytes-per-inode ratio (mke2fs.conf); if the tree would fill more than
#: INODE_FILL of that, ``-N`` asks for enough inodes.
BYTES_PER_INODE = 16384
INODE_FILL = 0.8


@dataclass
class Tree:
    """What a scan of a source tree found."""

    path: Path
    entries: int  # distinct inodes (hard links once), the root directory included
    disk_bytes: int  # st_blocks * 512 summed over distinct inodes, like du


def log(msg: str) -> None:
    print(f"make_image: {msg}", file=sys.stderr, flush=True)


def scan(root: Path, depth: int = PICK_DEPTH) -> tuple[Tree, dict[Path, int]]:
    """Count the entries of ``root`` and the entries under each directory down to ``depth``.

    Does not follow symbolic links nor cross into other filesystems (as ``du -x``).
    """
    root_st = os.lstat(root)
    dev = root_st.st_dev
    seen: set[tuple[int, int]] = {(root_st.st_dev, root_st.st_ino)}
    disk = root_st.st_blocks * 512
    sub_counts: dict[Path, int] = {}

    def walk(path: str, level: int) -> int:
        nonlocal disk
        count = 0
        try:
            it = os.scandir(path)
        except OSError:
            return 0
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                count += 1
                disk += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    below = walk(entry.path, level + 1)
                    count += below
                    if level <= depth:
                        sub_counts[Path(entry.path)] = below + 1
        return count

    total = walk(str(root), 1) + 1
    return Tree(root, total, disk), sub_counts


def pick_subtree(sub_counts: dict[Path, int], target: float, exclude: set[Path]) -> Path:
    """The directory whose entry count is nearest (by ratio) to ``target``."""
    candidates = [
        (abs(math.log(n / target)), str(p), p)
        for p, n in sub_counts.items()
        if n > 0 and p not in exclude
    ]
    if not candidates:
        raise SystemExit("make_image: no subtree to pick for the growth series")
    return min(candidates)[2]


def scan_one(path: Path) -> Tree:
    tree, _ = scan(path, depth=0)
    return tree


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
    for key in (
        "Inode count",
        "Free inodes",
        "Block count",
        "Free blocks",
        "Block size",
        "Inode size",
        "Inodes per group",
    ):
        m = re.search(rf"^{key}:\s+(\d+)", out, re.MULTILINE)
        if m:
            fields[key.lower().replace(" ", "_")] = int(m.group(1))
    fields["used_inodes"] = fields["inode_count"] - fields["free_inodes"]
    return fields


def stamp_path(image: Path) -> Path:
    return image.with_suffix(image.suffix + ".json")


def build_image(name: str, tree: Tree, force: bool = False) -> dict:
    """Build ``build/bench/usr-NAME.img`` from ``tree`` unless its stamp matches."""
    BUILD.mkdir(parents=True, exist_ok=True)
    image = BUILD / f"usr-{name}.img"
    want = {
        "recipe": RECIPE,
        "source": str(tree.path),
        "source_entries": tree.entries,
        "mke2fs": mke2fs_version(),
    }
    stamp_file = stamp_path(image)
    if not force and image.exists() and stamp_file.exists():
        try:
            stamp = json.loads(stamp_file.read_text())
        except ValueError:
            stamp = {}
        if all(stamp.get(k) == v for k, v in want.items()):
            log(f"{image.name}: cached ({tree.path}, {tree.entries} entries)")
            stamp["image"] = str(image)
            stamp["cached"] = True
            return stamp
        log(f"{image.name}: stamp differs, rebuilding")
    size = int(tree.disk_bytes * 1.3) + 256 * MIB
    size = -(-size // (4 * MIB)) * (4 * MIB)
    cmd = ["mke2fs", "-q", "-F", "-t", "ext4"]
    inodes = None
    if tree.entries > INODE_FILL * (size // BYTES_PER_INODE):
        inodes = int(tree.entries * 1.25) + 4096
        cmd += ["-N", str(inodes)]
    tmp = image.with_name(image.name + ".tmp")
    for stale in (image, stamp_file, tmp):
        stale.unlink(missing_ok=True)
    cmd += ["-d", str(tree.path), str(tmp), f"{size // 1024}k"]
    free = shutil.disk_usage(BUILD).free
    if free < tree.disk_bytes * 1.2 + MIB * 512:
        raise SystemExit(
            f"make_image: {BUILD} has {free / 2**30:.1f} GiB free, "
            f"{tree.path} needs about {tree.disk_bytes / 2**30:.1f} GiB"
        )
    log(
        f"{image.name}: {' '.join(cmd)} ({tree.entries} entries, "
        f"{tree.disk_bytes / 2**30:.2f} GiB used in the tree)"
    )
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - t0
    os.replace(tmp, image)
    stamp = dict(want)
    stamp.update(
        {
            "command": [*cmd[:-2], str(image), cmd[-1]],
            "size_bytes": size,
            "disk_usage_bytes": os.stat(image).st_blocks * 512,
            "build_seconds": round(seconds, 1),
            "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **dumpe2fs_header(image),
        }
    )
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    log(
        f"{image.name}: built in {seconds:.0f} s, {stamp['used_inodes']} inodes used "
        f"of {stamp['inode_count']}"
    )
    stamp["image"] = str(image)
    return stamp


def ensure_images(
    only: list[str] | None = None,
    force: bool = False,
    half: Path | None = None,
    quarter: Path | None = None,
) -> list[dict]:
    """Build or reuse the images; return their stamps, smallest first."""
    names = only or ["quarter", "half", "full"]
    t0 = time.monotonic()
    full, sub_counts = scan(SOURCE)
    log(
        f"{SOURCE}: {full.entries} entries, {full.disk_bytes / 2**30:.2f} GiB "
        f"(scanned in {time.monotonic() - t0:.1f} s)"
    )
    trees: dict[str, Tree] = {"full": full}
    if "half" in names or "quarter" in names:
        half_dir = half or pick_subtree(sub_counts, full.entries / 2, set())
        trees["half"] = scan_one(half_dir)
        quarter_dir = quarter or pick_subtree(sub_counts, full.entries / 4, {half_dir})
        trees["quarter"] = scan_one(quarter_dir)
    stamps = []
    for name in names:
        stamp = build_image(name, trees[name], force=force)
        stamp["name"] = name
        stamps.append(stamp)
    stamps.sort(key=lambda s: s["used_inodes"])
    return stamps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    ap.add_argument(
        "--only",
        action="append",
        choices=["full", "half", "quarter"],
        help="build only this image (repeatable)",
    )
    ap.add_argument("--half", type=Path, help="source tree of the half-size image")
    ap.add_argument("--quarter", type=Path, help="source tree of the quarter-size image")
    args = ap.parse_args(argv)
    for stamp in ensure_images(args.only, args.force, args.half, args.quarter):
        print(
            f"{stamp['image']}: {stamp['source']} ({stamp['source_entries']} entries), "
            f"inodes {stamp['used_inodes']} used of {stamp['inode_count']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
