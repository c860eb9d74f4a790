"""Map files in and out: the formats of docs/format.md, one module each, in one table.

- ``bmap``: the text format, readable by virt-bmap's own reader (:mod:`~bmap.store.textmap`);
- ``csv``: named columns (:mod:`~bmap.store.csvmap`);
- ``jsonl``: one JSON object per line (:mod:`~bmap.store.jsonlmap`).

:func:`write_map` writes a :class:`~bmap.model.blockmap.BlockMap` in any of them;
:func:`read_map` reads any of them back into a DataFrame with the documented columns, the
format found from the file's first line.

Adding a format: a module with ``write(bmap, fh)``, ``read(fh, name)`` and
``sniff(first_line)``, and one line in :data:`MAP_FORMATS`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple

from bmap.errors import MapFormatError
from bmap.model.blockmap import BlockMap
from bmap.model.frame import MAX_DISK
from bmap.store import csvmap, jsonlmap, textmap

if TYPE_CHECKING:
    import pandas as pd


class MapFormat(NamedTuple):
    """How one format is written, read, and told from the others by its first line."""

    write: Callable[[BlockMap, IO[str]], None]
    read: Callable[[IO[str], str], pd.DataFrame]
    sniff: Callable[[str], bool]


#: Format name -> its writer, reader and sniffer; the first is the default.
MAP_FORMATS: dict[str, MapFormat] = {
    "bmap": MapFormat(textmap.write, textmap.read, textmap.sniff),
    "csv": MapFormat(csvmap.write, csvmap.read, csvmap.sniff),
    "jsonl": MapFormat(jsonlmap.write, jsonlmap.read, jsonlmap.sniff),
}
FORMATS = tuple(MAP_FORMATS)


def write_map(bmap: BlockMap, out: str | os.PathLike[str] | IO[str], fmt: str = "bmap") -> None:
    """Write ``bmap`` to a path or a text stream in format ``fmt``."""
    if fmt not in MAP_FORMATS:
        raise ValueError(f"unknown map format {fmt!r}; choose one of {', '.join(FORMATS)}")
    write = MAP_FORMATS[fmt].write
    if isinstance(out, (str, os.PathLike)):
        # surrogateescape: the CSV format keeps a name's stored bytes as they are.
        with open(out, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            write(bmap, fh)
    else:
        write(bmap, out)


def sniff_format(head: str) -> str:
    """Which format a file is, from its first line.

    Raises:
        MapFormatError: none of them.
    """
    first = head.lstrip("\ufeff")
    for name, fmt in MAP_FORMATS.items():
        if fmt.sniff(first):
            return name
    names = ", ".join(FORMATS[:-1]) + f" nor {FORMATS[-1]}"
    raise MapFormatError(f"not a block map: the first line is neither {names}")


def read_map(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a map in any of the formats into a DataFrame with the documented columns.

    Columns: ``disk, start, end, type, device, kind, path, file_offset, inode``; ``path`` is
    ``""`` where there is none, ``file_offset`` and ``inode`` are nullable integers.

    Raises:
        MapFormatError: the file is not a map, with the line number of the first bad line.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            head = fh.readline()
            if not head:
                raise MapFormatError(f"{path}: empty file, not a block map")
            fmt = sniff_format(head)
            fh.seek(0)
            frame = MAP_FORMATS[fmt].read(fh, str(path))
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _check_ranges(frame, str(path))
    return frame


def _check_ranges(frame: pd.DataFrame, name: str) -> None:
    """Every row's disk, range, offset and inode within the format's bounds, whichever reader
    (a fast one for well-formed files) read it.

    Raises:
        MapFormatError: naming the first row out of bounds.
    """
    import numpy as np

    disk = frame["disk"].to_numpy()
    start = frame["start"].to_numpy()
    end = frame["end"].to_numpy()
    bad = (disk < 1) | (disk > MAX_DISK) | (start < 0) | (end < start)
    for column in ("file_offset", "inode"):
        bad |= (frame[column].fillna(0) < 0).to_numpy(dtype=bool)
    if bad.any():
        row = frame.iloc[int(np.argmax(bad))]
        raise MapFormatError(
            f"{name}: map row {int(np.argmax(bad)) + 1} out of bounds: disk {row['disk']}, "
            f"{row['start']}-{row['end']}, file_offset {row['file_offset']}, inode {row['inode']}"
        )


def read_findings(path: str | os.PathLike[str]) -> list[tuple[str, int, int | None, str, str]]:
    """The findings a map file records (text maps keep them in their header; the table
    formats have none): ``(severity, disk, offset, source, message)`` each."""
    from bmap.store.textmap import read_findings as text_findings

    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            head = fh.readline()
            if not head.startswith("#"):
                return []
            fh.seek(0)
            return text_findings(fh)
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None


def dumps_map(bmap: BlockMap, fmt: str = "bmap") -> str:
    """The map as one string (small maps, tests)."""
    buf = io.StringIO()
    write_map(bmap, buf, fmt)
    return buf.getvalue()
