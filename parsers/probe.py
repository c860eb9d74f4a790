"""What every content probe shares: the answer (:class:`Content`), the bounded reader a probe
reads the device through (:class:`ProbeReader`), and how libblkid turns raw fields into LABEL
and UUID.

Each format's probe lives beside that format's own structures (``parsers.lvm2.label.probe``,
``parsers.ext.probe.probe``, ``parsers.fat.probe``, ...); :mod:`parsers.detect` runs them in
libblkid's order.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass

import construct as cs

from parsers.errors import TruncatedError, UnsupportedError
from parsers.stream import ReadSeek


@dataclass(frozen=True)
class Content:
    """What a device holds, in blkid's words.

    Attributes:
        kind: blkid's TYPE word ("ext4", "vfat", "LVM2_member", ...), or "unknown".
        version: blkid's VERSION where it prints one ("FAT32", "1.0", "2"), else None.
        label: the volume label as blkid shows it (LABEL), None when absent.
        uuid: the identifier as blkid shows it (UUID), None when absent.
        fs_size: the size in bytes that the content claims for itself, None where the format
            does not say it cheaply (LUKS) or the value is implausible.
        offset_in_device: byte offset of the header that held the signature, for formats whose
            header can sit in more than one place (the LVM2 label sector, a LUKS2 secondary
            header); 0 for formats whose superblock has one fixed place.
    """

    kind: str
    version: str | None
    label: str | None
    uuid: str | None
    fs_size: int | None
    offset_in_device: int = 0


UNKNOWN = Content("unknown", None, None, None, None)

#: A probe reads whole pages through a cache, and reading stops once this many bytes came in
#: (for all the probes of one device together): a hostile image cannot make detection read
#: more, whatever its pointers say.
READ_BUDGET = 384 * 1024
_PAGE = 4096
#: libblkid ignores devices this small ("extended partitions"); so do we.
MIN_DEVICE = 1024 + 1


class ProbeReader:
    """Bounded, cached reads of the device being probed (position 0 is the device start)."""

    def __init__(self, fh: ReadSeek, size: int) -> None:
        self._fh = fh
        self.size = size
        self._pages: dict[int, bytes] = {}
        self.bytes_read = 0

    def read(self, structure: str, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes at ``offset`` or raise a ParserError."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(
                structure, offset, f"needs {length} bytes, the device has {self.size}"
            )
        first, last = offset // _PAGE, (offset + length - 1) // _PAGE
        chunks = [self._page(structure, index) for index in range(first, last + 1)]
        data = b"".join(chunks)
        start = offset - first * _PAGE
        return data[start : start + length]

    def _page(self, structure: str, index: int) -> bytes:
        page = self._pages.get(index)
        if page is not None:
            return page
        start = index * _PAGE
        want = min(_PAGE, self.size - start)
        if self.bytes_read + want > READ_BUDGET:
            raise UnsupportedError(structure, start, "read budget of detection exhausted")
        self._fh.seek(start)
        self.bytes_read += want
        parts, got = [], 0
        while got < want:  # a raw stream may return less than asked for
            part = self._fh.read(want - got)
            if not part:
                raise TruncatedError(structure, start, f"short read: {got} of {want} bytes")
            parts.append(part)
            got += len(part)
        page = b"".join(parts)
        self._pages[index] = page
        return page


def read_struct(struct: cs.Construct, dev: ProbeReader, name: str, offset: int) -> cs.Container:
    """``struct`` parsed from its own size of bytes at ``offset`` (``name`` for errors)."""
    return struct.parse(dev.read(name, offset, struct.sizeof()))


_C_WHITESPACE = " \t\n\v\f\r"


def c_label(raw: bytes) -> str | None:
    """A C-string label as blkid shows it: up to the first NUL, trailing whitespace gone."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip(_C_WHITESPACE)
    return text or None


def utf16_label(raw: bytes, encoding: str) -> str | None:
    """A UTF-16 label (``utf-16-le`` or ``-be``) as blkid shows it."""
    text = raw.decode(encoding, errors="replace").split("\0", 1)[0].rstrip(_C_WHITESPACE)
    return text or None


def dce_uuid(raw: bytes) -> str | None:
    """A 16-byte UUID, lowercase and dashed; blkid prints none for all zeros."""
    if not any(raw):
        return None
    return str(uuid_module.UUID(bytes=raw))


def serial_uuid(serial: int) -> str | None:
    """A 32-bit volume serial as FAT and exFAT show it: ``ABCD-1234``."""
    if serial == 0:
        return None
    return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"


def is_power_of_2(value: int) -> bool:
    """Whether ``value`` is 1, 2, 4, 8, ..."""
    return value > 0 and value & (value - 1) == 0
