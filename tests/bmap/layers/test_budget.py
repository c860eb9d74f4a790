"""The memory budget (``--memory-limit``): a filesystem whose walk would not fit in what is
left of it is not mapped inside, with a finding that counts its inodes in use (checked
against dumpe2fs), and the command exits 9; within the budget nothing changes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bmap.errors import BUDGET_SOURCE, ExitCode
from bmap.images import Image
from bmap.layers import ext
from bmap.layers.mapper import map_images
from bmap.model.blockmap import BASELINE_BYTES, LINE_BYTES, OBJECT_BYTES
from tests.conftest import run_tool


def inodes_in_use(image: Path) -> int:
    """``Inode count - Free inodes`` by dumpe2fs -h."""
    text = run_tool("dumpe2fs", "-h", str(image)).stdout
    count = int(re.search(r"Inode count:\s+(\d+)", text).group(1))
    free = int(re.search(r"Free inodes:\s+(\d+)", text).group(1))
    return count - free


def exact_budget(image: Path) -> int:
    """The smallest budget the walk fits in: start-up, the disk's own line and object (all
    the map holds before the filesystem), and the walk's share per inode in use."""
    held = BASELINE_BYTES + LINE_BYTES + OBJECT_BYTES
    return held + ext.WALK_BYTES + inodes_in_use(image) * ext.BYTES_PER_INODE


def mapped(image: Path, limit: int | None):
    with Image(image) as opened:
        return map_images([opened], memory_limit=limit)


def test_over_the_budget_the_filesystem_is_left_out_with_a_finding(small_ext4: Path) -> None:
    used = inodes_in_use(small_ext4)
    bmap = mapped(small_ext4, exact_budget(small_ext4) - 1)
    budget = [f for f in bmap.findings if f.source.endswith(BUDGET_SOURCE)]
    assert len(budget) == 1, bmap.findings
    assert f"mapping its {used:,} inodes in use" in budget[0].message
    frame = bmap.to_dataframe()
    # The disk and one line saying its content is not mapped; no file, no structure.
    assert sorted(frame["type"]) == ["u", "v"]
    assert frame.loc[frame["type"] == "u", "kind"].tolist() == ["unmapped"]


def test_within_the_budget_the_map_is_the_unlimited_one(small_ext4: Path) -> None:
    within = mapped(small_ext4, exact_budget(small_ext4))
    unlimited = mapped(small_ext4, None)
    assert not [f for f in within.findings if f.source.endswith(BUDGET_SOURCE)]
    assert within.to_dataframe().equals(unlimited.to_dataframe())
    assert (unlimited.to_dataframe()["type"] == "f").sum() > 100


def _bmap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bmap", *args], capture_output=True, text=True, check=False
    )


def test_cli_exit_9_one_line_and_the_map_written(small_ext4: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.bmap"
    done = _bmap("map", str(small_ext4), "-o", str(out), "--memory-limit", "48M")
    assert done.returncode == ExitCode.OVER_BUDGET, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and "memory budget (--memory-limit)" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert f"memory-budget: mapping its {inodes_in_use(small_ext4):,}" in out.read_text()
    # 0 is no limit at all; the default maps this small filesystem.
    for limit in ("0", None):
        args = ["map", str(small_ext4), "-o", str(out)]
        done = _bmap(*args, *(["--memory-limit", limit] if limit else []))
        assert done.returncode == 0, done.stderr


def test_cli_bad_limit_is_a_usage_error(small_ext4: Path, tmp_path: Path) -> None:
    done = _bmap("map", str(small_ext4), "-o", str(tmp_path / "m"), "--memory-limit", "lots")
    assert done.returncode == ExitCode.USAGE
    assert "--memory-limit" in done.stderr and "Traceback" not in done.stderr
