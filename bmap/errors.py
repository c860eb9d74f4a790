"""The core's error root, the exit codes the CLI maps them to, and findings.

An error stops the work on its input; a :class:`Finding` records damage or something worth
knowing that did not stop it, and travels with the map to the user and the reports.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from parsers.errors import ParserError


class ExitCode(enum.IntEnum):
    """Exit codes of the ``bmap`` command (documented in docs/cli.md)."""

    OK = 0
    INTERNAL = 1
    """A bug in bmap: the message says so and ``--debug`` shows the traceback."""
    USAGE = 2
    """Bad command line (click's own code)."""
    DAMAGED = 3
    """The work was done and written, but the input is damaged: see the findings."""
    UNREADABLE = 4
    """An input could not be opened or read (missing, a directory, empty, no permission)."""
    NOT_A_DISK = 5
    """An input holds nothing bmap recognises (no partition table, no known content)."""
    BAD_MAP = 6
    """A map file given to ``lookup`` (or another reader) is not a valid map."""
    MISSING_TOOL = 7
    """A program bmap runs (nbdkit for ``serve``) is not installed."""
    CONTAINER = 8
    """An image is a container bmap recognises but cannot read: a format or feature it has no
    reader for, a backing file that is missing or loops, a header too damaged to read."""
    OVER_BUDGET = 9
    """The map was written, but part of the input was left unmapped because mapping it needed
    more memory than the budget (``--memory-limit``): see the findings."""
    PARTIAL = 10
    """``bmap batch``: some entries could not be mapped (the summary lists them); the dataset
    holds the others."""


#: The ``source`` of a finding that says a part of the input was left out to stay within the
#: memory budget (it decides exit 9).
BUDGET_SOURCE = "memory-budget"


class BmapError(Exception):
    """Root of the errors the core raises on purpose; each carries its exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ImageError(BmapError):
    """An image cannot be opened or read."""

    exit_code = ExitCode.UNREADABLE


class NotADiskError(BmapError):
    """An image holds no partition table and no content that bmap recognises."""

    exit_code = ExitCode.NOT_A_DISK


class MapFormatError(BmapError):
    """A map file does not follow the format."""

    exit_code = ExitCode.BAD_MAP


class ToolMissingError(BmapError):
    """A program bmap runs (nbdkit) is not installed."""

    exit_code = ExitCode.MISSING_TOOL


class ContainerError(BmapError):
    """An image is a container (qcow2, VMDK, an xz file, ...) that bmap cannot read; it is
    never read as raw instead."""

    exit_code = ExitCode.CONTAINER


class Severity(enum.IntEnum):
    """How much a finding matters. WARNING and ERROR mean the input is damaged."""

    INFO = 0
    """Worth knowing, not damage (a hybrid MBR, content bmap does not map yet)."""
    WARNING = 1
    """Damage worked around with nothing lost (a bad primary GPT; the backup was used)."""
    ERROR = 2
    """Damage that leaves part of the input unmapped (an EBR loop, a truncated partition)."""

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """Damage or a notable fact met while mapping, with where it was found.

    Attributes:
        severity: see :class:`Severity`.
        disk: 1-based image number.
        offset: byte offset on that disk of the structure concerned, or None.
        source: the structure (``gpt-header``, ``ebr``, ``/dev/sda2``).
        message: one line, for people.
    """

    severity: Severity
    disk: int
    offset: int | None
    source: str
    message: str

    @classmethod
    def from_parser_error(
        cls, exc: ParserError, disk: int, severity: Severity, base: int = 0
    ) -> Finding:
        """A finding from a parser's error; ``base`` converts its offset to disk coordinates."""
        offset = None if exc.offset is None else base + exc.offset
        return cls(severity, disk, offset, exc.structure, exc.reason)

    def __str__(self) -> str:
        where = f" at {self.offset:#x}" if self.offset is not None else ""
        return f"{self.severity}: disk {self.disk}: {self.source}{where}: {self.message}"


def exit_code_for(findings: Iterable[Finding]) -> int:
    """What a finished map exits with, from its findings: 9 where the memory budget left
    something out, 3 where the input is damaged (a warning or an error), else 0."""
    findings = list(findings)
    if any(f.source.endswith(BUDGET_SOURCE) for f in findings):
        return int(ExitCode.OVER_BUDGET)
    damaged = any(f.severity >= Severity.WARNING for f in findings)
    return int(ExitCode.DAMAGED if damaged else ExitCode.OK)
