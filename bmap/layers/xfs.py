"""The XFS layer: every structure, directory and file of an XFS filesystem (v4 and v5) as map
lines.

Works in the filesystem's own coordinates (bytes from its first byte) and hands the extents to
the volume's :class:`~bmap.layers.placement.Placement`, which puts them on the disks. What it
writes (docs/format.md, "XFS specifics"):

- ``m`` lines, per allocation group: ``xfs-superblock`` (AG 0) and ``xfs-superblock-backup``
  (the copies in the other AGs), ``agf``, ``agi``, ``agfl`` (to the end of the header block)
  and the blocks on the free list (``agfl-block``); the blocks of every level of the
  free-space btrees (``bnobt``, ``cntbt``), the inode btrees (``inobt``, ``finobt``), and the
  ``rmapbt`` and ``refcountbt`` where present; the inode chunks (``inode-chunk``, a sparse
  chunk's holes left out); the internal log (``xfs-log``); the realtime bitmap and summary
  inodes' blocks (``rt-bitmap``, ``rt-summary``) and the quota inodes' (``quota``);
- per object, under every name: ``bmbt <path>`` (the B+tree blocks of a data or attribute
  fork), ``attr <path>`` (the attribute fork's blocks), ``symlink <path>`` (a remote symlink's
  target blocks);
- ``d`` and ``f`` lines for directory and file contents with their offsets, one set per name;
  unwritten (preallocated) extents at their place; a reflinked extent under every file that
  shares it; a short-form directory (inside its inode) as the inode's own record;
- ``u unallocated`` from the by-block free-space btree, ``u unreferenced`` for blocks that
  nothing walked refers to, ``u volume-slack`` after the filesystem's end.

Findings name what is not mapped (a realtime device, an external log, features bmap does not
read), a dirty log (its last changes are not replayed), and every damage met on the way.

Registered in :data:`bmap.layers.registry.CONTENT_MAPPERS` for ``xfs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bmap.errors import Finding, Severity
from bmap.images import RangeStream
from bmap.layers.content import Volume
from bmap.layers.fswalk import FilesystemWalk, map_filesystem
from bmap.model.blockmap import MapBuilder, PathColumn
from bmap.model.intervals import ragged_ranges, subtract, union
from parsers.errors import ParserError
from parsers.xfs import structs as S
from parsers.xfs.filesystem import XFS, BulkEntries, ForkRuns, InodeTable, TreeBlocks
from parsers.xfs.filesystem import describe as describe_superblock

Array = npt.NDArray[np.int64]
#: (type, kind) of a name's data, by code: a directory, a file, a remote symlink's target.
_DATA_CLASSES = [("d", "dir"), ("f", "file"), ("m", "symlink")]
#: Names emitted at a time: bounds the working columns of a window.
NAME_WINDOW = 1 << 17
#: The memory budget's model of a walk: a fixed part and a part per inode in use (the
#: table's columns, runs, entries and names), above the peaks measured on images of 50,000,
#: 200,000 and 600,000 files (28, 71 and 129 MiB above start-up, less the map's own lines and
#: objects; the model gives 58, 88 and 168 MiB).
WALK_BYTES = 48 << 20
BYTES_PER_INODE = 200
#: Findings of one kind listed at most (then a count).
MAX_LISTED = 20


class _Mapper(FilesystemWalk):
    """One filesystem's walk: every structure, name and free run, as lines of ``builder``."""

    walk_bytes = WALK_BYTES
    bytes_per_inode = BYTES_PER_INODE

    def __init__(self, fs: XFS, volume: Volume, builder: MapBuilder) -> None:
        super().__init__(volume, builder)
        self.fs = fs
        self.sb = fs.sb
        self.bs = fs.block_size
        self.free: tuple[list[Array], list[Array]] = ([], [])
        self.special_rows: list[int] = []

    # -- the walk ------------------------------------------------------------------------

    def run(self) -> None:
        fs = self.fs
        self.report(fs.take_problems())
        self.unsupported()
        chunks, structures = self.allocation_groups()
        self.report(fs.take_problems())
        if not self.within_budget(int(chunks["in_use"].sum())):
            self.free = ([], [])
            return
        # The structures become lines only now: a filesystem left out for the budget has none.
        for kind, (starts, ends) in structures.items():
            self.emit_kind(kind, starts, ends)
        self.static_extras()
        inodes, data, attr, problems = fs.read_inodes(chunks)
        del chunks
        self.report(problems)
        data, attr, trees = self.btree_forks(inodes, data, attr)
        data = self.drop_realtime(inodes, data)
        self.special_inodes(inodes, data, trees)
        named = self.walk_directories(inodes, data)
        self.emit_named(inodes, named, data, attr, trees)
        self.free_space()

    def unsupported(self) -> None:
        sb = self.sb
        if sb.realtime_blocks:
            self.finding(
                Severity.WARNING,
                None,
                f"{self.device} xfs-superblock",
                f"a realtime device of {sb.realtime_blocks} blocks: not supported; the data "
                "of realtime files (on that device) is not mapped",
            )
        if not sb.log_start:
            self.finding(
                Severity.INFO,
                None,
                f"{self.device} xfs-superblock",
                "the log is on an external device, which is not mapped",
            )
        unknown = sb.incompat & ~S.INCOMPAT_KNOWN
        if unknown:
            names = [
                S.INCOMPAT_NAMES.get(1 << bit, f"{1 << bit:#x}")
                for bit in range(32)
                if unknown & (1 << bit)
            ]
            self.finding(
                Severity.WARNING,
                None,
                f"{self.device} xfs-superblock",
                f"incompatible features bmap does not read ({', '.join(names)}): the map may be "
                "incomplete",
            )

    def allocation_groups(self) -> tuple[dict[str, Any], dict[str, tuple[Array, Array]]]:
        """Every AG's headers and btrees, walked: the inode chunks of every AG (in inode
        order) and the structures' ranges by kind are returned; the free extents are kept
        for the end."""
        fs, sb, bs = self.fs, self.sb, self.bs
        sect = sb.sector_size
        header_end = -(-4 * sect // bs) * bs
        kinds: dict[str, tuple[list[Array], list[Array]]] = {}

        def add(kind: str, starts: Array, ends: Array) -> None:
            got = kinds.setdefault(kind, ([], []))
            got[0].append(np.asarray(starts, np.int64))
            got[1].append(np.asarray(ends, np.int64))

        chunk_parts: list[dict[str, Any]] = []
        for agno in range(fs.readable_ags):
            base = fs.ag_start(agno)
            add(
                "xfs-superblock" if agno == 0 else "xfs-superblock-backup",
                np.array([base]),
                np.array([base + sect]),
            )
            headers = fs.ag_headers(agno)
            self.report(headers.problems)
            if headers.agf_ok:
                add("agf", np.array([base + sect]), np.array([base + 2 * sect]))
                add("agfl", np.array([base + 3 * sect]), np.array([base + header_end]))
                blocks = np.array(headers.agfl_blocks, dtype=np.int64)
                add("agfl-block", base + blocks * bs, base + (blocks + 1) * bs)
            if headers.agi_ok:
                add("agi", np.array([base + 2 * sect]), np.array([base + 3 * sect]))
            trees = []
            if headers.agf_ok:
                trees += [
                    ("bnobt", headers.bno_root, headers.bno_levels, True),
                    ("cntbt", headers.cnt_root, headers.cnt_levels, False),
                ]
                if sb.rmapbt:
                    trees.append(("rmapbt", headers.rmap_root, headers.rmap_levels, False))
                if sb.reflink:
                    trees.append(
                        ("refcountbt", headers.refcount_root, headers.refcount_levels, False)
                    )
            if headers.agi_ok:
                trees.append(("inobt", headers.ino_root, headers.ino_levels, True))
                if sb.finobt:
                    trees.append(("finobt", headers.fino_root, headers.fino_levels, False))
            for name, root, levels, records in trees:
                walk = fs.walk_btree(agno, name, root, levels, want_records=records)
                self.report(walk.problems)
                add(name, base + walk.blocks * bs, base + (walk.blocks + 1) * bs)
                if name == "bnobt":
                    start, end = fs.free_extents(agno, walk)
                    self.free[0].append(start)
                    self.free[1].append(end)
                elif name == "inobt":
                    chunk_parts.append(fs.inode_chunks(agno, walk))
            self.builder.progress(f"{self.device}: allocation groups", agno + 1, fs.readable_ags)
        chunks = {
            key: np.concatenate([c[key] for c in chunk_parts])
            if chunk_parts
            else np.zeros((0, 64) if key in ("present", "in_use") else 0, dtype)
            for key, dtype in (
                ("ino", np.int64),
                ("position", np.int64),
                ("present", bool),
                ("in_use", bool),
            )
        }
        add("inode-chunk", *fs.chunk_ranges(chunks["position"], chunks["present"]))
        structures = {
            kind: (np.concatenate(starts), np.concatenate(ends))
            for kind, (starts, ends) in kinds.items()
        }
        return chunks, structures

    def static_extras(self) -> None:
        """The internal log, and whether it is clean."""
        sb = self.sb
        if self.fs.log_is_clean() is False:
            self.finding(
                Severity.WARNING,
                None,
                f"{self.device} xfs-log",
                "the log is dirty (the filesystem was mounted, or not unmounted cleanly, when "
                "the image was taken): the last changes may be only in the log, which bmap does "
                "not replay",
            )
        if sb.log_start:
            start, ok = self.fs.fsblocks_to_bytes(
                np.array([sb.log_start]), np.array([sb.log_blocks])
            )
            if ok.all():
                self.emit_kind("xfs-log", start, start + sb.log_blocks * self.bs)
            else:
                self.finding(
                    Severity.ERROR,
                    None,
                    f"{self.device} xfs-log",
                    f"log of {sb.log_blocks} blocks at fsblock {sb.log_start} lies outside the "
                    "filesystem; not mapped",
                )

    def btree_forks(
        self, inodes: InodeTable, data: ForkRuns, attr: ForkRuns
    ) -> tuple[ForkRuns, ForkRuns, TreeBlocks]:
        """The forks in btree format, walked: their extents joined to the others, and their
        bmbt blocks."""
        fs = self.fs
        rows_data = inodes.kept_rows[inodes.format[inodes.kept_rows] == S.FMT_BTREE]
        rows_attr = inodes.kept_rows[inodes.aformat[inodes.kept_rows] == S.FMT_BTREE]
        data_parts, attr_parts = [data], [attr]
        tree_row: list[Array] = []
        tree_phys: list[Array] = []
        tree_fork: list[npt.NDArray[np.uint8]] = []
        for fork, rows, parts in ((0, rows_data, data_parts), (1, rows_attr, attr_parts)):
            runs, block_rows, blocks, problems = fs.fork_btrees(inodes, rows, fork)
            self.report(problems)
            parts.append(runs)
            tree_row.append(block_rows)
            tree_phys.append(blocks)
            tree_fork.append(np.full(len(blocks), fork, np.uint8))
        if len(data_parts) > 1:
            data = ForkRuns.concat(data_parts).sorted()
        if len(attr_parts) > 1:
            attr = ForkRuns.concat(attr_parts).sorted()
        row = np.concatenate(tree_row) if tree_row else np.zeros(0, np.int64)
        order = np.argsort(row, kind="stable")
        trees = TreeBlocks(
            row[order],
            (np.concatenate(tree_phys) if tree_phys else np.zeros(0, np.int64))[order],
            (np.concatenate(tree_fork) if tree_fork else np.zeros(0, np.uint8))[order],
        )
        return data, attr, trees

    def drop_realtime(self, inodes: InodeTable, data: ForkRuns) -> ForkRuns:
        """Realtime files' data extents are blocks of the realtime device: not ours."""
        rt = (inodes.flags & S.DIFLAG_REALTIME) != 0
        if not rt.any():
            return data
        self.finding(
            Severity.WARNING,
            None,
            self.device,
            f"{int(rt.sum())} realtime file(s): their data lies on the realtime device and is "
            "not mapped",
        )
        keep = ~rt[data.row]
        return ForkRuns(*(getattr(data, n)[keep] for n in ForkRuns.__dataclass_fields__))

    def special_inodes(self, inodes: InodeTable, data: ForkRuns, trees: TreeBlocks) -> None:
        """The realtime bitmap and summary inodes and the quota inodes: their blocks are the
        filesystem's own (they have no name)."""
        sb = self.sb
        specials = [(sb.rbm_ino, "rt-bitmap"), (sb.rsum_ino, "rt-summary")]
        specials += [(q, "quota") for q in sb.quota_inos]
        for ino, kind in specials:
            row = inodes.index_of(ino) if ino else -1
            if row < 0:
                continue
            self.special_rows.append(row)
            lo, hi = np.searchsorted(data.row, [row, row + 1])
            starts = data.physical[lo:hi]
            self.emit_kind(
                kind, starts, starts + data.length[lo:hi] * self.bs, data.logical[lo:hi] * self.bs
            )
            lo, hi = np.searchsorted(trees.row, [row, row + 1])
            blocks = trees.physical[lo:hi]
            self.emit_kind(kind, blocks, blocks + self.bs)

    # -- names ---------------------------------------------------------------------------

    def walk_directories(self, inodes: InodeTable, data: ForkRuns) -> tuple[Array, PathColumn]:
        """Every name in the tree: inode rows and their paths, level by level from the root.
        Every directory's entries are decoded in bulk first (short form, and the data blocks
        of the block, leaf, node and btree forms)."""
        fs = self.fs
        root = inodes.index_of(self.sb.root_ino)
        is_dir = (inodes.mode & S.S_IFMT) == S.S_IFDIR
        if root < 0 or not is_dir[root]:
            self.finding(
                Severity.ERROR,
                None,
                self.device,
                f"no root directory (inode {self.sb.root_ino})",
            )
            return np.zeros(0, np.int64), PathColumn.of_texts([])
        local = np.flatnonzero(is_dir & (inodes.format == S.FMT_LOCAL))
        short = fs.shortform_entries(inodes, local)
        dir_runs = ForkRuns(
            *(getattr(data, n)[is_dir[data.row]] for n in data.__dataclass_fields__)
        )
        blocks = fs.block_entries(dir_runs)
        entries = BulkEntries.concat([short, blocks])
        del short, blocks, dir_runs
        self.report(entries.problems)
        order = np.argsort(entries.dir_row, kind="stable")
        entry_dir = entries.dir_row[order]
        lengths = entries.name_lengths.astype(np.int64)
        name_start_all = np.cumsum(lengths) - lengths
        name_start = name_start_all[order]
        name_len = lengths[order]
        entry_ino = entries.inodes[order]
        blob = entries.names_blob
        del order, name_start_all, entries
        if b"/" in blob or b"\0" in blob:
            self.finding(
                Severity.WARNING,
                None,
                self.device,
                "directory entry names hold a NUL or '/', which no kernel writes (kept as stored)",
            )

        def name(i: int) -> str:
            start = int(name_start[i])
            return blob[start : start + int(name_len[i])].decode("utf-8", "surrogateescape")

        n_rows = len(inodes)
        child = np.minimum(np.searchsorted(inodes.ino, entry_ino), max(n_rows - 1, 0))
        valid = (inodes.ino[child] == entry_ino) if n_rows else np.zeros(len(entry_ino), dtype=bool)
        child_is_dir = valid & is_dir[child] if n_rows else valid
        first = np.flatnonzero(np.diff(entry_dir, prepend=-1) != 0)
        dirs = entry_dir[first]
        last = np.concatenate((first[1:], [len(entry_dir)])).astype(np.int64)
        prefixes = ["/"]
        prefix_of = np.zeros(n_rows, dtype=np.int32)
        seen = np.zeros(n_rows, dtype=bool)
        seen[root] = True
        out_row: list[Array] = [np.array([root], np.int64)]
        out_prefix: list[Array] = [np.zeros(1, np.int64)]
        out_start: list[Array] = [np.zeros(1, np.int64)]
        out_len: list[Array] = [np.zeros(1, np.int64)]
        frontier = np.array([root], dtype=np.int64)
        invalid = 0
        while len(frontier):
            k = np.minimum(np.searchsorted(dirs, frontier), max(len(dirs) - 1, 0))
            has = (dirs[k] == frontier) if len(dirs) else np.zeros(len(frontier), bool)
            lo, hi = first[k[has]], last[k[has]]
            idx = ragged_ranges(lo, hi - lo)
            parent = prefix_of[entry_dir[idx]]
            ok = valid[idx]
            for i in np.flatnonzero(~ok)[: max(MAX_LISTED - invalid, 0)].tolist():
                self.finding(
                    Severity.WARNING,
                    None,
                    self.device,
                    f"{prefixes[int(parent[i])] + name(int(idx[i]))!r} names inode "
                    f"{int(entry_ino[idx[i]])}, which is not in use; skipped",
                )
            invalid += int((~ok).sum())
            named = idx[ok]
            out_row.append(child[named].astype(np.int64))
            out_prefix.append(parent[ok].astype(np.int64))
            out_start.append(name_start[named])
            out_len.append(name_len[named])
            sub = np.flatnonzero(child_is_dir[idx])
            cand = child[idx[sub]]
            unique, where = np.unique(cand, return_index=True)
            new = ~seen[unique]
            fresh = np.zeros(len(cand), dtype=bool)
            fresh[where[new]] = True
            for i in np.flatnonzero(~fresh)[:MAX_LISTED].tolist():
                self.finding(
                    Severity.ERROR,
                    None,
                    self.device,
                    f"directory inode {int(inodes.ino[cand[i]])} has a second name "
                    f"{prefixes[int(parent[sub[i]])] + name(int(idx[sub[i]]))!r} (a loop?); "
                    "not walked again",
                )
            fresh_dirs = unique[new]
            seen[fresh_dirs] = True
            picked = sub[where[new]]
            prefix_of[fresh_dirs] = np.arange(len(prefixes), len(prefixes) + len(fresh_dirs))
            prefixes.extend(
                prefixes[int(p)] + name(int(i)) + "/"
                for p, i in zip(parent[picked].tolist(), idx[picked].tolist())
            )
            frontier = np.sort(fresh_dirs).astype(np.int64)
        if invalid > MAX_LISTED:
            self.finding(
                Severity.WARNING,
                None,
                self.device,
                f"{invalid - MAX_LISTED} more names of inodes not in use skipped",
            )
        rows = np.concatenate(out_row)
        paths = PathColumn(
            prefixes,
            np.concatenate(out_prefix).astype(np.int32),
            blob,
            np.concatenate(out_start),
            np.concatenate(out_len).astype(np.uint16),
        )
        return rows, paths

    def _orphans(self, inodes: InodeTable, named_rows: Array) -> tuple[Array, list[str]]:
        every = np.ones(len(inodes), dtype=bool)  # the table holds inodes in use only
        return self.orphans_among(every, [named_rows, self.special_rows], inodes.ino)

    def emit_named(
        self,
        inodes: InodeTable,
        named: tuple[Array, PathColumn],
        data: ForkRuns,
        attr: ForkRuns,
        trees: TreeBlocks,
    ) -> None:
        """Lines for every name, a window of :data:`NAME_WINDOW` names at a time."""
        row, paths = named
        orphan_rows, orphan_paths = self._orphans(inodes, row)
        if len(orphan_rows):
            row = np.concatenate((row, orphan_rows))
            paths = PathColumn.concat([paths, PathColumn.of_texts(orphan_paths)])
        for lo in range(0, len(row), NAME_WINDOW):
            window = slice(lo, lo + NAME_WINDOW)
            self._emit_names(inodes, row[window], paths.take(window), data, attr, trees)
            self.builder.progress(
                f"{self.device}: names", min(lo + NAME_WINDOW, len(row)), len(row)
            )

    def _join(
        self,
        mask: npt.NDArray[np.bool_],
        rows: Array,
        run_rows: Array,
        paths: PathColumn,
        ino: Array,
        classes: list[tuple[str, str]],
        codes: Array,
    ) -> tuple[Array, Array]:
        """One object per selected name with runs; returns (run index, object) per line."""
        lo = np.searchsorted(run_rows, rows, side="left")
        hi = np.searchsorted(run_rows, rows, side="right")
        sel = np.flatnonzero(mask & (hi > lo))
        if not len(sel):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        objs = self._objects(sel, classes, codes[sel], paths, ino)
        count = hi[sel] - lo[sel]
        return ragged_ranges(lo[sel], count), np.repeat(objs, count)

    def _emit_names(
        self,
        inodes: InodeTable,
        row: Array,
        paths: PathColumn,
        data: ForkRuns,
        attr: ForkRuns,
        trees: TreeBlocks,
    ) -> None:
        bs = self.bs
        mode = inodes.mode[row] & S.S_IFMT
        ino = inodes.ino[row].astype(np.int64)
        is_dir = mode == S.S_IFDIR
        is_file = mode == S.S_IFREG
        is_link = mode == S.S_IFLNK
        code = np.where(is_dir, 0, np.where(is_link, 2, 1))
        ext, objs = self._join(
            is_dir | is_file | is_link, row, data.row, paths, ino, _DATA_CLASSES, code
        )
        starts = data.physical[ext]
        self.emit(objs, starts, starts + data.length[ext] * bs, data.logical[ext] * bs)
        # A short-form directory lives in its inode's record.
        sel = np.flatnonzero(is_dir & (inodes.format[row] == S.FMT_LOCAL))
        if len(sel):
            objs = self._objects(sel, [("d", "dir")], 0, paths, ino)
            pos = inodes.position[row[sel]]
            self.emit(
                objs, pos, pos + self.sb.inode_size, np.zeros(len(sel), np.int64), claim=False
            )
        # bmbt blocks of either fork.
        ext, objs = self._join(
            np.ones(len(row), bool),
            row,
            trees.row,
            paths,
            ino,
            [("m", "bmbt")],
            np.zeros(len(row), np.int64),
        )
        starts = trees.physical[ext]
        self.emit(objs, starts, starts + bs, np.zeros(len(ext), np.int64))
        # The attribute fork's blocks.
        ext, objs = self._join(
            np.ones(len(row), bool),
            row,
            attr.row,
            paths,
            ino,
            [("m", "attr")],
            np.zeros(len(row), np.int64),
        )
        starts = attr.physical[ext]
        self.emit(objs, starts, starts + attr.length[ext] * bs, attr.logical[ext] * bs)

    # -- free space ----------------------------------------------------------------------

    def free_space(self) -> None:
        free = union(
            np.concatenate(self.free[0]) if self.free[0] else np.zeros(0, np.int64),
            np.concatenate(self.free[1]) if self.free[1] else np.zeros(0, np.int64),
        )
        claimed = self.claimed_union()
        self.check_free(claimed, free, "free-space btree")
        free = subtract(free, claimed)
        self.emit_kind("unallocated", free[0], free[1], type_="u", claim=False)
        fs_end = self.sb.data_blocks * self.bs
        self.emit_rest(self.unreferenced(claimed, free, fs_end), fs_end)


def map_volume(volume: Volume, builder: MapBuilder) -> list[Finding]:
    """Map the XFS filesystem of ``volume`` into ``builder``; returns the findings
    (:func:`~bmap.layers.fswalk.map_filesystem`)."""
    return map_filesystem(volume, builder, XFS, _Mapper)


def describe(stream: RangeStream, size: int) -> dict[str, Any] | None:
    """What the superblock says, for ``bmap info``; None where there is no usable one."""
    try:
        return describe_superblock(XFS(stream, size))
    except ParserError:
        return None
