"""ISO9660 (ECMA-119) volume descriptors, with the Joliet label.

https://ecma-international.org/publications-and-standards/standards/ecma-119/
"""

from __future__ import annotations

import construct as cs

from parsers.errors import ParserError
from parsers.probe import Content, ProbeReader, c_label, read_struct, utf16_label

ISO_SECTOR = 2048
ISO_FIRST_DESCRIPTOR = 0x8000
_ISO_MAX_DESCRIPTORS = 16
_ISO_VD_SUPPLEMENTARY = 2
_ISO_VD_TERMINATOR = 0xFF
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")

ISO_VOLUME_DESCRIPTOR = cs.Struct(
    "vd_type" / cs.Int8ul * "1 primary, 2 supplementary (Joliet), 255 terminator",
    "standard_identifier" / cs.Const(b"CD001"),
    "vd_version" / cs.Int8ul,
    "volume_flags" / cs.Int8ul,
    "system_identifier" / cs.Bytes(32),
    "volume_identifier" / cs.Bytes(32) * "label: a-characters, or UCS-2BE under Joliet",
    cs.Padding(8),
    "volume_space_size" / cs.Int32ul * "logical blocks in the volume (both-endian, LE half)",
    "volume_space_size_be" / cs.Int32ub,
    "escape_sequences" / cs.Bytes(32) * "%/@, %/C or %/E for Joliet",
    "volume_set_size" / cs.Int32ul,
    "volume_sequence_number" / cs.Int32ul,
    "logical_block_size" / cs.Int16ul * "usually 2048 (both-endian, LE half)",
    "logical_block_size_be" / cs.Int16ub,
    cs.Padding(813 - 132),
    "creation_date" / cs.Bytes(17) * "YYYYMMDDHHMMSScc + GMT offset",
    "modification_date" / cs.Bytes(17),
)


def _iso_date_uuid(date: bytes) -> tuple[bool, str | None]:
    """blkid's UUID from a volume date; (False, None) when the date is unset."""
    digits = date[:16]
    if digits == b"0" * 16 and date[16] == 0:
        return False, None
    if not any(digits):
        return True, None
    text = digits.decode("latin-1")
    parts = [text[0:4]] + [text[i : i + 2] for i in range(4, 16, 2)]
    return True, "-".join(parts)


def probe(dev: ProbeReader) -> Content:
    """ISO9660: primary volume descriptor at 0x8000 ("CD001" at 0x8001), Joliet label."""
    pvd = read_struct(ISO_VOLUME_DESCRIPTOR, dev, "iso9660-pvd", ISO_FIRST_DESCRIPTOR)
    is_set, uuid = _iso_date_uuid(pvd.modification_date)
    if not is_set:
        _, uuid = _iso_date_uuid(pvd.creation_date)
    label = c_label(pvd.volume_identifier)
    version = None
    for index in range(1, _ISO_MAX_DESCRIPTORS + 1):
        offset = ISO_FIRST_DESCRIPTOR + index * ISO_SECTOR
        try:
            raw = dev.read("iso9660-vd", offset, ISO_SECTOR)
        except ParserError:
            break
        if raw[0] == _ISO_VD_TERMINATOR or raw[1:6] != b"CD001":
            break
        if raw[0] != _ISO_VD_SUPPLEMENTARY:
            continue
        svd = ISO_VOLUME_DESCRIPTOR.parse(raw)
        if svd.escape_sequences[:3] not in _JOLIET_ESCAPES:
            continue
        version = "Joliet Extension"
        # The Joliet copy may be a cut-down UCS-2 form of the same label: keep the PVD's then.
        joliet = svd.volume_identifier
        same = all(
            joliet[2 * i] == 0 and joliet[2 * i + 1] == pvd.volume_identifier[i] for i in range(16)
        )
        if not same:
            label = utf16_label(joliet, "utf-16-be")
        break
    fs_size = pvd.volume_space_size * pvd.logical_block_size or None
    return Content("iso9660", version, label, uuid, fs_size)
