"""Sorted runs on disk, for maps whose lines do not fit the memory budget.

The :class:`~bmap.model.blockmap.MapBuilder` holds a bounded number of lines. Past it, it
sorts what it holds into the map's order and writes it here as a *run*: the six line columns
one after another in an unnamed temporary file (``O_TMPFILE``; nothing is left behind, however
the process ends). When the map is built, :func:`merge` merges the runs a block of each at a
time into one file per column, in the map's order, and the map's columns become read-only
views of those files (``mmap``). The writers take the map a part at a time and give the pages
of each part back to the kernel once it is written (:meth:`Merged.release`), so what the
process holds stays near one part and the merge's blocks, whatever the map's size.

The order is the format's (disk, start ascending, end descending, container first, object
number), and among lines equal in all of those, the order they were added in, as the
in-memory sort gives it: runs are written in the order their lines came, each sorted stably,
and the merge breaks ties by run. A spilled map is the same byte for byte as one built in
memory.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

#: The line columns, their order in a run's file, and their types.
COLUMNS: tuple[tuple[str, type[np.generic]], ...] = (
    ("disk", np.uint16),
    ("start", np.int64),
    ("end", np.int64),
    ("type_code", np.uint8),
    ("obj", np.int64),
    ("file_offset", np.int64),
)
#: Bytes of one line in a run (the sum of the columns' widths).
RUN_LINE_BYTES = sum(np.dtype(t).itemsize for _, t in COLUMNS)

Columns = dict[str, npt.NDArray[Any]]


def sort_keys(columns: Columns, rank: npt.NDArray[np.int8]) -> list[npt.NDArray[Any]]:
    """The map's sort keys of ``columns``, most significant first: disk, start, end
    descending, container rank (``rank`` by type code), object number."""
    return [
        columns["disk"],
        columns["start"],
        -columns["end"],
        rank[columns["type_code"]],
        columns["obj"],
    ]


def sorted_columns(columns: Columns, rank: npt.NDArray[np.int8]) -> Columns:
    """``columns`` in the map's order (a stable sort: equal lines keep their order)."""
    order = np.lexsort(sort_keys(columns, rank)[::-1])
    return {name: columns[name][order] for name, _ in COLUMNS}


class Run:
    """One sorted run: its lines' columns one after another in an unnamed temporary file."""

    def __init__(self, columns: Columns, directory: str | None) -> None:
        self.lines = len(columns["start"])
        import tempfile  # only for big maps: kept out of every map's start-up

        # Held open until the run is merged or read back (closed in close()).
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory, prefix="bmap-run-")  # noqa: SIM115
        self._at: dict[str, int] = {}
        try:
            at = 0
            for name, dtype in COLUMNS:
                self._at[name] = at
                data: Any = np.ascontiguousarray(columns[name], dtype=dtype)
                self._file.write(memoryview(data).cast("B"))
                at += data.nbytes
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def read(self, lo: int, hi: int) -> Columns:
        """Lines ``lo`` to ``hi`` of the run."""
        out: Columns = {}
        fd = self._file.fileno()
        for name, dtype in COLUMNS:
            size = np.dtype(dtype).itemsize
            want = (hi - lo) * size
            data = os.pread(fd, want, self._at[name] + lo * size)
            if len(data) != want:
                raise OSError(f"a sorted run of the map came back short ({len(data)} of {want})")
            out[name] = np.frombuffer(data, dtype=dtype)
        return out

    def close(self) -> None:
        self._file.close()


@dataclass
class Merged:
    """The merged lines: one read-only mapping of a temporary file per column."""

    columns: Columns
    _maps: list[tuple[mmap.mmap, int]]
    _files: Sequence[IO[bytes]]

    def release(self, lo: int, hi: int) -> None:
        """Give back the pages that hold only lines ``lo`` to ``hi`` (read): a later read
        of them reads the file again."""
        page = mmap.PAGESIZE
        for mapped, size in self._maps:
            first = -(-lo * size // page) * page
            last = hi * size // page * page
            if last > first:
                mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


def _le(keys: list[npt.NDArray[Any]], bound: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Whether each row of ``keys`` (most significant first) is at most ``bound``."""
    result = np.ones(len(keys[0]), dtype=bool)
    for key, b in zip(reversed(keys), reversed(bound)):
        result = (key < b) | ((key == b) & result)
    return result


def merge(
    runs: list[Run],
    rank: npt.NDArray[np.int8],
    block: int,
    directory: str | None,
    progress: Callable[[int, int], None] | None = None,
) -> Merged:
    """Merge sorted ``runs`` into one file per column, ``block`` lines of each run in
    memory at a time. The runs are closed once merged; if the merge fails, they are left
    as they were.

    Each step sorts what the runs' blocks hold and writes every line up to the smallest last
    line of a block whose run goes on: all that can come before what is still on disk. That
    is at least one whole block a step.
    """
    import tempfile

    total = sum(r.lines for r in runs)
    # Held open for the map's life: its columns are mappings of them.
    files = [
        tempfile.TemporaryFile(dir=directory, prefix="bmap-merge-")  # noqa: SIM115
        for _ in COLUMNS
    ]
    try:
        held: list[Columns | None] = [None] * len(runs)
        read_to = [0] * len(runs)
        written = 0
        while written < total:
            parts: list[Columns] = []
            which: list[npt.NDArray[np.int64]] = []
            bound: tuple[int, ...] | None = None
            for r, run in enumerate(runs):
                buf = held[r]
                have = 0 if buf is None else len(buf["start"])
                if have < block and read_to[r] < run.lines:
                    more = run.read(read_to[r], min(run.lines, read_to[r] + block - have))
                    read_to[r] += len(more["start"])
                    buf = (
                        more if buf is None else {k: np.concatenate((buf[k], more[k])) for k in buf}
                    )
                    held[r] = buf
                if buf is None or not len(buf["start"]):
                    continue
                parts.append(buf)
                which.append(np.full(len(buf["start"]), r, dtype=np.int64))
                if read_to[r] < run.lines:  # the run goes on past its block
                    last = (*(int(k[-1]) for k in sort_keys(buf, rank)), r)
                    bound = last if bound is None else min(bound, last)
            cat = {name: np.concatenate([p[name] for p in parts]) for name, _ in COLUMNS}
            run_of = np.concatenate(which)
            keys = [*sort_keys(cat, rank), run_of]
            order = np.lexsort(keys[::-1])
            take = len(order)
            if bound is not None:
                take = int(_le([k[order] for k in keys], bound).sum())
            chosen = order[:take]
            for (name, _), fh in zip(COLUMNS, files):
                part: Any = np.ascontiguousarray(cat[name][chosen])
                fh.write(memoryview(part).cast("B"))
            used = np.bincount(run_of[chosen], minlength=len(runs))
            for r, n in enumerate(used.tolist()):
                if n:
                    buf = held[r]
                    assert buf is not None
                    held[r] = {k: v[n:] for k, v in buf.items()}
            written += take
            if progress:
                progress(written, total)
        maps: list[tuple[mmap.mmap, int]] = []
        columns: Columns = {}
        for (name, dtype), fh in zip(COLUMNS, files):
            fh.flush()
            size = np.dtype(dtype).itemsize
            if total:
                mapped = mmap.mmap(fh.fileno(), total * size, prot=mmap.PROT_READ)
                maps.append((mapped, size))
                columns[name] = np.frombuffer(mapped, dtype=dtype)
            else:
                columns[name] = np.zeros(0, dtype=dtype)
    except BaseException:
        for fh in files:
            fh.close()
        raise
    for run in runs:
        run.close()
    return Merged(columns, maps, files)
