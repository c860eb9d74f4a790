"""``bmap trace``'s own CSV and JSON-lines output read back as a log: by ``bmap trace`` (named
again against a map) and by ``bmap report`` (the same per-object totals as from the original
log). Names with commas, quotes and line breaks survive the round trip; hostile records are
skipped and counted, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmap.trace.logs import detect_format, parse
from bmap.trace.records import CSV_HEADER
from tests.bmap.cli.test_cli import run
from tests.conftest import run_tool, tool

NAMES = ["a,b.txt", 'say "hi".txt', "two\nlines.txt", "=1+2.txt", "plain.txt"]


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CSV map of an ext4 image (mke2fs -d) of files whose names CSV must quote."""
    root = tmp_path_factory.mktemp("records")
    tree = root / "tree"
    tree.mkdir()
    for i, name in enumerate(NAMES):
        (tree / name).write_bytes(bytes([65 + i]) * (3000 + 1024 * i))
    image = root / "named.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    run_tool(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", "1024", "-d", str(tree), str(image))
    map_csv = root / "named.csv"
    assert run("map", image, "-o", map_csv).exit_code == 0
    return map_csv


def _files(map_csv: Path) -> dict[str, tuple[int, int]]:
    """Each file's first extent on the disk, read from the CSV map with the csv module."""
    import csv

    with open(map_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(line for line in fh if not line.startswith("#"))]
    out: dict[str, tuple[int, int]] = {}
    for r in rows:
        if r["type"] == "f" and r["path"] not in out:
            out[r["path"]] = (int(r["start"]), int(r["end"]))
    return out


def _log(tmp_path: Path, map_csv: Path) -> Path:
    files = _files(map_csv)
    lines = []
    for name in NAMES:  # each file read in two requests, 1 KiB each, end to end
        start, _ = files["/" + name]
        lines += [f"{start},1024,read,{100 + len(lines)}", f"{start + 1024},1024,read,1"]
    lines.append("0,512,read,200")
    log = tmp_path / "reads.csv"
    log.write_text("\n".join(lines) + "\n")
    return log


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_trace_output_reads_back_as_the_same_requests(named, tmp_path, fmt):
    map_csv = named
    log = _log(tmp_path, map_csv)
    out = run("trace", map_csv, log, "-f", fmt)
    assert out.exit_code == 0, out.stderr
    written = tmp_path / f"trace.{fmt}"
    written.write_text(out.stdout)
    assert detect_format(out.stdout.splitlines()[:50]) == f"bmap-{fmt}"
    requests, parser = parse(out.stdout.splitlines(), f"bmap-{fmt}")
    assert parser.unparsed == 0
    original, _ = parse(log.read_text().splitlines(), "csv")
    # Each file's two requests were merged into one record: one request of 2 KiB that
    # stands for two.
    assert sum(r.stands_for for r in requests) == len(original)
    assert sum(r.length for r in requests) == sum(r.length for r in original)
    files = _files(map_csv)
    for name in NAMES:
        start, _ = files["/" + name]
        (hit,) = [r for r in requests if r.offset == start]
        assert (hit.length, hit.stands_for, hit.op, hit.status) == (2048, 2, "read", "ok")
    # Named again by bmap trace against the map: the same records, each now one request
    # (bmap trace does not carry a record's count on; the report does).
    again = run("trace", map_csv, written, "-f", fmt)
    assert again.exit_code == 0, again.stderr
    before, after = _records(out.stdout, fmt), _records(again.stdout, fmt)
    assert [r["requests"] for r in before] == ["2"] * len(NAMES) + ["1"]
    assert [r["requests"] for r in after] == ["1"] * len(before)
    drop = [{k: v for k, v in r.items() if k != "requests"} for r in before]
    assert [{k: v for k, v in r.items() if k != "requests"} for r in after] == drop
    assert sorted(r["path"] for r in before if r["type"] == "f") == sorted("/" + n for n in NAMES)


def _records(text: str, fmt: str) -> list[dict[str, str]]:
    """Records as dicts of text (the test's own reading: the csv and json modules)."""
    import csv
    import io

    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return [{k: str(v) for k, v in json.loads(x).items()} for x in text.splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_report_of_trace_output_equals_the_report_of_its_log(named, tmp_path, fmt):
    import pandas as pd

    map_csv = named
    log = _log(tmp_path, map_csv)
    out = run("trace", map_csv, log, "-f", fmt)
    written = tmp_path / f"trace.{fmt}"
    written.write_text(out.stdout)
    tables = {}
    for name, trace in (("log", log), ("records", written)):
        folder = tmp_path / name
        result = run("report", map_csv, "--trace", trace, "--csv", folder, "--no-formula-guard")
        assert result.exit_code == 0, result.stderr
        tables[name] = pd.read_csv(folder / "objects.csv", keep_default_na=False)
    columns = ["path", "bytes_read", "requests", "first_access_rank"]
    by_log = tables["log"][tables["log"]["bytes_read"] > 0][columns]
    by_records = tables["records"][tables["records"]["bytes_read"] > 0][columns]
    assert by_log.values.tolist() == by_records.values.tolist()
    assert sorted(by_log["path"]) == sorted(["", *("/" + n for n in NAMES)])
    assert by_log[by_log["path"] == "/two\nlines.txt"]["requests"].tolist() == [2]


def test_records_of_another_disk_follow_it_unless_told_otherwise(named, tmp_path):
    map_csv = named
    log = _log(tmp_path, map_csv)
    out = run("trace", map_csv, log, "-f", "csv").stdout
    other = tmp_path / "disk2.csv"
    other.write_text(out.replace(",ok,1,", ",ok,2,"))
    result = run("report", map_csv, "--trace", other, "--csv", tmp_path / "x")
    assert result.exit_code == 6 and "disk 2" in result.stderr and "not in the map" in result.stderr
    result = run("report", map_csv, "--trace", other, "-d", "1", "--csv", tmp_path / "x")
    assert result.exit_code == 6 and "of disk 2, not 1" in result.stderr


HOSTILE_CSV = [
    CSV_HEADER,
    "1.5,read,ok,1,f,/dev/sda,file,/x,0-200,0-200,512,1",  # fine
    # 17 and 18 hex digits
    "1.5,read,ok,1,f,/dev/sda,file,/x,0-200," + "f" * 17 + "-" + "f" * 18 + ",512,1",
    "1.5,read,ok,1,f,/dev/sda,file,/x,0-200,8000000000000000-8000000000000200,512,1",  # >= 2**63
    "1.5,read,ok,1,f,/dev/sda,file,/x,0-200,200-100,512,1",  # end before start
    "1.5,read,ok," + "9" * 5000 + ",f,/dev/sda,file,/x,0-200,0-200,512,1",  # a 5000-digit disk
    "1.5,read,ok,1,f,/dev/sda,file,/x,0-200,0-200,512," + "9" * 19,  # a 19-digit count
    "12:00,read,ok,1,f,/dev/sda,file,/x,0-200,0-200,512,1",  # a time that is no number
    "1.5,steal,ok,1,f,/dev/sda,file,/x,0-200,0-200,512,1",  # no such op
    '1.5,read,ok,1,f,/dev/sda,file,"/x,0-200,0-200,512,1',  # a quote never closed
]


def test_hostile_csv_records_are_skipped_and_counted():
    requests, parser = parse(HOSTILE_CSV, "bmap-csv")
    assert [(r.offset, r.length) for r in requests] == [(0, 0x200)]
    assert parser.unparsed == len(HOSTILE_CSV) - 2


def test_hostile_json_records_are_skipped_and_counted():
    good = {"time": 1.0, "op": "read", "status": "ok", "disk": 1, "disk_ranges": [[0, 512]]}
    lines = [json.dumps({**good, "requests": 3})]
    lines.append(json.dumps({**good, "requests": 1, "disk_ranges": [[0, 10**30]]}))
    lines.append(json.dumps({**good, "requests": 1}).replace('"disk": 1', '"disk": ' + "9" * 5000))
    lines.append('{"time":' + "[" * 100_000 + "]" * 100_000 + ',"disk_ranges":[]}')
    lines.append(json.dumps({**good, "requests": 1, "disk_ranges": [[512, 0]]}))
    lines.append(json.dumps({**good, "requests": True}))
    lines.append(json.dumps({**good, "requests": 1, "time": "noon"}))
    lines.append(
        '{"time":NaN,"op":"read","status":"ok","disk":1,"disk_ranges":[[0,1]],"requests":1}'
    )
    lines.append("[1, 2, 3]")
    requests, parser = parse(lines, "bmap-jsonl")
    assert [(r.offset, r.length, r.stands_for) for r in requests] == [(0, 512, 3)]
    assert parser.unparsed == len(lines) - 1


def test_a_report_of_hostile_records_is_a_clean_run(named, tmp_path):
    map_csv = named
    log = tmp_path / "hostile.csv"
    log.write_text("\n".join(HOSTILE_CSV) + "\n")
    result = run("report", map_csv, "--trace", log, "--csv", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert f"{len(HOSTILE_CSV) - 2} line(s) of no known format skipped" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_whole_file_reader_equals_the_line_parser(named, tmp_path):
    """bmap report reads a bmap-csv file with pandas at once; it gives what the line parser
    gives (names with commas, quotes and line breaks included), and gives up (None) on a file
    with any record the line parser would skip."""
    import numpy as np

    from bmap.trace.records import csv_columns
    from bmap.trace.requests import Columns

    out = run("trace", named, _log(tmp_path, named), "-f", "csv").stdout
    by_lines, parser = parse(out.splitlines(), "bmap-csv")
    want = Columns.of(by_lines)
    path = tmp_path / "t.csv"
    path.write_text(out)
    with open(path, "rb") as fh:
        got = csv_columns(fh)
    assert got is not None
    columns, disks = got
    assert disks == parser.disks == {1}
    for field in ("time", "op", "offset", "length", "stands_for"):
        assert np.array_equal(getattr(columns, field), getattr(want, field), equal_nan=True)
    assert [columns.status_names[s] for s in columns.status] == [
        want.status_names[s] for s in want.status
    ]
    for bad in HOSTILE_CSV[2:]:
        path.write_text(out + bad + "\n")
        with open(path, "rb") as fh:
            assert csv_columns(fh) is None, bad
