"""Vectorised operations on sets of half-open intervals ``[start, end)``, and on ragged ranges
(a run of consecutive integers per row, all rows laid end to end).

The ragged helpers are the one home of the idiom that expands counts into positions,
``np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)``: every layer that joins
rows to a variable number of extents (a name to its extents, a request to the pieces of the
map it touches, a range to its layer of the index) goes through them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.int64]


def ragged_positions(counts: npt.ArrayLike) -> Array:
    """``0, 1, ..., counts[i] - 1`` for each row ``i``, laid end to end.

    >>> ragged_positions([2, 0, 3]).tolist()
    [0, 1, 0, 1, 2]
    """
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)


def ragged_ranges(starts: npt.ArrayLike, counts: npt.ArrayLike) -> Array:
    """``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for each row, laid end to
    end: the indexes of each row's run in a table sorted by row.

    >>> ragged_ranges([10, 5, 7], [2, 0, 3]).tolist()
    [10, 11, 7, 8, 9]
    """
    s = np.asarray(starts, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    return np.repeat(s, c) + ragged_positions(c)


def union(starts: npt.ArrayLike, ends: npt.ArrayLike) -> tuple[Array, Array]:
    """Merge intervals into sorted, disjoint, non-touching runs."""
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    keep = e > s
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], np.maximum.accumulate(e[order])
    new_run = np.concatenate(([True], s[1:] > e[:-1]))
    run_starts = s[new_run]
    last = np.concatenate((np.flatnonzero(new_run)[1:] - 1, [len(s) - 1]))
    return run_starts, e[last]


def subtract(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
    """The parts of the union of ``a`` that the union of ``b`` does not cover."""
    a_s, a_e = union(*a)
    b_s, b_e = union(*b)
    if len(a_s) == 0 or len(b_s) == 0:
        return a_s, a_e
    points = np.concatenate((a_s, a_e, b_s, b_e))
    delta_a = np.concatenate(
        (np.ones_like(a_s), -np.ones_like(a_e), np.zeros_like(b_s), np.zeros_like(b_e))
    )
    delta_b = np.concatenate(
        (np.zeros_like(a_s), np.zeros_like(a_e), np.ones_like(b_s), -np.ones_like(b_e))
    )
    order = np.argsort(points, kind="stable")
    points, delta_a, delta_b = points[order], delta_a[order], delta_b[order]
    # Coverage after each point; several events at one point count together.
    cov_a = np.cumsum(delta_a)
    cov_b = np.cumsum(delta_b)
    last_at_point = np.concatenate((points[1:] != points[:-1], [True]))
    points, cov_a, cov_b = points[last_at_point], cov_a[last_at_point], cov_b[last_at_point]
    inside = (cov_a > 0) & (cov_b == 0)
    starts = points[:-1][inside[:-1]]
    ends = points[1:][inside[:-1]]
    return union(starts, ends)


def intersect_length(a: tuple[Array, Array], b: tuple[Array, Array]) -> int:
    """Total length covered by both unions."""
    return total(a) - total(subtract(a, b))


def total(runs: tuple[Array, Array]) -> int:
    """Total length of the union of ``runs``."""
    s, e = union(*runs)
    return int((e - s).sum())
