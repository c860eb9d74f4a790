"""What every native filesystem walk shares (ext, XFS): findings, the device-wide objects of
its structures, lines placed on the disks, the ranges claimed so far (for the free space),
the memory budget check, and the driver that opens the filesystem and runs the walk.

A walk works in its filesystem's own coordinates (bytes from its first byte) and hands every
extent to the volume's :class:`~bmap.layers.placement.Placement`. A filesystem module
subclasses :class:`FilesystemWalk` with its own ``run()`` and calls :func:`map_filesystem`
from its ``map_volume``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from bmap.errors import BUDGET_SOURCE, Finding, Severity
from bmap.layers.content import Volume
from bmap.model.blockmap import MapBuilder, PathColumn
from bmap.model.intervals import intersect_length, subtract, union
from bmap.model.units import human_size
from parsers.errors import ParserError

Array = npt.NDArray[np.int64]
#: Where inodes in use that no directory names are listed, as The Sleuth Kit lists them.
ORPHAN_DIR = "/$OrphanFiles"
#: Claimed ranges held unmerged at most.
CLAIM_MERGE = 1 << 18


class FilesystemWalk:
    """One filesystem's walk: its findings and its lines, in its own coordinates."""

    #: The memory budget's model of the walk: a fixed part and a part per inode in use (set
    #: by each filesystem from the peaks it measured).
    walk_bytes = 0
    bytes_per_inode = 0

    def __init__(self, volume: Volume, builder: MapBuilder) -> None:
        self.device = volume.device
        self.builder = builder
        self.placement = volume.placement
        self.disk = volume.disk
        self.device_size = volume.size
        self.findings: list[Finding] = []
        self.claimed_starts: list[Array] = []
        self.claimed_ends: list[Array] = []
        self._claims_pending = 0
        self._kind_objects: dict[str, int] = {}

    def run(self) -> None:
        raise NotImplementedError

    # -- findings ------------------------------------------------------------------------

    def finding(self, severity: Severity, offset: int | None, source: str, message: str) -> None:
        self.findings.append(Finding(severity, self.disk, offset, source, message))

    def report(self, problems: Iterable[ParserError]) -> None:
        """Damage the parser met, as findings naming the structure."""
        for problem in problems:
            self.finding(
                self.severity_of(problem),
                problem.offset,
                f"{self.device} {problem.structure}",
                problem.reason,
            )

    def severity_of(self, problem: ParserError) -> Severity:
        """How much a parser's problem matters (a filesystem may know better)."""
        return Severity.ERROR

    # -- lines ---------------------------------------------------------------------------

    def kind_object(self, kind: str, type_: str = "m") -> int:
        """The device-wide object ``kind`` (a structure, the free space), made once."""
        obj = self._kind_objects.get(kind)
        if obj is None:
            obj = self._kind_objects[kind] = self.builder.add_object(type_, self.device, kind)
        return obj

    def emit(
        self,
        obj: int | Array,
        starts: npt.ArrayLike,
        ends: npt.ArrayLike,
        file_offsets: npt.ArrayLike | None = None,
        claim: bool = True,
    ) -> None:
        """Lines of ``obj`` (one object, or one per range) over filesystem byte ranges."""
        s = np.asarray(starts, dtype=np.int64)
        e = np.asarray(ends, dtype=np.int64)
        if not len(s):
            return
        self.placement.place(self.builder, obj, s, e, file_offsets)
        if claim:
            self.claim(s, e)

    def claim(self, starts: Array, ends: Array) -> None:
        """Ranges that something in the filesystem holds, for the free space; merged as they
        come, so they cost what their union costs, not one pair per line."""
        self.claimed_starts.append(starts)
        self.claimed_ends.append(ends)
        self._claims_pending += len(starts)
        if self._claims_pending > CLAIM_MERGE:
            merged = union(np.concatenate(self.claimed_starts), np.concatenate(self.claimed_ends))
            self.claimed_starts, self.claimed_ends = [merged[0]], [merged[1]]
            self._claims_pending = 0

    def emit_kind(
        self,
        kind: str,
        starts: npt.ArrayLike,
        ends: npt.ArrayLike,
        file_offsets: npt.ArrayLike | None = None,
        type_: str = "m",
        claim: bool = True,
    ) -> None:
        """Lines of the device-wide object ``kind``; none (and no object) when empty.

        A structure's lines carry the offset inside themselves unless told otherwise; unused
        space has no offset.
        """
        s = np.asarray(starts, dtype=np.int64)
        if not len(s):
            return
        if file_offsets is None and type_ == "m":
            file_offsets = np.zeros(len(s), dtype=np.int64)
        self.emit(self.kind_object(kind, type_), s, ends, file_offsets, claim=claim)

    # -- names ---------------------------------------------------------------------------

    def _objects(
        self,
        sel: Array,
        classes: list[tuple[str, str]],
        codes: npt.ArrayLike,
        paths: PathColumn,
        ino: Array,
    ) -> Array:
        """One object per selected name, of type and kind ``classes[codes[i]]``; returns
        their numbers."""
        return self.builder.add_objects(
            classes,
            np.broadcast_to(np.asarray(codes, dtype=np.int64), (len(sel),)),
            self.device,
            paths.take(sel),
            ino[sel],
        )

    def orphans_among(
        self,
        candidates: npt.NDArray[np.bool_],
        reached_rows: Iterable[npt.ArrayLike],
        ino: npt.NDArray[np.integer[Any]],
    ) -> tuple[Array, list[str]]:
        """The rows of ``candidates`` (inodes in use) that none of ``reached_rows`` reached,
        with their names under :data:`ORPHAN_DIR`, and a finding if there are any."""
        reached = np.zeros(len(candidates), dtype=bool)
        for rows in reached_rows:
            reached[np.asarray(rows, dtype=np.int64)] = True
        orphans = np.flatnonzero(candidates & ~reached).astype(np.int64)
        if len(orphans):
            self.finding(
                Severity.WARNING,
                None,
                self.device,
                f"{len(orphans)} inode(s) in use but named by no directory; listed under "
                f"{ORPHAN_DIR}",
            )
        return orphans, [f"{ORPHAN_DIR}/OrphanFile-{int(i)}" for i in ino[orphans].tolist()]

    # -- the free space ------------------------------------------------------------------

    def claimed_union(self) -> tuple[Array, Array]:
        """Every range claimed so far, merged."""
        return union(
            np.concatenate(self.claimed_starts) if self.claimed_starts else np.zeros(0, np.int64),
            np.concatenate(self.claimed_ends) if self.claimed_ends else np.zeros(0, np.int64),
        )

    def check_free(
        self, claimed: tuple[Array, Array], free: tuple[Array, Array], table: str
    ) -> None:
        """A finding for bytes the filesystem's ``table`` calls free that something holds."""
        message = free_in_use(claimed, free, table)
        if message:
            self.finding(Severity.WARNING, None, self.device, message)

    def unreferenced(
        self, claimed: tuple[Array, Array], free: tuple[Array, Array], fs_end: int
    ) -> tuple[Array, Array]:
        """What of the filesystem's readable bytes (to ``fs_end``) nothing claims and the
        allocation structures do not call free."""
        readable_end = min(fs_end, self.device_size)
        everything = (np.array([0], np.int64), np.array([readable_end], np.int64))
        return subtract(subtract(everything, claimed), free)

    def emit_rest(self, rest: tuple[Array, Array], fs_end: int) -> None:
        """``u unreferenced`` lines for ``rest``, and ``u volume-slack`` past ``fs_end``."""
        if len(rest[0]):
            self.emit_kind("unreferenced", rest[0], rest[1], type_="u", claim=False)
        if self.device_size > fs_end:
            self.emit_kind("volume-slack", [fs_end], [self.device_size], type_="u", claim=False)

    # -- the memory budget ---------------------------------------------------------------

    def within_budget(self, count: int) -> bool:
        """Whether the walk of ``count`` inodes in use (counted from the filesystem's own
        allocation structures, so never more than its real tables hold) fits in what is left
        of the memory budget; a finding if not."""
        room = self.builder.room()
        if room is None:
            return True
        need = self.walk_bytes + count * self.bytes_per_inode
        if need <= room:
            return True
        self.finding(
            Severity.ERROR,
            None,
            f"{self.device} {BUDGET_SOURCE}",
            f"mapping its {count:,} inodes in use needs about {human_size(need)}, more than "
            f"the {human_size(max(room, 0))} left of the memory budget (--memory-limit): the "
            "filesystem is not mapped inside",
        )
        return False


def free_in_use(claimed: tuple[Array, Array], free: tuple[Array, Array], table: str) -> str | None:
    """What to say of bytes the allocation ``table`` calls free that a file or structure
    holds (None: there are none)."""
    overlap = intersect_length(claimed, free)
    if not overlap:
        return None
    return f"{overlap:#x} bytes in use by files or structures are free in the {table}"


class Filesystem(Protocol):
    """What :func:`map_filesystem` needs of an opened filesystem."""

    progress: Callable[[str, int, int], None]

    def take_problems(self) -> list[ParserError]: ...


FS = TypeVar("FS", bound=Filesystem)


def map_filesystem(
    volume: Volume,
    builder: MapBuilder,
    open_fs: Callable[[Any, int], FS],
    walk_of: Callable[[FS, Volume, MapBuilder], FilesystemWalk],
) -> list[Finding]:
    """Open the filesystem of ``volume`` and walk it into ``builder``; returns the findings.

    A filesystem with no usable superblock is one finding, and nothing of it is mapped. Damage
    that stops the walk is a finding, and what was mapped before stays; so does running out
    of memory (a machine with less than the budget).
    """
    try:
        fs = open_fs(volume.stream, volume.size)
    except ParserError as exc:
        return [
            Finding(
                Severity.ERROR,
                volume.disk,
                exc.offset,
                f"{volume.device} {exc.structure}",
                f"{exc.reason}; the filesystem is not mapped",
            )
        ]
    device = volume.device
    fs.progress = lambda stage, done, total: builder.progress(f"{device}: {stage}", done, total)
    walk = walk_of(fs, volume, builder)
    try:
        walk.run()
    except ParserError as exc:
        walk.report(fs.take_problems())  # what was found before the walk had to stop
        walk.finding(Severity.ERROR, exc.offset, f"{volume.device} {exc.structure}", exc.reason)
    except MemoryError:
        walk.finding(
            Severity.ERROR,
            None,
            f"{volume.device} {BUDGET_SOURCE}",
            "ran out of memory while mapping the filesystem; what was mapped before stays",
        )
    return walk.findings
