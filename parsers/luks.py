"""LUKS1 and LUKS2 headers: enough to name a LUKS volume as blkid does.

- LUKS1: https://gitlab.com/cryptsetup/cryptsetup/-/wikis/LUKS-standard/on-disk-format.pdf
- LUKS2: https://gitlab.com/cryptsetup/LUKS2-docs/-/blob/main/luks2_doc_wip.pdf
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat, TruncatedError
from parsers.probe import Content, ProbeReader, c_label

LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS2_SECONDARY_MAGIC = b"SKUL\xba\xbe"
# Where a LUKS2 secondary header may sit (its offset equals the primary's header size).
LUKS2_SECONDARY_OFFSETS = (
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
)  # fmt: skip

LUKS1_PHDR = cs.Struct(
    "magic" / cs.Bytes(6) * "LUKS\\xba\\xbe",
    "version" / cs.Int16ub * "1",
    "cipher_name" / cs.Bytes(32),
    "cipher_mode" / cs.Bytes(32),
    "hash_spec" / cs.Bytes(32),
    "payload_offset" / cs.Int32ub * "start of the encrypted data, in 512-byte sectors",
    "key_bytes" / cs.Int32ub,
    "mk_digest" / cs.Bytes(20),
    "mk_digest_salt" / cs.Bytes(32),
    "mk_digest_iterations" / cs.Int32ub,
    "uuid" / cs.Bytes(40) * "UUID as a NUL-terminated string",
)

LUKS2_BINARY_HEADER = cs.Struct(
    "magic" / cs.Bytes(6) * "LUKS\\xba\\xbe (primary) or SKUL\\xba\\xbe (secondary)",
    "version" / cs.Int16ub * "2",
    "hdr_size" / cs.Int64ub * "binary header plus JSON area, in bytes",
    "seqid" / cs.Int64ub * "increased on every update",
    "label" / cs.Bytes(48) * "NUL-terminated label",
    "checksum_alg" / cs.Bytes(32),
    "salt" / cs.Bytes(64),
    "uuid" / cs.Bytes(40) * "UUID as a NUL-terminated string",
    "subsystem" / cs.Bytes(48),
    "hdr_offset" / cs.Int64ub * "offset of this header from the device start",
    cs.Padding(184),
    "csum" / cs.Bytes(64),
)


def _luks_content(raw: bytes, offset: int) -> Content:
    header = LUKS2_BINARY_HEADER.parse(raw)
    if header.version == 1:
        phdr = LUKS1_PHDR.parse(raw)
        return Content("crypto_LUKS", "1", None, c_label(phdr.uuid), None, offset_in_device=offset)
    label = c_label(header.label) if header.version == 2 else None
    uuid = c_label(header.uuid) if header.version == 2 else None
    return Content("crypto_LUKS", str(header.version), label, uuid, None, offset_in_device=offset)


def probe(dev: ProbeReader) -> Content:
    """LUKS: the primary header at 0, or a LUKS2 secondary header at a known offset."""
    raw = dev.read("luks-header", 0, LUKS2_BINARY_HEADER.sizeof())
    header = LUKS2_BINARY_HEADER.parse(raw)
    if header.magic == LUKS_MAGIC and (header.version != 2 or header.hdr_offset == 0):
        return _luks_content(raw, 0)
    for offset in LUKS2_SECONDARY_OFFSETS:
        try:
            raw = dev.read("luks2-secondary-header", offset, LUKS2_BINARY_HEADER.sizeof())
        except TruncatedError:
            break
        header = LUKS2_BINARY_HEADER.parse(raw)
        if header.magic != LUKS2_SECONDARY_MAGIC:
            continue
        if header.version == 2 and header.hdr_offset != offset:
            continue
        return _luks_content(raw, offset)
    raise NotThisFormat("luks-header", 0, "no LUKS magic")
