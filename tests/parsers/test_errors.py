"""Parser errors cross process boundaries (bmap's helper processes pickle them)."""

from __future__ import annotations

import pickle

import pytest

from parsers.errors import DamagedError, NotThisFormat, TruncatedError


@pytest.mark.parametrize("kind", [DamagedError, NotThisFormat, TruncatedError])
@pytest.mark.parametrize("offset", [None, 0x1000])
def test_parser_errors_pickle_with_their_parts(kind, offset):
    error = kind("directory-block", offset, "bad rec_len")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is kind
    assert (back.structure, back.offset, back.reason) == ("directory-block", offset, "bad rec_len")
    assert str(back) == str(error)
