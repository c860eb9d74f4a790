"""Requests from I/O logs, and what every log format's parser shares.

A parser turns lines into :class:`Request` tuples and counts the lines it cannot parse; a batch
of requests travels as :class:`Columns`. The formats themselves are one module each
(:mod:`~bmap.trace.nbdkit`, :mod:`~bmap.trace.qemu`, :mod:`~bmap.trace.blkparse`,
:mod:`~bmap.trace.csvlog`), in the table of :mod:`bmap.trace.logs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Int = npt.NDArray[np.int64]

OPS = ("read", "write", "trim", "zero", "cache")
OP_CODE = {op: i for i, op in enumerate(OPS)}


class Request(NamedTuple):
    """One request from a log, complete or not (a tuple: a log holds millions)."""

    time: float | None
    """Seconds since the epoch (UTC) where the log says, else None."""
    op: str
    offset: int
    length: int
    status: str = "ok"
    """``ok``, ``failed:EIO`` (and the like) or ``unfinished`` (no completion in the log)."""
    connection: int = 0
    line: int = 0
    stands_for: int = 1
    """How many logged requests this one stands for: 1, except for a record of ``bmap trace``
    output read back (consecutive requests to one object, merged)."""


@dataclass
class Columns:
    """Requests as columns, in the order they completed: operations and statuses as codes
    into :data:`OPS` and ``status_names``; times in seconds since the epoch, NaN if unknown."""

    time: npt.NDArray[np.float64]
    op: Int
    status: Int
    status_names: list[str]
    offset: Int
    length: Int
    stands_for: Int | None = None
    """Per request, how many logged requests it stands for (:attr:`Request.stands_for`); None
    when every one stands for itself."""

    def __len__(self) -> int:
        return len(self.offset)

    @classmethod
    def of(cls, requests: Sequence[Request]) -> Columns:
        status_names: dict[str, int] = {}
        merged = any(r.stands_for != 1 for r in requests)
        return cls(
            np.array([np.nan if r.time is None else r.time for r in requests], dtype=float),
            np.fromiter((OP_CODE[r.op] for r in requests), dtype=np.int64, count=len(requests)),
            np.fromiter(
                (status_names.setdefault(r.status, len(status_names)) for r in requests),
                dtype=np.int64,
                count=len(requests),
            ),
            list(status_names),
            np.fromiter((r.offset for r in requests), dtype=np.int64, count=len(requests)),
            np.fromiter((r.length for r in requests), dtype=np.int64, count=len(requests)),
            (
                np.fromiter((r.stands_for for r in requests), dtype=np.int64, count=len(requests))
                if merged
                else None
            ),
        )

    def weights(self) -> Int:
        """:attr:`stands_for`, with the ones filled in."""
        return np.ones(len(self), dtype=np.int64) if self.stands_for is None else self.stands_for

    @classmethod
    def concat(cls, parts: Sequence[Columns]) -> Columns:
        names: dict[str, int] = {}
        statuses = []
        for part in parts:
            remap = np.array(
                [names.setdefault(s, len(names)) for s in part.status_names], dtype=np.int64
            )
            statuses.append(remap[part.status] if len(part) else part.status)
        return cls(
            np.concatenate([p.time for p in parts]) if parts else np.zeros(0),
            np.concatenate([p.op for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate(statuses) if parts else np.zeros(0, np.int64),
            list(names),
            np.concatenate([p.offset for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([p.length for p in parts]) if parts else np.zeros(0, np.int64),
            (
                np.concatenate([p.weights() for p in parts])
                if any(p.stands_for is not None for p in parts)
                else None
            ),
        )


MAX_END = (1 << 63) - 1
"""No request reaches past this: bmap keeps offsets as int64 (NBD's are 64-bit unsigned)."""


def in_range(offset: int, length: int) -> bool:
    """Whether a request of a log can be one of a disk image: both numbers non-negative and
    its end within int64. A parser skips (and counts) any other."""
    return offset >= 0 and length >= 0 and offset + length <= MAX_END


def parse_int(text: str) -> int:
    """A log's number: ``0x`` hex or decimal (leading zeros allowed, unlike ``int(x, 0)``)."""
    return int(text[2:], 16) if text[:2] in ("0x", "0X") else int(text, 10)


class TraceParser:
    """Base: feed lines, collect requests; ``unparsed`` counts lines of no known shape."""

    name = "?"
    """The format's name in :data:`bmap.trace.logs.LOG_FORMATS` and ``--input-format``."""

    @classmethod
    def recognises(cls, line: str) -> bool:
        """Whether ``line`` is of this format (format detection asks each format in turn)."""
        raise NotImplementedError

    def __init__(self) -> None:
        self.unparsed = 0
        self.first_unparsed: list[tuple[int, str]] = []

    def skip(self, number: int, line: str) -> None:
        self.unparsed += 1
        if len(self.first_unparsed) < 5:
            self.first_unparsed.append((number, line[:120]))

    def feed(self, number: int, line: str) -> list[Request]:
        raise NotImplementedError

    def finish(self) -> list[Request]:
        return []
