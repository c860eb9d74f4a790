"""The report's tables against outside truth (debugfs, dumpe2fs, sfdisk), the CSV formula
guard, and ``bmap report`` end to end."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from bmap.images import open_images
from bmap.layers.mapper import map_images
from bmap.trace.logs import parse
from bmap.trace.reads import reads_frame
from bmap.trace.requests import Columns
from reports import csvout, tables
from tests.bmap.cli.test_cli import run
from tests.conftest import sfdisk_json, sha256_file
from tests.ext_truth import debugfs_stat_all, dumpe2fs_header

FILES = ["/README.txt", "/data/big.bin", "/data/odd-size.bin", "/docs/lorem.txt", "/etc/fstab"]


@pytest.fixture(scope="module")
def gpt(samples_dir):
    image = samples_dir / "gpt-512.img"
    (disk,) = open_images([image])
    try:
        frame = map_images([disk]).to_dataframe()
    finally:
        disk.close()
    parts = sfdisk_json(image)["partitions"]
    offset = parts[1]["start"] * 512
    return image, frame, offset, parts


def test_objects_size_extents_and_place_are_debugfs_blocks(gpt):
    image, frame, offset, _ = gpt
    table = tables.objects(frame)
    block = int(dumpe2fs_header(image, offset)["Block size"])
    stats = debugfs_stat_all(image, FILES, offset)
    for path in FILES:
        row = table[(table["type"] == "f") & (table["path"] == path)]
        assert len(row) == 1, path
        row = row.iloc[0]
        runs = sorted(stats[path]["data_extents"], key=lambda r: r.physical)
        merged: list[list[int]] = []
        for r in runs:
            if merged and merged[-1][0] + merged[-1][1] == r.physical:
                merged[-1][1] += r.length
            else:
                merged.append([r.physical, r.length])
        assert row["size"] == sum(r.length for r in runs) * block, path
        assert row["extents"] == len(merged), path
        assert row["first_offset"] == offset + merged[0][0] * block
        assert row["last_offset"] == offset + (merged[-1][0] + merged[-1][1]) * block - 1
        want = (len(merged) - 1) / (row["size"] / 2**20)
        assert row["fragmentation"] == pytest.approx(want, abs=1e-3)
        assert row["inode"] == stats[path]["inode"]


def test_space_agrees_with_dumpe2fs_and_sfdisk(gpt):
    image, frame, offset, parts = gpt
    space = tables.space(frame)
    header = dumpe2fs_header(image, offset)
    block = int(header["Block size"])
    root = space[space["device"] == "/dev/sda2"]
    free = root[(root["type"] == "u") & (root["kind"] == "unallocated")]["bytes"].item()
    assert free == int(header["Free blocks"]) * block
    assert set(root["device_size"]) == {parts[1]["size"] * 512}
    assert set(root["coverage"]) == {1.0}
    disk = space[space["device"] == "/dev/sda"]
    partitioned = disk[disk["type"] == "p"]["bytes"].item()
    assert partitioned == sum(p["size"] for p in parts) * 512
    assert set(disk["coverage"]) == {1.0}
    # Shares of one device's kinds add up to its coverage (innermost lines cover it once).
    assert root["share"].sum() == pytest.approx(1.0, abs=1e-5)
    # The vfat partition is mapped inside (through The Sleuth Kit): covered.
    efi = space[space["device"] == "/dev/sda1"]
    assert set(efi["coverage"]) == {1.0}
    assert efi["bytes"].sum() == parts[0]["size"] * 512


def test_reads_name_each_piece_and_objects_count_them(gpt, tmp_path):
    frame = gpt[1]
    big = frame[(frame["type"] == "f") & (frame["path"] == "/data/big.bin")].iloc[0]
    log = tmp_path / "reads.csv"
    # a read of big.bin's 3rd KiB, then one across the MBR and the GPT header, then big.bin
    log.write_text(f"{big.start + 0x800},1024\n256,512\n{big.start},4096\n")
    requests, _ = parse(log.read_text().splitlines(), "csv")
    reads = reads_frame(frame, Columns.of(requests))
    assert list(reads.columns) == tables.READ_COLUMNS
    assert reads[["request", "kind", "path"]].values.tolist() == [
        [0, "file", "/data/big.bin"],
        [1, "mbr", ""],
        [1, "gpt-header", ""],
        [2, "file", "/data/big.bin"],
    ]
    assert reads["file_offset"].tolist() == [0x800, 256, 0, 0]
    table = tables.objects(frame, reads)
    row = table[table["path"] == "/data/big.bin"].iloc[0]
    assert (row["bytes_read"], row["requests"], row["first_access_rank"]) == (1024 + 4096, 2, 1)
    mbr = table[table["kind"] == "mbr"].iloc[0]
    assert (mbr["bytes_read"], mbr["first_access_rank"]) == (256, 2)
    untouched = table[table["path"] == "/README.txt"].iloc[0]
    assert untouched["bytes_read"] == 0 and pd.isna(untouched["first_access_rank"])


@pytest.mark.parametrize(
    "text", ["=cmd|'calc'!A0", "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("x")']
)
def test_csv_cells_that_would_be_formulas_are_quoted(text, tmp_path):
    frame = pd.DataFrame({"path": [text, "plain"], "size": [-5, 3]})
    path = csvout.write_table(frame, tmp_path / "t.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[1] == ["'" + text, "-5"]  # numbers are never touched
    assert rows[2] == ["plain", "3"]
    csvout.write_table(frame, tmp_path / "raw.csv", guard=False)
    with open(tmp_path / "raw.csv", newline="") as fh:
        assert list(csv.reader(fh))[1] == [text, "-5"]


def test_bmap_report_writes_the_tables_and_leaves_the_image_alone(gpt, tmp_path):
    image, frame, _, _ = gpt
    before = sha256_file(image)
    big = frame[(frame["type"] == "f") & (frame["path"] == "/data/big.bin")].iloc[0]
    log = tmp_path / "boot.csv"
    log.write_text(f"0,512\n{big.start},8192\n")
    out = tmp_path / "tables"
    result = run("report", image, "--trace", log, "--csv", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "extents.csv",
        "findings.csv",
        "objects.csv",
        "reads.csv",
        "space.csv",
    ]
    objects = pd.read_csv(out / "objects.csv", keep_default_na=False)
    assert len(objects) == len(tables.objects(frame))
    row = objects[objects["path"] == "/data/big.bin"].iloc[0]
    assert (int(row["bytes_read"]), int(row["first_access_rank"])) == (8192, 2)
    findings = pd.read_csv(out / "findings.csv")
    assert "message" in findings.columns and findings.empty  # gpt-512 maps with no finding
    extents = pd.read_csv(out / "extents.csv")
    assert len(extents) == len(frame)
    assert sha256_file(image) == before


def test_bmap_report_of_a_map_file_keeps_its_findings(sample, tmp_path):
    image = sample("gpt-damaged-primary")
    bmap_file = tmp_path / "disk.bmap"
    assert run("map", image, "-o", bmap_file).exit_code == 3  # damage found, map written
    result = run("report", bmap_file, "-o", tmp_path / "objects.csv", "--csv", tmp_path / "t")
    assert result.exit_code == 0, result.stderr
    findings = pd.read_csv(tmp_path / "t" / "findings.csv")
    assert findings[["severity", "disk", "offset", "source"]].values.tolist() == [
        ["warning", 1, 0x200, "gpt-header"],
        ["warning", 1, 0x200, "gpt-header"],
    ]
    assert (tmp_path / "objects.csv").read_text() == (tmp_path / "t" / "objects.csv").read_text()


def test_bmap_report_refuses_what_it_cannot_write(gpt, tmp_path):
    image = gpt[0]
    assert run("report", image).exit_code == 2
    result = run("report", image, "-o", tmp_path / "r.txt")
    assert result.exit_code == 2 and ".csv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r.txt").exists()


def test_no_control_character_of_an_image_or_a_log_reaches_the_terminal(tmp_path):
    """Names with ESC, BEL and CR, and a log whose lines carry terminal escapes: what
    ``bmap report`` prints (stdout and stderr) holds no control character but newlines,
    while the CSV keeps the names exactly (quoted where CSV needs it)."""
    from tests.conftest import run_tool, tool

    names = ["\x1b[2Jclear", "bell\x07", "cr\rreturn", "\x1b]0;title\x07"]
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in names:
        (tree / name).write_bytes(b"z" * 5000)
    image = tmp_path / "ctl.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    run_tool(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", "1024", "-d", str(tree), str(image))
    log = tmp_path / "log.csv"
    log.write_text("0,1024\n\x1b[31mnot a line\x1b[0m\n\x1b]0;pwned\x07\n2048,1024\n")
    result = run(
        "report", image, "--trace", log, "--csv", tmp_path / "out", "-o", tmp_path / "r.html"
    )
    assert result.exit_code == 0, result.stderr
    printed = result.stdout + result.stderr
    assert "not a csv line" in printed  # the log's bad lines are named, escaped
    assert not any(ord(c) < 32 and c != "\n" for c in printed), repr(printed)
    with open(tmp_path / "out" / "objects.csv", newline="", encoding="utf-8") as fh:
        paths = {row["path"] for row in csv.DictReader(fh)}
    assert {"/" + n for n in names} <= paths
