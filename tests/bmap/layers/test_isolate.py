"""The Sleuth Kit in a child process (bmap/layers/isolate.py): a crash or a wait on itself in
its C code becomes a finding, and an isolated map is the map made in process.

The crashes are real: the crafted UFS1 of tests/hostile/craft.py whose fs_inopb is 0 makes
TSK divide by zero (SIGFPE), and the ISO9660 whose path tables are empty makes it wait
forever on its own lock, once the guard bmap puts in front of each is taken away here.
"""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import numpy as np
import pytest

from bmap.images import Image
from bmap.layers import isolate, tsk
from bmap.layers.mapper import map_images
from bmap.model.blockmap import MapBuilder
from bmap.store.mapfile import dumps_map
from tests.hostile import craft
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)
from tests.ufs_images import BUILDERS as _UFS_BUILDERS  # noqa: F401 - joins tsk_images

pytestmark = pytest.mark.skipif(isolate.in_process(), reason="needs os.fork")


def _map(path: Path):
    with Image(path) as image:
        return map_images([image])


class _Bases:
    """The crafted cases' bases (tests/hostile/craft.py): the Sleuth Kit test images."""

    def __init__(self, factory) -> None:
        self.tsk = lambda name: Path(factory(name))


def _crafted(case, tsk_image_factory, tmp_path: Path) -> Path:
    """The input image of a crafted case of tests/hostile/craft.py."""
    return craft.CASES[case](_Bases(tsk_image_factory), tmp_path).inputs[0]


def _messages(bmap) -> list[str]:
    return [f.message for f in bmap.findings]


def test_a_crash_in_tsk_becomes_a_finding(tsk_image_factory, tmp_path, monkeypatch):
    img = _crafted("ufs_zero_inodes_per_block", tsk_image_factory, tmp_path)
    # Without the overlay that shows TSK a sound fs_inopb, TSK divides by 0.
    monkeypatch.setattr(tsk, "_ufs_shown_to_tsk", lambda layout, stream: ({}, [], None))
    bmap = _map(img)
    said = [m for m in _messages(bmap) if "The Sleuth Kit is not given the ufs" in m]
    assert said and "it crashed on this volume (killed by SIGFPE)" in said[0], _messages(bmap)
    frame = bmap.to_dataframe()
    # The volume is mapped as one TSK refuses: its structures from bmap's own reading.
    assert {"ufs-superblock", "ufs-cg", "ufs-inodes"} <= set(frame["kind"].dropna())
    assert not (frame["type"] == "f").any()


def test_tsk_waiting_on_itself_is_ended(tsk_image_factory, tmp_path, monkeypatch):
    img = _crafted("iso_empty_path_table", tsk_image_factory, tmp_path)
    monkeypatch.setattr(tsk, "_root_is_orphan_dir", lambda fs: False)
    monkeypatch.setattr(isolate, "STALL_SECONDS", 1.0)
    bmap = _map(img)
    said = [m for m in _messages(bmap) if "The Sleuth Kit is not given the iso9660" in m]
    assert said and "it stalled on this volume (used no CPU for 1 s" in said[0], _messages(bmap)
    assert "iso-volume-descriptor" in set(bmap.to_dataframe()["kind"].dropna())


@pytest.mark.parametrize("name", ["fat32", "ntfs", "ufs1"])
def test_an_isolated_map_is_the_map_made_in_process(tsk_image_factory, monkeypatch, name):
    path = tsk_image_factory(name)
    isolated = dumps_map(_map(path))
    monkeypatch.setenv("BMAP_IN_PROCESS", "1")
    assert isolate.in_process()
    assert dumps_map(_map(path)) == isolated
    assert " f " in isolated and isolated.count("\n") > 30


def test_what_the_child_raises_is_raised_here_after_its_work():
    builder = MapBuilder()

    def layer(into: MapBuilder) -> None:
        obj = into.add_object("p", "/dev/sda1")
        into.add_extents(obj, 1, np.array([0, 4096]), np.array([512, 8192]))
        raise ValueError("from the child")

    with pytest.raises(ValueError, match="from the child"):
        isolate.run_isolated(layer, builder, None)
    assert len(builder.objects) == 1 and builder.extent_count() == 2


def test_the_child_result_and_object_numbers_come_back():
    builder = MapBuilder()
    builder.add_object("v", "/dev/sda")

    def layer(into: MapBuilder) -> list[int]:
        return [into.add_object("p", f"/dev/sda{n}") for n in (1, 2)]

    assert isolate.run_isolated(layer, builder, None) == [1, 2]
    assert len(builder.objects) == 3


def test_a_record_that_cannot_be_written_is_a_failure_and_adds_nothing():
    builder = MapBuilder()

    def layer(into: MapBuilder) -> None:
        # In the child only: files may grow to 1 KiB, and a write past that fails (EFBIG)
        # instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        for n in range(1000):
            into.add_object("p", f"/dev/sda{n}")

    with pytest.raises(isolate.Isolated) as info:
        isolate.run_isolated(layer, builder, None)
    assert info.value.how == "failed" and "could not be written" in info.value.why
    assert len(builder.objects) == 0


def test_a_child_past_its_cpu_budget_is_ended():
    def layer(into: MapBuilder) -> None:
        while True:
            pass

    with pytest.raises(isolate.Isolated) as info:
        isolate.run_isolated(layer, MapBuilder(), None, cpu_budget=1.0)
    assert info.value.how == "overran" and "more than 1 s of CPU" in info.value.why


def test_tsk_looping_past_its_budget_is_ended(tsk_image_factory, tmp_path, monkeypatch):
    """An unused root inode of 3.26 TiB with no tree: TSK builds its run list a block at a
    time (minutes) once bmap stops showing it shorter."""
    img = _crafted("ufs_unused_root_3tib", tsk_image_factory, tmp_path)
    monkeypatch.setattr(tsk.ufs, "tree_overruns", lambda read, layout, size: [])
    monkeypatch.setattr(tsk, "CPU_SECONDS", 2.0)
    monkeypatch.setattr(tsk, "CPU_SECONDS_PER_GIB", 0.0)
    bmap = _map(img)
    said = [m for m in _messages(bmap) if "The Sleuth Kit is not given the ufs" in m]
    assert said and "it ran too long on this volume (used more than 2 s of CPU)" in said[0]
    assert "ufs-inodes" in set(bmap.to_dataframe()["kind"].dropna())
