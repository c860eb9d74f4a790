"""List every regular file's extents through the kernel: FIEMAP, or ``xfs_bmap -v``.

    python bench/walk_fiemap.py IMAGE [--fstype xfs]
    python bench/walk_fiemap.py IMAGE --xfs-bmap EVERY
    python bench/walk_fiemap.py IMAGE --xfs-io EVERY [--batch 200]

Attaches IMAGE read-only to a loop device (``losetup --find --show --read-only``), mounts it
``ro,norecovery`` on a temporary directory, and always unmounts and detaches it again (also
on an error or Ctrl-C). The mount and its undoing are part of the process being timed, as
they are of the analyst's script; the walk's own time is printed as well.

* Default: walks the mount (``os.scandir``, symbolic links not followed, each name once) and
  calls the ``FS_IOC_FIEMAP`` ioctl on every regular file, in batches of 256 extents until
  ``FIEMAP_EXTENT_LAST``, collecting ``(logical, physical, length)``.
* ``--xfs-bmap EVERY``: the same walk in sorted order, then ``xfs_bmap -v PATH`` (the real
  xfsprogs script: ``sh`` starting one ``xfs_io -r -p xfs_bmap -c 'bmap -v' PATH``) for every
  EVERY-th regular file (the 0th, the EVERY-th, ...), one process per file.
* ``--xfs-io EVERY``: the same sample, but one ``xfs_io -r -p xfs_bmap`` per BATCH files,
  ``-c 'open -r PATH' -c 'bmap -v' -c close`` for each (names holding whitespace or quotes,
  which xfs_io's command line would split, get a process of their own).

The last line of stdout gives the counts (files, extents, bytes or the lines of `bmap -v` naming
an extent or a hole, the sample's
size and time, and the per-file extrapolation to every regular file), so the work cannot be
optimised away and the runs can be compared.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_MAX_OFFSET = (1 << 64) - 1
FIEMAP_EXTENT_LAST = 0x1
_FIEMAP = struct.Struct("=QQLLLL")  # fm_start, fm_length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQLLLL")  # logical, physical, length, 2 reserved, flags, 3 reserved
_BATCH = 256
#: An extent line of ``xfs_bmap -v``: `` 0: [0..199]: 192..391 ...`` (holes say ``hole``).
_BMAP_LINE = re.compile(rb"^\s*\d+: \[")


def fiemap(fd: int) -> list[tuple[int, int, int]]:
    """Every extent of an open file, ``(logical, physical, length)`` in bytes."""
    extents: list[tuple[int, int, int]] = []
    start = 0
    buf = bytearray(_FIEMAP.size + _EXTENT.size * _BATCH)
    for _ in range(1 << 20):  # bounded: a file has far fewer batches
        _FIEMAP.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET, 0, 0, _BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _FIEMAP.unpack_from(buf)[3]
        if mapped == 0:
            break
        last_flags = 0
        for i in range(mapped):
            logical, physical, length, _, _, last_flags, *_ = _EXTENT.unpack_from(
                buf, _FIEMAP.size + i * _EXTENT.size
            )
            extents.append((logical, physical, length))
        if last_flags & FIEMAP_EXTENT_LAST:
            break
        start = extents[-1][0] + extents[-1][2]
    return extents


def regular_files(top: str, ordered: bool) -> list[str]:
    """Every regular file under ``top`` (each name, symlinks not followed)."""
    out: list[str] = []
    stack = [top]
    while stack:
        path = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name) if ordered else list(it)
        subdirs = []
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.path)
            elif e.is_file(follow_symlinks=False):
                out.append(e.path)
        stack.extend(reversed(subdirs) if ordered else subdirs)
    return out


def walk_fiemap(top: str) -> str:
    files = extents = nbytes = errors = 0
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME
    stack = [top]
    while stack:
        path = stack.pop()
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                files += 1
                try:
                    fd = os.open(e.path, flags)
                except OSError:
                    errors += 1
                    continue
                try:
                    ext = fiemap(fd)
                except OSError:
                    errors += 1
                    continue
                finally:
                    os.close(fd)
                extents += len(ext)
                nbytes += sum(length for _, _, length in ext)
    return f"fiemap files={files} extents={extents} bytes={nbytes} errors={errors}"


def count_lines(out: bytes) -> int:
    return sum(1 for line in out.splitlines() if _BMAP_LINE.match(line))


def sample_xfs_bmap(top: str, every: int, batch: int, per_file: bool) -> str:
    t0 = time.perf_counter()
    files = regular_files(top, ordered=True)
    listed = time.perf_counter() - t0
    sample = files[::every]
    lines = errors = processes = 0
    t1 = time.perf_counter()
    if per_file:
        for path in sample:
            proc = subprocess.run(["xfs_bmap", "-v", path], capture_output=True, check=False)
            processes += 1
            errors += proc.returncode != 0
            lines += count_lines(proc.stdout)
    else:
        plain = [p for p in sample if not re.search(r"[\s'\"\\]", p)]
        odd = [p for p in sample if re.search(r"[\s'\"\\]", p)]
        batches = [plain[i : i + batch] for i in range(0, len(plain), batch)]
        for chunk in batches:
            cmd = ["xfs_io", "-r", "-p", "xfs_bmap"]
            for path in chunk:
                cmd += ["-c", f"open -r {path}", "-c", "bmap -v", "-c", "close"]
            proc = subprocess.run(cmd, capture_output=True, check=False)
            processes += 1
            errors += proc.returncode != 0
            lines += count_lines(proc.stdout)
        for path in odd:
            cmd = ["xfs_io", "-r", "-p", "xfs_bmap", "-c", "bmap -v", path]
            proc = subprocess.run(cmd, capture_output=True, check=False)
            processes += 1
            errors += proc.returncode != 0
            lines += count_lines(proc.stdout)
    took = time.perf_counter() - t1
    per = took / len(sample) if sample else 0.0
    tool = "xfs_bmap" if per_file else "xfs_io"
    return (
        f"{tool} files={len(files)} every={every} sample={len(sample)} processes={processes} "
        f"extent_lines={lines} errors={errors} list_seconds={listed:.2f} "
        f"sample_seconds={took:.4f} ms_per_file={per * 1000:.4f} "
        f"extrapolated_seconds={per * len(files):.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--fstype", default="xfs")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--xfs-bmap", type=int, metavar="EVERY", help="xfs_bmap -v per file")
    mode.add_argument("--xfs-io", type=int, metavar="EVERY", help="xfs_io, BATCH files each")
    ap.add_argument("--batch", type=int, default=200, help="files per xfs_io (--xfs-io)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", args.image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        mnt = tempfile.mkdtemp(prefix="bmap-fiemap-")
        try:
            opts = "ro,norecovery" if args.fstype == "xfs" else "ro"
            subprocess.run(["mount", "-t", args.fstype, "-o", opts, dev, mnt], check=True)
            try:
                t1 = time.perf_counter()
                if args.xfs_bmap:
                    line = sample_xfs_bmap(mnt, args.xfs_bmap, args.batch, per_file=True)
                elif args.xfs_io:
                    line = sample_xfs_bmap(mnt, args.xfs_io, args.batch, per_file=False)
                else:
                    line = walk_fiemap(mnt)
                walk = time.perf_counter() - t1
            finally:
                subprocess.run(["umount", mnt], check=True)
        finally:
            os.rmdir(mnt)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
    print(f"{line} walk_seconds={walk:.2f} seconds={time.perf_counter() - t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
