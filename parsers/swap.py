"""Linux swap areas (and a swap area holding a hibernation image).

https://github.com/torvalds/linux/blob/master/include/linux/swap.h
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat
from parsers.probe import Content, ProbeReader, c_label, dce_uuid


def _swap_header(int32: cs.Construct) -> cs.Struct:
    # The header is in the writing machine's byte order; blkid accepts either.
    return cs.Struct(
        cs.Padding(1024) * "boot bits, room for a disk label",
        "version" / int32 * "1",
        "last_page" / int32 * "index of the last usable page",
        "nr_badpages" / int32,
        "sws_uuid" / cs.Bytes(16),
        "sws_volume" / cs.Bytes(16) * "label, NUL-padded",
        "padding" / cs.Array(117, int32) * "zero; [32] and [33] must be zero for LABEL/UUID",
        "badpages" / cs.Array(1, int32),
    )


SWAP_HEADER_LE = _swap_header(cs.Int32ul)
SWAP_HEADER_BE = _swap_header(cs.Int32ub)

# The magic sits in the last 10 bytes of the first page; the page size is not known up front.
SWAP_PAGE_SIZES = (0x1000, 0x2000, 0x4000, 0x8000, 0x10000)
_TUXONICE_MAGIC = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c"
_SWSUSPEND_MAGICS = {
    b"S1SUSPEND": "s1suspend",
    b"S2SUSPEND": "s2suspend",
    b"ULSUSPEND": "ulsuspend",
    b"LINHIB0001": "linhib0001",
}
_SWAP_MIN_SIZE = 10 * 4096


def _swap_content(dev: ProbeReader, kind: str, version: str, page_size: int) -> Content:
    raw = dev.read("swap-header", 0, SWAP_HEADER_LE.sizeof())
    header = SWAP_HEADER_LE.parse(raw)
    if header.version != 1:
        swapped = SWAP_HEADER_BE.parse(raw)
        if swapped.version == 1:
            header = swapped
        elif kind == "swap":
            raise NotThisFormat("swap-header", 1024, f"version {header.version}")
    if kind == "swap" and header.last_page == 0:
        raise NotThisFormat("swap-header", 1028, "last_page is zero")
    label = uuid = None
    # blkid's "is there garbage down there" test before it trusts LABEL and UUID
    if header.padding[32] == 0 and header.padding[33] == 0:
        label = c_label(header.sws_volume)
        uuid = dce_uuid(header.sws_uuid)
    fs_size = (header.last_page + 1) * page_size if header.last_page else None
    return Content(kind, version, label, uuid, fs_size)


def probe(dev: ProbeReader) -> Content:
    """Swap: SWAPSPACE2 (or a suspend magic) in the last 10 bytes of the first page."""
    if dev.size < _SWAP_MIN_SIZE:
        raise NotThisFormat("swap-header", 0, "device smaller than ten pages")
    start = dev.read("swap-header", 0, 8)
    if start == _TUXONICE_MAGIC:
        return _swap_content(dev, "swsuspend", "tuxonice", 4096)
    tails = {
        page_size: dev.read("swap-signature", page_size - 10, 10)
        for page_size in SWAP_PAGE_SIZES
        if page_size <= dev.size
    }
    for page_size, tail in tails.items():
        for magic, version in _SWSUSPEND_MAGICS.items():
            if tail.startswith(magic):
                return _swap_content(dev, "swsuspend", version, page_size)
    for page_size, tail in tails.items():
        if tail == b"SWAP-SPACE":
            # version 0 has neither label nor UUID, and no page count
            return Content("swap", "0", None, None, None)
        if tail == b"SWAPSPACE2":
            return _swap_content(dev, "swap", "1", page_size)
    raise NotThisFormat("swap-signature", 0xFF6, "no swap signature")
