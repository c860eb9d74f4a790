"""Content detection by signature: what a partition (or a whole disk) holds.

``detect(fh, size)`` answers the question ``blkid -p`` answers (TYPE, VERSION, LABEL, UUID)
before the project can map the content itself, and adds the size that the content claims for
itself. It reads only superblocks and the few sectors a label lives in, never the whole device.

The probes run in the order libblkid runs them, so that a volume whose old signatures were
left underneath (a LUKS or LVM header written over a file system, say) is named as blkid names
it: LVM2 and LUKS first, then vfat, swap, XFS, ext, ISO9660, NTFS, btrfs and exFAT. Where blkid
would report an "ambivalent result" (two file system signatures) we answer with the first.

What each probe accepts and how it words LABEL, UUID and VERSION follow libblkid, checked
against ``blkid -p -o export`` on images made by the real tools (see the tests):
https://github.com/util-linux/util-linux/tree/master/libblkid/src/superblocks

The formats, and where their on-disk layout is specified:

- LVM2 physical volume label:
  https://github.com/libyal/libvslvm/blob/main/documentation/Logical%20Volume%20Manager%20(LVM)%20format.asciidoc
  (the code: https://github.com/lvmteam/lvm2/blob/main/lib/format_text/layout.h)
- LUKS1: https://gitlab.com/cryptsetup/cryptsetup/-/wikis/LUKS-standard/on-disk-format.pdf
- LUKS2: https://gitlab.com/cryptsetup/LUKS2-docs/-/blob/main/luks2_doc_wip.pdf
- FAT12/16/32 (Microsoft's fatgen103):
  https://academy.cba.mit.edu/classes/networking_communications/SD/FAT.pdf
- Linux swap header: https://github.com/torvalds/linux/blob/master/include/linux/swap.h
- XFS: https://mirrors.edge.kernel.org/pub/linux/utils/fs/xfs/docs/xfs_filesystem_structure.pdf
- ext2/3/4: https://www.kernel.org/doc/html/latest/filesystems/ext4/globals.html
- ISO9660 (ECMA-119): https://ecma-international.org/publications-and-standards/standards/ecma-119/
- NTFS: https://github.com/libyal/libfsntfs/blob/main/documentation/New%20Technologies%20File%20System%20(NTFS).asciidoc
- btrfs: https://btrfs.readthedocs.io/en/latest/dev/On-disk-format.html
- exFAT: https://learn.microsoft.com/en-us/windows/win32/fileio/exfat-specification
"""

from __future__ import annotations

import logging
import uuid as uuid_module
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import construct as cs

from parsers.errors import NotThisFormat, ParserError, TruncatedError, UnsupportedError
from parsers.stream import ReadSeek

__all__ = ["PROBES", "READ_BUDGET", "UNKNOWN", "Content", "detect"]

logger = logging.getLogger(__name__)


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

# detect() reads whole pages through a cache, and stops reading once this many bytes came in:
# a hostile image cannot make it read more, whatever its pointers say.
READ_BUDGET = 384 * 1024
_PAGE = 4096
# libblkid ignores devices this small ("extended partitions"); so do we.
_MIN_DEVICE = 1024 + 1


class _Device:
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
            raise UnsupportedError(structure, start, "read budget of detect() exhausted")
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


def _parse(struct: cs.Construct, dev: _Device, name: str, offset: int) -> cs.Container:
    return struct.parse(dev.read(name, offset, struct.sizeof()))


# --------------------------------------------------------------------------------------------
# Text helpers: how libblkid turns raw fields into LABEL and UUID
# --------------------------------------------------------------------------------------------

_C_WHITESPACE = " \t\n\v\f\r"


def _label(raw: bytes) -> str | None:
    """A C-string label as blkid shows it: up to the first NUL, trailing whitespace gone."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip(_C_WHITESPACE)
    return text or None


def _utf16_label(raw: bytes, encoding: str) -> str | None:
    text = raw.decode(encoding, errors="replace").split("\0", 1)[0].rstrip(_C_WHITESPACE)
    return text or None


def _dce_uuid(raw: bytes) -> str | None:
    """A 16-byte UUID, lowercase and dashed; blkid prints none for all zeros."""
    if not any(raw):
        return None
    return str(uuid_module.UUID(bytes=raw))


def _serial_uuid(serial: int) -> str | None:
    """A 32-bit volume serial as FAT and exFAT show it: ``ABCD-1234``."""
    if serial == 0:
        return None
    return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"


def _is_power_of_2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


# --------------------------------------------------------------------------------------------
# LVM2 physical volume label
# --------------------------------------------------------------------------------------------

LVM2_LABEL_HEADER = cs.Struct(
    "id" / cs.Const(b"LABELONE") * "label magic",
    "sector_xl" / cs.Int64ul * "sector number of this label",
    "crc_xl" / cs.Int32ul * "CRC of the rest of the sector, from offset_xl on",
    "offset_xl" / cs.Int32ul * "offset of the PV header from the label start (32)",
    "type" / cs.Const(b"LVM2 001") * "label type",
    "pv_uuid" / cs.Bytes(32) * "PV UUID, 32 characters of LVM's alphabet, no dashes",
    "device_size_xl" / cs.Int64ul * "size of the PV in bytes as LVM recorded it",
)
_LVM2_LABEL_SCAN_SECTORS = 4
_LVM2_CRC_INITIAL = 0xF597A6CF


def _lvm2_crc(data: bytes) -> int:
    # LVM's calc_crc is the reflected CRC-32 without zlib's pre- and post-inversion.
    return zlib.crc32(data, _LVM2_CRC_INITIAL ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _format_lvm_uuid(raw: bytes) -> str | None:
    """LVM's 32-character UUID, dashed 6-4-4-4-4-4-6 as blkid and pvs print it."""
    if not any(raw):
        return None
    text = raw.decode("ascii", errors="replace")
    parts, start = [], 0
    for width in (6, 4, 4, 4, 4, 4, 6):
        parts.append(text[start : start + width])
        start += width
    return "-".join(parts)


def _probe_lvm2(dev: _Device) -> Content:
    """LVM2 PV: a LABELONE label in one of the first four sectors, its CRC and sector valid."""
    for sector in range(_LVM2_LABEL_SCAN_SECTORS):
        offset = sector * 512
        try:
            raw = dev.read("lvm2-label", offset, 512)
        except TruncatedError:
            break
        if raw[:8] != b"LABELONE" or raw[0x18:0x20] != b"LVM2 001":
            continue
        label = LVM2_LABEL_HEADER.parse(raw)
        if label.sector_xl != sector:
            logger.debug("lvm2-label at %#x: sector_xl %d", offset, label.sector_xl)
            continue
        if _lvm2_crc(raw[20:]) != label.crc_xl:
            logger.debug("lvm2-label at %#x: bad CRC", offset)
            continue
        return Content(
            kind="LVM2_member",
            version="LVM2 001",
            label=None,
            uuid=_format_lvm_uuid(label.pv_uuid),
            fs_size=label.device_size_xl or None,
            offset_in_device=offset,
        )
    raise NotThisFormat("lvm2-label", 0, "no valid LABELONE in sectors 0-3")


# --------------------------------------------------------------------------------------------
# LUKS1 and LUKS2
# --------------------------------------------------------------------------------------------

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
        return Content("crypto_LUKS", "1", None, _label(phdr.uuid), None, offset_in_device=offset)
    label = _label(header.label) if header.version == 2 else None
    uuid = _label(header.uuid) if header.version == 2 else None
    return Content("crypto_LUKS", str(header.version), label, uuid, None, offset_in_device=offset)


def _probe_luks(dev: _Device) -> Content:
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


# --------------------------------------------------------------------------------------------
# FAT12, FAT16, FAT32
# --------------------------------------------------------------------------------------------

FAT_BOOT_SECTOR = cs.Struct(
    "bs_jmp_boot" / cs.Bytes(3) * "x86 jump, EB xx 90 or E9 xx xx",
    "bs_oem_name" / cs.Bytes(8),
    "bpb_bytes_per_sector" / cs.Int16ul * "512, 1024, 2048 or 4096",
    "bpb_sectors_per_cluster" / cs.Int8ul * "a power of two",
    "bpb_reserved_sectors" / cs.Int16ul * "sectors before the first FAT, > 0",
    "bpb_num_fats" / cs.Int8ul * "number of FATs, usually 2",
    "bpb_root_entries" / cs.Int16ul * "32-byte entries in the FAT12/16 root directory",
    "bpb_total_sectors_16" / cs.Int16ul * "sector count, 0 when it needs 32 bits",
    "bpb_media" / cs.Int8ul * "0xF0 or 0xF8..0xFF",
    "bpb_fat_size_16" / cs.Int16ul * "sectors per FAT on FAT12/16, 0 on FAT32",
    "bpb_sectors_per_track" / cs.Int16ul,
    "bpb_num_heads" / cs.Int16ul,
    "bpb_hidden_sectors" / cs.Int32ul,
    "bpb_total_sectors_32" / cs.Int32ul * "sector count when bpb_total_sectors_16 is 0",
    "extended_bpb" / cs.Bytes(0x1FE - 0x24) * "FAT16_EBPB or FAT32_EBPB",
    "signature" / cs.Bytes(2) * "55 AA",
)

FAT16_EBPB = cs.Struct(
    "bs_drive_number" / cs.Int8ul,
    "bs_reserved1" / cs.Int8ul,
    "bs_boot_signature" / cs.Int8ul * "0x29 when the next three fields are valid",
    "bs_volume_id" / cs.Int32ul * "volume serial number",
    "bs_volume_label" / cs.Bytes(11),
    "bs_fs_type" / cs.Bytes(8) * "FAT12 / FAT16 / FAT, informative only",
)

FAT32_EBPB = cs.Struct(
    "bpb_fat_size_32" / cs.Int32ul * "sectors per FAT",
    "bpb_ext_flags" / cs.Int16ul,
    "bpb_fs_version" / cs.Int16ul,
    "bpb_root_cluster" / cs.Int32ul * "first cluster of the root directory",
    "bpb_fs_info" / cs.Int16ul * "sector of the FSInfo structure",
    "bpb_backup_boot_sector" / cs.Int16ul,
    "bpb_reserved" / cs.Bytes(12),
    "bs_drive_number" / cs.Int8ul,
    "bs_reserved1" / cs.Int8ul,
    "bs_boot_signature" / cs.Int8ul,
    "bs_volume_id" / cs.Int32ul * "volume serial number",
    "bs_volume_label" / cs.Bytes(11),
    "bs_fs_type" / cs.Bytes(8) * "FAT32, informative only",
)

FAT_DIR_ENTRY = cs.Struct(
    "dir_name" / cs.Bytes(11) * "8.3 name; 0x00 ends the directory, 0xE5 marks a free entry",
    "dir_attr" / cs.Int8ul * "0x08 volume label, 0x10 directory, 0x0F long-name part",
    "dir_nt_res" / cs.Int8ul,
    "dir_crt_time_tenth" / cs.Int8ul,
    "dir_crt_time" / cs.Int16ul,
    "dir_crt_date" / cs.Int16ul,
    "dir_lst_acc_date" / cs.Int16ul,
    "dir_fst_clus_hi" / cs.Int16ul,
    "dir_wrt_time" / cs.Int16ul,
    "dir_wrt_date" / cs.Int16ul,
    "dir_fst_clus_lo" / cs.Int16ul,
    "dir_file_size" / cs.Int32ul,
)

FAT32_FSINFO = cs.Struct(
    "fsi_lead_sig" / cs.Bytes(4) * "RRaA",
    "fsi_reserved1" / cs.Bytes(480),
    "fsi_struc_sig" / cs.Bytes(4) * "rrAa",
    "fsi_free_count" / cs.Int32ul,
    "fsi_nxt_free" / cs.Int32ul,
)

# blkid's magics for vfat, tried in this order; the first that matches decides how strict the
# remaining checks are (a one- or two-byte "magic" needs 55 AA and no JFS/HPFS marker).
_FAT_MAGICS = (
    (b"MSWIN", 0x52),
    (b"FAT32   ", 0x52),
    (b"MSDOS", 0x36),
    (b"FAT16   ", 0x36),
    (b"FAT12   ", 0x36),
    (b"FAT     ", 0x36),
    (b"\xeb", 0),
    (b"\xe9", 0),
    (b"\x55\xaa", 0x1FE),
)
_FAT12_MAX_CLUSTERS = 0xFF4
_FAT16_MAX_CLUSTERS = 0xFFF4
_FAT32_MAX_CLUSTERS = 0x0FFFFFF6
_BITLOCKER_OEM_NAME = b"-FVE-FS-"
_FAT_ATTR_VOLUME_ID = 0x08
_FAT_ATTR_DIRECTORY = 0x10
_FAT_ATTR_LONG_NAME = 0x0F
# How much of a root directory we scan for the volume-label entry (it is nearly always first).
_FAT_ROOT_DIR_SCAN = 64 * 1024
_FAT32_MAX_ROOT_CLUSTERS = 100


def _fat_root_dir_label(dev: _Device, offset: int, length: int) -> tuple[bytes | None, bool]:
    """Find the volume-label entry in ``length`` bytes of directory at ``offset``.

    Returns the 11-byte name (or None) and whether the directory ended in this span.
    """
    entry_size = FAT_DIR_ENTRY.sizeof()
    for index in range(min(length, _FAT_ROOT_DIR_SCAN) // entry_size):
        try:
            entry = _parse(FAT_DIR_ENTRY, dev, "fat-dir-entry", offset + index * entry_size)
        except ParserError:
            return None, True
        first = entry.dir_name[0]
        if first == 0x00:
            return None, True
        if first == 0xE5 or entry.dir_fst_clus_hi or entry.dir_fst_clus_lo:
            continue
        if entry.dir_attr & 0x3F == _FAT_ATTR_LONG_NAME:
            continue
        if entry.dir_attr & (_FAT_ATTR_VOLUME_ID | _FAT_ATTR_DIRECTORY) == _FAT_ATTR_VOLUME_ID:
            name = entry.dir_name
            # 0x05 stands for a leading 0xE5, which would mark the entry free
            return (b"\xe5" + name[1:] if first == 0x05 else name), True
    return None, False


def _probe_vfat(dev: _Device) -> Content:
    """FAT12/16/32: blkid's BPB checks, FAT type by cluster count, label from the root dir.

    LABEL is the root directory's volume-label entry only, as blkid prints it: the boot
    sector's copy (blkid's LABEL_FATBOOT) is often stale, since Windows renames a volume in
    the root directory alone, and a volume whose root directory has no label entry has no
    LABEL even when its boot sector names one.
    """
    raw = dev.read("fat-boot-sector", 0, 512)
    magic = next(
        (m for m, at in _FAT_MAGICS if raw[at : at + len(m)] == m),
        None,
    )
    if magic is None:
        raise NotThisFormat("fat-boot-sector", 0, "no FAT magic")
    boot = FAT_BOOT_SECTOR.parse(raw)
    if len(magic) <= 2:
        if boot.signature != b"\x55\xaa":
            raise NotThisFormat("fat-boot-sector", 0x1FE, "no 55 AA signature")
        if raw[0x36:0x3E] in (b"JFS     ", b"HPFS    "):
            raise NotThisFormat("fat-boot-sector", 0x36, "JFS/HPFS pseudo-superblock")
    if boot.bs_oem_name == _BITLOCKER_OEM_NAME:
        raise NotThisFormat("fat-boot-sector", 3, "a BitLocker volume, not FAT")
    bytes_per_sector = boot.bpb_bytes_per_sector
    sectors_per_cluster = boot.bpb_sectors_per_cluster
    if (
        boot.bpb_num_fats == 0
        or boot.bpb_reserved_sectors == 0
        or not (boot.bpb_media >= 0xF8 or boot.bpb_media == 0xF0)
        or not _is_power_of_2(sectors_per_cluster)
        or not _is_power_of_2(bytes_per_sector)
        or not 512 <= bytes_per_sector <= 4096
    ):
        raise NotThisFormat("fat-boot-sector", 0x0B, "BIOS parameter block not plausible")

    fat32 = FAT32_EBPB.parse(boot.extended_bpb)
    total_sectors = boot.bpb_total_sectors_16 or boot.bpb_total_sectors_32
    fat_length = boot.bpb_fat_size_16 or fat32.bpb_fat_size_32
    fat_sectors = fat_length * boot.bpb_num_fats
    root_dir_sectors = (
        boot.bpb_root_entries * FAT_DIR_ENTRY.sizeof() + bytes_per_sector - 1
    ) // bytes_per_sector
    data_sectors = total_sectors - (boot.bpb_reserved_sectors + fat_sectors + root_dir_sectors)
    if data_sectors < 0:
        raise NotThisFormat("fat-boot-sector", 0x0B, "metadata larger than the volume")
    cluster_count = data_sectors // sectors_per_cluster
    if boot.bpb_fat_size_16 == 0 and fat32.bpb_fat_size_32:
        max_count = _FAT32_MAX_CLUSTERS
    elif cluster_count > _FAT12_MAX_CLUSTERS:
        max_count = _FAT16_MAX_CLUSTERS
    else:
        max_count = _FAT12_MAX_CLUSTERS
    if cluster_count > max_count:
        raise NotThisFormat("fat-boot-sector", 0x0B, f"{cluster_count} clusters is too many")

    fs_size = total_sectors * bytes_per_sector or None
    if boot.bpb_fat_size_16:
        fat16 = FAT16_EBPB.parse(boot.extended_bpb)
        root_start = (boot.bpb_reserved_sectors + fat_sectors) * bytes_per_sector
        dir_label, _ = _fat_root_dir_label(
            dev, root_start, boot.bpb_root_entries * FAT_DIR_ENTRY.sizeof()
        )
        if cluster_count < _FAT12_MAX_CLUSTERS:
            version: str | None = "FAT12"
        elif cluster_count < _FAT16_MAX_CLUSTERS:
            version = "FAT16"
        else:
            version = None
        # Before DOS 4 (boot signature 0x28/0x29) there was no serial number field.
        serial = fat16.bs_volume_id if fat16.bs_boot_signature in (0x28, 0x29) else 0
    elif fat32.bpb_fat_size_32:
        dir_label = _fat32_root_dir_label(dev, boot, fat32, fat_sectors)
        _check_fat32_fsinfo(dev, fat32.bpb_fs_info, bytes_per_sector)
        version = "FAT32"
        serial = fat32.bs_volume_id
    else:
        # blkid still says vfat, with nothing more to tell.
        return Content("vfat", None, None, None, fs_size)
    label = _label(dir_label) if dir_label is not None else None
    return Content("vfat", version, label, _serial_uuid(serial), fs_size)


def _fat32_root_dir_label(
    dev: _Device, boot: cs.Container, fat32: cs.Container, fat_sectors: int
) -> bytes | None:
    """Walk the FAT32 root directory's cluster chain (bounded) for the volume-label entry."""
    bytes_per_sector = boot.bpb_bytes_per_sector
    cluster_bytes = boot.bpb_sectors_per_cluster * bytes_per_sector
    data_start_sector = boot.bpb_reserved_sectors + fat_sectors
    fat_entries = fat32.bpb_fat_size_32 * bytes_per_sector // 4
    fat_start = boot.bpb_reserved_sectors * bytes_per_sector
    cluster = fat32.bpb_root_cluster
    scanned = 0
    for _ in range(_FAT32_MAX_ROOT_CLUSTERS):
        if not 2 <= cluster < fat_entries or scanned >= _FAT_ROOT_DIR_SCAN:
            return None
        offset = (data_start_sector + (cluster - 2) * boot.bpb_sectors_per_cluster) * (
            bytes_per_sector
        )
        span = min(cluster_bytes, _FAT_ROOT_DIR_SCAN - scanned)
        found, ended = _fat_root_dir_label(dev, offset, span)
        scanned += span
        if found is not None or ended:
            return found
        try:
            entry = dev.read("fat32-fat-entry", fat_start + cluster * 4, 4)
        except ParserError:
            return None
        cluster = int.from_bytes(entry, "little") & 0x0FFFFFFF
    return None


def _check_fat32_fsinfo(dev: _Device, fs_info_sector: int, bytes_per_sector: int) -> None:
    if not fs_info_sector:
        return
    offset = fs_info_sector * bytes_per_sector
    fsinfo = _parse(FAT32_FSINFO, dev, "fat32-fsinfo", offset)
    # Some formatters leave the signatures zero; blkid accepts that.
    if fsinfo.fsi_lead_sig not in (b"RRaA", b"RRdA", b"\0\0\0\0") or fsinfo.fsi_struc_sig not in (
        b"rrAa",
        b"\0\0\0\0",
    ):
        raise NotThisFormat("fat32-fsinfo", offset, "bad FSInfo signature")


# --------------------------------------------------------------------------------------------
# Linux swap (and a swap area holding a hibernation image)
# --------------------------------------------------------------------------------------------


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


def _swap_content(dev: _Device, kind: str, version: str, page_size: int) -> Content:
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
        label = _label(header.sws_volume)
        uuid = _dce_uuid(header.sws_uuid)
    fs_size = (header.last_page + 1) * page_size if header.last_page else None
    return Content(kind, version, label, uuid, fs_size)


def _probe_swap(dev: _Device) -> Content:
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


# --------------------------------------------------------------------------------------------
# XFS
# --------------------------------------------------------------------------------------------

XFS_SUPERBLOCK = cs.Struct(
    "sb_magicnum" / cs.Const(b"XFSB") * "0x58465342",
    "sb_blocksize" / cs.Int32ub * "file system block size in bytes",
    "sb_dblocks" / cs.Int64ub * "blocks in the data device",
    "sb_rblocks" / cs.Int64ub,
    "sb_rextents" / cs.Int64ub,
    "sb_uuid" / cs.Bytes(16),
    "sb_logstart" / cs.Int64ub,
    "sb_rootino" / cs.Int64ub,
    "sb_rbmino" / cs.Int64ub,
    "sb_rsumino" / cs.Int64ub,
    "sb_rextsize" / cs.Int32ub * "realtime extent size in blocks",
    "sb_agblocks" / cs.Int32ub * "blocks per allocation group",
    "sb_agcount" / cs.Int32ub * "number of allocation groups",
    "sb_rbmblocks" / cs.Int32ub,
    "sb_logblocks" / cs.Int32ub,
    "sb_versionnum" / cs.Int16ub,
    "sb_sectsize" / cs.Int16ub,
    "sb_inodesize" / cs.Int16ub,
    "sb_inopblock" / cs.Int16ub,
    "sb_fname" / cs.Bytes(12) * "label, NUL-padded",
    "sb_blocklog" / cs.Int8ub,
    "sb_sectlog" / cs.Int8ub,
    "sb_inodelog" / cs.Int8ub,
    "sb_inopblog" / cs.Int8ub,
    "sb_agblklog" / cs.Int8ub,
    "sb_rextslog" / cs.Int8ub,
    "sb_inprogress" / cs.Int8ub,
    "sb_imax_pct" / cs.Int8ub,
)


def _xfs_plausible(sb: cs.Container) -> bool:
    """libblkid's sanity checks: the magic alone is not enough."""
    rtext_bytes = sb.sb_rextsize * sb.sb_blocksize
    return (
        sb.sb_agcount > 0
        and 512 <= sb.sb_sectsize <= 32768
        and 9 <= sb.sb_sectlog <= 15
        and sb.sb_sectsize == 1 << sb.sb_sectlog
        and 512 <= sb.sb_blocksize <= 65536
        and 9 <= sb.sb_blocklog <= 16
        and sb.sb_blocksize == 1 << sb.sb_blocklog
        and 256 <= sb.sb_inodesize <= 2048
        and 8 <= sb.sb_inodelog <= 11
        and sb.sb_inodesize == 1 << sb.sb_inodelog
        and sb.sb_blocklog - sb.sb_inodelog == sb.sb_inopblog
        and 4096 <= rtext_bytes <= 1024 * 1024 * 1024
        and sb.sb_imax_pct <= 100
        and sb.sb_dblocks != 0
        and sb.sb_dblocks <= sb.sb_agcount * sb.sb_agblocks
        and sb.sb_dblocks >= (sb.sb_agcount - 1) * sb.sb_agblocks + 64
    )


def _probe_xfs(dev: _Device) -> Content:
    """XFS: primary superblock at 0, big-endian, "XFSB"."""
    sb = _parse(XFS_SUPERBLOCK, dev, "xfs-superblock", 0)
    if not _xfs_plausible(sb):
        raise NotThisFormat("xfs-superblock", 0, "geometry not plausible")
    return Content(
        "xfs", None, _label(sb.sb_fname), _dce_uuid(sb.sb_uuid), sb.sb_dblocks * sb.sb_blocksize
    )


# --------------------------------------------------------------------------------------------
# ext2, ext3, ext4 (and an ext3/4 external journal)
# --------------------------------------------------------------------------------------------

EXT_SUPERBLOCK_OFFSET = 1024

EXT_SUPERBLOCK = cs.Struct(
    "s_inodes_count" / cs.Int32ul,
    "s_blocks_count_lo" / cs.Int32ul * "block count, low 32 bits",
    "s_r_blocks_count_lo" / cs.Int32ul,
    "s_free_blocks_count_lo" / cs.Int32ul,
    "s_free_inodes_count" / cs.Int32ul,
    "s_first_data_block" / cs.Int32ul,
    "s_log_block_size" / cs.Int32ul * "block size is 1024 << this",
    "s_log_cluster_size" / cs.Int32ul,
    "s_blocks_per_group" / cs.Int32ul,
    "s_clusters_per_group" / cs.Int32ul,
    "s_inodes_per_group" / cs.Int32ul,
    "s_mtime" / cs.Int32ul,
    "s_wtime" / cs.Int32ul,
    "s_mnt_count" / cs.Int16ul,
    "s_max_mnt_count" / cs.Int16ul,
    "s_magic" / cs.Const(0xEF53, cs.Int16ul) * "0xEF53",
    "s_state" / cs.Int16ul,
    "s_errors" / cs.Int16ul,
    "s_minor_rev_level" / cs.Int16ul,
    "s_lastcheck" / cs.Int32ul,
    "s_checkinterval" / cs.Int32ul,
    "s_creator_os" / cs.Int32ul,
    "s_rev_level" / cs.Int32ul * "0 original, 1 dynamic inode sizes",
    "s_def_resuid" / cs.Int16ul,
    "s_def_resgid" / cs.Int16ul,
    "s_first_ino" / cs.Int32ul,
    "s_inode_size" / cs.Int16ul,
    "s_block_group_nr" / cs.Int16ul,
    "s_feature_compat" / cs.Int32ul * "0x4 has_journal",
    "s_feature_incompat" / cs.Int32ul * "0x8 journal_dev, 0x40 extents, 0x80 64bit, ...",
    "s_feature_ro_compat" / cs.Int32ul * "0x8 huge_file, 0x10 gdt_csum, 0x20 dir_nlink, ...",
    "s_uuid" / cs.Bytes(16),
    "s_volume_name" / cs.Bytes(16) * "label, NUL-padded",
    "s_last_mounted" / cs.Bytes(64),
    cs.Padding(0x150 - 0xC8),
    "s_blocks_count_hi" / cs.Int32ul * "block count, high 32 bits (64bit feature)",
    cs.Padding(0x160 - 0x154),
    "s_flags" / cs.Int32ul * "0x4 test_filesys",
)

_EXT3_FEATURE_COMPAT_HAS_JOURNAL = 0x0004
_EXT3_FEATURE_INCOMPAT_RECOVER = 0x0004
_EXT3_FEATURE_INCOMPAT_JOURNAL_DEV = 0x0008
_EXT4_FEATURE_INCOMPAT_64BIT = 0x0080
# What the ext2 and ext3 drivers understood; anything beyond makes blkid say ext4.
_EXT2_RO_COMPAT_SUPP = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir
_EXT2_INCOMPAT_SUPP = 0x0002 | 0x0010  # filetype, meta_bg
_EXT3_RO_COMPAT_SUPP = _EXT2_RO_COMPAT_SUPP
_EXT3_INCOMPAT_SUPP = _EXT2_INCOMPAT_SUPP | _EXT3_FEATURE_INCOMPAT_RECOVER
_EXT_MAX_LOG_BLOCK_SIZE = 6  # 64 KiB


def _ext_kind(sb: cs.Container) -> str:
    """ext4, ext3, ext2 or jbd, decided by the feature flags as libblkid decides it.

    libblkid also asks the running kernel (ext2 driver present? ext4dev?); we answer as it does
    on any current kernel, where ext4 is there, ext4dev is not and ext2 is supported.
    """
    compat, incompat, ro_compat = (
        sb.s_feature_compat,
        sb.s_feature_incompat,
        sb.s_feature_ro_compat,
    )
    if incompat & _EXT3_FEATURE_INCOMPAT_JOURNAL_DEV:
        return "jbd"
    if ro_compat & ~_EXT3_RO_COMPAT_SUPP or incompat & ~_EXT3_INCOMPAT_SUPP:
        return "ext4"
    if compat & _EXT3_FEATURE_COMPAT_HAS_JOURNAL:
        return "ext3"
    if not (ro_compat & ~_EXT2_RO_COMPAT_SUPP or incompat & ~_EXT2_INCOMPAT_SUPP):
        return "ext2"
    raise NotThisFormat(
        "ext-superblock", EXT_SUPERBLOCK_OFFSET, "needs recovery but has no journal"
    )


def _probe_ext(dev: _Device) -> Content:
    """ext2/3/4: superblock at 1024, magic 0xEF53 at 1024+56."""
    sb = _parse(EXT_SUPERBLOCK, dev, "ext-superblock", EXT_SUPERBLOCK_OFFSET)
    kind = _ext_kind(sb)
    blocks = sb.s_blocks_count_lo
    if sb.s_feature_incompat & _EXT4_FEATURE_INCOMPAT_64BIT:
        blocks |= sb.s_blocks_count_hi << 32
    fs_size = None
    if sb.s_log_block_size <= _EXT_MAX_LOG_BLOCK_SIZE:
        fs_size = blocks * (1024 << sb.s_log_block_size) or None
    return Content(
        kind,
        f"{sb.s_rev_level}.{sb.s_minor_rev_level}",
        _label(sb.s_volume_name),
        _dce_uuid(sb.s_uuid),
        fs_size,
    )


# --------------------------------------------------------------------------------------------
# ISO9660
# --------------------------------------------------------------------------------------------

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


def _probe_iso9660(dev: _Device) -> Content:
    """ISO9660: primary volume descriptor at 0x8000 ("CD001" at 0x8001), Joliet label."""
    pvd = _parse(ISO_VOLUME_DESCRIPTOR, dev, "iso9660-pvd", ISO_FIRST_DESCRIPTOR)
    is_set, uuid = _iso_date_uuid(pvd.modification_date)
    if not is_set:
        _, uuid = _iso_date_uuid(pvd.creation_date)
    label = _label(pvd.volume_identifier)
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
            label = _utf16_label(joliet, "utf-16-be")
        break
    fs_size = pvd.volume_space_size * pvd.logical_block_size or None
    return Content("iso9660", version, label, uuid, fs_size)


# --------------------------------------------------------------------------------------------
# NTFS
# --------------------------------------------------------------------------------------------

NTFS_BOOT_SECTOR = cs.Struct(
    "jump" / cs.Bytes(3),
    "oem_id" / cs.Const(b"NTFS    "),
    "bytes_per_sector" / cs.Int16ul,
    "sectors_per_cluster" / cs.Int8ul,
    "reserved_sectors" / cs.Int16ul * "0",
    "fats" / cs.Int8ul * "0",
    "root_entries" / cs.Int16ul * "0",
    "sectors" / cs.Int16ul * "0",
    "media_type" / cs.Int8ul,
    "sectors_per_fat" / cs.Int16ul * "0",
    "sectors_per_track" / cs.Int16ul,
    "heads" / cs.Int16ul,
    "hidden_sectors" / cs.Int32ul,
    "large_sectors" / cs.Int32ul * "0",
    cs.Padding(4),
    "number_of_sectors" / cs.Int64ul * "sectors in the volume (the backup boot sector not)",
    "mft_lcn" / cs.Int64ul * "first cluster of $MFT",
    "mftmirr_lcn" / cs.Int64ul * "first cluster of $MFTMirr",
    "clusters_per_mft_record" / cs.Int8sl * "> 0 clusters, < 0 means 2**-n bytes",
    cs.Padding(3),
    "clusters_per_index_record" / cs.Int8sl,
    cs.Padding(3),
    "volume_serial" / cs.Int64ul,
    "checksum" / cs.Int32ul,
)

NTFS_MFT_RECORD_HEADER = cs.Struct(
    "magic" / cs.Const(b"FILE"),
    "usa_ofs" / cs.Int16ul,
    "usa_count" / cs.Int16ul,
    "lsn" / cs.Int64ul,
    "sequence_number" / cs.Int16ul,
    "link_count" / cs.Int16ul,
    "attrs_offset" / cs.Int16ul * "offset of the first attribute",
    "flags" / cs.Int16ul,
    "bytes_in_use" / cs.Int32ul,
    "bytes_allocated" / cs.Int32ul,
)

NTFS_RESIDENT_ATTRIBUTE = cs.Struct(
    "type" / cs.Int32ul * "0x60 $VOLUME_NAME, 0xFFFFFFFF end",
    "length" / cs.Int32ul,
    "non_resident" / cs.Int8ul,
    "name_length" / cs.Int8ul,
    "name_offset" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "instance" / cs.Int16ul,
    "value_length" / cs.Int32ul,
    "value_offset" / cs.Int16ul,
)

_NTFS_MFT_RECORD_VOLUME = 3
_NTFS_ATTR_VOLUME_NAME = 0x60
_NTFS_ATTR_END = 0xFFFFFFFF
_NTFS_MAX_CLUSTER = 64 * 1024
_NTFS_MAX_MFT_RECORD = 64 * 1024


def _ntfs_volume_name(record: bytes) -> str | None:
    """The $VOLUME_NAME attribute of the $Volume MFT record, as blkid reads it (no fixups)."""
    header = NTFS_MFT_RECORD_HEADER.parse(record)
    attr_off = header.attrs_offset
    attr_size = NTFS_RESIDENT_ATTRIBUTE.sizeof()
    # each step moves forward by a non-zero length, so this ends within the record
    while attr_off + attr_size <= len(record) and attr_off <= header.bytes_allocated:
        attr = NTFS_RESIDENT_ATTRIBUTE.parse(record[attr_off:])
        if attr.length == 0 or attr.type == _NTFS_ATTR_END:
            return None
        if attr.type == _NTFS_ATTR_VOLUME_NAME:
            start = attr_off + attr.value_offset
            value = record[start : start + attr.value_length]
            return _utf16_label(value, "utf-16-le")
        attr_off += attr.length
    return None


def _probe_ntfs(dev: _Device) -> Content:
    """NTFS: "NTFS    " at 3, blkid's BPB checks, $MFT found, label from $Volume."""
    boot = _parse(NTFS_BOOT_SECTOR, dev, "ntfs-boot-sector", 0)
    sector_size = boot.bytes_per_sector
    sectors_per_cluster = boot.sectors_per_cluster
    if not 256 <= sector_size <= 4096:
        raise NotThisFormat("ntfs-boot-sector", 0x0B, f"sector size {sector_size}")
    if sectors_per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128):
        raise NotThisFormat("ntfs-boot-sector", 0x0D, "sectors per cluster")
    if sector_size * sectors_per_cluster > _NTFS_MAX_CLUSTER:
        raise NotThisFormat("ntfs-boot-sector", 0x0B, "cluster larger than 64 KiB")
    if (
        boot.reserved_sectors
        or boot.root_entries
        or boot.sectors
        or boot.sectors_per_fat
        or boot.large_sectors
        or boot.fats
    ):
        raise NotThisFormat("ntfs-boot-sector", 0x0E, "FAT fields not zero")
    per_record = boot.clusters_per_mft_record
    if per_record > 0:
        if per_record not in (1, 2, 4, 8, 16, 32, 64):
            raise NotThisFormat("ntfs-boot-sector", 0x40, "clusters per MFT record")
        record_size = per_record * sectors_per_cluster * sector_size
    elif -31 <= per_record <= -9:
        record_size = 1 << -per_record
    else:
        raise NotThisFormat("ntfs-boot-sector", 0x40, "clusters per MFT record")
    if record_size > _NTFS_MAX_MFT_RECORD:
        raise UnsupportedError("ntfs-boot-sector", 0x40, f"MFT record of {record_size} bytes")
    nr_clusters = boot.number_of_sectors // sectors_per_cluster
    if boot.mft_lcn > nr_clusters or boot.mftmirr_lcn > nr_clusters:
        raise NotThisFormat("ntfs-boot-sector", 0x30, "$MFT outside the volume")

    mft_offset = boot.mft_lcn * sectors_per_cluster * sector_size
    if dev.read("ntfs-mft-record", mft_offset, 4) != b"FILE":
        raise NotThisFormat("ntfs-mft-record", mft_offset, "no FILE record at $MFT")
    volume_offset = mft_offset + _NTFS_MFT_RECORD_VOLUME * record_size
    record = dev.read("ntfs-mft-record", volume_offset, record_size)
    if record[:4] != b"FILE":
        raise NotThisFormat("ntfs-mft-record", volume_offset, "no FILE record at $Volume")
    label = _ntfs_volume_name(record)
    uuid = f"{boot.volume_serial:016X}" if boot.volume_serial else None
    return Content("ntfs", None, label, uuid, boot.number_of_sectors * sector_size or None)


# --------------------------------------------------------------------------------------------
# btrfs
# --------------------------------------------------------------------------------------------

BTRFS_SUPERBLOCK_OFFSET = 0x10000

BTRFS_SUPERBLOCK = cs.Struct(
    "csum" / cs.Bytes(32),
    "fsid" / cs.Bytes(16) * "file system UUID",
    "bytenr" / cs.Int64ul * "physical address of this block",
    "flags" / cs.Int64ul,
    "magic" / cs.Const(b"_BHRfS_M"),
    "generation" / cs.Int64ul,
    "root" / cs.Int64ul,
    "chunk_root" / cs.Int64ul,
    "log_root" / cs.Int64ul,
    "log_root_transid" / cs.Int64ul,
    "total_bytes" / cs.Int64ul * "size of the file system (all devices)",
    "bytes_used" / cs.Int64ul,
    "root_dir_objectid" / cs.Int64ul,
    "num_devices" / cs.Int64ul,
    "sectorsize" / cs.Int32ul,
    "nodesize" / cs.Int32ul,
    "leafsize" / cs.Int32ul,
    "stripesize" / cs.Int32ul,
    "sys_chunk_array_size" / cs.Int32ul,
    "chunk_root_generation" / cs.Int64ul,
    "compat_flags" / cs.Int64ul,
    "compat_ro_flags" / cs.Int64ul,
    "incompat_flags" / cs.Int64ul,
    "csum_type" / cs.Int16ul,
    "root_level" / cs.Int8ul,
    "chunk_root_level" / cs.Int8ul,
    "log_root_level" / cs.Int8ul,
    "dev_item" / cs.Bytes(98) * "this device's btrfs_dev_item",
    "label" / cs.Bytes(256) * "label, NUL-terminated",
)
_BTRFS_MIN_SIZE = 1024 * 1024


def _probe_btrfs(dev: _Device) -> Content:
    """btrfs: primary superblock at 64 KiB, "_BHRfS_M" at 0x10040."""
    if dev.size < _BTRFS_MIN_SIZE:
        raise NotThisFormat("btrfs-superblock", 0, "device smaller than 1 MiB")
    sb = _parse(BTRFS_SUPERBLOCK, dev, "btrfs-superblock", BTRFS_SUPERBLOCK_OFFSET)
    return Content("btrfs", None, _label(sb.label), _dce_uuid(sb.fsid), sb.total_bytes or None)


# --------------------------------------------------------------------------------------------
# exFAT
# --------------------------------------------------------------------------------------------

EXFAT_BOOT_SECTOR = cs.Struct(
    "jump_boot" / cs.Const(b"\xeb\x76\x90"),
    "file_system_name" / cs.Const(b"EXFAT   "),
    "must_be_zero" / cs.Bytes(53),
    "partition_offset" / cs.Int64ul,
    "volume_length" / cs.Int64ul * "volume size in sectors",
    "fat_offset" / cs.Int32ul * "in sectors",
    "fat_length" / cs.Int32ul,
    "cluster_heap_offset" / cs.Int32ul * "in sectors",
    "cluster_count" / cs.Int32ul,
    "first_cluster_of_root_directory" / cs.Int32ul,
    "volume_serial_number" / cs.Int32ul,
    "file_system_revision_minor" / cs.Int8ul,
    "file_system_revision_major" / cs.Int8ul,
    "volume_flags" / cs.Int16ul,
    "bytes_per_sector_shift" / cs.Int8ul * "9..12",
    "sectors_per_cluster_shift" / cs.Int8ul * "0..25 - bytes_per_sector_shift",
    "number_of_fats" / cs.Int8ul,
    "drive_select" / cs.Int8ul,
    "percent_in_use" / cs.Int8ul,
    cs.Padding(7),
    "boot_code" / cs.Bytes(390),
    "boot_signature" / cs.Const(0xAA55, cs.Int16ul),
)

EXFAT_VOLUME_LABEL_ENTRY = cs.Struct(
    "entry_type" / cs.Int8ul * "0x83",
    "character_count" / cs.Int8ul * "0..11",
    "volume_label" / cs.Bytes(22) * "UTF-16LE",
    cs.Padding(8),
)
_EXFAT_ENTRY_LABEL = 0x83
_EXFAT_ENTRY_END = 0x00
_EXFAT_DIR_SCAN = 64 * 1024
_EXFAT_FIRST_CLUSTER = 2
_EXFAT_LAST_CLUSTER = 0xFFFFFF6


def _exfat_boot_checksum(region: bytes) -> int:
    checksum = 0
    for index, byte in enumerate(region):
        if index in (106, 107, 112):  # VolumeFlags and PercentInUse change in place
            continue
        checksum = ((checksum >> 1) | ((checksum & 1) << 31)) + byte
        checksum &= 0xFFFFFFFF
    return checksum


def _exfat_label(dev: _Device, boot: cs.Container) -> str | None:
    sector_shift = boot.bytes_per_sector_shift
    cluster_bytes = 1 << (sector_shift + boot.sectors_per_cluster_shift)

    def cluster_offset(cluster: int) -> int:
        sector = boot.cluster_heap_offset + (
            (cluster - _EXFAT_FIRST_CLUSTER) << boot.sectors_per_cluster_shift
        )
        return sector << sector_shift

    cluster = boot.first_cluster_of_root_directory
    if not _EXFAT_FIRST_CLUSTER <= cluster <= _EXFAT_LAST_CLUSTER:
        return None
    offset = cluster_offset(cluster)
    entry_size = EXFAT_VOLUME_LABEL_ENTRY.sizeof()
    for _ in range(_EXFAT_DIR_SCAN // entry_size):
        entry = _parse(EXFAT_VOLUME_LABEL_ENTRY, dev, "exfat-dir-entry", offset)
        if entry.entry_type == _EXFAT_ENTRY_END:
            return None
        if entry.entry_type == _EXFAT_ENTRY_LABEL:
            length = min(entry.character_count * 2, len(entry.volume_label))
            return _utf16_label(entry.volume_label[:length], "utf-16-le")
        offset += entry_size
        if offset % cluster_bytes == 0:
            fat_entry = (boot.fat_offset << sector_shift) + cluster * 4
            cluster = int.from_bytes(dev.read("exfat-fat", fat_entry, 4), "little")
            if not _EXFAT_FIRST_CLUSTER <= cluster <= _EXFAT_LAST_CLUSTER:
                return None
            offset = cluster_offset(cluster)
    return None


def _probe_exfat(dev: _Device) -> Content:
    """exFAT: "EXFAT   " at 3, boot region checksum valid, label from the root directory."""
    boot = _parse(EXFAT_BOOT_SECTOR, dev, "exfat-boot-sector", 0)
    if any(boot.must_be_zero):
        raise NotThisFormat("exfat-boot-sector", 11, "MustBeZero is not zero")
    sector_shift = boot.bytes_per_sector_shift
    if not 9 <= sector_shift <= 12 or boot.sectors_per_cluster_shift > 25 - sector_shift:
        raise NotThisFormat("exfat-boot-sector", 108, "sector or cluster size out of range")
    sector = 1 << sector_shift
    region = dev.read("exfat-boot-region", 0, 12 * sector)
    checksum = _exfat_boot_checksum(region[: 11 * sector])
    expected = checksum.to_bytes(4, "little") * (sector // 4)
    if region[11 * sector :] != expected:
        raise NotThisFormat("exfat-boot-checksum", 11 * sector, "boot region checksum mismatch")
    try:
        label = _exfat_label(dev, boot)
    except ParserError as error:
        logger.debug("exfat label: %s", error)
        label = None
    version = f"{boot.file_system_revision_major}.{boot.file_system_revision_minor}"
    return Content(
        "exfat",
        version,
        label,
        _serial_uuid(boot.volume_serial_number),
        (boot.volume_length << sector_shift) or None,
    )


# --------------------------------------------------------------------------------------------
# The registry and detect()
# --------------------------------------------------------------------------------------------

Probe = Callable[[_Device], Content]

#: The probes in libblkid's order: volume managers and encryption first, since their headers
#: may sit over stale file system signatures; then the file systems.
PROBES: tuple[tuple[str, Probe], ...] = (
    ("LVM2_member", _probe_lvm2),
    ("crypto_LUKS", _probe_luks),
    ("vfat", _probe_vfat),
    ("swap", _probe_swap),
    ("xfs", _probe_xfs),
    ("ext", _probe_ext),
    ("iso9660", _probe_iso9660),
    ("ntfs", _probe_ntfs),
    ("btrfs", _probe_btrfs),
    ("exfat", _probe_exfat),
)


def detect(fh: ReadSeek, size: int) -> Content:
    """Say what the device in ``fh`` holds, by the signatures blkid looks for.

    Args:
        fh: a readable, seekable stream whose position 0 is the start of the device. Its
            position is moved.
        size: the size of the device in bytes; nothing at or past it is read, and a format
            whose structures do not fit is not there.

    Returns:
        The first format whose checks pass, in libblkid's order, or ``UNKNOWN``. Garbage,
        zeros and truncated images give ``UNKNOWN``; only a failing stream (an ``OSError``
        from ``fh``) raises. At most ``READ_BUDGET`` bytes are read.
    """
    if size < _MIN_DEVICE:
        return UNKNOWN
    dev = _Device(fh, size)
    for name, probe in PROBES:
        try:
            return probe(dev)
        except ParserError as error:
            logger.debug("%s: %s", name, error)
        except cs.ConstructError as error:
            logger.debug("%s: %s", name, error)
    return UNKNOWN
