"""The Parquet map: typed columns of docs/format.md, the header in the key-value metadata, every
sample's map read back equal to its CSV and text forms, hostile files refused as bad maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.errors import BmapError, Finding, MapFormatError, Severity
from bmap.images import open_images
from bmap.layers.mapper import map_images
from bmap.model.blockmap import ImageInfo, MapBuilder
from bmap.model.escape import name_from_bytes
from bmap.model.frame import COLUMNS
from bmap.store import parquetmap
from bmap.store.mapfile import (
    FORMATS,
    TEXT_FORMATS,
    read_findings,
    read_images,
    read_map,
    sniff_file,
    write_map,
)
from tests.bmap.model.test_spill import fill
from tests.bmap.store.test_mapfile import HOSTILE, hostile_map
from tests.conftest import manifest

SAMPLES = [entry["name"] for entry in manifest()]
#: The columns the text map keeps (it has no inode, and file offsets only where the lines
#: alone give them).
TEXT_COLUMNS = ["disk", "start", "end", "type", "device", "kind", "path"]


def finding_rows(bmap):
    return [(str(f.severity), f.disk, f.offset, f.source, f.message) for f in bmap.findings]


def write_all(bmap, tmp_path, stem="m"):
    paths = {}
    for fmt, suffix in (("bmap", "bmap"), ("csv", "csv"), ("parquet", "parquet")):
        paths[fmt] = tmp_path / f"{stem}.{suffix}"
        write_map(bmap, paths[fmt], fmt)
    return paths


# -- every sample ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_round_trips(sample, tmp_path, name):
    opened = open_images([sample(name)])
    try:
        bmap = map_images(opened, with_sha256=True)
    except BmapError as exc:
        assert name == "zero", exc  # all zero: not a disk, nothing to write
        return
    finally:
        for image in opened:
            image.close()
    paths = write_all(bmap, tmp_path)
    assert sniff_file(paths["parquet"]) == "parquet"
    got = read_map(paths["parquet"])
    # The table formats keep every column: equal, dtypes and all.
    pd.testing.assert_frame_equal(got, read_map(paths["csv"]))
    pd.testing.assert_frame_equal(got, bmap.to_dataframe())
    # The text map keeps the lines and IDs, and the offsets of disks and partitions (a
    # structure's line reads back at 0, its own start: docs/format.md, "Reading maps back").
    text = read_map(paths["bmap"])
    pd.testing.assert_frame_equal(got[TEXT_COLUMNS], text[TEXT_COLUMNS])
    known = text["file_offset"].notna() & text["type"].isin(["v", "p"])
    assert known.any()
    assert got["file_offset"][known].tolist() == text["file_offset"][known].tolist()
    # Known values: the disk comes first and is the image's whole size.
    size = next(e["size"] for e in manifest() if e["name"] == name)
    assert got.iloc[0][["disk", "start", "end", "type", "device", "kind"]].tolist() == [
        1,
        0,
        size,
        "v",
        "/dev/sda",
        "disk",
    ]
    # The header: images and findings, as the text map's header has them.
    assert read_images(paths["parquet"]) == bmap.images == read_images(paths["bmap"])
    assert bmap.images[0].sha256 == next(e["sha256"] for e in manifest() if e["name"] == name)
    assert read_findings(paths["parquet"]) == finding_rows(bmap) == read_findings(paths["bmap"])
    if name.startswith(("gpt-damaged", "ebr-loop", "truncated")):
        assert finding_rows(bmap), "a damaged sample has findings to carry"


def test_schema_types_are_those_of_the_format(sample, tmp_path):
    opened = open_images([sample("whole-disk-ext4")])
    try:
        bmap = map_images(opened)
    finally:
        opened[0].close()
    path = tmp_path / "m.parquet"
    write_map(bmap, path, "parquet")
    schema = pq.read_schema(path)
    assert schema.names == COLUMNS
    category = pa.dictionary(pa.int32(), pa.string())
    assert [schema.field(c).type for c in COLUMNS] == [
        pa.uint16(),
        pa.int64(),
        pa.int64(),
        category,
        pa.string(),
        category,
        pa.string(),
        pa.int64(),
        pa.int64(),
    ]
    assert [schema.field(c).nullable for c in COLUMNS] == [False] * 7 + [True, True]
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["bmap-format"] == "1"
    assert meta["bmap-generator"].startswith("bmap ")
    assert meta["bmap-names"] == "utf-8"
    assert json.loads(meta["bmap-images"])[0]["size"] == 16 << 20
    # Read by pyarrow alone, as another tool would: files have inodes, structures none.
    table = pq.read_table(path).to_pandas()
    files = table[table["type"] == "f"]
    assert len(files) and files["inode"].notna().all() and (files["inode"] >= 11).all()
    assert table[table["type"] == "u"]["file_offset"].isna().all()
    assert set(table["type"].cat.categories) == set("vpldfmu")


def test_findings_and_images_with_chains_and_odd_bytes(tmp_path):
    b = MapBuilder()
    b.add_object_extent("v", "/dev/sda", 1, 0, 0x1000)
    b.add_object_extent("v", "/dev/sdb", 2, 0, 0x2000)
    b.add_finding(Finding(Severity.ERROR, 2, None, "ebr", "loop at 0x200"))
    b.add_finding(Finding(Severity.INFO, 1, 0x200, name_from_bytes(b"/a\xff\n"), "x\\y \t z"))
    images = [
        ImageInfo(1, name_from_bytes(b"/img/d\xe9j\xe0 vu.qcow2"), 0x1000, "ab" * 32, "qcow2",
                  (("backing", "qcow2", "/img/base one.qcow2"), ("backing", "raw", "/b\\c"))),
        ImageInfo(2, "two.img", 0x2000),
    ]  # fmt: skip
    bmap = b.build(images)
    paths = write_all(bmap, tmp_path)
    assert read_images(paths["parquet"]) == images == read_images(paths["bmap"])
    assert read_findings(paths["parquet"]) == finding_rows(bmap) == read_findings(paths["bmap"])


# -- names: every byte kept ------------------------------------------------------------------


def test_names_that_are_not_utf8_round_trip_escaped(tmp_path):
    bmap = hostile_map()
    paths = write_all(bmap, tmp_path)
    got = read_map(paths["parquet"])
    pd.testing.assert_frame_equal(got, read_map(paths["csv"]))
    names = {p.encode("utf-8", "surrogateescape") for p in got["path"]}
    assert {b"/" + raw for raw in HOSTILE} <= names
    # What another tool sees: valid UTF-8, escaped as the text map's IDs are, and said so.
    meta = pq.read_schema(paths["parquet"]).metadata
    assert meta[b"bmap-names"] == b"escaped"
    stored = set(pq.read_table(paths["parquet"], columns=["path"])["path"].to_pylist())
    assert "/\\xff\\xfe bad utf8" in stored
    assert "/new\\nline" in stored


def test_utf8_names_are_stored_as_they_are(tmp_path):
    b = MapBuilder()
    b.add_object_extent("v", "/dev/sda", 1, 0, 0x10000)
    for i, name in enumerate(["/back\\slash", "/données ☃", "/tab\there", "/a,b"]):
        obj = b.add_object("f", "/dev/sda", path=name, inode=20 + i)
        b.add_extent(obj, 1, 0x1000 * (i + 1), 0x1000 * (i + 2), 0)
    path = tmp_path / "m.parquet"
    write_map(b.build(), path, "parquet")
    assert pq.read_schema(path).metadata[b"bmap-names"] == b"utf-8"
    stored = pq.read_table(path, columns=["path"])["path"].to_pylist()
    assert stored == ["", "/back\\slash", "/données ☃", "/tab\there", "/a,b"]
    assert read_map(path)["path"].tolist() == stored


# -- big maps: a part at a time ---------------------------------------------------------------


def test_a_spilled_map_is_written_a_part_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(parquetmap, "ROWS_PER_GROUP", 1000)
    reference = fill(MapBuilder(), 5, 8000).build()
    builder = fill(MapBuilder(spill_lines=700, temp_dir=str(tmp_path)), 5, 8000)
    assert builder._runs, "the builder must have spilled"
    spilled = builder.build()
    assert spilled.merged is not None
    released = []
    release = spilled.merged.release
    monkeypatch.setattr(
        spilled.merged, "release", lambda lo, hi: (released.append((lo, hi)), release(lo, hi))
    )
    path = tmp_path / "big.parquet"
    write_map(spilled, path, "parquet")
    lines = len(spilled)
    groups = -(-lines // 1000)
    # One row group per part, each part's pages given back once it was written.
    assert pq.ParquetFile(path).metadata.num_row_groups == groups
    assert released == [(lo, min(lo + 1000, lines)) for lo in range(0, lines, 1000)]
    csv = tmp_path / "big.csv"
    write_map(reference, csv, "csv")
    pd.testing.assert_frame_equal(read_map(path), read_map(csv))
    pd.testing.assert_frame_equal(read_map(path), reference.to_dataframe())


def test_regular_extents_compress_far_and_still_read(tmp_path):
    """A file's extents at a perfectly regular stride, the rows that compress best: still
    several bytes a row, well inside the rows-per-byte guard."""
    b = MapBuilder()
    b.add_object_extent("v", "/dev/sda", 1, 0, 1 << 40)
    obj = b.add_object("f", "/dev/sda", path="/striped", inode=12)
    n = 200_000
    starts = np.arange(n, dtype=np.int64) * 8192
    b.add_extents(obj, 1, starts, starts + 4096, np.arange(n, dtype=np.int64) * 4096)
    path = tmp_path / "striped.parquet"
    write_map(b.build(), path, "parquet")
    assert n / path.stat().st_size < parquetmap.MAX_ROWS_PER_BYTE / 4
    got = read_map(path)
    assert len(got) == n + 1
    assert got["file_offset"].iloc[-1] == (n - 1) * 4096


def test_a_file_claiming_more_rows_than_its_bytes_hold_is_refused(tmp_path, monkeypatch):
    # Written by pyarrow itself: a million equal rows in a few bytes each.
    n = 1_000_000
    table = pq.read_table(_bytes_map(tmp_path)).slice(0, 1)
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(table.take(np.zeros(n, dtype=np.int64)), bomb)
    with pytest.raises(MapFormatError, match=f"claims {n} rows in"):
        read_map(bomb)
    # The guard is the ratio: the same file passes under a looser one.
    path = tmp_path / "m.parquet"
    write_map(hostile_map(), path, "parquet")
    rows = pq.ParquetFile(path).metadata.num_rows
    size = path.stat().st_size
    monkeypatch.setattr(parquetmap, "MAX_ROWS_PER_BYTE", rows / size * 0.9)
    with pytest.raises(MapFormatError, match=f"claims {rows} rows in {size} bytes"):
        read_map(path)
    monkeypatch.setattr(parquetmap, "MAX_ROWS_PER_BYTE", rows / size * 1.1)
    assert len(read_map(path)) == rows


def _bytes_map(tmp_path):
    path = tmp_path / "one.parquet"
    write_map(hostile_map(), path, "parquet")
    return path


def test_an_empty_map_round_trips(tmp_path):
    path = tmp_path / "empty.parquet"
    write_map(MapBuilder().build(), path, "parquet")
    got = read_map(path)
    assert len(got) == 0 and list(got.columns) == COLUMNS
    assert got.dtypes.tolist() == MapBuilder().build().to_dataframe().dtypes.tolist()


# -- where Parquet is refused -------------------------------------------------------------------


def test_parquet_is_offered_and_written_to_files_only(tmp_path):
    import io

    assert "parquet" in FORMATS and "parquet" not in TEXT_FORMATS
    with pytest.raises(ValueError, match="named file, not to a stream"):
        write_map(hostile_map(), io.StringIO(), "parquet")


# -- hostile and damaged files ----------------------------------------------------------------


@pytest.fixture(scope="session")
def good(tmp_path_factory):
    """A good Parquet map (the hostile names' map) to damage."""
    path = tmp_path_factory.mktemp("good") / "good.parquet"
    write_map(hostile_map(), path, "parquet")
    return path


def replaced(table, column, array):
    return table.set_column(table.schema.get_field_index(column), column, array)


def _hostile_tables(good):
    t = pq.read_table(good)
    n = t.num_rows
    meta = t.schema.metadata

    def with_meta(table, **changes):
        merged = dict(meta)
        merged.update({k.encode(): v.encode() for k, v in changes.items()})
        return table.replace_schema_metadata(merged)

    starts = t["start"].to_pylist()
    return {
        "missing column": (t.drop_columns(["inode"]), "columns"),
        "extra column": (t.append_column("x", pa.array([1] * n)), "columns"),
        "start as text": (replaced(t, "start", pa.array([str(s) for s in starts])), "'start'"),
        "disk as float": (replaced(t, "disk", pa.array([1.0] * n)), "'disk'"),
        "type as int": (replaced(t, "type", pa.array([1] * n)), "'type'"),
        "path as binary": (replaced(t, "path", pa.array([b"/x"] * n)), "'path'"),
        "disk 0": (replaced(t, "disk", pa.array([0] * n, pa.uint16())), "out of bounds"),
        "disk past 65535": (replaced(t, "disk", pa.array([70000] * n, pa.uint32())), "bounds"),
        "start after end": (
            replaced(t, "start", pa.array([e + 1 for e in t["end"].to_pylist()])),
            "out of bounds",
        ),
        "negative start": (replaced(t, "start", pa.array([-5] * n)), "out of bounds"),
        "start past int64": (
            replaced(t, "start", pa.array([2**64 - 1] * n, pa.uint64())),
            "damaged",
        ),
        "negative inode": (replaced(t, "inode", pa.array([-2] * n)), "out of bounds"),
        "null start": (replaced(t, "start", pa.array([None] * n, pa.int64())), "null"),
        "null device": (replaced(t, "device", pa.array([None] * n, pa.string())), "null"),
        "unknown type": (replaced(t, "type", pa.array(["x"] * n)), "unknown type"),
        "bad escape": (
            with_meta(replaced(t, "path", pa.array(["/bad\\q"] * n)), **{"bmap-names": "escaped"}),
            "unknown escape",
        ),
        "names neither": (with_meta(t, **{"bmap-names": "rot13"}), "bmap-names"),
        "findings not json": (with_meta(t, **{"bmap-findings": "[{"}), "not JSON"),
        "findings nested": (with_meta(t, **{"bmap-findings": "[" * 100000}), "not JSON"),
        "images not objects": (with_meta(t, **{"bmap-images": "[1, 2]"}), "list of objects"),
        "image size text": (
            with_meta(t, **{"bmap-images": '[{"number": 1, "path": "a", "size": "big"}]'}),
            "size",
        ),
        "finding disk 0": (
            with_meta(
                t,
                **{
                    "bmap-findings": '[{"severity": "error", "disk": 0, "offset": null, '
                    '"source": "x", "message": "y"}]'
                },
            ),
            "disk",
        ),
    }


def hostile_files(good, tmp_path):
    """``name -> (path, word of the error)``: tables that break the format, and bytes that are
    not Parquet after its magic."""
    files = {}
    for name, (table, word) in _hostile_tables(good).items():
        path = tmp_path / (name.replace(" ", "-") + ".parquet")
        pq.write_table(table, path)
        files[name] = (path, word)
    data = good.read_bytes()
    rng = np.random.default_rng(7)
    for name, content in {
        "random after magic": b"PAR1" + rng.bytes(3000),
        "magic only": b"PAR1",
        "truncated by half": data[: len(data) // 2],
        "truncated footer": data[:-3],
        "footer length huge": data[:-8] + (2**31 - 1).to_bytes(4, "little") + b"PAR1",
        "magic both ends, nothing between": b"PAR1PAR1",
    }.items():
        path = tmp_path / (name.replace(" ", "-") + ".parquet")
        path.write_bytes(content)
        files[name] = (path, "Parquet")
    return files


def test_hostile_files_are_bad_maps(good, tmp_path):
    files = hostile_files(good, tmp_path)
    assert len(files) == 28
    for name, (path, word) in files.items():
        with pytest.raises(MapFormatError) as caught:
            read_map(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: "), (name, message)
        assert word in message, (name, message)
        assert "\n" not in message, name


def test_findings_and_images_of_hostile_metadata_are_bad_maps(good, tmp_path):
    files = hostile_files(good, tmp_path)
    for name in ("findings not json", "findings nested", "finding disk 0"):
        with pytest.raises(MapFormatError):
            read_findings(files[name][0])
    for name in ("images not objects", "image size text"):
        with pytest.raises(MapFormatError):
            read_images(files[name][0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bytes_give_a_map_or_our_error(good, tmp_path_factory, data):
    """Bytes of a good file overwritten anywhere (the magic kept): read back as a map that
    passes the range checks, or refused with MapFormatError; nothing else escapes."""
    damaged = bytearray(good.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(4, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("damaged") / "d.parquet"
    path.write_bytes(bytes(damaged))
    try:
        frame = read_map(path)
    except MapFormatError:
        return
    assert list(frame.columns) == COLUMNS
    assert ((frame["disk"] >= 1) & (frame["start"] <= frame["end"])).all()
