"""The ID escaping of the text format: exact examples and an exact round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmap.model.escape import escape, name_from_bytes, name_to_bytes, unescape


@pytest.mark.parametrize(
    "raw, escaped",
    [
        (b"plain name.txt", "plain name.txt"),
        (b"back\\slash", "back\\\\slash"),
        (b"new\nline", "new\\nline"),
        (b"cr\rtab\t", "cr\\rtab\\t"),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        (b"del\x7f", "del\\x7f"),
        (b"bad \xff\xfe utf8", "bad \\xff\\xfe utf8"),
        (b"<script>alert(1)</script>", "<script>alert(1)</script>"),
        (b"=cmd|' /C calc'!A0", "=cmd|' /C calc'!A0"),
        ("données ☃".encode(), "données ☃"),
        (b"x" * 255, "x" * 255),
    ],
)
def test_escape_examples(raw, escaped):
    name = name_from_bytes(raw)
    assert escape(name) == escaped
    assert name_to_bytes(unescape(escaped)) == raw
    assert "\n" not in escape(name)


@given(st.binary(max_size=300))
def test_any_stored_name_round_trips(raw):
    escaped = escape(name_from_bytes(raw))
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped)
    escaped.encode("utf-8")  # always valid UTF-8: no lone surrogates left
    assert name_to_bytes(unescape(escaped)) == raw


@pytest.mark.parametrize("bad", ["dangling\\", "unknown \\q escape"])
def test_unescape_rejects_what_escape_never_writes(bad):
    with pytest.raises(ValueError):
        unescape(bad)
