"""The column assembler against plain Python concatenation, over calls that reuse blobs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bmap.model import textcols

_blobs = st.lists(st.binary(max_size=12), min_size=1, max_size=5)


def _pieces(blob: bytes, picks: list[tuple[int, int]]) -> textcols.Pieces:
    starts = [min(a, len(blob)) for a, _ in picks]
    lengths = [min(n, len(blob) - s) for s, (_, n) in zip(starts, picks)]
    return textcols.Pieces(
        np.frombuffer(blob, dtype=np.uint8),
        np.array(starts, dtype=np.int64),
        np.array(lengths, dtype=np.int64),
    )


@given(
    _blobs,
    st.lists(
        st.lists(st.tuples(st.integers(0, 4), st.integers(0, 12), st.integers(0, 12)), max_size=6),
        min_size=1,
        max_size=6,
    ),
)
def test_assemble_is_row_by_row_concatenation(shared, calls):
    """Each call picks rows from blobs kept between calls (as the per-map name tables are)
    and from fresh ones; with the "large" threshold at 8 bytes, the kept blobs move in and
    out of the front of the reused buffer."""
    saved = textcols._Source.LARGE
    textcols._Source.LARGE = 8
    kept = [np.frombuffer(b, dtype=np.uint8) for b in shared]
    try:
        for rows in calls:
            fresh = bytes(range(len(rows) * 3 % 256)) * 2
            fields: list[textcols.Pieces | bytes] = []
            want_parts: list[list[bytes]] = [[] for _ in rows]
            for which in range(3):
                if which == 1:
                    fields.append(b"|")
                    for parts in want_parts:
                        parts.append(b"|")
                    continue
                picks = [(a, n) for _, a, n in rows]
                if which == 0 and rows:
                    blob = kept[rows[0][0] % len(kept)].tobytes()
                    pieces = _pieces(blob, picks)
                    pieces = textcols.Pieces(kept[rows[0][0] % len(kept)], *pieces[1:])
                else:
                    pieces = _pieces(fresh, picks)
                    blob = fresh
                fields.append(pieces)
                for parts, s, n in zip(
                    want_parts, pieces.start.tolist(), pieces.length.tolist(), strict=True
                ):
                    parts.append(blob[s : s + n])
            text, offsets = textcols.assemble(fields, len(rows))
            want_rows = [b"".join(parts) for parts in want_parts]
            assert text == b"".join(want_rows)
            assert offsets.tolist() == np.cumsum([0, *map(len, want_rows)]).tolist()
    finally:
        textcols._Source.LARGE = saved


@given(st.lists(st.binary(max_size=10), max_size=8))
def test_texts_decode_each_row_even_with_a_nul_inside(rows):
    """Rows as bmap keeps names; a NUL inside a row (a damaged name) must not shift others."""
    blob = b"".join(rows)
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    pieces = textcols.Pieces(
        np.frombuffer(blob, dtype=np.uint8), np.cumsum(lengths) - lengths, lengths
    )
    want = [r.decode("utf-8", "surrogateescape") for r in rows]
    assert textcols.texts([pieces, b"/"], len(rows)) == [w + "/" for w in want]
