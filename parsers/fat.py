"""FAT12, FAT16 and FAT32: the boot sector, the BIOS parameter block and the root directory's
volume label, as blkid reads them.

Microsoft's fatgen103: https://academy.cba.mit.edu/classes/networking_communications/SD/FAT.pdf
"""

from __future__ import annotations

import construct as cs

from parsers.errors import NotThisFormat, ParserError
from parsers.probe import Content, ProbeReader, c_label, is_power_of_2, read_struct, serial_uuid

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


def _fat_root_dir_label(dev: ProbeReader, offset: int, length: int) -> tuple[bytes | None, bool]:
    """Find the volume-label entry in ``length`` bytes of directory at ``offset``.

    Returns the 11-byte name (or None) and whether the directory ended in this span.
    """
    entry_size = FAT_DIR_ENTRY.sizeof()
    for index in range(min(length, _FAT_ROOT_DIR_SCAN) // entry_size):
        try:
            entry = read_struct(FAT_DIR_ENTRY, dev, "fat-dir-entry", offset + index * entry_size)
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


def probe(dev: ProbeReader) -> Content:
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
        or not is_power_of_2(sectors_per_cluster)
        or not is_power_of_2(bytes_per_sector)
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
    label = c_label(dir_label) if dir_label is not None else None
    return Content("vfat", version, label, serial_uuid(serial), fs_size)


def _fat32_root_dir_label(
    dev: ProbeReader, boot: cs.Container, fat32: cs.Container, fat_sectors: int
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


def _check_fat32_fsinfo(dev: ProbeReader, fs_info_sector: int, bytes_per_sector: int) -> None:
    if not fs_info_sector:
        return
    offset = fs_info_sector * bytes_per_sector
    fsinfo = read_struct(FAT32_FSINFO, dev, "fat32-fsinfo", offset)
    # Some formatters leave the signatures zero; blkid accepts that.
    if fsinfo.fsi_lead_sig not in (b"RRaA", b"RRdA", b"\0\0\0\0") or fsinfo.fsi_struc_sig not in (
        b"rrAa",
        b"\0\0\0\0",
    ):
        raise NotThisFormat("fat32-fsinfo", offset, "bad FSInfo signature")
