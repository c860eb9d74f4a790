"""Images open read-only and views copy nothing and never read outside their range."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmap.errors import ImageError
from bmap.images import Image, RangeStream, open_images


def _access_mode(fd: int) -> int:
    """The open flags the kernel recorded for the descriptor (octal in /proc/self/fdinfo)."""
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        flags = next(line for line in fh if line.startswith("flags:")).split()[1]
    return int(flags, 8) & os.O_ACCMODE


def test_image_is_opened_read_only(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"x" * 4096)
    with Image(path) as image:
        assert _access_mode(image.fd) == os.O_RDONLY
        assert image.size == 4096
        assert image.pread(4090, 100) == b"x" * 6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
    ],
)
def test_bad_paths_raise_one_clear_error(tmp_path, make, message):
    path = make(tmp_path / "x.img")
    with pytest.raises(ImageError, match=message) as info:
        Image(path)
    assert str(path) in str(info.value)


def test_character_device_is_refused():
    with pytest.raises(ImageError, match="not a regular file or block device"):
        Image("/dev/null")


def test_open_images_numbers_in_order_and_closes_on_failure(tmp_path):
    a = tmp_path / "a.img"
    b = tmp_path / "b.img"
    a.write_bytes(b"a" * 512)
    b.write_bytes(b"b" * 512)
    images = open_images([a, b])
    assert [(i.number, i.path.name) for i in images] == [(1, "a.img"), (2, "b.img")]
    for image in images:
        image.close()
    with pytest.raises(ImageError, match="missing"):
        open_images([a, tmp_path / "missing"])


def test_views_of_views_collapse_onto_the_image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 16)
    with Image(path) as image:
        outer = image.stream().view(256, 1024)
        inner = outer.view(16, 32)
        assert inner.source is image
        assert inner.offset == 272
        assert inner.read() == (bytes(range(256)) * 16)[272:304]
        assert inner.read() == b""
        inner.seek(-4, os.SEEK_END)
        assert inner.read(100) == (bytes(range(256)) * 16)[300:304]
        # A view that asks for more than its parent holds is clipped to the parent.
        assert outer.view(1000, 500).size == 24


@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 400), st.integers(0, 400))
def test_range_stream_reads_exactly_its_window(offset, size, pos, count):
    data = bytes(i % 251 for i in range(1024))

    class Source:
        def pread(self, o: int, n: int) -> bytes:
            assert o >= 0 and o + n <= offset + size, "read outside the window"
            return data[o : o + n]

    view = RangeStream(Source(), offset, size)
    view.seek(pos)
    assert view.read(count) == data[offset : offset + size][pos : pos + count]
