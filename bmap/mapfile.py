"""Writing a block map in the three formats of docs/format.md, and reading any of them back.

- ``bmap``: the text format, readable by virt-bmap's own reader.
- ``csv``: named columns; names are written as the bytes the filesystem stores (a name that is
  not valid UTF-8 stays not valid UTF-8), read back with ``surrogateescape``.
- ``jsonl``: one JSON object per line, ASCII only (``ensure_ascii``); a byte that is not valid
  UTF-8 is the lone surrogate U+DC80..U+DCFF, Python's ``surrogateescape`` convention.

Per-object text (the escaped ID, the quoted CSV fields) is made once per object, not once per
line: a file with a thousand extents costs one escape.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from bmap import __version__, textcols
from bmap.blockmap import COLUMNS, KIND_OF_TYPE, TYPES, BlockMap, make_frame
from bmap.errors import MapFormatError
from bmap.escape import escape, unescape

FORMATS = ("bmap", "csv", "jsonl")
FORMAT_VERSION = 1
_LINES_PER_WRITE = 4096


def write_map(bmap: BlockMap, out: str | os.PathLike[str] | IO[str], fmt: str = "bmap") -> None:
    """Write ``bmap`` to a path or a text stream in format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown map format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(out, (str, os.PathLike)):
        # surrogateescape: the CSV format keeps a name's stored bytes as they are.
        with open(out, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            _WRITERS[fmt](bmap, fh)
    else:
        _WRITERS[fmt](bmap, out)


def _chunks(bmap: BlockMap) -> Iterator[slice]:
    for i in range(0, len(bmap), _LINES_PER_WRITE):
        yield slice(i, i + _LINES_PER_WRITE)


def _write_bmap(bmap: BlockMap, fh: IO[str]) -> None:
    fh.write(f"# bmap-format {FORMAT_VERSION}\n# generator bmap {__version__}\n")
    for info in bmap.images:
        line = f"# image {info.number} {escape(info.path)} size={info.size:#x}"
        if info.sha256:
            line += f" sha256={info.sha256}"
        fh.write(line + "\n")
    for f in bmap.findings:
        offset = "-" if f.offset is None else f"{f.offset:#x}"
        fh.write(
            f"# finding {f.severity} disk={f.disk} offset={offset} "
            f"{escape(f.source)}: {escape(f.message)}\n"
        )
    # The lines a chunk at a time, assembled from the columns (bmap.textcols) without a
    # Python string per line; the escaped IDs of the chunk's objects made with them (most
    # objects have one line, and a table of all of them would sit beside the whole map).
    disks = [f"{d} ".encode() for d in range(int(bmap.disk.max(initial=0)) + 1)]
    out = _binary(fh)
    for part in _chunks(bmap):
        text, _ = textcols.assemble(
            [
                textcols.lookup(bmap.disk[part], disks),
                textcols.hexadecimal(bmap.start[part]),
                b" ",
                textcols.hexadecimal(bmap.end[part]),
                b" ",
                *bmap.objects.id_fields(bmap.obj[part]),
                b"\n",
            ]
        )
        out(text)


def _binary(fh: IO[str]) -> Any:
    """A function that writes bytes to ``fh``: to its binary buffer where it has one (after
    what was written as text), else decoded as bmap keeps names (``surrogateescape``)."""
    buffer = getattr(fh, "buffer", None)
    if buffer is None:
        return lambda data: fh.write(data.decode("utf-8", "surrogateescape"))
    fh.flush()
    return buffer.write


def csv_field(value: str) -> str:
    """One CSV field, quoted only where it must be."""
    if value == "" or not any(c in value for c in ',"\r\n'):
        return value
    return '"' + value.replace('"', '""') + '"'


def _write_csv(bmap: BlockMap, fh: IO[str]) -> None:
    fh.write(",".join(COLUMNS) + "\n")
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
    for part in _chunks(bmap):
        fh.write(
            "".join(
                f"{d},{s},{e},{tail[o]},{'' if fo < 0 else fo},{inodes[o]}\n"
                for d, s, e, o, fo in zip(
                    bmap.disk[part].tolist(),
                    bmap.start[part].tolist(),
                    bmap.end[part].tolist(),
                    bmap.obj[part].tolist(),
                    bmap.file_offset[part].tolist(),
                )
            )
        )


def _write_jsonl(bmap: BlockMap, fh: IO[str]) -> None:
    objs = bmap.objects
    dumps = json.dumps
    tail = [
        f'"type":{dumps(objs.types[i])},"device":{dumps(objs.devices[i])},'
        f'"kind":{dumps(objs.kinds[i])},"path":{dumps(objs.paths[i])}'
        for i in range(len(objs))
    ]
    inodes = ["null" if n < 0 else str(n) for n in objs.inodes]
    for part in _chunks(bmap):
        fh.write(
            "".join(
                f'{{"disk":{d},"start":{s},"end":{e},{tail[o]},'
                f'"file_offset":{"null" if fo < 0 else fo},"inode":{inodes[o]}}}\n'
                for d, s, e, o, fo in zip(
                    bmap.disk[part].tolist(),
                    bmap.start[part].tolist(),
                    bmap.end[part].tolist(),
                    bmap.obj[part].tolist(),
                    bmap.file_offset[part].tolist(),
                )
            )
        )


_WRITERS = {"bmap": _write_bmap, "csv": _write_csv, "jsonl": _write_jsonl}

# ---------------------------------------------------------------------------------------------
# Reading

_LINE = re.compile(r"(\d+) ([0-9a-f]+) ([0-9a-f]+) ([vpldfmu]) (.+)")


def sniff_format(head: str) -> str:
    """Which of the three formats a file is, from its first line."""
    first = head.lstrip("\ufeff")
    if first.startswith("disk,start,end"):
        return "csv"
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("#") or _LINE.match(first):
        return "bmap"
    raise MapFormatError("not a block map: the first line is neither bmap, csv nor jsonl")


def read_map(path: str | os.PathLike[str]) -> Any:
    """Read a map in any of the three formats into a DataFrame with the documented columns.

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
            frame = _READERS[fmt](fh, str(path))
    except OSError as exc:
        raise MapFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return frame


def _frame(rows: dict[str, list[Any]]) -> Any:
    return make_frame(**rows)


def _split_id(type_: str, ident: str, where: str) -> tuple[str, str, str]:
    """``(device, kind, path)`` from the ID column of one text line."""
    if type_ in "vpl":
        return ident, KIND_OF_TYPE[type_], ""
    device, sep, rest = ident.partition(" ")
    if not sep or not rest:
        raise MapFormatError(f"{where}: '{type_}' line needs a device and a path or kind")
    if type_ in "df":
        return device, KIND_OF_TYPE[type_], rest
    kind, _, path = rest.partition(" ")
    return device, kind, path


def _read_bmap(fh: IO[str], name: str) -> Any:
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    cache: dict[str, tuple[str, str, str]] = {}
    for number, line in enumerate(fh, start=1):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        parts = line.split(" ", 4)
        where = f"{name}:{number}"
        if len(parts) != 5 or parts[3] not in TYPES or len(parts[3]) != 1:
            raise MapFormatError(f"{where}: not a map line: {line[:80]!r}")
        disk, start, end, type_, ident = parts
        try:
            d, s, e = int(disk), int(start, 16), int(end, 16)
        except ValueError:
            raise MapFormatError(f"{where}: bad number in {line[:80]!r}") from None
        if e < s or d < 1:
            raise MapFormatError(f"{where}: bad range or disk in {line[:80]!r}")
        key = type_ + ident
        split = cache.get(key)
        if split is None:
            try:
                split = _split_id(type_, unescape(ident), where)
            except ValueError as exc:
                raise MapFormatError(f"{where}: {exc}") from None
            cache[key] = split
        rows["disk"].append(d)
        rows["start"].append(s)
        rows["end"].append(e)
        rows["type"].append(type_)
        rows["device"].append(split[0])
        rows["kind"].append(split[1])
        rows["path"].append(split[2])
        rows["file_offset"].append(None)
        rows["inode"].append(None)
    return _fill_offsets(_frame(rows))


def _fill_offsets(frame: Any) -> Any:
    """The text format has no offset column: rebuild it where the lines alone determine it.

    A disk and a partition are each one contiguous range, and a structure's line is read as
    the structure itself, so their offsets start at 0 on each line. A file, a directory or an
    LV may lie on the disk out of order, so their offsets stay unknown (csv and jsonl keep
    them).
    """
    if frame.empty:
        return frame
    structure = frame["type"] == "m"
    contiguous = frame["type"].isin(["v", "p"])
    lines = frame[contiguous].groupby(["disk", "type", "device"], sort=False)["start"]
    counts = lines.transform("size")
    frame.loc[counts.index[counts.to_numpy() == 1], "file_offset"] = 0
    frame.loc[structure, "file_offset"] = 0
    return frame


def _read_csv(fh: IO[str], name: str) -> Any:
    """pandas' C parser for a well-formed file; the line-by-line reader below finds and names
    the first bad line of one that is not."""
    import pandas as pd

    try:
        frame = pd.read_csv(
            fh,
            dtype={"type": object, "device": object, "kind": object, "path": object},
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
    except (ValueError, TypeError, pd.errors.ParserError):
        pass
    fh.seek(0)
    return _read_csv_lines(fh, name)


def _read_csv_lines(fh: IO[str], name: str) -> Any:
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    reader = csv.reader(fh)
    header = next(reader)
    if header != COLUMNS:
        raise MapFormatError(f"{name}:1: expected the columns {','.join(COLUMNS)}")
    for number, rec in enumerate(reader, start=2):
        if len(rec) != len(COLUMNS):
            raise MapFormatError(f"{name}:{number}: {len(rec)} fields, expected {len(COLUMNS)}")
        try:
            _append(rows, rec)
        except (ValueError, TypeError) as exc:
            raise MapFormatError(f"{name}:{number}: {exc}") from None
    return _frame(rows)


def _read_jsonl(fh: IO[str], name: str) -> Any:
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            _append(rows, [rec[c] for c in COLUMNS])
        except (ValueError, KeyError, TypeError) as exc:
            raise MapFormatError(f"{name}:{number}: not a map record: {exc}") from None
    return _frame(rows)


def _append(rows: dict[str, list[Any]], rec: list[Any]) -> None:
    disk, start, end, type_, device, kind, path, file_offset, inode = rec
    if str(type_) not in TYPES or len(str(type_)) != 1:
        raise ValueError(f"unknown type {type_!r}")
    rows["disk"].append(int(disk))
    rows["start"].append(int(start))
    rows["end"].append(int(end))
    rows["type"].append(str(type_))
    rows["device"].append(str(device))
    rows["kind"].append(str(kind))
    rows["path"].append("" if path is None else str(path))
    rows["file_offset"].append(None if file_offset in ("", None) else int(file_offset))
    rows["inode"].append(None if inode in ("", None) else int(inode))


_READERS = {"bmap": _read_bmap, "csv": _read_csv, "jsonl": _read_jsonl}


def dumps_map(bmap: BlockMap, fmt: str = "bmap") -> str:
    """The map as one string (small maps, tests)."""
    buf = io.StringIO()
    write_map(bmap, buf, fmt)
    return buf.getvalue()
