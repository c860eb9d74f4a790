"""The one place that opens disk images, and the stream views everything else reads through.

Images are opened read-only (:mod:`bmap.images.files`); nothing in bmap ever writes to an
input. Every image is identified by its bytes before anything reads it: :data:`IMAGE_FORMATS`
is the table of the image formats bmap knows, one line each, tried in order on the image's
first 4 KiB (or its last 512 bytes, for the formats that keep their mark there). A format's
reader wraps the file opened read-only and gives the virtual disk the guest sees
(:class:`~bmap.images.containers.VirtualDisk`); every layer above reads that, so offsets in a
map are virtual-disk offsets whatever holds the disk. A container bmap recognises but cannot
read is refused with :class:`~bmap.errors.ContainerError`: it is never read as raw. Raw, the
last line, takes any bytes.

Adding a container format: a module with its reader, and one line in :data:`IMAGE_FORMATS`
before ``raw``. Readers are imported on first use, so mapping a raw image imports none.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from bmap.errors import ContainerError, ImageError
from bmap.images.containers import (
    ChainLink,
    ContainerInfo,
    HostFile,
    HostLayout,
    HostRuns,
    HostStructure,
    VirtualDisk,
)
from bmap.images.files import Image
from bmap.images.streams import MappedReader, PositionalReader, RangeStream

__all__ = [
    "HEAD_SIZE",
    "IMAGE_FORMATS",
    "TAIL_SIZE",
    "ChainLink",
    "ContainerInfo",
    "DiskImage",
    "HostFile",
    "HostLayout",
    "HostRuns",
    "HostStructure",
    "Image",
    "ImageFormat",
    "MappedReader",
    "PositionalReader",
    "RangeStream",
    "VirtualDisk",
    "format_of",
    "is_uri",
    "open_image",
    "open_images",
]

#: What the layers read: a raw image, or the virtual disk a container holds.
DiskImage = Image | VirtualDisk


class ImageFormat(NamedTuple):
    """One image format: how its bytes are recognised, and how its reader wraps the file
    (opened read-only) into the virtual disk."""

    name: str
    recognises: Callable[[bytes], bool]
    """Shown the first :data:`HEAD_SIZE` bytes (or, with ``at_end``, the last
    :data:`TAIL_SIZE`)."""
    open: Callable[[Image], Image | VirtualDisk]
    at_end: bool = False


HEAD_SIZE = 4096
"""Bytes of an image's start that :data:`IMAGE_FORMATS` are shown."""
TAIL_SIZE = 512
"""Bytes of an image's end shown to the formats marked ``at_end`` (a VHD footer, a DMG trailer)."""


def _reader(module: str, function: str) -> Callable[[Image], Image | VirtualDisk]:
    """The opener ``function`` of ``module``, imported when an image of its format is met."""

    def open_with(file: Image) -> Image | VirtualDisk:
        opener: Callable[[Image], Image | VirtualDisk]
        opener = getattr(importlib.import_module(module), function)
        return opener(file)

    open_with.__qualname__ = f"{module}.{function}"
    return open_with


def _refuse(what: str, hint: str) -> Callable[[Image], Image | VirtualDisk]:
    """An opener for a format bmap recognises and has no reader for: one clear error."""

    def refuse(file: Image) -> Image | VirtualDisk:
        raise ContainerError(f"{file.path}: {what}; bmap cannot read it as a disk: {hint}")

    return refuse


_EWF1 = b"EVF\x09\x0d\x0a\xff\x00"
_VDI = b"\x7f\x10\xda\xbe"

#: The image formats, tried in order; the first that recognises an image opens it.
IMAGE_FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat(
        "qcow2", lambda head: head[:4] == b"QFI\xfb", _reader("bmap.images.qcow2", "open_qcow2")
    ),
    ImageFormat(
        "vmdk",
        lambda head: (
            head[:4] in (b"KDMV", b"COWD")
            or head.lstrip(b"\xef\xbb\xbf").startswith(b"# Disk DescriptorFile")
        ),
        _reader("bmap.images.libyal", "open_vmdk"),
    ),
    ImageFormat(
        "vhdx", lambda head: head[:8] == b"vhdxfile", _reader("bmap.images.libyal", "open_vhdx")
    ),
    ImageFormat(
        "vhd", lambda head: head[:8] == b"conectix", _reader("bmap.images.libyal", "open_vhd")
    ),
    ImageFormat("ewf", lambda head: head[:8] == _EWF1, _reader("bmap.images.libyal", "open_ewf")),
    ImageFormat(
        "ewf2",
        lambda head: head[:8] == b"EVF2\r\n\x81\x00",
        _refuse("an EWF2 (Ex01) evidence file", "convert it to E01 (ewfexport -f encase6)"),
    ),
    ImageFormat(
        "lvf",
        lambda head: head[:8] in (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\r\n\x81\x00"),
        _refuse("an EWF logical evidence file (L01)", "it holds files, not a disk"),
    ),
    ImageFormat(
        "vdi",
        lambda head: head[0x40:0x44] == _VDI,
        _refuse("a VirtualBox VDI image", "convert it (qemu-img convert -O qcow2) or serve it"),
    ),
    ImageFormat(
        "qed",
        lambda head: head[:4] == b"QED\0",
        _refuse("a QED image", "convert it with qemu-img convert -O qcow2"),
    ),
    ImageFormat(
        "parallels",
        lambda head: head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"),
        _refuse("a Parallels image", "convert it with qemu-img convert -O qcow2"),
    ),
    ImageFormat(
        "android-sparse",
        lambda head: head[:4] == b"\x3a\xff\x26\xed",
        _refuse("an Android sparse image", "expand it with simg2img"),
    ),
    ImageFormat(
        "xz",
        lambda head: head[:6] == b"\xfd7zXZ\0",
        _refuse("an xz-compressed file", "decompress it, or serve it with nbdkit's xz filter"),
    ),
    ImageFormat(
        "gzip",
        lambda head: head[:3] == b"\x1f\x8b\x08",
        _refuse("a gzip-compressed file", "decompress it, or serve it with nbdkit's gzip filter"),
    ),
    ImageFormat(
        "bzip2",
        lambda head: head[:3] == b"BZh" and head[4:10] == b"1AY&SY",
        _refuse("a bzip2-compressed file", "decompress it first"),
    ),
    ImageFormat(
        "zstd",
        lambda head: head[:4] == b"\x28\xb5\x2f\xfd",
        _refuse("a zstd-compressed file", "decompress it first"),
    ),
    ImageFormat(
        "vhd",
        lambda tail: tail[:8] == b"conectix",
        _reader("bmap.images.libyal", "open_vhd"),
        at_end=True,
    ),
    ImageFormat(
        "dmg",
        lambda tail: tail[:4] == b"koly" and tail[4:8] == b"\0\0\0\x04",
        _refuse("an Apple disk image (UDIF/DMG)", "convert it to raw (dmg2img)"),
        at_end=True,
    ),
    ImageFormat("raw", lambda head: True, lambda file: file),
)

_URI = re.compile(r"^nbds?(\+(unix|tcp|vsock))?://", re.IGNORECASE)


def is_uri(name: str | os.PathLike[str]) -> bool:
    """True for an NBD URI (``nbd://host/export``, ``nbd+unix:///?socket=...``)."""
    return isinstance(name, str) and _URI.match(name) is not None


def open_image(path: str | os.PathLike[str], number: int = 1) -> Image | VirtualDisk:
    """Open one image read-only, in the first of :data:`IMAGE_FORMATS` that recognises it;
    an NBD URI is read through libnbd (:mod:`bmap.images.nbd`).

    Raises:
        ImageError: the path cannot be opened or read.
        ContainerError: a container bmap recognises and cannot read.
    """
    if is_uri(path):
        from bmap.images.nbd import open_nbd

        return open_nbd(str(path), number)
    file = Image(path, number)
    try:
        image_format = format_of(file)
        if image_format is not None:
            return image_format.open(file)
    except BaseException:
        file.close()
        raise
    file.close()
    raise ImageError(f"{path}: no image format recognises it")


def format_of(file: Image) -> ImageFormat | None:
    """The first of :data:`IMAGE_FORMATS` that recognises the file's bytes."""
    head = file.pread(0, HEAD_SIZE)
    tail = file.pread(max(0, file.size - TAIL_SIZE), TAIL_SIZE)
    for image_format in IMAGE_FORMATS:
        if image_format.recognises(tail if image_format.at_end else head):
            return image_format
    return None


def open_images(paths: Iterable[str | os.PathLike[str]]) -> list[Image | VirtualDisk]:
    """Open every image read-only (:func:`open_image`), numbered 1, 2, ... in the order given.

    Raises:
        ImageError, ContainerError: for the first image that cannot be opened; the others are
            closed again.
    """
    images: list[Image | VirtualDisk] = []
    try:
        for number, path in enumerate(paths, start=1):
            images.append(open_image(path, number))
    except BaseException:
        for image in images:
            image.close()
        raise
    return images
