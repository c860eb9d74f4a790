"""Escaping of the ID column of the text map (docs/format.md, "Escaping").

Names from a filesystem are bytes; inside bmap they are ``str`` decoded from UTF-8 with
``surrogateescape``, so a byte that is not valid UTF-8 survives as U+DC80..U+DCFF. In the text
map ``\\`` is written ``\\\\``, newline ``\\n``, carriage return ``\\r``, tab ``\\t``, every other
control character (below 0x20, and 0x7f) and every byte that is not valid UTF-8 as ``\\xNN``.
Spaces stay as they are. :func:`unescape` reverses it exactly.
"""

from __future__ import annotations

import re

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TABLE: dict[int, str] = {i: f"\\x{i:02x}" for i in range(0x20)}
_TABLE[0x7F] = "\\x7f"
_TABLE.update({ord(k): v for k, v in _NAMED.items()})
_TABLE.update({0xDC80 + i: f"\\x{0x80 + i:02x}" for i in range(0x80)})

_UNESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|(.))", re.DOTALL)
_UNNAMED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def escape(text: str) -> str:
    """Escape one ID for the text map."""
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_TABLE)


def unescape(text: str) -> str:
    """Reverse :func:`escape`; ``\\xNN`` of 0x80 and above gives back the raw byte.

    Raises:
        ValueError: a backslash that starts no escape the format knows.
    """
    if "\\" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        hexa, named = match.groups()
        if hexa is not None:
            value = int(hexa, 16)
            return chr(value) if value < 0x80 else chr(0xDC00 + value)
        if named in _UNNAMED:
            return _UNNAMED[named]
        raise ValueError(f"unknown escape \\{named}")

    if (len(text) - len(text.rstrip("\\"))) % 2:
        raise ValueError("dangling backslash at the end")
    return _UNESCAPE.sub(replace, text)


def name_from_bytes(raw: bytes) -> str:
    """A name as stored on disk, as bmap keeps it (UTF-8 with surrogateescape)."""
    return raw.decode("utf-8", errors="surrogateescape")


def name_to_bytes(name: str) -> bytes:
    """The stored bytes back from a name kept by bmap."""
    return name.encode("utf-8", errors="surrogateescape")


_TERMINAL: dict[int, str] = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
_TERMINAL.update({0xDC80 + i: f"\\x{0x80 + i:02x}" for i in range(0x80)})


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (C0, DEL, C1), bytes that are not
    UTF-8 and any other character Python does not call printable as ``\\xNN`` / ``\\uNNNN``;
    everything else, backslashes included, as it is. For what is shown, not for the map
    (whose names :func:`escape` keeps reversible)."""
    if text.isprintable():
        return text
    out = text.translate(_TERMINAL)
    if out.isprintable():
        return out
    return "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
        for c in out
    )
