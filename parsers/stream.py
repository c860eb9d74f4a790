"""What every parser reads from: any readable, seekable byte stream.

A plain file, ``io.BytesIO`` and the project's own stream views all fit; parsers never open
paths and never learn where the bytes come from.
"""

from __future__ import annotations

from typing import Protocol


class ReadSeek(Protocol):
    """A readable, seekable byte stream."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...
