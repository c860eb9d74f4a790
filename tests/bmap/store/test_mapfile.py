"""The three map formats: exact text, what virt-bmap's reader sees, and exact round trips."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmap.errors import MapFormatError
from bmap.model import ids as model_ids
from bmap.model import textcols
from bmap.model.blockmap import ImageInfo, MapBuilder, ObjectTable, PathColumn
from bmap.model.escape import escape, name_from_bytes
from bmap.model.frame import COLUMNS
from bmap.model.ids import escaped_pieces, object_id
from bmap.store.mapfile import dumps_map, read_map, write_map

HOSTILE = [
    b"with space",
    b"new\nline",
    b"<script>x</script>",
    b"=cmd|'/C calc'!A0",
    b"\x1b[2J",
    b"\xff\xfe bad utf8",
    "données ☃".encode(),
    b"x" * 255,
    b'comma,"q"',
]


def hostile_map():
    b = MapBuilder()
    b.add_object_extent("v", "/dev/sda", 1, 0, 0x100000)
    b.add_object_extent("m", "/dev/sda", 1, 0, 0x200, kind="mbr")
    b.add_object_extent("p", "/dev/sda1", 1, 0x800, 0x100000)
    for i, raw in enumerate(HOSTILE):
        obj = b.add_object("f", "/dev/sda1", path="/" + name_from_bytes(raw), inode=12 + i)
        # Two extents, the second before the first on disk: offsets must survive.
        b.add_extent(obj, 1, 0x10000 + i * 0x2000, 0x10000 + i * 0x2000 + 0x1000, 0x1000)
        b.add_extent(obj, 1, 0x8000 + i * 0x400, 0x8000 + i * 0x400 + 0x400, 0)
    b.add_object_extent("m", "/dev/sda1", 1, 0xC00, 0x1000, kind="extent-tree", path="/a b")
    b.add_object_extent("u", "/dev/sda", 1, 0x200, 0x800, kind="unpartitioned")
    return b.build([ImageInfo(1, "disk one.img", 0x100000)])


def test_text_format_lines_and_order():
    text = dumps_map(hostile_map(), "bmap")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[:5] == [
        "1 0 100000 v /dev/sda",
        "1 0 200 m /dev/sda mbr",
        "1 200 800 u /dev/sda unpartitioned",
        "1 800 100000 p /dev/sda1",
        "1 c00 1000 m /dev/sda1 extent-tree /a b",
    ]
    assert "1 8400 8800 f /dev/sda1 /new\\nline" in lines
    assert "1 8800 8c00 f /dev/sda1 /<script>x</script>" in lines
    assert "1 9000 9400 f /dev/sda1 /\\x1b[2J" in lines
    assert "1 9400 9800 f /dev/sda1 /\\xff\\xfe bad utf8" in lines
    assert text.startswith("# bmap-format 1\n")
    assert "# image 1 disk one.img size=0x100000" in text


def test_virt_bmap_reader_sees_every_line():
    """virt-bmap's logger: sscanf("1 %lx %lx %n") and the rest of the line is the object."""
    text = dumps_map(hostile_map(), "bmap")
    pattern = re.compile(r"^1 ([0-9a-f]+) ([0-9a-f]+) (.*)$")
    objects = [pattern.match(line) for line in text.splitlines() if not line.startswith("#")]
    assert all(objects)
    assert sum(1 for m in objects if m.group(3).startswith("f ")) == 2 * len(HOSTILE)


@pytest.mark.parametrize("fmt", ["bmap", "csv", "jsonl"])
def test_round_trip(tmp_path, fmt):
    bmap = hostile_map()
    path = tmp_path / f"map.{fmt}"
    write_map(bmap, path, fmt)
    got = read_map(path)
    want = bmap.to_dataframe()
    assert list(got.columns) == COLUMNS
    same = ["disk", "start", "end", "type", "device", "kind", "path"]
    pd.testing.assert_frame_equal(got[same], want[same], check_dtype=False)
    if fmt == "bmap":
        # The text format carries no offsets or inodes: only single-range objects get offsets.
        assert got.loc[got["type"] == "p", "file_offset"].tolist() == [0]
        assert (got.loc[got["type"] == "m", "file_offset"] == 0).all()
        assert got.loc[got["type"] == "f", "file_offset"].isna().all()
    else:
        assert got["file_offset"].equals(want["file_offset"])
        assert got["inode"].equals(want["inode"])
    paths = set(got["path"])
    assert {"/" + name_from_bytes(raw) for raw in HOSTILE} <= paths


def test_jsonl_is_ascii_json():
    for line in dumps_map(hostile_map(), "jsonl").splitlines():
        line.encode("ascii")
        assert set(json.loads(line)) == set(COLUMNS)


CSV_HEAD = ",".join(COLUMNS) + "\n"
JSON_ROW = (
    '{"disk": 1, "start": 0, "end": 10, "type": "v", "device": "/dev/sda", "kind": "disk", '
    '"path": "", "file_offset": null, "inode": null}\n'
)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("hello world\n", "neither"),
        ("1 0 10 v /dev/sda\n1 zz 10 p /dev/sda1\n", ":2: not a map line|bad number"),
        ("1 10 0 v /dev/sda\n", "bad range"),
        ("1 0 10 f /dev/sda1\n", "needs a device and a path"),
        ("1 0 10 f /dev/sda1 /bad\\q\n", "unknown escape"),
        ("disk,start,end\n", "expected the columns"),
        ('{"disk": 1}\n', "not a map record"),
        # Numbers out of bounds, in every format: one line and exit 6, never a Python limit.
        ("1 0 10000000000000005 v /dev/sda\n", "bad number"),  # 17 hex digits: past 2**64
        ("1 0 8000000000000000 v /dev/sda\n", "bad range or disk"),  # 2**63
        ("1 0 10 v /dev/sda\n1 -5 10 v /dev/sda\n", "bad number"),
        ("70000 0 10 v /dev/sda\n", "bad range or disk"),
        ("0 0 10 v /dev/sda\n", "bad range or disk"),
        ("1 " + "f" * 5000 + " 10 v /dev/sda\n", "bad number"),
        (CSV_HEAD + "1,0,18446744073709551621,v,/dev/sda,disk,,,\n", "at most 19 digits"),
        (CSV_HEAD + "1,0,9223372036854775808,v,/dev/sda,disk,,,\n", "outside"),
        (CSV_HEAD + "1,-5,10,v,/dev/sda,disk,,,\n", "out of bounds|outside"),
        (CSV_HEAD + "1,0," + "9" * 5000 + ",v,/dev/sda,disk,,,\n", "at most 19 digits"),
        (CSV_HEAD + "1,0,10,f,/dev/sda,file,/x,-1,12\n", "out of bounds|outside"),
        (CSV_HEAD + "99999,0,10,v,/dev/sda,disk,,,\n", "out of bounds|outside"),
        (JSON_ROW.replace('"end": 10', '"end": 18446744073709551621'), "outside"),
        (JSON_ROW.replace('"end": 10', '"end": ' + "9" * 5000), "not a map record"),
        (JSON_ROW.replace('"start": 0', '"start": -1'), "outside"),
        (JSON_ROW.replace('"start": 0', '"start": true'), "not a number"),
        ('{"disk": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "not a map record"),
    ],
)
def test_bad_maps_raise_map_format_error(tmp_path, content, message):
    """Each bad map is one MapFormatError (exit 6) naming what is wrong."""
    path = tmp_path / "bad.bmap"
    path.write_text(content)
    with pytest.raises(MapFormatError, match=message):
        read_map(path)


def test_public_api_reads_what_it_writes(sample, tmp_path):
    import bmap

    images = bmap.open_images([sample("gpt-512")])
    blockmap = bmap.map_images(images)
    bmap.write_map(blockmap, tmp_path / "m.jsonl", "jsonl")
    frame = bmap.read_map(tmp_path / "m.jsonl")
    assert frame.equals(blockmap.to_dataframe())
    index = bmap.MapIndex.from_frame(frame)
    assert frame.iloc[index.innermost(1, 0x1600000)[0]]["kind"] == "swap"
    for image in images:
        image.close()


#: Names as bmap keeps them: any stored bytes but NUL and "/", decoded with surrogateescape.
_names = st.binary(max_size=40).map(name_from_bytes)


@given(st.lists(st.one_of(_names, st.sampled_from(["", "a\nb", "\\", "\x7f", "é", "\udcff"]))))
def test_escaped_pieces_escape_every_text_as_escape_does(paths):
    """The bulk escaper (one check over a whole chunk of texts) against escape() per text."""
    want = [escape(p).encode("utf-8", "surrogateescape") for p in paths]
    saved = model_ids.ID_CHUNK
    try:
        for chunk in (saved, 3):  # one chunk, and many (a clean one beside one to escape)
            model_ids.ID_CHUNK = chunk
            pieces = escaped_pieces(paths)
            got = [
                bytes(pieces.blob[s : s + n])
                for s, n in zip(pieces.start.tolist(), pieces.length.tolist())
            ]
            assert got == want, chunk
    finally:
        model_ids.ID_CHUNK = saved


#: Stored names: any bytes but "/" (a NUL only in a damaged one), and some that need escapes.
_raw_names = st.one_of(
    st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b),
    st.sampled_from([b"a\nb", b"\\", b"\x7f", b"\xff", "é".encode(), b"x\0y", b"plain"]),
)


def _column(prefixes, picks):
    """A PathColumn as a directory walk makes one: every name followed by a NUL."""
    names = [raw for _, raw in picks]
    lengths = np.array([len(n) for n in names], dtype=np.int64)
    blob = b"".join(n + b"\0" for n in names)
    return PathColumn(
        prefixes,
        np.array([p for p, _ in picks], dtype=np.int64),
        blob,
        np.cumsum(lengths + 1) - (lengths + 1),
        lengths,
    )


@given(
    st.lists(st.sampled_from(["/", "/usr/", "/a b/\\x/", "/\udcff\n/"]), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), _raw_names), max_size=30),
    st.lists(st.sampled_from(["", "/whole", "/tab\there"]), max_size=4),
)
def test_path_columns_give_the_paths_and_ids_of_whole_strings(prefixes, picks, whole):
    """Objects whose paths are a prefix and name bytes (the ext walk) against the same paths
    added as whole strings: equal ``paths``, and IDs escaped exactly as ``escape`` does."""
    picks = [(p % len(prefixes), raw) for p, raw in picks]
    column = _column(prefixes, picks)
    want = [prefixes[p] + name_from_bytes(raw) for p, raw in picks]
    saved = model_ids.ID_CHUNK
    try:
        for chunk in (saved, 2):  # one chunk, and many (a NUL in one of them)
            model_ids.ID_CHUNK = chunk
            table = ObjectTable()
            for path in whole:
                table.add("m", "/dev/sda1", "xattr-block", path)
            classes = [("f", "file"), ("m", "extent-tree")]
            codes = np.arange(len(picks), dtype=np.int64) % 2
            table.extend_classes(classes, codes, "/dev/sda1", column, [12] * len(picks))
            # A part of the same column again: its prefixes and names are laid out once.
            half = np.arange(0, len(picks), 2, dtype=np.int64)
            table.extend_classes(
                classes, codes[half], "/dev/sda2", column.take(half), [13] * len(half)
            )
            # Whole texts as a column (an empty one among them: no path in its ID).
            table.extend_classes(
                classes,
                np.ones(len(whole), dtype=np.int64),  # "m": without a path, no last space
                "/dev/sda3",
                PathColumn.of_texts(whole),
                [14] * len(whole),
            )
            expected = whole + want + [want[i] for i in half.tolist()] + whole
            assert table.paths == expected
            assert [column.text(i) for i in range(len(picks))] == want
            ids = [
                escape(object_id(table.types[i], table.devices[i], table.kinds[i], path))
                for i, path in enumerate(expected)
            ]
            fields = table.id_fields(np.arange(len(table), dtype=np.int64)[::-1].copy())
            text, _ = textcols.assemble([*fields, b"\n"], len(table))
            got = text.decode("utf-8", "surrogateescape").split("\n")[:-1]
            assert got == ids[::-1]
    finally:
        model_ids.ID_CHUNK = saved
