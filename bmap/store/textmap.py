"""The text ``.bmap`` format (docs/format.md): readable by virt-bmap's own reader.

``# bmap-format 1`` and ``#`` provenance lines (images, findings), then one line per range:
``DISK START END TYPE ID``, offsets in hex, the ID escaped (:mod:`bmap.model.escape`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from bmap import __version__
from bmap.errors import MapFormatError
from bmap.model import textcols
from bmap.model.blockmap import KIND_OF_TYPE, TYPES, BlockMap
from bmap.model.escape import escape, unescape
from bmap.model.frame import COLUMNS, MAX_DISK, MAX_OFFSET, make_frame

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
LINES_PER_WRITE = 4096
"""Lines assembled and written at once."""

_LINE = re.compile(r"(\d+) ([0-9a-f]+) ([0-9a-f]+) ([vpldfmu]) (.+)")


def chunks(bmap: BlockMap) -> Iterator[slice]:
    """The map's lines :data:`LINES_PER_WRITE` at a time (:meth:`BlockMap.parts`)."""
    return bmap.parts(LINES_PER_WRITE)


def line_chunks(bmap: BlockMap) -> Iterator[Iterator[tuple[int, int, int, int, int]]]:
    """The map's lines a chunk at a time, each line as ``(disk, start, end, object number,
    offset inside the object)`` in Python ints: what the table formats write line by line."""
    for part in chunks(bmap):
        yield zip(
            bmap.disk[part].tolist(),
            bmap.start[part].tolist(),
            bmap.end[part].tolist(),
            bmap.obj[part].tolist(),
            bmap.file_offset[part].tolist(),
        )


def sniff(first_line: str) -> bool:
    return first_line.startswith("#") or _LINE.match(first_line) is not None


def write(bmap: BlockMap, fh: IO[str]) -> None:
    fh.write(f"# bmap-format {FORMAT_VERSION}\n# generator bmap {__version__}\n")
    for info in bmap.images:
        line = f"# image {info.number} {escape(info.path)} size={info.size:#x}"
        if info.sha256:
            line += f" sha256={info.sha256}"
        if info.format != "raw":
            line += f" format={info.format}"
        fh.write(line + "\n")
        for role, fmt, path in info.chain:
            fh.write(f"# chain {info.number} {role} {fmt} {escape(path)}\n")
    for f in bmap.findings:
        offset = "-" if f.offset is None else f"{f.offset:#x}"
        fh.write(
            f"# finding {f.severity} disk={f.disk} offset={offset} "
            f"{escape(f.source)}: {escape(f.message)}\n"
        )
    # The lines a chunk at a time, assembled from the columns (bmap.model.textcols) without a
    # Python string per line; the escaped IDs of the chunk's objects made with them (most
    # objects have one line, and a table of all of them would sit beside the whole map).
    # The lines are in disk order: the last names the highest disk.
    disks = [f"{d} ".encode() for d in range(int(bmap.disk[-1]) + 1 if len(bmap) else 1)]
    out = _binary(fh)
    for part in chunks(bmap):
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


_DISK = re.compile(r"[0-9]{1,5}")
_HEX = re.compile(r"[0-9a-f]{1,16}")


def read(fh: IO[str], name: str) -> pd.DataFrame:
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
        if not (_DISK.fullmatch(disk) and _HEX.fullmatch(start) and _HEX.fullmatch(end)):
            raise MapFormatError(f"{where}: bad number in {line[:80]!r}")
        d, s, e = int(disk), int(start, 16), int(end, 16)
        if e < s or not 1 <= d <= MAX_DISK or e > MAX_OFFSET:
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
    return _fill_offsets(make_frame(**rows))


def _fill_offsets(frame: pd.DataFrame) -> pd.DataFrame:
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
    # Devices by number: a key of names would become pandas' Arrow-backed strings (pandas 3
    # with pyarrow), which refuse a name's bytes kept with surrogateescape.
    import pandas as pd

    device = pd.Series(pd.factorize(frame["device"].to_numpy(dtype=object))[0], frame.index)
    lines = frame[contiguous].groupby([frame["disk"], frame["type"], device], sort=False)["start"]
    counts = lines.transform("size")
    frame.loc[counts.index[counts.to_numpy() == 1], "file_offset"] = 0
    frame.loc[structure, "file_offset"] = 0
    return frame


_FINDING = re.compile(r"^# finding (\w+) disk=(\d{1,5}) offset=(-|0x[0-9a-f]{1,16}) (.*?): (.*)$")


def read_findings(fh: IO[str]) -> list[tuple[str, int, int | None, str, str]]:
    """The ``# finding`` lines of a text map's header: ``(severity, disk, offset, source,
    message)`` each; lines that do not follow the format are left out."""
    out = []
    for line in fh:
        if not line.startswith("#"):
            break
        match = _FINDING.match(line.rstrip("\n"))
        if match:
            severity, disk, offset, source, message = match.groups()
            where = None if offset == "-" else int(offset, 16)
            out.append((severity, int(disk), where, unescape(source), unescape(message)))
    return out
