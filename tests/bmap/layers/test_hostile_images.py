"""Random, truncated and mutated images give a map with findings or one of bmap's own errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmap.errors import BmapError
from bmap.images import Image
from bmap.layers.mapper import map_images
from bmap.store.mapfile import dumps_map

SAMPLE_NAMES = ["gpt-512", "mbr-extended", "gpt-4k", "ebr-loop", "whole-disk-ext4"]


def map_bytes(data: bytes) -> None:
    """Map an image holding ``data``: anything but a BmapError escaping is a bug."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.img"
        path.write_bytes(data)
        try:
            with Image(path) as image:
                bmap = map_images([image])
        except BmapError:
            return
        dumps_map(bmap)  # and the writer copes with whatever was found
        assert len(bmap) >= 1
        frame = bmap.to_dataframe()
        assert (frame["end"] > frame["start"]).all()
        assert frame["end"].max() <= len(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=8192))
def test_random_bytes(data):
    map_bytes(data)


@pytest.fixture(scope="module")
def heads(samples_dir):
    """Every sample's bytes, read once."""
    result = {}
    for name in SAMPLE_NAMES:
        data = (samples_dir / f"{name}.img").read_bytes()
        result[name] = data
    return result


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(SAMPLE_NAMES), st.integers(1, 1 << 25))
def test_truncated_samples(heads, name, length):
    map_bytes(heads[name][:length])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(SAMPLE_NAMES),
    st.lists(st.tuples(st.integers(0, 0x8000), st.integers(0, 255)), min_size=1, max_size=16),
)
def test_mutated_table_sectors(heads, name, changes):
    """Bytes changed where the MBR, EBRs and GPT live (the first 32 KiB), CRCs left stale."""
    data = bytearray(heads[name])
    for position, value in changes:
        data[position] = value
    map_bytes(bytes(data))


def test_gpt_with_a_million_claimed_entries_is_bounded(samples_dir):
    """A header claiming absurd entry counts is refused, not read."""
    data = bytearray((samples_dir / "gpt-512.img").read_bytes())
    assert data[512:520] == b"EFI PART"
    data[512 + 80 : 512 + 84] = (1 << 30).to_bytes(4, "little")
    map_bytes(bytes(data))


def test_partitions_over_one_range_map_its_contents_once(samples_dir, tmp_path):
    """An MBR (no checksum to keep) whose four entries all point at the ext4 of partition 1:
    four p lines, one finding each for the three that overlap it, and the filesystem's files
    mapped once, under /dev/sda1."""
    data = bytearray((samples_dir / "mbr-extended.img").read_bytes())
    first = data[446:462]
    for slot in range(1, 4):
        data[446 + 16 * slot : 462 + 16 * slot] = first
        data[446 + 16 * slot] = 0  # not bootable: only the range is copied
    image = tmp_path / "stacked.img"
    image.write_bytes(bytes(data))
    with Image(image) as disk:
        bmap = map_images([disk])
    frame = bmap.to_dataframe()
    parts = frame[frame["type"] == "p"]
    assert len(parts) == 4 and parts["start"].nunique() == 1 and parts["end"].nunique() == 1
    files = frame[frame["type"].isin(["f", "d"])]
    assert len(files) > 0 and set(files["device"]) == {"/dev/sda1"}
    overlap = [f for f in bmap.findings if "overlaps /dev/sda1" in f.message]
    assert sorted(f.source for f in overlap) == ["/dev/sda2", "/dev/sda3", "/dev/sda4"]
