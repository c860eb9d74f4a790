"""The LVM2 label: the sector that makes a device a PV, and the start of its PV header.

What content detection needs (:func:`probe`) and what :func:`parsers.lvm2.pv.read_pv` starts
from (:func:`find_label`). lvm2's ``lib/label/label.h`` and ``lib/format_text/layout.h``.
"""

from __future__ import annotations

import zlib

import construct as cs

from parsers.errors import DamagedError, NotThisFormat, TruncatedError
from parsers.probe import Content, ProbeReader
from parsers.stream import ReadSeek

SECTOR = 512
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
#: lvm2's own CRC32: the standard table, this initial value, no final inversion.
INITIAL_CRC = 0xF597A6CF

LabelHeader = cs.Struct(
    "id" / cs.Bytes(8) * '"LABELONE"',
    "sector_xl" / cs.Int64ul * "the sector this label is in",
    "crc_xl" / cs.Int32ul * "CRC of the rest of the sector, from offset_xl on",
    "offset_xl" / cs.Int32ul * "where the PV header starts, from the label's start",
    "type" / cs.Bytes(8) * '"LVM2 001"',
)

PVHeaderStart = cs.Struct(
    "pv_uuid" / cs.Bytes(32) * "32 characters, no dashes",
    "device_size_xl" / cs.Int64ul * "bytes",
)


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """lvm2's ``calc_crc``: zlib's CRC32 without its pre- and post-inversion."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def format_uuid(raw: str) -> str:
    """LVM's 32-character UUID as LVM prints it: 6-4-4-4-4-4-6."""
    if len(raw) != 32:
        return raw
    parts = (6, 4, 4, 4, 4, 4, 6)
    out, pos = [], 0
    for n in parts:
        out.append(raw[pos : pos + n])
        pos += n
    return "-".join(out)


def read_at(fh: ReadSeek, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer at the end of the stream)."""
    fh.seek(offset)
    return fh.read(size)


def find_label(fh: ReadSeek, size: int) -> tuple[int, bytes]:
    """The label sector: ``(offset, 512 bytes)``.

    Raises:
        NotThisFormat: no LABELONE with type LVM2 001 in the first four sectors.
        DamagedError: a label whose CRC does not match.
    """
    for sector in range(4):
        offset = sector * SECTOR
        if offset + SECTOR > size:
            break
        data = read_at(fh, offset, SECTOR)
        if len(data) < SECTOR or data[:8] != LABEL_ID:
            continue
        label = LabelHeader.parse(data)
        if label.type != LABEL_TYPE:
            continue
        if label.sector_xl != sector:
            raise DamagedError("pv-label", offset, f"says it is in sector {label.sector_xl}")
        crc = lvm_crc(data[20:])
        if crc != label.crc_xl:
            raise DamagedError(
                "pv-label",
                offset,
                f"CRC mismatch (stored {label.crc_xl:#010x}, computed {crc:#010x})",
            )
        return offset, data
    raise NotThisFormat("pv-label", 0, "no LVM2 label in the first four sectors")


def probe(dev: ProbeReader) -> Content:
    """An LVM2 PV as blkid names it: a LABELONE label in one of the first four sectors with its
    sector number and CRC valid, and the PV header read where blkid reads it (right after the
    label). Damage :func:`find_label` would report only makes this sector not a label here.
    """
    for sector in range(4):
        offset = sector * SECTOR
        try:
            raw = dev.read("lvm2-label", offset, SECTOR)
        except TruncatedError:
            break
        if raw[:8] != LABEL_ID or raw[24:32] != LABEL_TYPE:
            continue
        label = LabelHeader.parse(raw)
        if label.sector_xl != sector or lvm_crc(raw[20:]) != label.crc_xl:
            continue
        head = PVHeaderStart.parse(raw[LabelHeader.sizeof() :])
        uuid = None
        if any(head.pv_uuid):
            uuid = format_uuid(head.pv_uuid.decode("ascii", errors="replace"))
        return Content(
            kind="LVM2_member",
            version=LABEL_TYPE.decode(),
            label=None,
            uuid=uuid,
            fs_size=head.device_size_xl or None,
            offset_in_device=offset,
        )
    raise NotThisFormat("lvm2-label", 0, "no valid LABELONE in sectors 0-3")
