"""Progress on long work: the library's callback (``map_images(progress=...)``), checked
against what e2fsprogs says of the filesystem, and the CLI's bar, drawn on a terminal only."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bmap.images import Image
from bmap.layers.mapper import map_images
from tests.conftest import SMALL_EXT4_DIRS as DIRS
from tests.conftest import SMALL_EXT4_FILES as FILES
from tests.conftest import run_tool
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_images_cache_fixture,
    lvm_whole_image_fixture,
)


def groups_with_inodes(image: Path) -> int:
    """Groups whose inode table holds inodes, by dumpe2fs: not INODE_UNINIT, and with fewer
    unused inodes than the group has."""
    text = run_tool("dumpe2fs", str(image)).stdout
    per_group = int(re.search(r"Inodes per group:\s+(\d+)", text).group(1))
    count = 0
    for block in re.split(r"\nGroup \d+:", text)[1:]:
        if "INODE_UNINIT" in block.split("\n")[0]:
            continue
        unused = re.search(r"(\d+) unused inodes", block)
        if unused is None or int(unused.group(1)) < per_group:
            count += 1
    return count


def test_map_images_reports_each_stage_to_its_end(small_ext4: Path) -> None:
    assert groups_with_inodes(small_ext4) > 1
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with Image(small_ext4) as image:
        bmap = map_images(
            [image], with_sha256=True, progress=lambda s, d, t: seen[s].append((d, t))
        )
    assert len(bmap) > FILES // 2
    for stage, calls in seen.items():
        dones = [d for d, _ in calls]
        assert dones == sorted(dones), stage
        assert len({t for _, t in calls}) == 1, f"{stage}: the total changed"
        assert calls[-1][0] == calls[-1][1], f"{stage}: did not reach its total"
    device = bmap.objects.devices[0]
    assert seen["hashing disk 1"][-1][1] == small_ext4.stat().st_size
    assert seen[f"{device}: inode tables"][-1][1] == groups_with_inodes(small_ext4)
    # Every name: the root, lost+found, the directories and the files.
    assert seen[f"{device}: names"][-1][1] == 2 + DIRS + FILES
    assert seen[f"{device}: directory blocks"][-1][1] >= DIRS + 2


def _bmap(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bmap", *args], text=True, **kwargs)


def test_no_bar_in_a_pipe(small_ext4: Path, tmp_path: Path) -> None:
    done = _bmap(
        "map", "--sha256", str(small_ext4), "-o", str(tmp_path / "m.bmap"), capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "inode tables" not in done.stderr
    assert done.stderr.startswith("bmap: wrote"), done.stderr


def test_bars_on_a_terminal(small_ext4: Path, tmp_path: Path) -> None:
    """stderr on a pseudo-terminal, the bar's delay set to 0: each stage of more than one step
    gets its bar (a stage done at its first report, such as the names of a small
    filesystem, draws none)."""
    script = (
        "import sys; from bmap.cli import commands; commands._LazyProgress.DELAY = 0; "
        f"sys.argv = ['bmap', 'map', '--sha256', {str(small_ext4)!r}, '-o', "
        f"{str(tmp_path / 'm.bmap')!r}]; commands.main()"
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[3],
    )
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes with the process
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(60) == 0, out
    text = out.decode("utf-8", "replace")
    for stage in ("hashing disk 1", "inode tables"):
        assert stage in text, text
    assert "names" not in text, text
    assert "100%" in text, text


def test_each_logical_volume_is_a_step(lvm_whole_image) -> None:
    """The volume group's stage counts its LVs, as lvm2 reported them when the image was
    made, to the last."""
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    images = [Image(path) for path in lvm_whole_image.images]
    try:
        map_images(images, progress=lambda s, d, t: seen[s].append((d, t)))
    finally:
        for image in images:
            image.close()
    calls = seen[f"volume group {lvm_whole_image.vg}: logical volumes"]
    assert [d for d, _ in calls] == list(range(1, len(lvm_whole_image.lv_sizes) + 1))
    assert {t for _, t in calls} == {len(lvm_whole_image.lv_sizes)}
