"""``--format parquet`` on the command line: written where asked (never to stdout), and read by
``lookup``, ``trace`` and ``report`` with the same answers as the same map in CSV."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bmap.cli import main
from bmap.errors import ExitCode
from bmap.store.mapfile import read_map
from tests.bmap.cli.test_cli import one_line_error
from tests.bmap.store.test_parquet import hostile_files
from tests.conftest import sha256_file


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def maps(sample, tmp_path_factory):
    """The whole-disk ext4 sample (files, directories, metadata) mapped to csv, text and
    Parquet by ``bmap map``."""
    out = tmp_path_factory.mktemp("maps")
    image = sample("whole-disk-ext4")
    paths = {}
    for fmt in ("csv", "bmap", "parquet"):
        paths[fmt] = out / f"m.{fmt}"
        result = run("map", image, "--sha256", "-o", paths[fmt])
        assert result.exit_code == 0, result.stderr
        assert f"({fmt})" in result.stderr
    return paths


def test_map_writes_parquet_by_extension_and_by_option(sample, tmp_path, maps):
    assert maps["parquet"].read_bytes()[:4] == b"PAR1"
    assert pq.read_schema(maps["parquet"]).field("disk").type == "uint16"
    image = tmp_path / "disk.img"
    image.write_bytes(sample("gpt-512").read_bytes())
    result = run("map", image, "-f", "parquet")
    assert result.exit_code == 0, result.stderr
    default = tmp_path / "disk.img.parquet"  # the default name follows the format
    assert default.read_bytes()[:4] == b"PAR1"
    assert read_map(default).iloc[0]["end"] == image.stat().st_size


@pytest.mark.parametrize("args", [("-f", "parquet", "-o", "-"), ("--format=parquet", "-o-")])
def test_parquet_to_stdout_is_a_usage_error(sample, args):
    result = run("map", sample("gpt-512"), *args)
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert "parquet" in result.stderr and "not to stdout" in result.stderr


def test_lookup_answers_as_with_the_csv_map(maps):
    frame = read_map(maps["csv"])
    files = frame[frame["type"] == "f"]
    offsets = ["0", "0x400", "0x1000", str(int(files.iloc[0]["start"]) + 5)]
    offsets += [f"{int(files.iloc[-1]['start']):#x}+0x2000"]
    answers = {}
    for fmt in ("csv", "parquet"):
        result = run("lookup", maps[fmt], *offsets)
        assert result.exit_code == 0, result.stderr
        answers[fmt] = result.stdout
    assert answers["parquet"] == answers["csv"]
    assert files.iloc[0]["path"] in answers["parquet"]


def test_lookup_of_the_text_map_names_the_same_objects(maps):
    """The text map has no file offsets; the objects named are the same."""
    texts = {}
    for fmt in ("bmap", "parquet"):
        result = run("lookup", "--json", maps[fmt], "0x400", "0x2000")
        assert result.exit_code == 0, result.stderr
        texts[fmt] = result.stdout
    import json

    def objects(text):
        return [
            (h["type"], h["device"], h["kind"], h["path"])
            for q in json.loads(text)
            for h in q["objects"]
        ]

    assert objects(texts["parquet"]) == objects(texts["bmap"])


def _log(tmp_path, frame):
    """A CSV I/O log reading the start of every file and the superblock."""
    files = frame[frame["type"] == "f"].drop_duplicates("path")
    lines = ["offset,length,op", "0x400,0x400,read"]
    lines += [f"{int(s)},4096,read" for s in files["start"].head(20)]
    log = tmp_path / "reads.csv"
    log.write_text("\n".join(lines) + "\n")
    return log


def test_trace_answers_as_with_the_csv_map(maps, tmp_path):
    log = _log(tmp_path, read_map(maps["csv"]))
    for options in ([], ["-f", "csv"], ["-f", "jsonl"], ["--summary"]):
        outputs = {}
        for fmt in ("csv", "parquet"):
            result = run("trace", *options, maps[fmt], log)
            assert result.exit_code == 0, result.stderr
            outputs[fmt] = result.stdout
        assert outputs["parquet"] == outputs["csv"], options
        assert "/etc/fstab" in outputs["parquet"], options


def test_report_answers_as_with_the_csv_map_and_keeps_the_findings(maps, tmp_path):
    log = _log(tmp_path, read_map(maps["csv"]))
    tables = {}
    for fmt in ("csv", "bmap", "parquet"):
        folder = tmp_path / fmt
        result = run("report", maps[fmt], "--trace", log, "--csv", folder)
        assert result.exit_code == 0, result.stderr
        tables[fmt] = {p.name: p.read_text() for p in sorted(folder.iterdir())}
    assert tables["parquet"] == tables["csv"]
    assert set(tables["parquet"]) >= {"objects.csv", "extents.csv", "space.csv", "findings.csv"}
    # The findings come from the map's metadata, as the text map's come from its header.
    assert tables["parquet"]["findings.csv"] == tables["bmap"]["findings.csv"]


def test_report_html_names_the_image_and_its_sha256(maps, sample, tmp_path):
    out = tmp_path / "r.html"
    result = run("report", maps["parquet"], "-o", out)
    assert result.exit_code == 0, result.stderr
    html = out.read_text()
    assert sha256_file(sample("whole-disk-ext4")) in html
    assert "whole-disk-ext4.img" in html


def test_findings_of_a_damaged_disk_reach_the_report(sample, tmp_path):
    parquet = tmp_path / "d.parquet"
    result = run("map", sample("gpt-damaged-primary"), "-o", parquet)
    assert result.exit_code == ExitCode.DAMAGED
    result = run("report", parquet, "--csv", tmp_path / "t")
    assert result.exit_code == 0, result.stderr
    findings = (tmp_path / "t" / "findings.csv").read_text()
    assert "backup GPT" in findings and "gpt-header" in findings


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from bmap.store.mapfile import write_map
    from tests.bmap.store.test_mapfile import hostile_map

    path = tmp_path_factory.mktemp("good") / "good.parquet"
    write_map(hostile_map(), path, "parquet")
    return path


def test_hostile_parquet_files_are_exit_6_with_one_line(good, tmp_path):
    log = tmp_path / "r.csv"
    log.write_text("offset,length\n0,512\n")
    for name, (path, _) in hostile_files(good, tmp_path).items():
        for args in (
            ("lookup", path, "0"),
            ("trace", path, log),
            ("report", path, "--csv", tmp_path / "out"),
        ):
            result = run(*args)
            assert result.exit_code == ExitCode.BAD_MAP, (name, args, result.stderr)
            one_line_error(result, path.name)


def test_names_that_are_not_utf8_in_every_reader(tmp_path):
    """A device and a path that are not UTF-8, through lookup, trace and report of each map
    format: pandas 3 with pyarrow (a dependency now) would make them Arrow strings, which
    refuse such bytes, wherever it groups by them."""
    from bmap.model.blockmap import ImageInfo, MapBuilder
    from bmap.model.escape import name_from_bytes
    from bmap.store.mapfile import write_map

    b = MapBuilder()
    b.add_object_extent("v", name_from_bytes(b"/dev/s\xffa"), 1, 0, 0x100000)
    b.add_object_extent("p", name_from_bytes(b"/dev/s\xffa1"), 1, 0x800, 0x100000)
    obj = b.add_object("f", name_from_bytes(b"/dev/s\xffa1"), path=name_from_bytes(b"/x\xfe"))
    b.add_extent(obj, 1, 0x1000, 0x2000, 0)
    bmap = b.build([ImageInfo(1, name_from_bytes(b"d\xff.img"), 0x100000)])
    log = tmp_path / "r.csv"
    log.write_text("offset,length\n0x1000,512\n0x900,16\n")
    objects = {}
    for fmt in ("bmap", "csv", "parquet"):
        path = tmp_path / f"m.{fmt}"
        write_map(bmap, path, fmt)
        result = run("lookup", path, "0x1000")
        assert result.exit_code == 0, result.stderr
        assert "/dev/s\\xffa1 /x\\xfe" in result.stdout
        result = run("trace", "-f", "csv", path, log)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.count("/dev/s") == 2
        result = run("report", path, "--trace", log, "--csv", tmp_path / fmt)
        assert result.exit_code == 0, result.stderr
        objects[fmt] = (tmp_path / fmt / "objects.csv").read_bytes()
        assert b"/x\xfe" in objects[fmt]
    assert objects["parquet"] == objects["csv"]
