"""One declaration, two readers: a structure declared once as a list of ``(offset, name,
kind, doc)`` fields gives a construct ``Struct`` (single structures: a superblock, a header)
and a numpy ``dtype`` with explicit offsets (bulk tables read a whole table at a time, only the
listed fields decoded).

Kinds are ``u8``, ``u16``, ``u32``, ``u64`` (in the format's byte order) and ``bytesN`` (N raw
bytes). Used by the ext (little-endian) and XFS (big-endian) structures.
"""

from __future__ import annotations

from typing import Any, Literal

import construct as cs
import numpy as np

Field = tuple[int, str, str, str]
Endian = Literal["<", ">"]

_CS = {
    "<": {"u8": cs.Int8ul, "u16": cs.Int16ul, "u32": cs.Int32ul, "u64": cs.Int64ul},
    ">": {"u8": cs.Int8ub, "u16": cs.Int16ub, "u32": cs.Int32ub, "u64": cs.Int64ub},
}
_WIDTH = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


def _bytes_kind(kind: str) -> int | None:
    return int(kind[5:]) if kind.startswith("bytes") else None


def make_struct(fields: list[Field], size: int, endian: Endian) -> cs.Construct:
    """A construct Struct with padding wherever the field list skips bytes, ``size`` long."""
    parts: list[Any] = []
    pos = 0
    for offset, name, kind, doc in sorted(fields):
        if offset < pos:
            raise ValueError(f"field {name} at {offset:#x} overlaps the previous one")
        if offset > pos:
            parts.append(cs.Padding(offset - pos))
        width = _bytes_kind(kind)
        sub = cs.Bytes(width) if width is not None else _CS[endian][kind]
        parts.append(name / sub * doc)
        pos = offset + (width if width is not None else sub.sizeof())
    if pos < size:
        parts.append(cs.Padding(size - pos))
    return cs.Struct(*parts)


def make_dtype(fields: list[Field], itemsize: int, endian: Endian) -> np.dtype[Any]:
    """A numpy dtype that decodes only the listed fields of records of ``itemsize`` bytes
    (fields of a larger layout of the record, past ``itemsize``, are left out)."""
    names, formats, offsets = [], [], []
    for offset, name, kind, _ in fields:
        if offset >= itemsize:
            continue
        width = _bytes_kind(kind)
        names.append(name)
        formats.append(f"V{width}" if width is not None else f"{endian}u{_WIDTH[kind]}")
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})
