"""Ground truth for ext2/3/4 images from outside bmap: the kernel (FIEMAP) and e2fsprogs.

Every function takes an image path and, where a filesystem sits inside a disk, the byte
``offset`` of the filesystem in it. Nothing here writes to an image: debugfs runs without
``-w`` (``image?offset=N`` is e2fsprogs' own io option), loop devices are attached with
``losetup --read-only`` and mounted ``-o ro,noload``.

Units: byte ranges are half-open ``(start, end)`` and relative to the start of the
filesystem, except where a name says ``block`` (debugfs' own unit: filesystem blocks).

The functions that mount (:func:`fiemap`, :func:`ncheck_all`, :func:`file_types`,
:func:`inode_of`) need root and loop devices; without them they call ``pytest.skip`` with the
reason (so a plain script gets ``Skipped`` raised).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.ext_images import tool_path

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_XATTR = 0x2
FIEMAP_MAX_OFFSET = (1 << 64) - 1
_FIEMAP = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 rsvd, flags, 3 rsvd
_FIEMAP_BATCH = 512

# linux/fiemap.h, with the names filefrag prints.
FIEMAP_FLAG_NAMES = {
    0x0001: "last",
    0x0002: "unknown",
    0x0004: "delalloc",
    0x0008: "encoded",
    0x0080: "encrypted",
    0x0100: "not_aligned",
    0x0200: "inline",
    0x0400: "tail",
    0x0800: "unwritten",
    0x1000: "merged",
    0x2000: "shared",
}

EXT4_INDEX_FL = 0x1000  # htree directory
EXT4_EXTENTS_FL = 0x80000
EXT4_INLINE_DATA_FL = 0x10000000


class Extent(NamedTuple):
    """One FIEMAP extent, in bytes; ``physical`` is relative to the filesystem start."""

    logical: int
    physical: int
    length: int
    flags: frozenset[str]


class BlockExtent(NamedTuple):
    """One run of data blocks as debugfs ``stat`` prints it (filesystem blocks)."""

    logical: int
    physical: int
    length: int
    uninit: bool


# --------------------------------------------------------------------------------------------
# running the tools


def _fs_spec(image: Path | str, offset: int) -> str:
    """How e2fsprogs names a filesystem at ``offset`` bytes inside ``image``."""
    return f"{image}?offset={offset}" if offset else str(image)


def _tool_env() -> dict[str, str]:
    return {**os.environ, "DEBUGFS_PAGER": "__none__", "PAGER": "__none__", "LC_ALL": "C"}


def debugfs_run(
    image: Path | str, commands: Iterable[str], offset: int = 0, catastrophic: bool = True
) -> list[tuple[str, bytes]]:
    """Run ``debugfs -f`` with ``commands`` in one process; (command, its stdout) each.

    ``-c`` (catastrophic: bitmaps are not read) is on unless asked otherwise: every query
    here reads inodes, not bitmaps, and it is faster.
    """
    commands = list(commands)
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", encoding="utf-8") as cmdfile:
        cmdfile.write("".join(c + "\n" for c in commands))
        cmdfile.flush()
        args = [tool_path("debugfs")]
        if catastrophic:
            args.append("-c")
        args += ["-f", cmdfile.name, _fs_spec(image, offset)]
        proc = subprocess.run(args, capture_output=True, env=_tool_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"debugfs on {image}: exit {proc.returncode}: {proc.stderr!r}")
    # With -f, debugfs echoes "debugfs: <command>" on stdout before each command's output.
    parts = re.split(rb"(?m)^debugfs: (.*)\n", proc.stdout)
    sections = [(parts[i].decode(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    if [c for c, _ in sections] != commands:
        raise RuntimeError(f"debugfs on {image}: could not split its output by command")
    return sections


def dumpe2fs_text(image: Path | str, offset: int = 0, header_only: bool = False) -> str:
    args = [tool_path("dumpe2fs")]
    if header_only:
        args.append("-h")
    args.append(_fs_spec(image, offset))
    proc = subprocess.run(args, capture_output=True, env=_tool_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dumpe2fs on {image}: exit {proc.returncode}: {proc.stderr!r}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def e2fsck_clean(image: Path | str, offset: int = 0) -> tuple[bool, str]:
    """``e2fsck -fn``: (clean?, its output). Read-only."""
    proc = subprocess.run(
        [tool_path("e2fsck"), "-fn", _fs_spec(image, offset)],
        capture_output=True,
        text=True,
        env=_tool_env(),
        check=False,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# read-only loop mounts


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to attach loop devices and mount")
    if not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no loop devices (/dev/loop-control missing)")


@contextlib.contextmanager
def ro_mount(
    image: Path | str,
    offset: int = 0,
    fstype: str = "ext4",
    options: str = "ro,noload",
    refused: str | None = None,
) -> Iterator[Path]:
    """Attach ``image`` (from ``offset``) read-only to a loop device and mount it ``fstype``
    with ``options`` (no journal replay). A mount the kernel refuses is an error, or, with
    ``refused`` given, a skip with that reason.

    The mount and the loop device are always released, also when the body raises.
    """
    require_root()
    dev = subprocess.run(
        [
            tool_path("losetup"),
            "--find",
            "--show",
            "--read-only",
            "--offset",
            str(offset),
            str(image),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        mnt = Path(tempfile.mkdtemp(prefix="bmap-truth-"))
        try:
            proc = subprocess.run(
                [tool_path("mount"), "-t", fstype, "-o", options, dev, str(mnt)],
                capture_output=True,
                text=True,
                check=refused is None,
            )
            if proc.returncode:
                pytest.skip(f"{refused}: {proc.stderr.strip()}")
            try:
                yield mnt
            finally:
                if subprocess.run([tool_path("umount"), str(mnt)], check=False).returncode:
                    subprocess.run([tool_path("umount"), "-l", str(mnt)], check=False)
        finally:
            with contextlib.suppress(OSError):
                mnt.rmdir()
    finally:
        subprocess.run([tool_path("losetup"), "--detach", dev], check=False)


def _walk(mnt: Path) -> Iterator[tuple[bytes, bytes, os.stat_result]]:
    """(fs path, host path, lstat) of every entry below the mount, root first; bytes paths."""
    root = os.fsencode(mnt)
    yield b"/", root, os.lstat(root)
    for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinks
        rel = dirpath[len(root) :] or b""
        for name in sorted(dirnames) + sorted(filenames):
            host = os.path.join(dirpath, name)
            yield rel + b"/" + name, host, os.lstat(host)


# --------------------------------------------------------------------------------------------
# FIEMAP


def _flag_names(flags: int) -> frozenset[str]:
    names = {name for bit, name in FIEMAP_FLAG_NAMES.items() if flags & bit}
    rest = flags & ~sum(FIEMAP_FLAG_NAMES)
    if rest:
        names.add(f"0x{rest:x}")
    return frozenset(names)


def fiemap_fd(fd: int, xattr: bool = False) -> list[Extent]:
    """Every extent FIEMAP reports for an open file, in batches until FIEMAP_EXTENT_LAST.

    ``xattr=True`` asks for FIEMAP_FLAG_XATTR. Do not use its answer as truth: Linux
    (6.18 here) reports only the in-inode xattr area when there is one, never the xattr
    block then, and its physical offset leaves out the inode's offset inside its block
    (ext4_xattr_fiemap), so inodes sharing an inode-table block get the same address.
    """
    extents: list[Extent] = []
    start = 0
    for _ in range(1 << 20):  # bounded: a file has far fewer batches
        buf = bytearray(_FIEMAP.size + _FIEMAP_EXTENT.size * _FIEMAP_BATCH)
        _FIEMAP.pack_into(
            buf,
            0,
            start,
            FIEMAP_MAX_OFFSET,
            FIEMAP_FLAG_XATTR if xattr else 0,
            0,
            _FIEMAP_BATCH,
            0,
        )
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _FIEMAP.unpack_from(buf)[3]
        if mapped == 0:
            break
        for i in range(mapped):
            logical, physical, length, _, _, flags, *_ = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP.size + i * _FIEMAP_EXTENT.size
            )
            extents.append(Extent(logical, physical, length, _flag_names(flags)))
        last = extents[-1]
        if "last" in last.flags or xattr:
            break
        start = last.logical + last.length
    return extents


def _open_for_fiemap(host: bytes, st: os.stat_result) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME
    if stat.S_ISDIR(st.st_mode):
        flags |= os.O_DIRECTORY
    return os.open(host, flags)


def fiemap(image: Path | str, offset: int = 0) -> dict[bytes, list[Extent]]:
    """FIEMAP of every regular file and directory (each hard-link name, ``/`` included).

    Physical offsets are bytes from the filesystem start (the loop device starts there).
    """
    result: dict[bytes, list[Extent]] = {}
    with ro_mount(image, offset) as mnt:
        for path, host, st in _walk(mnt):
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            fd = _open_for_fiemap(host, st)
            try:
                result[path] = fiemap_fd(fd)
            finally:
                os.close(fd)
    return result


def ncheck_all(image: Path | str, offset: int = 0) -> dict[int, list[bytes]]:
    """Every name (bytes path) of every inode reachable from ``/``; hard links give several."""
    names: dict[int, list[bytes]] = {}
    with ro_mount(image, offset) as mnt:
        for path, _host, st in _walk(mnt):
            names.setdefault(st.st_ino, []).append(path)
    return names


def file_types(image: Path | str, offset: int = 0) -> dict[bytes, str]:
    """Path -> ``reg dir lnk fifo chr blk sock`` from lstat on the mount."""
    kinds = {
        stat.S_IFREG: "reg",
        stat.S_IFDIR: "dir",
        stat.S_IFLNK: "lnk",
        stat.S_IFIFO: "fifo",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
        stat.S_IFSOCK: "sock",
    }
    with ro_mount(image, offset) as mnt:
        return {path: kinds[stat.S_IFMT(st.st_mode)] for path, _h, st in _walk(mnt)}


def inode_of(image: Path | str, paths: Iterable[bytes], offset: int = 0) -> dict[bytes, int]:
    """Inode numbers of fs paths (bytes), by lstat on a read-only mount."""
    with ro_mount(image, offset) as mnt:
        root = os.fsencode(mnt)
        return {p: os.lstat(root + b"/" + p.lstrip(b"/")).st_ino for p in paths}


# --------------------------------------------------------------------------------------------
# debugfs stat


_SAFE_PATH = re.compile(rb"[A-Za-z0-9_./+,:@%-]+")

_STAT_BLOCK = re.compile(
    rb"\((?:ETB(?P<etb>\d+)|(?P<ind>IND|DIND|TIND)|(?P<l0>\d+)(?:-(?P<l1>\d+))?(?P<u>\[u\])?)\)"
    rb":(?P<p0>\d+)(?:-(?P<p1>\d+))?"
)


def _inode_specs(
    image: Path | str, keys: list[int | str | bytes], offset: int
) -> dict[int | str | bytes, str]:
    """debugfs inode specs (``<12>`` or ``/plain/path``) for inode numbers and paths.

    Paths that debugfs' command parser would mangle (spaces, quotes, newlines, bytes that
    are not ASCII) are resolved to inode numbers on a read-only mount instead.
    """
    specs: dict[int | str | bytes, str] = {}
    awkward: list[bytes] = []
    for key in keys:
        if isinstance(key, int):
            specs[key] = f"<{key}>"
            continue
        path = os.fsencode(key)
        if _SAFE_PATH.fullmatch(path):
            specs[key] = path.decode()
        else:
            awkward.append(path)
    if awkward:
        found = inode_of(image, awkward, offset)
        for key in keys:
            if not isinstance(key, int) and os.fsencode(key) in found:
                specs[key] = f"<{found[os.fsencode(key)]}>"
    return specs


def parse_stat(text: bytes) -> dict[str, Any]:
    """The fields of one debugfs ``stat`` output that a block map needs."""
    head = re.search(rb"Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)\s+Flags: (0x[0-9a-f]+)", text)
    if not head:
        raise ValueError(f"not a debugfs stat output: {text[:200]!r}")

    def num(pattern: bytes, default: int | None = 0) -> int | None:
        m = re.search(pattern, text)
        return int(m.group(1)) if m else default

    info: dict[str, Any] = {
        "inode": int(head.group(1)),
        "type": head.group(2).decode(),
        "mode": int(head.group(3), 8),
        "flags": int(head.group(4), 16),
        "size": num(rb"\bSize: (\d+)"),
        "links": num(rb"Links: (\d+)"),
        "blockcount": num(rb"Blockcount: (\d+)"),
        "file_acl": num(rb"File ACL: (\d+)"),
        "inline_size": num(rb"Size of inline data: (\d+)", None),
        "fast_link": None,
        "xattrs": [
            m.decode("utf-8", "surrogateescape") for m in re.findall(rb"(?m)^  (\S+) \(\d+\)", text)
        ],
        "etb_nodes": [],  # (level, block): extent-tree index and leaf blocks outside the inode
        "etb_blocks": [],
        "ind_blocks": [],  # ("IND" | "DIND" | "TIND", block), in traversal order
        "data_extents": [],  # BlockExtent runs in stat's order
        "total_blocks": num(rb"(?m)^TOTAL: (\d+)", None),
    }
    link = re.search(rb'Fast link dest: "(.*)"\n', text, re.DOTALL)
    if link:
        info["fast_link"] = link.group(1)
    section = re.search(rb"(?m)^(EXTENTS|BLOCKS):\n(.*)", text, re.DOTALL)
    if section:
        info["block_map"] = section.group(1).decode().lower()
        for m in _STAT_BLOCK.finditer(section.group(2)):
            p0 = int(m["p0"])
            if m["etb"] is not None:
                info["etb_nodes"].append((int(m["etb"]), p0))
                info["etb_blocks"].append(p0)
            elif m["ind"] is not None:
                info["ind_blocks"].append((m["ind"].decode(), p0))
            else:
                l0 = int(m["l0"])
                l1 = int(m["l1"]) if m["l1"] is not None else l0
                info["data_extents"].append(BlockExtent(l0, p0, l1 - l0 + 1, m["u"] is not None))
    else:
        info["block_map"] = None
    return info


def debugfs_stat_all(
    image: Path | str, inodes_or_paths: Iterable[int | str | bytes], offset: int = 0
) -> dict[int | str | bytes, dict[str, Any]]:
    """``stat`` of many inodes (numbers) or paths in one debugfs run, keyed as asked."""
    keys = list(dict.fromkeys(inodes_or_paths))
    specs = _inode_specs(image, keys, offset)
    commands = [f'stat "{specs[k]}"' for k in keys]
    sections = debugfs_run(image, commands, offset)
    result: dict[int | str | bytes, dict[str, Any]] = {}
    for key, (_cmd, out) in zip(keys, sections):
        if not out.strip():
            raise KeyError(f"debugfs found no inode {key!r} in {image}")
        result[key] = parse_stat(out)
    return result


def debugfs_stat(image: Path | str, inode_or_path: int | str | bytes, offset: int = 0) -> dict:
    """One inode's ``stat``: etb_blocks, ind_blocks, file_acl, data_extents, inline_size,
    fast_link, flags, size, type (see :func:`parse_stat`)."""
    return debugfs_stat_all(image, [inode_or_path], offset)[inode_or_path]


def block_runs_to_bytes(runs: Iterable[BlockExtent], block_size: int) -> list[BlockExtent]:
    """debugfs block runs as bytes (same tuple shape), adjacent runs merged."""
    return coalesce(
        BlockExtent(
            r.logical * block_size, r.physical * block_size, r.length * block_size, r.uninit
        )
        for r in runs
    )


def coalesce(runs: Iterable[BlockExtent]) -> list[BlockExtent]:
    """Merge runs that continue each other logically and physically with the same flag."""
    out: list[BlockExtent] = []
    for r in sorted(runs):
        if out:
            p = out[-1]
            if (
                p.logical + p.length == r.logical
                and p.physical + p.length == r.physical
                and p.uninit == r.uninit
            ):
                out[-1] = BlockExtent(p.logical, p.physical, p.length + r.length, p.uninit)
                continue
        out.append(r)
    return out


def fiemap_runs(extents: Iterable[Extent]) -> list[BlockExtent]:
    """FIEMAP extents as (logical, physical, length, unwritten) byte runs, merged."""
    return coalesce(
        BlockExtent(e.logical, e.physical, e.length, "unwritten" in e.flags) for e in extents
    )


# --------------------------------------------------------------------------------------------
# icheck, ncheck, imap, htree


def inode_locations(image: Path | str, inodes: Iterable[int], offset: int = 0) -> dict[int, int]:
    """Byte offset of each inode (from the filesystem start), via debugfs ``imap``.

    Inline data starts 40 bytes (``i_block``) into its inode; that is where the kernel's
    FIEMAP says inline data is (flags ``inline``, ``not_aligned``).
    """
    inodes = list(dict.fromkeys(inodes))
    sections = debugfs_run(image, [f"imap <{i}>" for i in inodes], offset)
    block_size = int(dumpe2fs_header(image, offset)["Block size"])
    found: dict[int, int] = {}
    for ino, (_cmd, out) in zip(inodes, sections):
        m = re.search(rb"located at block (\d+), offset 0x([0-9a-f]+)", out)
        if not m:
            raise KeyError(f"debugfs imap found no inode {ino} in {image}")
        found[ino] = int(m[1]) * block_size + int(m[2], 16)
    return found


def icheck(image: Path | str, blocks: Iterable[int], offset: int = 0) -> dict[int, int | None]:
    """Block -> owning inode (None for "<block not found>"), via debugfs ``icheck``.

    icheck only knows blocks reached from inodes (data, IND/DIND/TIND, extent-tree nodes,
    the xattr block); static metadata (superblocks, descriptors, bitmaps, inode tables) is
    "not found". debugfs reads each command line into 8 KiB, so the list is cut into lines.
    """
    blocks = list(dict.fromkeys(blocks))
    lines: list[str] = []
    line: list[str] = []
    for b in blocks:
        line.append(str(b))
        if sum(len(x) + 1 for x in line) > 7000:
            lines.append("icheck " + " ".join(line))
            line = []
    if line:
        lines.append("icheck " + " ".join(line))
    owners: dict[int, int | None] = {}
    for _cmd, out in debugfs_run(image, lines, offset):
        for m in re.finditer(rb"(?m)^(\d+)\t(\d+|<block not found>)$", out):
            owners[int(m[1])] = None if m[2].startswith(b"<") else int(m[2])
    missing = [b for b in blocks if b not in owners]
    if missing:
        raise RuntimeError(f"debugfs icheck gave no answer for blocks {missing[:10]}")
    return owners


def debugfs_ncheck(
    image: Path | str, inodes: Iterable[int], offset: int = 0
) -> dict[int, list[bytes]]:
    """debugfs ``ncheck``: names as debugfs prints them (for comparison with the mount only;
    it prints ``//name`` for root entries in 1.47.0 and names with newlines break lines)."""
    inodes = list(inodes)
    ((_cmd, out),) = debugfs_run(image, ["ncheck " + " ".join(map(str, inodes))], offset)
    names: dict[int, list[bytes]] = {}
    for m in re.finditer(rb"(?m)^(\d+)\t(.*)$", out):
        path = m[2]
        if path.startswith(b"//"):
            path = path[1:]
        names.setdefault(int(m[1]), []).append(path)
    return names


def htree_dump(image: Path | str, inode_or_path: int | str | bytes, offset: int = 0) -> dict:
    """debugfs ``htree_dump``: whether the directory is indexed, its levels and index blocks.

    ``index_blocks`` are the logical directory blocks named by the root's entries (the
    interior or leaf blocks the root points to); ``indirect_levels`` from the root info.
    """
    spec = _inode_specs(image, [inode_or_path], offset)[inode_or_path]
    ((_cmd, out),) = debugfs_run(image, [f'htree_dump "{spec}"'], offset)
    if b"Root node dump:" not in out:
        return {"indexed": False, "indirect_levels": None, "index_blocks": []}
    levels = re.search(rb"Indirect levels: (\d+)", out)
    blocks = sorted(
        {int(b) for b in re.findall(rb"Entry #\d+: Hash 0x[0-9a-f]+, block (\d+)", out)}
    )
    return {
        "indexed": True,
        "indirect_levels": int(levels[1]) if levels else None,
        "index_blocks": blocks,
    }


# --------------------------------------------------------------------------------------------
# dumpe2fs: static metadata


def _header_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Group ") and ": (Blocks" in line:
            break
        m = re.match(r"^([A-Za-z][A-Za-z0-9 _#/()-]*?):\s+(.*)$", line)
        if m and m[1] not in fields:
            fields[m[1]] = m[2].strip()
    return fields


def dumpe2fs_header(image: Path | str, offset: int = 0) -> dict[str, str]:
    """``dumpe2fs -h`` as a dict of its ``Name: value`` lines."""
    return _header_fields(dumpe2fs_text(image, offset, header_only=True))


def _block_range(bs: int, first: int, last: int | None = None) -> tuple[int, int]:
    return first * bs, ((last if last is not None else first) + 1) * bs


def dumpe2fs_layout(image: Path | str, offset: int = 0) -> dict[str, Any]:
    """Static metadata per block group, from ``dumpe2fs`` (not -h), in bytes.

    Every structure is the byte range of the whole blocks it occupies: on a 4 KiB-block
    filesystem group 0's ``superblock`` is ``(0, 4096)`` (the boot block shares it).
    ``free_blocks`` are whole free clusters on bigalloc (dumpe2fs prints a range's last
    cluster by its first block).
    """
    text = dumpe2fs_text(image, offset)
    header = _header_fields(text)
    bs = int(header["Block size"])
    cluster = int(header.get("Cluster size", bs))
    ratio = cluster // bs
    layout: dict[str, Any] = {
        "block_size": bs,
        "cluster_size": cluster,
        "blocks_count": int(header["Block count"]),
        "first_data_block": int(header["First block"]),
        "inode_size": int(header.get("Inode size", "128")),
        "inodes_per_group": int(header["Inodes per group"]),
        "features": header.get("Filesystem features", "").split(),
        "journal_inode": int(header["Journal inode"]) if "Journal inode" in header else None,
        "header": header,
        "groups": [],
    }
    group: dict[str, Any] | None = None
    for line in text.splitlines():
        m = re.match(
            r"^Group (\d+): \(Blocks (\d+)-(\d+)\)(?: csum 0x[0-9a-f]+)?(?: \[(.*)\])?", line
        )
        if m:
            group = {
                "group": int(m[1]),
                "range": _block_range(bs, int(m[2]), int(m[3])),
                "flags": set(filter(None, (m[4] or "").split(", "))),
                "superblock": None,
                "superblock_kind": None,
                "group_descriptors": None,
                "reserved_gdt": None,
                "block_bitmap": None,
                "inode_bitmap": None,
                "inode_table": None,
                "free_blocks": [],
            }
            layout["groups"].append(group)
            continue
        if group is None:
            continue
        if m := re.search(r"(Primary|Backup) superblock at (\d+)", line):
            group["superblock"] = _block_range(bs, int(m[2]))
            group["superblock_kind"] = m[1].lower()
        if m := re.search(r"Group descriptors? at (\d+)(?:-(\d+))?", line):
            group["group_descriptors"] = _block_range(bs, int(m[1]), int(m[2] or m[1]))
        if m := re.search(r"Reserved GDT blocks at (\d+)-(\d+)", line):
            group["reserved_gdt"] = _block_range(bs, int(m[1]), int(m[2]))
        if m := re.search(r"Block bitmap at (\d+)", line):
            group["block_bitmap"] = _block_range(bs, int(m[1]))
        if m := re.search(r"Inode bitmap at (\d+)", line):
            group["inode_bitmap"] = _block_range(bs, int(m[1]))
        if m := re.search(r"Inode table at (\d+)-(\d+)", line):
            group["inode_table"] = _block_range(bs, int(m[1]), int(m[2]))
        if m := re.match(r"^\s+Free blocks: (.*)$", line):
            for item in filter(None, (x.strip() for x in m[1].split(","))):
                first, _, last = item.partition("-")
                lo, hi = int(first), int(last or first)
                group["free_blocks"].append((lo * bs, (hi + ratio) * bs))
    return layout


def special_inodes(image: Path | str, offset: int = 0) -> dict[str, int | None]:
    """Inodes of the journal, resize inode, quota files, orphan file; the MMP block number."""
    header = dumpe2fs_header(image, offset)
    features = header.get("Filesystem features", "").split()

    def field(name: str) -> int | None:
        return int(header[name]) if name in header else None

    return {
        "journal": field("Journal inode"),
        "resize": 7 if "resize_inode" in features else None,
        "user_quota": field("User quota inode"),
        "group_quota": field("Group quota inode"),
        "project_quota": field("Project quota inode"),
        "orphan_file": field("Orphan file inode"),
        "mmp_block": field("MMP block number"),
    }
