"""Map files in and out: the formats of docs/format.md, one module each, in one table.

- ``bmap``: the text format, readable by virt-bmap's own reader (:mod:`~bmap.store.textmap`);
- ``csv``: named columns (:mod:`~bmap.store.csvmap`);
- ``jsonl``: one JSON object per line (:mod:`~bmap.store.jsonlmap`);
- ``parquet``: the same columns typed, binary, written to a named file only
  (:mod:`~bmap.store.parquetmap`).

:func:`write_map` writes a :class:`~bmap.model.blockmap.BlockMap` in any of them;
:func:`read_map` reads any of them back into a DataFrame with the documented columns, the
format found from the file's first bytes (a binary format's magic) or first line.

Adding a text format: a module with ``write(bmap, fh)``, ``read(fh, name)`` and
``sniff(first_line)``, and one line in :data:`MAP_FORMATS`; a binary one: ``write(bmap,
path)``, ``read(path, name)``, ``read_findings(path, name)``, ``read_images(path, name)`` and
``sniff(head_bytes)``, and one line in :data:`FILE_FORMATS`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple

from bmap.errors import MapFormatError
from bmap.model.blockmap import BlockMap, ImageInfo
from bmap.model.frame import MAX_DISK
from bmap.store import csvmap, jsonlmap, parquetmap, textmap

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

Findings = list[tuple[str, int, int | None, str, str]]


class FileMapFormat(NamedTuple):
    """A binary format: written to and read from a named file only, told by its first bytes;
    its header (images, findings) is read without the rows."""

    write: Callable[[BlockMap, str | os.PathLike[str]], None]
    read: Callable[[str | os.PathLike[str], str], pd.DataFrame]
    sniff: Callable[[bytes], bool]
    read_findings: Callable[[str | os.PathLike[str], str], Findings]
    read_images: Callable[[str | os.PathLike[str], str], list[ImageInfo]]


#: Format name -> the binary formats' writer, readers and sniffer.
FILE_FORMATS: dict[str, FileMapFormat] = {
    "parquet": FileMapFormat(
        parquetmap.write,
        parquetmap.read,
        parquetmap.sniff,
        parquetmap.read_findings,
        parquetmap.read_images,
    ),
}
#: Every format ``bmap map --format`` offers; the text ones are also written to a stream.
TEXT_FORMATS = tuple(MAP_FORMATS)
FORMATS = (*TEXT_FORMATS, *FILE_FORMATS)
#: Bytes read from the start of a file to tell a binary format.
HEAD_BYTES = 8


def write_map(bmap: BlockMap, out: str | os.PathLike[str] | IO[str], fmt: str = "bmap") -> None:
    """Write ``bmap`` to a path or a text stream in format ``fmt``.

    Raises:
        ValueError: an unknown format, or a binary format (:data:`FILE_FORMATS`) given a
            stream: it is written to a named file only.
        OSError: the file cannot be written.
    """
    if fmt in FILE_FORMATS:
        if not isinstance(out, (str, os.PathLike)):
            raise ValueError(f"the {fmt} format is written to a named file, not to a stream")
        FILE_FORMATS[fmt].write(bmap, out)
        return
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
    names = ", ".join(TEXT_FORMATS[:-1]) + f" nor {TEXT_FORMATS[-1]}"
    raise MapFormatError(f"not a block map: the first line is neither {names}")


def binary_format(head: bytes) -> str | None:
    """The binary format (:data:`FILE_FORMATS`) whose magic ``head`` starts with, if any."""
    for name, fmt in FILE_FORMATS.items():
        if fmt.sniff(head):
            return name
    return None


def sniff_file(path: str | os.PathLike[str]) -> str:
    """Which format the file ``path`` is: a binary one by its first bytes, else a text one by
    its first line.

    Raises:
        MapFormatError: none of them, an empty file, or a file that cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            found = binary_format(head)
            if found is not None:
                return found
            if not head:
                raise MapFormatError(f"{path}: empty file, not a block map")
            fh.seek(0)
            # A first line is short; a file of random bytes may have no newline at all.
            first = fh.readline(1 << 16).decode("utf-8", "replace")
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return sniff_format(first)
    except MapFormatError as exc:
        raise MapFormatError(f"{path}: {exc}") from None


def _binary_format_of(path: str | os.PathLike[str]) -> str | None:
    try:
        with open(path, "rb") as fh:
            return binary_format(fh.read(HEAD_BYTES))
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_map(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a map in any of the formats into a DataFrame with the documented columns.

    Columns: ``disk, start, end, type, device, kind, path, file_offset, inode``; ``path`` is
    ``""`` where there is none, ``file_offset`` and ``inode`` are nullable integers.

    Raises:
        MapFormatError: the file is not a map (naming it), with the line number of the first
            bad line of a text format.
    """
    fmt = sniff_file(path)
    if fmt in FILE_FORMATS:
        frame = FILE_FORMATS[fmt].read(path, str(path))
    else:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
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


def read_findings(path: str | os.PathLike[str]) -> Findings:
    """The findings a map file records (text maps keep them in their header, Parquet in its
    metadata; csv and jsonl have none): ``(severity, disk, offset, source, message)`` each.

    Raises:
        MapFormatError: the file cannot be read, or a binary map's metadata is damaged.
    """
    from bmap.store.textmap import read_findings as text_findings

    binary = _binary_format_of(path)
    if binary is not None:
        return FILE_FORMATS[binary].read_findings(path, str(path))
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            head = fh.readline()
            if not head.startswith("#"):
                return []
            fh.seek(0)
            return text_findings(fh)
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None


_IMAGE = re.compile(
    r"# image (\d{1,5}) (.*?) size=(0x[0-9a-f]{1,16})(?: sha256=([0-9a-f]{64}))?(?: format=(\S+))?"
)
_CHAIN = re.compile(r"# chain (\d{1,5}) (\S+) (\S+) (.*)")


def read_images(path: str | os.PathLike[str]) -> list[ImageInfo]:
    """The images a map file records (the text map's ``# image`` and ``# chain`` lines,
    Parquet's metadata; csv and jsonl have none), in disk order.

    Raises:
        MapFormatError: the file cannot be read, or a binary map's metadata is damaged.
    """
    from bmap.model.escape import unescape

    binary = _binary_format_of(path)
    if binary is not None:
        return FILE_FORMATS[binary].read_images(path, str(path))
    found: dict[int, ImageInfo] = {}
    chains: dict[int, list[tuple[str, str, str]]] = {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            for line in fh:
                if not line.startswith("#"):
                    break
                line = line.rstrip("\n")
                try:
                    if match := _IMAGE.fullmatch(line):
                        number, name, size, sha256, fmt = match.groups()
                        found[int(number)] = ImageInfo(
                            int(number), unescape(name), int(size, 16), sha256, fmt or "raw"
                        )
                    elif match := _CHAIN.fullmatch(line):
                        number, role, fmt, name = match.groups()
                        chains.setdefault(int(number), []).append((role, fmt, unescape(name)))
                except ValueError:
                    continue  # a line that does not follow the format is left out
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return [
        dataclasses.replace(info, chain=tuple(chains.get(number, ())))
        for number, info in sorted(found.items())
    ]


def dumps_map(bmap: BlockMap, fmt: str = "bmap") -> str:
    """The map as one string (small maps, tests)."""
    buf = io.StringIO()
    write_map(bmap, buf, fmt)
    return buf.getvalue()
