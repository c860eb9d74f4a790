"""The bmap command: outputs, exit codes, one-line errors, and untouched input images."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bmap.cli import main, parse_query, parse_size
from bmap.errors import ExitCode
from bmap.store.mapfile import read_map
from tests.conftest import sfdisk_json, sha256_file


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bmap: ")
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in lines[0]


def test_map_writes_default_output_and_summary(sample, tmp_path):
    src = sample("gpt-512")
    image = tmp_path / "disk.img"
    image.write_bytes(src.read_bytes())
    result = run("map", image)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "disk.img.bmap"
    assert out.exists()
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"bmap: wrote {out} (bmap): 1 disk(s)")
    assert "32.0 MiB of 32.0 MiB covered" in summary
    frame = read_map(out)
    truth = sfdisk_json(image)
    assert len(frame[frame["type"] == "p"]) == len(truth["partitions"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_map_format_from_extension_and_stdout(sample, tmp_path, fmt):
    out = tmp_path / f"m.{fmt}"
    result = run("map", sample("mbr-extended"), "-o", out)
    assert result.exit_code == 0
    text = tmp_path / "m.bmap"
    run("map", sample("mbr-extended"), "-o", text)
    same = ["disk", "start", "end", "type", "device", "kind", "path"]
    assert read_map(out)[same].equals(read_map(text)[same])
    result = run("map", sample("mbr-extended"), "-o", "-", "--format", fmt)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("disk,start" if fmt == "csv" else "{")


def test_map_two_disks_with_sha256(sample, tmp_path):
    out = tmp_path / "two.bmap"
    result = run("map", sample("gpt-512"), sample("mbr-extended"), "-o", out, "--sha256")
    assert result.exit_code == 0
    text = out.read_text()
    assert f"sha256={sha256_file(sample('mbr-extended'))}" in text
    assert "2 0 2000000 v /dev/sdb" in text


def test_info_tree_and_json(sample):
    result = run("info", sample("mbr-extended"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("/dev/sda ")
    assert any(line.startswith("└─ /dev/sda4") for line in lines)
    assert any(line.startswith("   └─ /dev/sda7") for line in lines)
    assert "swap" in next(line for line in lines if "/dev/sda2" in line)

    result = run("info", "--json", sample("mbr-extended"))
    data = json.loads(result.stdout)
    truth = sfdisk_json(sample("mbr-extended"))
    parts = data["disks"][0]["partitions"]
    assert [(p["start_sector"], p["sectors"], p["type"]) for p in parts] == [
        (p["start"], p["size"], p["type"]) for p in truth["partitions"]
    ]
    assert parts[0]["content"]["kind"] == "ext4"


def test_info_all_lists_structures_and_gaps(sample):
    result = run("info", "--all", sample("gpt-512"))
    assert "(gpt-backup-header)" in result.stdout
    assert "unpartitioned" in result.stdout


def test_lookup_innermost_first_with_offsets(sample, tmp_path):
    out = tmp_path / "m.csv"
    run("map", sample("gpt-512"), "-o", out)
    result = run("lookup", out, "0x1600400", "1K", "0x1ffff00+0x200")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    block = text.split("disk 1 0x400:")[0]
    assert block.splitlines()[1].split()[:4] == ["m", "/dev/sda3", "swap", "at"]
    assert "at 0x400" in block.splitlines()[1]
    assert "p /dev/sda3" in block.splitlines()[2]
    assert "gpt-entries" in text.split("disk 1 0x400:")[1]
    result = run("lookup", "--json", out, "0x1600400")
    hits = json.loads(result.stdout)[0]["objects"]
    assert [(h["type"], h["device"], h["offset"]) for h in hits] == [
        ("m", "/dev/sda3", 0x400),
        ("p", "/dev/sda3", 0x400),
        ("v", "/dev/sda", 0x1600400),
    ]


def test_lookup_of_a_byte_under_many_lines_shows_the_innermost_and_the_containers(tmp_path):
    """A hostile map stacks 20,000 file lines over one range inside a partition: lookup shows
    the innermost --max-hits of them, then the partition and the disk, and counts the rest."""
    lines = ["1 0 100000 v /dev/sda", "1 1000 9000 p /dev/sda1"]
    lines += [f"1 2000 3000 f /dev/sda1 /f{i}" for i in range(20_000)]
    lines.append("1 2800 2900 f /dev/sda1 /small")
    stacked = tmp_path / "stacked.bmap"
    stacked.write_text("\n".join(lines) + "\n")
    result = run("lookup", stacked, "0x2880", "--max-hits", "3")
    assert result.exit_code == 0, result.stderr
    shown = [line.split()[:3] for line in result.stdout.splitlines()[1:]]
    assert shown == [
        ["f", "/dev/sda1", "/small"],
        ["f", "/dev/sda1", "/f0"],
        ["f", "/dev/sda1", "/f1"],
        ["p", "/dev/sda1", "at"],
        ["v", "/dev/sda", "at"],
        ["...", "and", "19998"],
    ]
    everything = json.loads(run("lookup", stacked, "0x2880", "--json", "--max-hits", "0").stdout)
    assert len(everything[0]["objects"]) == 20_003 and everything[0]["more"] == 0


@pytest.mark.parametrize(
    "query", ["0x" + "f" * 17, "9" * 5000, "0x7ffffffffffffffe+4", "8191P", "9223372036854775807"]
)
def test_lookup_offsets_past_int64_are_usage_errors(tmp_path, query):
    stacked = tmp_path / "m.bmap"
    stacked.write_text("1 0 80000000000000 v /dev/sda\n")  # a disk of 2**55 bytes
    result = run("lookup", stacked, query)
    assert result.exit_code == 2, result.stderr
    assert "Invalid value for OFFSET" in result.stderr and len(result.stderr) < 400
    past = run("lookup", stacked, "0x40000000000000")  # 2**54: past 1 PiB, inside the disk
    assert past.exit_code == 0 and "v /dev/sda" in past.stdout


def test_lookup_on_an_image_maps_it_on_the_fly(sample):
    result = run("lookup", sample("mbr-extended"), "2048s")
    assert result.exit_code == 0
    assert "p /dev/sda1" in result.stdout


@pytest.mark.parametrize(
    "text, value",
    [
        ("1048576", 1048576),
        ("0x100000", 1048576),
        ("1M", 1048576),
        ("1MiB", 1048576),
        ("4k", 4096),
        ("2048s", 1048576),
        ("1G", 1 << 30),
    ],
)
def test_offsets(text, value):
    assert parse_size(text) == value
    assert parse_query(f"{text}+0x10") == (value, value + 16)


@pytest.mark.parametrize("text", ["", "-1", "1.5M", "0xZZ", "12 parsecs", "1X"])
def test_bad_offsets(text):
    with pytest.raises(ValueError):
        parse_size(text)


# Bad input: one clear line naming the file, a documented exit code, never a traceback.


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nope.img"
    for command in ("map", "info"):
        result = run(command, missing)
        assert result.exit_code == ExitCode.UNREADABLE
        one_line_error(result, str(missing), "no such file")


def test_directory(tmp_path):
    result = run("map", tmp_path)
    assert result.exit_code == ExitCode.UNREADABLE
    one_line_error(result, str(tmp_path), "directory")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    result = run("info", empty)
    assert result.exit_code == ExitCode.UNREADABLE
    one_line_error(result, str(empty), "empty")


def test_zero_image_is_not_a_disk(sample, tmp_path):
    out = tmp_path / "z.bmap"
    result = run("map", sample("zero"), "-o", out)
    assert result.exit_code == ExitCode.NOT_A_DISK
    one_line_error(result, "zero.img", "not a disk image", "all zero")
    assert not out.exists()


def test_random_bytes_are_not_a_disk(tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes((i * 7919) % 251 for i in range(1 << 16)))
    result = run("map", junk, "-o", tmp_path / "j.bmap")
    assert result.exit_code == ExitCode.NOT_A_DISK
    one_line_error(result, "junk.img", "not a disk image")


def test_tiny_file_is_not_a_disk(tmp_path):
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"\x55\xaa" * 150)
    result = run("map", tiny, "-o", tmp_path / "t.bmap")
    assert result.exit_code == ExitCode.NOT_A_DISK
    one_line_error(result, "tiny.img", "only 300 bytes")


@pytest.mark.parametrize(
    "name, word",
    [("ebr-loop", "loop"), ("truncated", "past the end"), ("gpt-damaged-primary", "backup GPT")],
)
def test_damage_is_reported_and_the_map_still_written(sample, tmp_path, name, word):
    out = tmp_path / f"{name}.bmap"
    result = run("map", sample(name), "-o", out)
    assert result.exit_code == ExitCode.DAMAGED
    assert out.exists()
    assert word in result.stderr
    assert "# finding" in out.read_text()
    assert "Traceback" not in result.stderr


def test_refuses_to_write_the_map_over_an_input(sample, tmp_path):
    image = tmp_path / "x.img"
    image.write_bytes(sample("gpt-512").read_bytes())
    before = sha256_file(image)
    result = run("map", image, "-o", image)
    assert result.exit_code == ExitCode.UNREADABLE
    one_line_error(result, "refusing")
    assert sha256_file(image) == before


def test_lookup_bad_map_and_bad_disk(tmp_path, sample):
    bad = tmp_path / "bad.bmap"
    bad.write_text("this is not a map\n")
    result = run("lookup", bad, "0")
    assert result.exit_code == ExitCode.BAD_MAP
    one_line_error(result, "bad.bmap")
    good = tmp_path / "good.bmap"
    run("map", sample("gpt-512"), "-o", good)
    result = run("lookup", "--disk", "3", good, "0")
    assert result.exit_code == ExitCode.BAD_MAP
    one_line_error(result, "no disk 3")
    result = run("lookup", good, "12 parsecs")
    assert result.exit_code == ExitCode.USAGE


def test_no_command_changes_any_input(sample, tmp_path):
    images = [
        sample(n)
        for n in (
            "gpt-512",
            "mbr-extended",
            "ebr-loop",
            "truncated",
            "zero",
            "gpt-damaged-primary",
            "gpt-4k",
            "whole-disk-ext4",
        )
    ]
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in images}
    for p in images:
        run("map", p, "-o", tmp_path / "out.bmap", "--sha256")
        run("map", p, "-o", tmp_path / "out.csv")
        run("info", "--all", p)
        run("info", "--json", p)
        run("lookup", p, "0", "1M+1M")
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in images} == before


def test_python_dash_m_and_internal_errors_stay_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bmap", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "bmap" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "bmap", "map", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert result.returncode == ExitCode.UNREADABLE
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_c1_control_characters_of_a_name_never_reach_the_terminal(tmp_path):
    """U+009B (CSI) is a C1 control some terminals act on; the text map keeps it (its escaping
    covers C0 and DEL), lookup and trace text show it as \\x9b."""
    name = "/a\u009b[2Jb"
    stacked = tmp_path / "m.bmap"
    stacked.write_text(f"1 0 100000 v /dev/sda\n1 1000 2000 f /dev/sda {name}\n", "utf-8")
    shown = run("lookup", stacked, "0x1100")
    assert shown.exit_code == 0 and "/a\\x9b[2Jb" in shown.stdout
    log = tmp_path / "log.csv"
    log.write_text("4096,512\n")
    traced = run("trace", stacked, log)
    assert traced.exit_code == 0 and "/a\\x9b[2Jb" in traced.stdout
    for text in (shown.stdout, traced.stdout):
        assert not any(0x80 <= ord(c) <= 0x9F or (ord(c) < 0x20 and c != "\n") for c in text)
