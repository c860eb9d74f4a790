"""LVM2 metadata text: the config language (sections, ``key = value``, lists, strings with
escapes, numbers, comments), read by a tokenizer and a small recursive-descent parser, and the
volume group a record describes (lvm2's ``lib/config/config.c`` and ``lib/format_text``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parsers.errors import DamagedError
from parsers.lvm2.label import SECTOR

if TYPE_CHECKING:
    from parsers.lvm2.pv import MetadataRecord

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\\]*(?:\\.[^"\\]*)*")
  | (?P<number>[-+]?\d+(?:\.\d+)?(?![\w.]))
  | (?P<ident>[A-Za-z0-9_.+\-/:@]+)
  | (?P<punct>[={}\[\],])
    """,
    re.VERBOSE | re.DOTALL,
)


Token = tuple[str, str, int]
"""``(kind, value, offset in the text)``."""


def iter_tokens(text: str) -> Iterator[Token]:
    """The tokens of ``text`` one at a time, comments and white space dropped: the parser
    pulls them, so text after the first error is never scanned (a metadata ring of 16 MiB of
    broken records costs what their first bad tokens cost).

    Raises:
        DamagedError: a character that starts no token (an unterminated string, say).
    """
    pos = 0
    n = len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if not m:
            raise DamagedError(
                "lvm-metadata", None, f"unexpected {text[pos : pos + 10]!r} at text offset {pos}"
            )
        kind = m.lastgroup or ""
        if kind != "ws" and kind != "comment":
            yield (kind, m.group(), pos)
        pos = m.end()


def tokenize(text: str) -> list[Token]:
    """Every token of ``text`` (:func:`iter_tokens`)."""
    return list(iter_tokens(text))


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.DOTALL)


MAX_DEPTH = 32
"""Sections and lists nested deeper than this are damage (lvm2 writes 3 levels of sections
and flat lists)."""
MAX_DIGITS = 20
"""A number of the config language is at most 64 bits: 20 digits. A longer one is damage, and
never converted (Python refuses to convert more than 4,300 digits)."""
MAX_VALUE = (1 << 63) - 1
"""Counts, sizes and offsets are kept as int64; a larger one is damage."""


class _Parser:
    def __init__(self, tokens: Iterator[Token]) -> None:
        self._tokens = tokens
        self._next: Token | None = next(tokens, None)
        self.depth = 0

    def error(self, message: str, at: int | None = None) -> DamagedError:
        where = at if at is not None else self._next[2] if self._next else "the end"
        return DamagedError("lvm-metadata", None, f"{message} at text offset {where}")

    def peek(self) -> Token | None:
        return self._next

    def take(self, value: str | None = None) -> Token:
        token = self._next
        if token is None or (value is not None and token[1] != value):
            raise self.error(f"expected {value or 'a token'}")
        self._next = next(self._tokens, None)
        return token

    def section(self, closing: bool) -> dict[str, Any]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("sections nested too deep")
        result: dict[str, Any] = {}
        while True:
            token = self.peek()
            if token is None:
                if closing:
                    raise self.error("missing }")
                break
            if token[1] == "}" and token[0] == "punct":
                if not closing:
                    raise self.error("unexpected }")
                self.take()
                break
            kind, name, _ = self.take()
            if kind == "string":
                name = _unquote(name)  # a quoted key is a key like any other
            elif kind not in ("ident", "number"):
                raise self.error(f"unexpected {name!r}")
            nxt = self.take()
            if nxt[1] == "{":
                result[name] = self.section(closing=True)
            elif nxt[1] == "=":
                result[name] = self.value()
            else:
                raise self.error(f"expected = or {{ after {name!r}")
        self.depth -= 1
        return result

    def value(self) -> Any:
        kind, text, at = self.take()
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            if len(text.lstrip("+-").split(".")[0]) > MAX_DIGITS:
                raise self.error(f"a number of {len(text)} digits", at)
            return float(text) if "." in text else int(text)
        if text == "[":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error("lists nested too deep")
            items: list[Any] = []
            while True:
                token = self.peek()
                if token is None:
                    raise self.error("missing ]")
                if token[1] == "]":
                    self.take()
                    self.depth -= 1
                    return items
                items.append(self.value())
                token = self.peek()
                if token is not None and token[1] == ",":
                    self.take()
        if kind == "ident":
            return text  # a bare word: kept as it is
        raise self.error(f"unexpected {text!r}")


def parse_config(text: str) -> dict[str, Any]:
    """LVM's config language to nested dicts, lists, strings and numbers. Unknown keys are
    kept; the order of keys is the text's.

    Raises:
        DamagedError: text that does not follow the grammar.
    """
    return _Parser(iter_tokens(text)).section(closing=False)


# ---------------------------------------------------------------------------------------------
# The volume group described by a metadata record


@dataclass(frozen=True)
class PVRef:
    name: str
    """The metadata's own name for the PV (``pv0``)."""
    uuid: str
    pe_start: int
    """Bytes from the start of the PV device to its first extent."""
    pe_count: int
    device_hint: str
    dev_size: int


@dataclass(frozen=True)
class Stripe:
    pv: str
    """PV name (``pv0``) or, for mirror/raid legs, a sub-LV name."""
    start_extent: int


@dataclass(frozen=True)
class Segment:
    start_extent: int
    extent_count: int
    type: str
    stripe_size: int
    """Bytes (0 for linear)."""
    stripes: tuple[Stripe, ...]
    raw: dict[str, Any]


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    uuid: str
    status: tuple[str, ...]
    segments: tuple[Segment, ...]
    visible: bool
    raw: dict[str, Any]

    @property
    def extent_count(self) -> int:
        return max((s.start_extent + s.extent_count for s in self.segments), default=0)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    seqno: int
    extent_size: int
    """Bytes."""
    pvs: tuple[PVRef, ...]
    lvs: tuple[LogicalVolume, ...]


def _int(section: dict[str, Any], key: str, default: int | None = None, scale: int = 1) -> int:
    """A count, size or offset times ``scale`` (512 for sectors): in ``0..MAX_VALUE``.

    Raises:
        DamagedError: missing, not a number, negative or, scaled, past int64.
    """
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DamagedError("lvm-metadata", None, f"{key} is not a number: {value!r}")
    if not 0 <= value * scale <= MAX_VALUE:
        raise DamagedError("lvm-metadata", None, f"{key} {value} is out of range")
    return value * scale


def _section(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """A subsection (``physical_volumes { ... }``); none is empty.

    Raises:
        DamagedError: the key holds something else (a string, a number, a list).
    """
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DamagedError("lvm-metadata", None, f"{key} is not a section: {type(value).__name__}")
    return value


def volume_group(record: MetadataRecord) -> VolumeGroup:
    """The VG of one metadata record.

    Raises:
        DamagedError: a field a VG needs is missing or of the wrong kind.
    """
    vg = record.config[record.vg_name]
    extent_size = _int(vg, "extent_size", scale=SECTOR)
    if extent_size <= 0:
        raise DamagedError("lvm-metadata", record.offset, "extent size 0")
    pvs = []
    for name, pv in _section(vg, "physical_volumes").items():
        if not isinstance(pv, dict):
            continue
        pvs.append(
            PVRef(
                name=name,
                uuid=str(pv.get("id", "")),
                pe_start=_int(pv, "pe_start", 0, SECTOR),
                pe_count=_int(pv, "pe_count", 0),
                device_hint=str(pv.get("device", "")),
                dev_size=_int(pv, "dev_size", 0, SECTOR),
            )
        )
    lvs = []
    for name, lv in _section(vg, "logical_volumes").items():
        if not isinstance(lv, dict):
            continue
        segments = []
        for key, seg in lv.items():
            if not (key.startswith("segment") and isinstance(seg, dict)):
                continue
            stripes_raw = (
                seg.get("stripes")
                or seg.get("mirrors")
                or seg.get("raids")
                or seg.get("raid0_lvs")
                or []
            )
            stripes = []
            if isinstance(stripes_raw, list):
                step = 2 if "stripes" in seg or "mirrors" in seg else 1
                items = stripes_raw
                for i in range(0, len(items) - step + 1, step):
                    target = str(items[i])
                    offset = items[i + 1] if step == 2 and isinstance(items[i + 1], int) else 0
                    if not 0 <= offset <= MAX_VALUE:
                        raise DamagedError("lvm-metadata", None, f"stripe at extent {offset}")
                    stripes.append(Stripe(target, offset))
            segments.append(
                Segment(
                    start_extent=_int(seg, "start_extent", 0),
                    extent_count=_int(seg, "extent_count", 0),
                    type=str(seg.get("type", "")),
                    stripe_size=_int(seg, "stripe_size", 0, SECTOR) if "stripe_size" in seg else 0,
                    stripes=tuple(stripes),
                    raw=seg,
                )
            )
        raw_status = lv.get("status", [])
        status = (
            tuple(s for s in raw_status if isinstance(s, str))
            if isinstance(raw_status, list)
            else ()
        )
        lvs.append(
            LogicalVolume(
                name=name,
                uuid=str(lv.get("id", "")),
                status=status,
                segments=tuple(sorted(segments, key=lambda s: s.start_extent)),
                visible="VISIBLE" in status,
                raw=lv,
            )
        )
    return VolumeGroup(
        name=record.vg_name,
        uuid=str(vg.get("id", "")),
        seqno=record.seqno,
        extent_size=extent_size,
        pvs=tuple(pvs),
        lvs=tuple(lvs),
    )
