"""Vectorised operations on sets of half-open intervals ``[start, end)``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.int64]


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
    s, e = union(*runs)
    return int((e - s).sum())
