"""The parsers' error root and its three kinds of failure.

Every message names the structure and the byte offset where it went wrong, so that a user can
find the bytes with a hex editor: ``gpt-header at 0x200: bad signature``.
"""

from __future__ import annotations


class ParserError(Exception):
    """Root of every error a parser raises on purpose."""

    def __init__(self, structure: str, offset: int | None, message: str) -> None:
        self.structure = structure
        self.offset = offset
        self.reason = message
        where = f"{structure} at {offset:#x}" if offset is not None else structure
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[ParserError], tuple[str, int | None, str]]:
        # Pickled as its three parts (a problem found in a worker process crosses a pipe).
        return (type(self), (self.structure, self.offset, self.reason))


class NotThisFormat(ParserError):
    """The bytes are not this format at all (no magic, no signature)."""


class DamagedError(ParserError):
    """The bytes are this format, but damaged beyond what the parser can work around."""


class UnsupportedError(ParserError):
    """The format allows this, but this project does not handle it yet."""


class TruncatedError(DamagedError):
    """The structure runs past the end of the data that holds it."""
