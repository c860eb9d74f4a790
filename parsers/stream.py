"""What every parser reads from: any readable, seekable byte stream.

A plain file, ``io.BytesIO`` and the project's own stream views all fit; parsers never open
paths and never learn where the bytes come from.

A stream may also offer :class:`GatherRead`: many scattered pieces read into one buffer in
one call (the project's views read them with one ``preadv`` each, without a Python-level
``seek`` and ``read`` per piece). :func:`gather_into` uses it where it exists and falls back
to ``seek`` and ``read`` otherwise.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class ReadSeek(Protocol):
    """A readable, seekable byte stream."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class GatherRead(Protocol):
    """A stream that reads many pieces at once."""

    def gather_into(
        self,
        buffer: memoryview,
        offsets: npt.ArrayLike,
        positions: npt.ArrayLike,
        sizes: npt.ArrayLike,
    ) -> None:
        """Read ``sizes[i]`` bytes at stream offset ``offsets[i]`` into
        ``buffer[positions[i]:]``; bytes past the stream's end are left as they were."""


def gather_into(
    fh: ReadSeek,
    buffer: memoryview,
    offsets: npt.ArrayLike,
    positions: npt.ArrayLike,
    sizes: npt.ArrayLike,
) -> None:
    """:meth:`GatherRead.gather_into` on any stream (integer sequences or numpy arrays)."""
    gather = getattr(fh, "gather_into", None)
    if gather is not None:
        gather(buffer, offsets, positions, sizes)
        return
    pieces = zip(*(np.asarray(a, dtype=np.int64).tolist() for a in (offsets, positions, sizes)))
    for offset, position, size in pieces:
        fh.seek(offset)
        data = fh.read(size)
        buffer[position : position + len(data)] = data
