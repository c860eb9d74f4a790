"""Ground truth for XFS images from outside bmap: the kernel (FIEMAP, and ``xfs_bmap`` through
the kernel's own bmap ioctl) and ``xfs_db``.

Nothing here writes to an image: ``xfs_db`` runs with ``-r``, loop devices are attached with
``losetup --read-only`` and mounted ``-o ro,norecovery``.

Units: byte ranges are half-open ``(start, end)`` and relative to the start of the filesystem;
``xfs_db`` and ``xfs_bmap`` speak in filesystem blocks and 512-byte sectors, converted here.
The functions that mount need root and loop devices (and a kernel that mounts the version:
this one mounts only v5); without them they call ``pytest.skip`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from tests import ext_truth
from tests.ext_images import tool_path
from tests.ext_truth import Extent, _walk, fiemap_fd

SECTOR = 512


class Run(NamedTuple):
    """One run of a fork: offsets in bytes (``physical`` from the filesystem's start)."""

    logical: int
    physical: int
    length: int
    unwritten: bool = False


def xfs_db(image: Path | str, commands: Iterable[str]) -> str:
    """Run ``xfs_db -r`` with ``commands`` (fed on its standard input) in one process."""
    text = "".join(c + "\n" for c in commands)
    proc = subprocess.run(
        [tool_path("xfs_db"), "-r", str(image)],
        input=text,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"xfs_db on {image}: exit {proc.returncode}: {proc.stderr}")
    return proc.stdout


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def header(image: Path | str, which: str, agno: int = 0) -> dict[str, str]:
    """``xfs_db``'s print of ``sb``, ``agf`` or ``agi`` of AG ``agno``, field by field."""
    return _fields(xfs_db(image, [f"{which} {agno}", "print"]))


def geometry(image: Path | str) -> dict[str, int]:
    sb = header(image, "sb")
    keys = (
        "blocksize",
        "sectsize",
        "agblocks",
        "agcount",
        "agblklog",
        "dblocks",
        "logstart",
        "logblocks",
        "inodesize",
        "rootino",
        "icount",
        "ifree",
        "fdblocks",
    )
    return {k: int(sb[k]) for k in keys}


def fsb_to_bytes(geo: dict[str, int], fsb: int) -> int:
    agno, agbno = fsb >> geo["agblklog"], fsb & ((1 << geo["agblklog"]) - 1)
    return (agno * geo["agblocks"] + agbno) * geo["blocksize"]


def freesp(image: Path | str) -> list[tuple[int, int]]:
    """``xfs_db freesp -d``: every free extent (the bnobt's and the free list's) in bytes."""
    geo = geometry(image)
    bs, agblocks = geo["blocksize"], geo["agblocks"]
    out = []
    for line in xfs_db(image, ["freesp -d"]).splitlines():
        m = re.match(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            agno, agbno, length = map(int, m.groups())
            start = (agno * agblocks + agbno) * bs
            out.append((start, start + length * bs))
    return out


_BMAP_LINE = re.compile(
    r"^(data|attr) offset (\d+) startblock (\d+) \(\d+/\d+\) count (\d+) flag (\d)"
)


def inode_bmaps(
    image: Path | str, inodes: Iterable[int], attr: bool = False
) -> dict[int, list[Run]]:
    """``xfs_db`` ``inode N`` + ``bmap`` (``-a``: the attribute fork) of many inodes."""
    geo = geometry(image)
    bs = geo["blocksize"]
    inodes = list(inodes)
    commands = []
    for ino in inodes:
        commands += [f"echo @@ {ino}", f"inode {ino}", "bmap -a" if attr else "bmap -d"]
    result: dict[int, list[Run]] = {}
    current = None
    for line in xfs_db(image, commands).splitlines():
        if line.startswith("@@ "):
            current = int(line[3:])
            result[current] = []
            continue
        m = _BMAP_LINE.match(line)
        if m and current is not None and m.group(1) == ("attr" if attr else "data"):
            _, off, fsb, count, flag = m.groups()
            result[current].append(
                Run(int(off) * bs, fsb_to_bytes(geo, int(fsb)), int(count) * bs, flag == "1")
            )
    return result


def inode_fields(
    image: Path | str, inodes: Iterable[int], fields: Iterable[str]
) -> dict[int, dict[str, str]]:
    """Fields of many inodes as ``xfs_db`` prints them (``core.format``, ``core.size``, ...)."""
    fields = list(fields)
    commands = []
    for ino in inodes:
        commands += [f"echo @@ {ino}", f"inode {ino}", f"print {' '.join(fields)}"]
    result: dict[int, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in xfs_db(image, commands).splitlines():
        if line.startswith("@@ "):
            current = result.setdefault(int(line[3:]), {})
            continue
        key, sep, value = line.partition(" = ")
        if sep:
            current[key.strip()] = value.strip()
    return result


def ncheck(image: Path | str) -> dict[bytes, int]:
    """Every path (bytes, absolute) of every inode ``xfs_db ncheck`` names, and its inode."""
    proc = subprocess.run(
        [tool_path("xfs_db"), "-r", "-c", "blockget -n", "-c", "ncheck", str(image)],
        capture_output=True,
        check=False,
    )
    out: dict[bytes, int] = {}
    for line in proc.stdout.splitlines():
        m = re.match(rb"^\s*(\d+)\s(.*)$", line)
        if m:
            out[b"/" + m.group(2)] = int(m.group(1))
    return out


class FsmapRecord(NamedTuple):
    start: int
    end: int
    owner: str
    """An inode number, or the special owner's name (``per-AG metadata``, ``log``, ...)."""
    offset: int
    attr: bool
    bmbt: bool
    unwritten: bool


_FSMAP_LINE = re.compile(
    r"^(\d+): (\d+)/(\d+) len (\d+) owner (-?\d+) offset (\d+) bmbt (\d) attrfork (\d) "
    r"extflag (\d)"
)


def fsmap(image: Path | str) -> list[FsmapRecord]:
    """Every reverse mapping of an rmapbt filesystem (``xfs_db fsmap``), in bytes."""
    geo = geometry(image)
    bs, agblocks = geo["blocksize"], geo["agblocks"]
    out = []
    for line in xfs_db(image, ["fsmap"]).splitlines():
        m = _FSMAP_LINE.match(line)
        if not m:
            continue
        _, agno, agbno, length, owner, offset, bmbt, attr, ext = m.groups()
        start = (int(agno) * agblocks + int(agbno)) * bs
        out.append(
            FsmapRecord(
                start,
                start + int(length) * bs,
                owner,
                int(offset) * bs,
                attr == "1",
                bmbt == "1",
                ext == "1",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# read-only mounts


def ro_mount(image: Path | str, offset: int = 0) -> contextlib.AbstractContextManager[Path]:
    """Attach ``image`` (from ``offset``) read-only to a loop device and mount it
    ro,norecovery (:func:`tests.ext_truth.ro_mount`); a refused mount skips the test."""
    return ext_truth.ro_mount(
        image, offset, "xfs", "ro,norecovery", refused="the kernel does not mount this XFS"
    )


_XFS_BMAP_LINE = re.compile(
    r"^\s*\d+: \[(\d+)\.\.(\d+)\]:\s+(\d+)\.\.(\d+)\s+\S+\s+\(\S+\)\s+\d+\s*(\d*)"
)


def _xfs_bmap(host: bytes, attr: bool) -> list[Run]:
    args = [tool_path("xfs_bmap"), "-v", "-p"] + (["-a"] if attr else [])
    proc = subprocess.run([*args, host], capture_output=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"xfs_bmap {host!r}: {proc.stderr!r}")
    runs = []
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        m = _XFS_BMAP_LINE.match(line)
        if m:
            lo, hi, p0, _p1, flags = m.groups()
            # FLAGS 010000: an unwritten (preallocated) extent.
            unwritten = bool(flags) and int(flags, 8) & 0o10000 != 0
            runs.append(
                Run(int(lo) * SECTOR, int(p0) * SECTOR, (int(hi) - int(lo) + 1) * SECTOR, unwritten)
            )
    return runs


class Truth(NamedTuple):
    """What the kernel says of every name: FIEMAP for regular files, ``xfs_bmap -v`` for
    directories (FIEMAP refuses them on XFS), ``xfs_bmap -a -v`` for every attribute fork, and
    each name's inode and type."""

    files: dict[bytes, list[Extent]]
    dirs: dict[bytes, list[Run]]
    attrs: dict[bytes, list[Run]]
    inodes: dict[bytes, int]
    types: dict[bytes, str]


def kernel_truth(image: Path | str, offset: int = 0) -> Truth:
    files: dict[bytes, list[Extent]] = {}
    dirs: dict[bytes, list[Run]] = {}
    attrs: dict[bytes, list[Run]] = {}
    inodes: dict[bytes, int] = {}
    types: dict[bytes, str] = {}
    with ro_mount(image, offset) as mnt:
        for path, host, st in _walk(mnt):
            inodes[path] = st.st_ino
            if stat.S_ISREG(st.st_mode):
                types[path] = "reg"
                fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME)
                try:
                    files[path] = fiemap_fd(fd)
                finally:
                    os.close(fd)
            elif stat.S_ISDIR(st.st_mode):
                types[path] = "dir"
                dirs[path] = _xfs_bmap(host, attr=False)
            else:
                types[path] = "lnk" if stat.S_ISLNK(st.st_mode) else "other"
            if not stat.S_ISLNK(st.st_mode) and os.listxattr(host, follow_symlinks=False):
                attrs[path] = _xfs_bmap(host, attr=True)
    return Truth(files, dirs, attrs, inodes, types)


def log_state(image: Path | str) -> str:
    """``CLEAN`` or ``DIRTY``, as ``xfs_logprint -t`` reads the log's head and tail."""
    proc = subprocess.run(
        [tool_path("xfs_logprint"), "-t", str(image)], capture_output=True, text=True, check=False
    )
    m = re.search(r"state: <(\w+)>", proc.stdout)
    if not m:
        raise RuntimeError(f"xfs_logprint on {image}: {proc.stdout}{proc.stderr}")
    return m.group(1)
