"""The CSV map format: the documented columns (docs/format.md, "Table formats").

Names are written as the bytes the filesystem stores (a name that is not valid UTF-8 stays not
valid UTF-8; the writer's stream uses ``surrogateescape``), read back with
``surrogateescape``. Per-object text (the quoted fields) is made once per object, not once per
line.
"""

from __future__ import annotations

import csv
from typing import IO, TYPE_CHECKING, Any

from bmap.errors import MapFormatError
from bmap.model.blockmap import TYPES, BlockMap
from bmap.model.frame import COLUMNS, MAX_DISK, bounded_int, make_frame
from bmap.store.textmap import line_chunks

if TYPE_CHECKING:
    import pandas as pd

HEADER = ",".join(COLUMNS)


def sniff(first_line: str) -> bool:
    return first_line.startswith("disk,start,end")


def csv_field(value: str) -> str:
    """One CSV field, quoted only where it must be."""
    if value == "" or not any(c in value for c in ',"\r\n'):
        return value
    return '"' + value.replace('"', '""') + '"'


def write(bmap: BlockMap, fh: IO[str]) -> None:
    fh.write(HEADER + "\n")
    objs = bmap.objects
    tail = [
        ",".join(
            (
                objs.types[i],
                csv_field(objs.devices[i]),
                csv_field(objs.kinds[i]),
                csv_field(objs.paths[i]),
            )
        )
        for i in range(len(objs))
    ]
    inodes = ["" if n < 0 else str(n) for n in objs.inodes]
    for lines in line_chunks(bmap):
        fh.write(
            "".join(
                f"{d},{s},{e},{tail[o]},{'' if fo < 0 else fo},{inodes[o]}\n"
                for d, s, e, o, fo in lines
            )
        )


def read(fh: IO[str], name: str) -> pd.DataFrame:
    """pandas' C parser for a well-formed file; the line-by-line reader below finds and names
    the first bad line of one that is not."""
    import pandas as pd

    # Integers as int64 (nullable where a cell may be empty): a number past int64 fails
    # here, and the line reader names it, rather than wrapping or rounding.
    dtypes: dict[str, Any] = {c: object for c in ("type", "device", "kind", "path")}
    dtypes.update(disk="int64", start="int64", end="int64", file_offset="Int64", inode="Int64")
    try:
        frame = pd.read_csv(
            fh,
            dtype=dtypes,
            keep_default_na=False,
            na_values={"file_offset": [""], "inode": [""]},
            engine="c",
        )
        if list(frame.columns) == COLUMNS and frame["type"].isin(list(TYPES)).all():
            return make_frame(
                disk=frame["disk"],
                start=frame["start"],
                end=frame["end"],
                type=frame["type"],
                device=frame["device"],
                kind=frame["kind"],
                path=frame["path"],
                file_offset=frame["file_offset"].astype("Int64"),
                inode=frame["inode"].astype("Int64"),
            )
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
        pass  # the line reader names the first bad line
    fh.seek(0)
    return _read_lines(fh, name)


def _read_lines(fh: IO[str], name: str) -> pd.DataFrame:
    rows = empty_rows()
    reader = csv.reader(fh)
    header = next(reader)
    if header != COLUMNS:
        raise MapFormatError(f"{name}:1: expected the columns {HEADER}")
    for number, rec in enumerate(reader, start=2):
        if len(rec) != len(COLUMNS):
            raise MapFormatError(f"{name}:{number}: {len(rec)} fields, expected {len(COLUMNS)}")
        try:
            append_record(rows, rec)
        except (ValueError, TypeError) as exc:
            raise MapFormatError(f"{name}:{number}: {exc}") from None
    return make_frame(**rows)


def empty_rows() -> dict[str, list[Any]]:
    """Columns to gather a table format's records in, one list per column."""
    return {c: [] for c in COLUMNS}


def append_record(rows: dict[str, list[Any]], rec: list[Any]) -> None:
    """One record of a table format (the documented columns, in order) checked and added.

    Raises:
        ValueError, TypeError: a field of the wrong kind.
    """
    disk, start, end, type_, device, kind, path, file_offset, inode = rec
    if str(type_) not in TYPES or len(str(type_)) != 1:
        raise ValueError(f"unknown type {type_!r}")
    d = bounded_int(disk, "disk", 1, MAX_DISK)
    s = bounded_int(start, "start")
    e = bounded_int(end, "end")
    if e < s:
        raise ValueError(f"end {e} before start {s}")
    rows["disk"].append(d)
    rows["start"].append(s)
    rows["end"].append(e)
    rows["type"].append(str(type_))
    rows["device"].append(str(device))
    rows["kind"].append(str(kind))
    rows["path"].append("" if path is None else str(path))
    rows["file_offset"].append(
        None if file_offset in ("", None) else bounded_int(file_offset, "file_offset")
    )
    rows["inode"].append(None if inode in ("", None) else bounded_int(inode, "inode"))
