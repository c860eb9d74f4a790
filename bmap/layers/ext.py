"""The ext2/3/4 layer: every structure, directory and file of a filesystem as map lines.

Works in the filesystem's own coordinates (bytes from its first byte) and hands the extents to
the volume's :class:`~bmap.layers.placement.Placement`, which puts them on the disks. What it
writes:

- ``m`` lines for the static structures (boot block, superblock and its backups, group
  descriptors, reserved GDT blocks, bitmaps, inode tables, MMP), the journal, quota inodes,
  the orphan file, the resize inode's own block, and per object: ``extent-tree``,
  ``indirect-block``, ``xattr-block`` and ``symlink`` (a target stored in a data block);
- ``d`` and ``f`` lines for directory and file contents, one set per name (hard links repeat
  the same ranges under each name); preallocated (unwritten) extents at their physical place;
  inline data as the inode's own record inside the inode table;
- ``u unallocated`` from the block bitmaps, ``u cluster-slack`` for the unused blocks of a
  bigalloc cluster that holds something, ``u unreferenced`` for blocks the bitmaps call used
  that nothing refers to, ``u volume-slack`` for device bytes after the filesystem's end.

Inodes in use that no directory names are listed as ``/$OrphanFiles/OrphanFile-<inode>``, as
The Sleuth Kit names them.

Registered in :data:`bmap.layers.registry.CONTENT_MAPPERS` for ext2, ext3 and ext4.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bmap.errors import Finding, Severity
from bmap.images import RangeStream
from bmap.layers.content import Volume
from bmap.layers.fswalk import FilesystemWalk, map_filesystem
from bmap.model import textcols
from bmap.model.blockmap import MapBuilder, PathColumn
from bmap.model.intervals import ragged_ranges, subtract, union
from parsers.errors import ParserError
from parsers.ext import structs as S
from parsers.ext.filesystem import BlockRuns, ExtFS, split_names
from parsers.ext.filesystem import describe as describe_superblock

Array = npt.NDArray[np.int64]
#: Inode rows, of any integer width (the walk's are int32).
Rows = npt.NDArray[np.integer[Any]]
#: (type, kind) of a name's data, by code: a directory, a file, a slow symlink's target.
_DATA_CLASSES = [("d", "dir"), ("f", "file"), ("m", "symlink")]
#: (type, kind) of the blocks of a name's block map, by code.
_TREE_CLASSES = [("m", "extent-tree"), ("m", "indirect-block")]
#: The bits of :meth:`_Mapper.code_rows`'s byte per inode.
_CODE = {"dir": 1, "file": 2, "slow-link": 4, "inline": 8, "extents": 16, "data": 32}
#: Names emitted at a time: bounds the working columns of :meth:`_Mapper.emit_named`.
NAME_WINDOW = 1 << 17
#: What a walk costs at its peak, with the lines and objects it adds, for the memory budget:
#: WALK_BYTES and BYTES_PER_INODE for each inode in use. Fitted above the peaks measured by
#: bench/scale.py (above start-up: 65 MiB for 376,011 inodes, 95 MiB for 751,011, 184 MiB for
#: 1,501,011; the model gives 72, 117 and 206 MiB).
WALK_BYTES = 28 << 20
BYTES_PER_INODE = 124


@dataclass
class _Runs:
    """Data runs of many inodes, as columns sorted by inode row."""

    row: Array
    logical: Array
    physical: Array
    length: Array

    def columns(self) -> tuple[Array, Array, Array, Array]:
        return self.row, self.logical, self.physical, self.length

    def sorted(self) -> _Runs:
        """The runs in (row, logical) order."""
        order = np.lexsort((self.logical, self.row))
        return _Runs(*(c[order] for c in self.columns()))

    def merge_in(self, other: _Runs) -> None:
        """Put ``other``'s runs in their places among these (in order): one new column at a
        time, each replacing its old one, not a sort of everything. Logical blocks are
        32-bit and rows fewer than 2**31, so (row, logical) is one int64 key."""
        if not len(other.row):
            return
        other = other.sorted()
        key = (self.row << 32) | self.logical
        at = np.searchsorted(key, (other.row << 32) | other.logical, side="right")
        del key
        self.row = np.insert(self.row, at, other.row)
        self.logical = np.insert(self.logical, at, other.logical)
        self.physical = np.insert(self.physical, at, other.physical)
        self.length = np.insert(self.length, at, other.length)

    def slice_of(self, row: int) -> slice:
        lo = int(np.searchsorted(self.row, row, side="left"))
        hi = int(np.searchsorted(self.row, row, side="right"))
        return slice(lo, hi)


def _windows(counts: Array, limit: int) -> Iterator[slice]:
    """Consecutive slices of ``counts`` whose sums are at most ``limit`` (or one item)."""
    total = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = int(total[start - 1]) if start else 0
        end = max(int(np.searchsorted(total, base + limit, side="right")), start + 1)
        yield slice(start, end)
        start = end


def _in_order(row: Array, logical: Array) -> bool:
    """Whether ``(row, logical)`` pairs ascend."""
    if len(row) < 2:
        return True
    step = np.diff(row)
    return bool(((step > 0) | ((step == 0) & (np.diff(logical) > 0))).all())


class _Mapper(FilesystemWalk):
    """One filesystem's walk: every structure, name and free run, as lines of ``builder``."""

    walk_bytes = WALK_BYTES
    bytes_per_inode = BYTES_PER_INODE

    def __init__(self, fs: ExtFS, volume: Volume, builder: MapBuilder) -> None:
        super().__init__(volume, builder)
        self.fs = fs
        self.bs = fs.block_size
        # Per inode row, set as the walk goes (live_rows, slim_table, code_rows).
        empty = np.zeros(0, dtype=np.int64)
        self.undeleted = np.zeros(0, dtype=bool)
        self.slow_link = np.zeros(0, dtype=bool)
        self.acl_rows: Array = empty
        self.acl_blocks: Array = empty
        self.codes = np.zeros(0, dtype=np.uint8)
        self.special_rows: set[int] = set()

    def severity_of(self, problem: ParserError) -> Severity:
        # A backup superblock stands in for the primary with nothing lost.
        recovered = problem.structure == "superblock" and "backup" in problem.reason
        return Severity.WARNING if recovered else Severity.ERROR

    def emit_blocks(self, kind: str, blocks: npt.ArrayLike, counts: npt.ArrayLike = 1) -> None:
        b = np.asarray(blocks, dtype=np.int64)
        c = np.broadcast_to(np.asarray(counts, dtype=np.int64), b.shape)
        if len(b):
            self.emit_kind(kind, b * self.bs, (b + c) * self.bs)

    # -- the walk ------------------------------------------------------------------------

    def run(self) -> None:
        self.report(self.fs.take_problems())  # the superblock's
        # Inodes in use by the inode bitmaps (bounded by the real inode tables).
        if not self.within_budget(self.fs.inodes_in_use):
            return
        self.static_structures()
        live = self.live_rows()
        self.report(self.fs.take_problems())  # the group descriptors' and inode tables'
        runs, tree = self.collect_runs(live)
        del live
        self.slim_table()
        self.special_inodes(runs, tree)
        names = self.walk_directories(runs)
        self.code_rows()
        self.emit_named(names, runs, tree)
        self.free_space()

    def code_rows(self) -> None:
        """After the walk, what the names need of each inode in one byte (:data:`_CODE`), and
        the table's mode, flags and size freed: the lines of a big filesystem are made
        beside its inode numbers and these bytes only."""
        table = self.fs.inodes
        mode = table.mode & S.S_IFMT
        inline = (table.flags & S.INLINE_DATA_FL) != 0
        code = np.where(mode == S.S_IFDIR, _CODE["dir"], 0).astype(np.uint8)
        code |= np.where(mode == S.S_IFREG, _CODE["file"], 0).astype(np.uint8)
        slow = (mode == S.S_IFLNK) & self.slow_link & ~inline
        code |= np.where(slow, _CODE["slow-link"], 0).astype(np.uint8)
        code |= np.where(inline, _CODE["inline"], 0).astype(np.uint8)
        code |= np.where((table.flags & S.EXTENTS_FL) != 0, _CODE["extents"], 0).astype(np.uint8)
        code |= np.where(table.size > 0, _CODE["data"], 0).astype(np.uint8)
        self.codes = code
        table.drop("mode", "flags", "size", "in_use")
        self.slow_link = np.zeros(0, dtype=bool)

    def live_rows(self) -> Array:
        """The rows of the inodes in use with a mode; the undeleted ones among them (links,
        no deletion time) are kept in :attr:`undeleted` for the orphans."""
        table = self.fs.inodes
        self.undeleted = table.in_use & (table.links > 0) & (table.dtime == 0) & (table.mode != 0)
        live = self.undeleted | table.in_use & (table.ino < self.fs.sb.first_ino)
        return np.flatnonzero(live & (table.mode != 0)).astype(np.int64)

    def slim_table(self) -> None:
        """Keep what the walk and the names need of the inode table, and free the rest: a
        slow-symlink mask, the few non-zero xattr block numbers, and the columns of the
        table the rest of the walk reads (inode number, mode, flags, size)."""
        table = self.fs.inodes
        links = np.flatnonzero((table.mode & S.S_IFMT) == S.S_IFLNK)
        self.slow_link = np.zeros(len(table), dtype=bool)
        self.slow_link[links] = self._slow_symlink(links)
        self.acl_rows = np.flatnonzero(table.file_acl != 0)
        self.acl_blocks = table.file_acl[self.acl_rows]
        table.drop("links", "dtime", "blocks", "file_acl", "extra_isize", "leaf")

    def static_structures(self) -> None:
        fs, bs = self.fs, self.bs
        by_kind: dict[str, tuple[list[int], list[int]]] = {}
        for kind, block, count in fs.static_layout():
            if kind == "superblock" and bs > 1024 and block == 0:
                # Block 0 of a large-block filesystem: boot block, then the superblock.
                self.emit_kind("boot-block", [0], [1024])
                self.emit_kind("superblock", [1024], [bs])
                continue
            blocks, counts = by_kind.setdefault(kind, ([], []))
            blocks.append(block)
            counts.append(count)
        # One call per kind, not per group: a large filesystem has thousands of groups.
        for kind, (blocks, counts) in by_kind.items():
            self.emit_blocks(kind, blocks, counts)

    def collect_runs(self, rows: Array) -> tuple[_Runs, dict[int, list[int]]]:
        """Data runs of every live inode; tree (or indirect) blocks per row."""
        fs = self.fs
        table = fs.inodes
        flags = table.flags[rows]
        mode = table.mode[rows] & S.S_IFMT
        has_blocks = (flags & S.INLINE_DATA_FL) == 0
        # Fast symlinks and device nodes keep other things in i_block.
        special = (
            (mode == S.S_IFCHR) | (mode == S.S_IFBLK) | (mode == S.S_IFIFO) | (mode == S.S_IFSOCK)
        )
        fast_link = mode == S.S_IFLNK
        fast_link[fast_link] = ~self._slow_symlink(rows[fast_link])
        # The resize inode's blocks are the reserved GDT blocks, mapped as static structures
        # (special_inodes adds its double-indirect block): walking its thousands of
        # indirect entries would add nothing.
        resize = table.ino[rows] == S.RESIZE_INO
        candidates = rows[has_blocks & ~special & ~fast_link & ~resize]
        del flags, mode, has_blocks, special, fast_link, resize
        extents = (table.flags[candidates] & S.EXTENTS_FL) != 0
        extent_rows = candidates[extents]
        mapped_rows = candidates[~extents]
        del candidates, extents

        tree: dict[int, list[int]] = {}
        r, lo, ph, ln, _uw, slow = fs.depth0_extents(extent_rows)
        table.drop_extents()  # the runs below hold them now
        ok = fs.runs_ok(ph, ln)
        if not ok.all():
            for bad in np.unique(r[~ok]).tolist():
                self.finding(
                    Severity.ERROR,
                    None,
                    self.device,
                    f"inode {int(table.ino[bad])}: an extent lies outside the filesystem; skipped",
                )
        if not ok.all():
            r, lo, ph, ln = r[ok], lo[ok], ph[ok], ln[ok]
        row_parts, lo_parts, ph_parts, ln_parts = [r], [lo], [ph], [ln]
        del r, lo, ph, ln
        walked = list(slow.tolist()) + list(mapped_rows.tolist())
        for done, row in enumerate(walked, 1):
            if done % 4096 == 0 or done == len(walked):
                self.fs.progress("extent trees and block maps", done, len(walked))
            result = self._runs_of(row)
            row_parts.append(np.full(len(result.logical), row, dtype=np.int64))
            lo_parts.append(result.logical)
            ph_parts.append(result.physical)
            ln_parts.append(result.length)
            if result.tree_blocks:
                tree[row] = result.tree_blocks
        leaf = _Runs(row_parts[0], lo_parts[0], ph_parts[0], ln_parts[0])
        rest = _Runs(
            *(
                np.concatenate(p[1:]) if len(p) > 1 else np.zeros(0, np.int64)
                for p in (row_parts, lo_parts, ph_parts, ln_parts)
            )
        )
        del row_parts, lo_parts, ph_parts, ln_parts
        if _in_order(leaf.row, leaf.logical):
            # The leaf extents (nearly all, in row order as read): the few others are put in
            # their places, a column at a time.
            leaf.merge_in(rest)
            runs = leaf
        else:
            runs = _Runs(*(np.concatenate(c) for c in zip(leaf.columns(), rest.columns())))
            runs = runs.sorted()
        return runs, tree

    def _runs_of(self, row: int) -> BlockRuns:
        result = self.fs.runs_of(row, f"inode {int(self.fs.inodes.ino[row])}")
        self.report(result.problems)
        return result

    def _slow_symlink(self, rows: Array) -> npt.NDArray[np.bool_]:
        """A symlink whose target is in a data block: it has blocks beyond an xattr block."""
        table = self.fs.inodes
        acl_sectors = np.where(table.file_acl[rows] != 0, self.bs // 512, 0)
        blocks = table.blocks[rows]
        huge = (table.flags[rows] & S.HUGE_FILE_FL) != 0
        sectors = np.where(huge, blocks * (self.bs // 512), blocks)
        return (sectors - acl_sectors) > 0

    def special_inodes(self, runs: _Runs, tree: dict[int, list[int]]) -> None:
        fs = self.fs
        sb = fs.sb
        table = fs.inodes
        specials: list[tuple[int, str]] = [(S.BAD_BLOCKS_INO, "bad-blocks"), (5, "boot-loader")]
        if sb.journal_inum:
            specials.append((sb.journal_inum, "journal"))
        specials += [(q, "quota") for q in sb.quota_inums]
        if sb.orphan_file_inum:
            specials.append((sb.orphan_file_inum, "orphan-file"))
        for ino, kind in specials:
            row = table.index_of(ino)
            if row < 0:
                continue
            self.special_rows.add(row)
            sl = runs.slice_of(row)
            starts = runs.physical[sl] * self.bs
            self.emit_kind(
                kind, starts, starts + runs.length[sl] * self.bs, runs.logical[sl] * self.bs
            )
            self.emit_blocks(kind, tree.get(row, []))
        row = table.index_of(S.RESIZE_INO)
        if row >= 0 and sb.reserved_gdt_blocks:
            self.special_rows.add(row)
            dind = int(np.frombuffer(fs.i_block(row), dtype="<u4")[13])
            if dind and fs.block_ok(dind):
                self.emit_blocks("resize-inode", [dind])

    def walk_directories(self, runs: _Runs) -> tuple[Rows, PathColumn]:
        """Every name in the tree: inode rows and their paths, level by level from the root.

        The blocks of every directory are parsed in one vectorised pass first; the walk then
        joins a whole level's names to their parents' paths at once. A path is its
        directory's prefix and the name's bytes (:class:`PathColumn`): only the
        directories' own paths become strings here.
        """
        fs = self.fs
        table = fs.inodes
        root = table.index_of(S.ROOT_INO)
        if root < 0 or (table.mode[root] & S.S_IFMT) != S.S_IFDIR:
            self.finding(Severity.ERROR, None, self.device, "no root directory (inode 2)")
            return np.zeros(0, np.int64), PathColumn.of_texts([])
        entry_dir, entry_ino, blob, lengths = self._all_entries(runs)
        # Each name in the blob is followed by a NUL. Offsets in 32 bits where the blob is
        # under 4 GiB, lengths in their 16: a big tree has millions of entries.
        name_len = lengths
        ends = np.cumsum(lengths, dtype=np.int64)
        ends += np.arange(len(lengths), dtype=np.int64)
        name_start = (ends - lengths).astype(np.uint32 if len(blob) < 1 << 32 else np.int64)
        del ends
        # Block entries come in directory order; only inline directories' come after.
        if len(entry_dir) and (np.diff(entry_dir) < 0).any():
            order = np.argsort(entry_dir, kind="stable")
            entry_dir, entry_ino = entry_dir[order], entry_ino[order]
            name_start, name_len = name_start[order], name_len[order]
            del order
        if blob.count(b"\0") != len(lengths) or b"/" in blob:
            self._odd_names(
                [n.decode("utf-8", "surrogateescape") for n in split_names(blob, lengths)]
            )

        def name(i: int) -> str:
            start = int(name_start[i])
            return blob[start : start + int(name_len[i])].decode("utf-8", "surrogateescape")

        blob_array = np.frombuffer(blob, dtype=np.uint8)

        def names_of(entries: Array) -> list[str]:
            """The names of many entries, decoded in one call (from a blob of their own bytes:
            the assembler would keep a copy of the whole blob of names)."""
            lengths = name_len[entries].astype(np.int64)
            own = blob_array[ragged_ranges(name_start[entries], lengths)]
            pieces = textcols.Pieces(own, np.cumsum(lengths) - lengths, lengths)
            return textcols.texts([pieces], len(entries))

        child = np.minimum(np.searchsorted(table.ino, entry_ino), max(len(table) - 1, 0))
        child = child.astype(np.int32)  # rows: a table of 2**31 inodes would not fit
        valid = (table.ino[child] == entry_ino) & table.in_use[child] & (table.mode[child] != 0)
        is_dir = valid & ((table.mode[child] & S.S_IFMT) == S.S_IFDIR)
        # entry_dir is sorted: each directory's entries are one run of it.
        first = np.flatnonzero(np.diff(entry_dir, prepend=-1) != 0)
        dirs = entry_dir[first]
        last = np.concatenate((first[1:], [len(entry_dir)])).astype(np.int64)

        # prefixes[prefix_of[row]] is a walked directory's path and a "/".
        prefixes = ["/"]
        prefix_of = np.zeros(len(table), dtype=np.int32)
        seen = np.zeros(len(table), dtype=bool)
        seen[root] = True
        # The names, filled in place (a name at most once per entry, and the root): no
        # parts laid end to end at the end beside themselves. Rows and prefix numbers fit in
        # 32 bits (a table of 2**31 inodes would not fit in memory), name lengths in 16.
        room = len(entry_dir) + 1
        out_row = np.empty(room, dtype=np.int32)
        out_prefix = np.empty(room, dtype=np.int32)
        out_start: Rows = np.empty(room, dtype=np.uint32 if len(blob) < 1 << 32 else np.int64)
        out_len = np.empty(room, dtype=np.uint16)
        # The root's path is the prefix "/" and no name.
        out_row[0], out_prefix[0], out_start[0], out_len[0] = root, 0, 0, 0
        filled = 1
        frontier = np.array([root], dtype=np.int64)
        found_none = np.zeros(0, dtype=np.int64)
        idx = ok = found_none
        parent = found_none.astype(np.int32)
        while len(frontier):
            k = np.minimum(np.searchsorted(dirs, frontier), max(len(dirs) - 1, 0))
            has = (k < len(dirs)) & (dirs[k] == frontier) if len(dirs) else k < 0
            lo, hi = first[k[has]], last[k[has]]
            # A level's entries a window at a time: the working columns stay small however
            # many names one level holds.
            found: list[Array] = []
            for part in _windows(hi - lo, NAME_WINDOW):
                idx = ragged_ranges(lo[part], (hi - lo)[part])
                parent = prefix_of[entry_dir[idx]]
                ok = valid[idx]
                for i in np.flatnonzero(~ok)[:20].tolist():
                    self.finding(
                        Severity.WARNING,
                        None,
                        self.device,
                        f"{prefixes[int(parent[i])] + name(int(idx[i]))!r} names inode "
                        f"{int(entry_ino[idx[i]])}, which is not in use; skipped",
                    )
                if (~ok).sum() > 20:
                    self.finding(
                        Severity.WARNING,
                        None,
                        self.device,
                        f"{int((~ok).sum()) - 20} more names of unused inodes skipped",
                    )
                named = idx[ok]
                put = slice(filled, filled + len(named))
                out_row[put] = child[named]
                out_prefix[put] = parent[ok]
                out_start[put] = name_start[named]
                out_len[put] = name_len[named]
                filled += len(named)
                del named
                sub = np.flatnonzero(is_dir[idx])
                cand = child[idx[sub]]
                unique, where = np.unique(cand, return_index=True)
                new = ~seen[unique]
                fresh = np.zeros(len(cand), dtype=bool)
                fresh[where[new]] = True
                for i in np.flatnonzero(~fresh)[:20].tolist():
                    self.finding(
                        Severity.ERROR,
                        None,
                        self.device,
                        f"directory inode {int(table.ino[cand[i]])} has a second name "
                        f"{prefixes[int(parent[sub[i]])] + name(int(idx[sub[i]]))!r} (a loop?); "
                        "not walked again",
                    )
                fresh_dirs = unique[new]
                seen[fresh_dirs] = True
                entries = sub[where[new]]
                prefix_of[fresh_dirs] = np.arange(len(prefixes), len(prefixes) + len(fresh_dirs))
                prefixes.extend(
                    [
                        prefixes[p] + n + "/"
                        for p, n in zip(parent[entries].tolist(), names_of(idx[entries]))
                    ]
                )
                found.append(fresh_dirs)
            frontier = np.sort(np.concatenate(found)) if found else found_none
        # The entry columns are done with: free them before the paths are laid end to end.
        del entry_dir, entry_ino, child, valid, is_dir, first, last, idx, parent, ok
        return out_row[:filled], PathColumn(
            prefixes, out_prefix[:filled], blob, out_start[:filled], out_len[:filled]
        )

    def _odd_names(self, names: list[str]) -> None:
        """A name with a NUL or a "/" cannot come from the kernel: say so (it is kept as
        stored; a "/" in it makes its path look deeper than it is)."""
        odd = [n for n in names if "\0" in n or "/" in n]
        if odd:
            shown = ", ".join(repr(n) for n in odd[:5])
            self.finding(
                Severity.WARNING,
                None,
                self.device,
                f"{len(odd)} directory entry name(s) hold a NUL or '/', which no kernel "
                f"writes (kept as stored): {shown}",
            )

    def _all_entries(
        self, runs: _Runs
    ) -> tuple[Array, npt.NDArray[np.uint32], bytes, npt.NDArray[np.uint16]]:
        """``(directory row, child inode, names, name lengths)`` of every entry of every live
        directory; the names as one blob, each followed by a NUL."""
        fs = self.fs
        table = fs.inodes
        blocks, block_dir = self._directory_blocks(runs)
        bulk = fs.bulk_dir_entries(blocks)
        del blocks
        problems = list(bulk.problems)
        dirs = [block_dir[bulk.block]]
        del block_dir
        inos = [bulk.inodes]
        blobs = [bulk.names_blob]
        lengths = [bulk.name_lengths]
        live_dirs = (table.mode & S.S_IFMT) == S.S_IFDIR
        inline = np.flatnonzero(live_dirs & table.in_use & ((table.flags & S.INLINE_DATA_FL) != 0))
        for row in inline.tolist():
            entries = fs.inline_directory(row, f"directory inode {int(table.ino[row])}")
            problems += entries.problems
            dirs.append(np.full(len(entries.inodes), row, dtype=np.int64))
            inos.append(entries.inodes.astype(np.uint32))
            blobs.extend(name + b"\0" for name in entries.names)
            lengths.append(np.array([len(name) for name in entries.names], dtype=np.uint16))
        self.report(problems)
        if len(dirs) == 1:  # no inline directory: no copies
            return dirs[0], inos[0], blobs[0], lengths[0]
        return np.concatenate(dirs), np.concatenate(inos), b"".join(blobs), np.concatenate(lengths)

    def _directory_blocks(self, runs: _Runs) -> tuple[Array, Array]:
        """Every block of every live directory inside its size, in the order of ``runs``
        (inode row, then logical block), and the row of the directory it belongs to."""
        table = self.fs.inodes
        is_dir = (table.mode[runs.row] & S.S_IFMT) == S.S_IFDIR
        # Only the blocks inside the directory's size hold entries.
        limit = -(-table.size[runs.row] // self.bs)
        length = np.clip(np.minimum(runs.length, limit - runs.logical), 0, None)
        sel = np.flatnonzero(is_dir & (length > 0))
        count = length[sel]
        return ragged_ranges(runs.physical[sel], count), np.repeat(runs.row[sel], count)

    def emit_named(
        self,
        named: tuple[Rows, PathColumn],
        runs: _Runs,
        tree: dict[int, list[int]],
    ) -> None:
        """Lines for every name: data, tree blocks, xattr blocks, inline data.

        Names go through in windows of :data:`NAME_WINDOW`, so that the working columns of a
        window, not of the whole filesystem, sit beside the map being built.
        """
        orphan_rows, orphan_paths = self._orphans(named[0])
        row, paths = named
        if len(orphan_rows):
            row = np.concatenate((row, orphan_rows))
            paths = PathColumn.concat([paths, PathColumn.of_texts(orphan_paths)])
        if not len(paths):
            return
        # The first name of each inode claims its blocks; the others repeat them.
        order = np.argsort(row, kind="stable")
        first = np.ones(len(row), dtype=bool)
        first[order[1:]] = row[order[1:]] != row[order[:-1]]
        del order
        # Extent-tree nodes and indirect blocks, by row.
        tree_row = np.fromiter((r for r, blocks in tree.items() for _ in blocks), dtype=np.int64)
        tree_block = np.fromiter((b for blocks in tree.values() for b in blocks), dtype=np.int64)
        by_row = np.argsort(tree_row, kind="stable")
        trees = _Runs(
            tree_row[by_row],
            np.zeros(len(by_row), np.int64),
            tree_block[by_row],
            np.ones(len(by_row), np.int64),
        )
        for lo in range(0, len(row), NAME_WINDOW):
            window = slice(lo, lo + NAME_WINDOW)
            self._emit_names(row[window], paths.take(window), first[window], runs, trees)
            self.fs.progress("names", min(lo + NAME_WINDOW, len(row)), len(row))

    def _emit_names(
        self,
        row: Rows,
        paths: PathColumn,
        first: npt.NDArray[np.bool_],
        runs: _Runs,
        trees: _Runs,
    ) -> None:
        fs = self.fs
        table = fs.inodes
        code = self.codes[row]
        ino = table.ino[row].astype(np.int64)
        inline = (code & _CODE["inline"]) != 0
        slow_link = (code & _CODE["slow-link"]) != 0
        is_dir = (code & _CODE["dir"]) != 0
        is_file = (code & _CODE["file"]) != 0  # a symlink with inline data is a fast one

        # Data: directories, files and slow symlinks with blocks.
        lo = np.searchsorted(runs.row, row, side="left")
        hi = np.searchsorted(runs.row, row, side="right")
        has_data = (is_dir | is_file | slow_link) & ~inline & (hi > lo)
        self._emit_joined(
            has_data,
            lo,
            hi,
            ino,
            paths,
            _DATA_CLASSES,
            np.where(is_dir, 0, np.where(slow_link, 2, 1)),
            runs,
            True,
            first,
        )
        # Inline data lives in the inode's own record inside the inode table.
        sel = np.flatnonzero(inline & (is_dir | is_file) & ((code & _CODE["data"]) != 0))
        if len(sel):
            objs = self._objects(sel, _DATA_CLASSES, np.where(is_dir[sel], 0, 1), paths, ino)
            pos = table.position(row[sel])
            self.emit(objs, pos, pos + fs.sb.inode_size, np.zeros(len(sel), np.int64), claim=False)
        # Extent-tree nodes and indirect blocks.
        if len(trees.row):
            tlo = np.searchsorted(trees.row, row, side="left")
            thi = np.searchsorted(trees.row, row, side="right")
            self._emit_joined(
                thi > tlo,
                tlo,
                thi,
                ino,
                paths,
                _TREE_CLASSES,
                np.where((code & _CODE["extents"]) != 0, 0, 1),
                trees,
                False,
                first,
            )
        # External xattr blocks.
        k = np.minimum(np.searchsorted(self.acl_rows, row), max(len(self.acl_rows) - 1, 0))
        has_acl = (self.acl_rows[k] == row) if len(self.acl_rows) else np.zeros(len(row), bool)
        acl = np.where(has_acl, self.acl_blocks[k] if len(self.acl_rows) else 0, 0)
        sel = np.flatnonzero(has_acl)
        if len(sel):
            ok = (acl[sel] >= fs.sb.first_data_block) & (acl[sel] < fs.sb.blocks_count)
            for i in sel[~ok].tolist():
                self.finding(
                    Severity.ERROR,
                    None,
                    self.device,
                    f"{paths.text(i)!r}: xattr block {int(acl[i])} outside the filesystem",
                )
            sel = sel[ok]
            objs = self._objects(sel, [("m", "xattr-block")], 0, paths, ino)
            self._emit_claiming(
                objs,
                acl[sel] * self.bs,
                (acl[sel] + 1) * self.bs,
                np.zeros(len(sel), np.int64),
                first[sel],
            )

    def _orphans(self, named_rows: Rows) -> tuple[Array, list[str]]:
        fs = self.fs
        table = fs.inodes
        live = self.undeleted & (table.ino >= fs.sb.first_ino)
        return self.orphans_among(live, [named_rows, list(self.special_rows)], table.ino)

    def _emit_joined(
        self,
        mask: npt.NDArray[np.bool_],
        lo: Array,
        hi: Array,
        ino: Array,
        paths: PathColumn,
        classes: list[tuple[str, str]],
        codes: Array,
        runs: _Runs,
        with_offsets: bool,
        first: npt.NDArray[np.bool_],
    ) -> None:
        """Join names with their runs ``[lo, hi)`` and emit one object per name; a run's
        offset inside its object is its logical block (``with_offsets``) or 0."""
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            return
        objs = self._objects(sel, classes, codes[sel], paths, ino)
        count = hi[sel] - lo[sel]
        ext = ragged_ranges(lo[sel], count)
        starts = runs.physical[ext] * self.bs
        self._emit_claiming(
            np.repeat(objs, count),
            starts,
            starts + runs.length[ext] * self.bs,
            runs.logical[ext] * self.bs if with_offsets else np.zeros(len(ext), np.int64),
            np.repeat(first[sel], count),
        )

    def _emit_claiming(
        self,
        objs: Array,
        starts: Array,
        ends: Array,
        offsets: Array | None,
        claims: npt.NDArray[np.bool_],
    ) -> None:
        self.placement.place(self.builder, objs, starts, ends, offsets)
        self.claim(starts[claims], ends[claims])

    def free_space(self) -> None:
        fs = self.fs
        sb = fs.sb
        bs = self.bs
        ratio = sb.cluster_ratio
        first, end = fs.free_clusters()
        free = (first * ratio + sb.first_data_block, end * ratio + sb.first_data_block)
        fs_end = sb.blocks_count
        free = (free[0] * bs, np.minimum(free[1], fs_end) * bs)
        claimed = self.claimed_union()
        self.check_free(claimed, free, "block bitmap")
        # Groups whose bitmap was never written are free but for their own structures.
        uninit = np.asarray(fs.uninit_block_groups(), dtype=np.int64)
        group_start = (sb.first_data_block + uninit * sb.blocks_per_group) * bs
        group_end = np.minimum(group_start + sb.blocks_per_group * bs, fs_end * bs)
        free = union(np.concatenate((free[0], group_start)), np.concatenate((free[1], group_end)))
        free = subtract(free, claimed)
        self.emit_kind("unallocated", free[0], free[1], type_="u", claim=False)
        rest = self.unreferenced(claimed, free, fs_end * bs)
        if ratio > 1 and len(rest[0]):
            # bigalloc allocates whole clusters: the unused blocks of a cluster that holds
            # something are that cluster's slack, not lost space.
            size = ratio * bs
            clusters = union((claimed[0] // size) * size, -(-claimed[1] // size) * size)
            outside = subtract(rest, clusters)
            slack = subtract(rest, outside)
            rest = outside
            if len(slack[0]):
                self.emit_kind("cluster-slack", slack[0], slack[1], type_="u", claim=False)
        self.emit_rest(rest, fs_end * bs)


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    """Map the ext filesystem of ``volume`` into ``builder``; returns the findings
    (:func:`~bmap.layers.fswalk.map_filesystem`)."""
    return map_filesystem(volume, builder, ExtFS, _Mapper)


def describe(stream: RangeStream, size: int) -> dict[str, Any] | None:
    """What the superblock says, for ``bmap info``; None where there is no usable one."""
    try:
        return describe_superblock(ExtFS(stream, size))
    except ParserError:
        return None
