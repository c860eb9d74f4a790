"""The plug-in points: a content mapper, a log format and an image format added by a table
line and a module, with nothing else of bmap changed."""

from __future__ import annotations

import pytest

from bmap import images
from bmap.errors import ImageError, NotADiskError
from bmap.images import ContainerInfo, Image, ImageFormat, VirtualDisk, open_images
from bmap.layers import registry
from bmap.layers.mapper import map_images
from bmap.store.mapfile import dumps_map
from bmap.trace import logs
from bmap.trace.requests import Request, TraceParser


def test_a_content_mapper_is_a_module_and_a_registry_line(sample, monkeypatch):
    """gpt-512's EFI partition is vfat: with no line for vfat in the table, bmap does not map
    it; one line in the table makes the mapper hand it to a new module, and the map names its
    boot sector."""
    without = tuple(e for e in registry.CONTENT_MAPPERS if "vfat" not in e.kinds)
    monkeypatch.setattr(registry, "CONTENT_MAPPERS", without)
    with Image(sample("gpt-512")) as image:
        before = map_images([image])
    assert any("holds vfat" in f.message for f in before.findings)
    entry = registry.Entry("tests.bmap.layers.plugin_fat_boot", ("vfat",))
    monkeypatch.setattr(registry, "CONTENT_MAPPERS", (*without, entry))
    with Image(sample("gpt-512")) as image:
        after = map_images([image])
    assert not any("holds vfat" in f.message for f in after.findings)
    assert "1 100000 100200 m /dev/sda1 fat-boot-sector\n" in dumps_map(after)
    # Everything else is as it was.
    gone = set(dumps_map(before).splitlines()) - set(dumps_map(after).splitlines())
    assert all("holds vfat" in line for line in gone), gone


class _Pairs(TraceParser):
    """``R OFFSET LENGTH`` lines (hex): a log format only this test knows."""

    name = "pairs"

    @classmethod
    def recognises(cls, line: str) -> bool:
        return line.startswith("R 0x")

    def feed(self, number: int, line: str) -> list[Request]:
        _, offset, length = line.split()
        return [Request(None, "read", int(offset, 16), int(length, 16), "ok", 0, number)]


def test_a_log_format_is_a_module_and_a_registry_line(monkeypatch):
    monkeypatch.setitem(logs.LOG_FORMATS, "pairs", _Pairs)
    lines = ["R 0x400 0x200", "R 0x1000 0x10"]
    assert logs.detect_format(lines) == "pairs"
    requests, parser = logs.parse(lines, "pairs")
    assert [(r.offset, r.length) for r in requests] == [(0x400, 0x200), (0x1000, 0x10)]
    assert parser.unparsed == 0


class _Skip4K:
    """A made-up container: an 8-byte magic, then 4 KiB of header, then the raw disk."""

    MAGIC = b"SKIP4K\0\0"

    @staticmethod
    def recognises(head: bytes) -> bool:
        return head.startswith(_Skip4K.MAGIC)

    @staticmethod
    def open(file: Image) -> VirtualDisk:
        info = ContainerInfo("skip4k", virtual_size=file.size - 4096, file_size=file.size)
        return VirtualDisk(_Skipped(file), info, file=file)


class _Skipped:
    """The reader of the virtual disk behind the header: reads shifted by 4 KiB."""

    def __init__(self, file: Image) -> None:
        self._file = file

    def pread(self, offset: int, size: int) -> bytes:
        return self._file.pread(offset + 4096, size)


def test_an_image_format_is_a_reader_and_a_registry_line(sample, tmp_path, monkeypatch):
    raw = sample("whole-disk-ext4").read_bytes()
    wrapped = tmp_path / "disk.skip4k"
    wrapped.write_bytes(_Skip4K.MAGIC + bytes(4096 - 8) + raw)
    with Image(sample("whole-disk-ext4")) as image:
        want = dumps_map(map_images([image])).split("\n", 3)[3]  # without the header lines
    # Read as raw, the header hides the filesystem.
    with Image(wrapped) as image, pytest.raises(NotADiskError):
        map_images([image])
    line = ImageFormat("skip4k", _Skip4K.recognises, _Skip4K.open)
    monkeypatch.setattr(images, "IMAGE_FORMATS", (line, *images.IMAGE_FORMATS))
    (image,) = open_images([wrapped])
    try:
        assert image.format == "skip4k"
        assert dumps_map(map_images([image])).split("\n", 3)[3] == want
    finally:
        image.close()


def test_an_image_no_format_recognises_is_refused(sample, monkeypatch):
    monkeypatch.setattr(images, "IMAGE_FORMATS", ())
    with pytest.raises(ImageError, match="no image format recognises it"):
        open_images([sample("zero")])
