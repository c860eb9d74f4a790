"""An object's ID as the text map writes it (docs/format.md), and many IDs escaped at once.

``TYPE ID``: for ``v p l`` the device, for ``d f`` the device and the path, for ``m u`` the
device, the kind and the path if any. :func:`object_id` is the one rule; the text writer,
the trace and the lookup all name objects through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bmap.model import textcols
from bmap.model.escape import escape

ID_CHUNK = 16384
"""Texts escaped at once by :func:`escaped_pieces` (the temporaries stay small)."""


def object_id(type_: str, device: str, kind: str, path: str) -> str:
    """``TYPE ID`` of an object before escaping (the format's rule, docs/format.md)."""
    if type_ in "vpl":
        return f"{type_} {device}"
    if type_ in "df":
        return f"{type_} {device} {path}"
    return f"{type_} {device} {kind} {path}" if path else f"{type_} {device} {kind}"


def object_name(type_: str, device: str, kind: str, path: str) -> str:
    """An object as the text map names it, escaped: ``f /dev/sda1 /etc/fstab``,
    ``m /dev/sda1 extent-tree /var/log/big.log``, ``p /dev/sda1`` (the type letter and the
    kind words need no escaping, so escaping the whole is escaping the device and path)."""
    return escape(object_id(type_, device, kind, path))


def escaped_pieces(texts: Sequence[str]) -> textcols.Pieces:
    """Texts (IDs, or the paths in them) escaped as the text map writes them
    (:func:`bmap.model.escape.escape`), as UTF-8 pieces, row ``i`` for ``texts[i]``.

    A chunk costs one join, one strict encode and a few numpy passes over the bytes; only a
    chunk that holds something to escape (a control character, a backslash, a byte that was
    not valid UTF-8) is escaped text by text. Escaped texts hold no newline: it separates
    them.
    """
    chunks = []
    for lo in range(0, len(texts), ID_CHUNK):
        part = texts[lo : lo + ID_CHUNK]
        text = "\n".join(part) + "\n"
        try:
            data = text.encode("utf-8")  # strict: a byte kept from invalid UTF-8 fails here
            blob = np.frombuffer(data, dtype=np.uint8)
            clean = int(np.count_nonzero(blob == 10)) == len(part) and not (
                ((blob < 0x20) & (blob != 10)).any() or (blob == 0x7F).any() or (blob == 0x5C).any()
            )
        except UnicodeEncodeError:
            clean = False
        if not clean:
            escaped = "\n".join([escape(t) for t in part]) + "\n"
            data = escaped.encode("utf-8", "surrogateescape")
        chunks.append(data)
    blob = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    ends = np.flatnonzero(blob == 10)
    starts = np.empty(len(ends), dtype=np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return textcols.Pieces(blob, starts, ends - starts)


def id_pieces(
    types: Sequence[str], devices: Sequence[str], kinds: Sequence[str], paths: Sequence[str]
) -> textcols.Pieces:
    """``TYPE ID`` of objects as the text map writes them, escaped, UTF-8 (with
    ``surrogateescape``) in one blob, row ``i`` for object ``i`` (:func:`object_name` of
    each)."""
    return escaped_pieces(list(map(object_id, types, devices, kinds, paths)))
