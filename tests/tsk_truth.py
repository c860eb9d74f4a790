"""Truth from outside bmap for the pytsk3 layer: The Sleuth Kit's own command-line tools
(``fls``, ``istat``), ``fsck.fat -v``, and bytes read back from the image.

Nothing here imports bmap: the parsers below read the tools' text output, and the boot sector
is decoded by hand from its documented offsets (fatgen103).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.ext_images import tool_path


def _tool(*args: str | Path) -> str:
    proc = subprocess.run(
        [tool_path(str(args[0])), *map(str, args[1:])],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr!r}")
    return proc.stdout.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class FlsEntry:
    path: str
    """Absolute, as bmap writes it (``/docs/big.bin:stream`` for an NTFS stream)."""
    inode: int
    meta: str
    """TSK's full address (``64-128-4`` on NTFS)."""
    type: str
    """``r/r``, ``d/d``, ``v/v``, ..."""
    deleted: bool


_FLS_LINE = re.compile(r"^(\S+/\S+) (\* )?([0-9][0-9-]*)(?:\(realloc\))?:\t(.*)$")


def fls(image: Path, sector_offset: int = 0) -> list[FlsEntry]:
    """``fls -r -p`` of the filesystem at ``sector_offset`` sectors into ``image``."""
    args: list[str | Path] = ["fls", "-r", "-p"]
    if sector_offset:
        args += ["-o", str(sector_offset)]
    out = []
    for line in _tool(*args, image).splitlines():
        m = _FLS_LINE.match(line)
        if not m:
            continue
        kind, deleted, meta, path = m.groups()
        out.append(FlsEntry("/" + path, int(meta.split("-")[0]), meta, kind, bool(deleted)))
    return out


@dataclass(frozen=True)
class IstatAttribute:
    header: str
    """The attribute's line (NTFS ``Type: $DATA (128-4)   Name: ...``), or ``Sectors:``."""
    blocks: list[int]
    """Its blocks as istat lists them (sectors on FAT and exFAT, clusters on NTFS)."""


def istat(image: Path, meta: str, sector_offset: int = 0) -> tuple[str, list[IstatAttribute]]:
    """``istat`` of TSK address ``meta``: its whole text and each attribute's block list."""
    args: list[str | Path] = ["istat"]
    if sector_offset:
        args += ["-o", str(sector_offset)]
    text = _tool(*args, image, meta)
    attrs: list[IstatAttribute] = []
    header: str | None = None
    blocks: list[int] = []
    for line in text.splitlines():
        if line.startswith("Type: ") or line.strip() in ("Sectors:", "Direct Blocks:"):
            if header is not None:
                attrs.append(IstatAttribute(header, blocks))
            header, blocks = line.strip(), []
        elif header is not None and re.fullmatch(r"[0-9 ]+", line.strip() or "x"):
            blocks += [int(x) for x in line.split()]
        elif header is not None and not line.strip():
            attrs.append(IstatAttribute(header, blocks))
            header, blocks = None, []
    if header is not None:
        attrs.append(IstatAttribute(header, blocks))
    return text, attrs


def fsck_fat(image: Path) -> dict[str, int]:
    """The layout ``fsck.fat -n -v`` prints, as numbers (bytes unless named otherwise)."""
    text = _tool("fsck.fat", "-n", "-v", image)
    facts: dict[str, int] = {}
    patterns = {
        "bytes_per_sector": r"(\d+) bytes per logical sector",
        "bytes_per_cluster": r"(\d+) bytes per cluster",
        "reserved_sectors": r"(\d+) reserved sectors",
        "first_fat": r"First FAT starts at byte (\d+)",
        "fats": r"(\d+) FATs, \d+ bit entries",
        "fat_bits": r"\d+ FATs, (\d+) bit entries",
        "bytes_per_fat": r"(\d+) bytes per FAT",
        "root_dir": r"Root directory starts at byte (\d+)",
        "root_entries": r"(\d+) root directory entries",
        "data_start": r"Data area starts at byte (\d+)",
        "data_clusters": r"(\d+) data clusters",
        "used_clusters": r"files, (\d+)/\d+ clusters",
        "total_clusters": r"files, \d+/(\d+) clusters",
    }
    for key, pattern in patterns.items():
        m = re.search(pattern, text)
        if m:
            facts[key] = int(m.group(1))
    return facts


def boot_sector_fat(image: Path, offset: int = 0) -> dict[str, int]:
    """The BIOS parameter block decoded by hand (fatgen103 offsets)."""
    with open(image, "rb") as fh:
        fh.seek(offset)
        b = fh.read(512)

    def u(at: int, size: int) -> int:
        return int.from_bytes(b[at : at + size], "little")

    fat_size = u(22, 2) or u(36, 4)
    return {
        "bytes_per_sector": u(11, 2),
        "sectors_per_cluster": b[13],
        "reserved_sectors": u(14, 2),
        "fats": b[16],
        "root_entries": u(17, 2),
        "total_sectors": u(19, 2) or u(32, 4),
        "fat_sectors": fat_size,
        "fsinfo_sector": u(48, 2) if u(22, 2) == 0 else 0,
        "backup_boot_sector": u(50, 2) if u(22, 2) == 0 else 0,
    }


def read_ranges(image: Path, ranges: list[tuple[int, int]]) -> bytes:
    """The bytes of ``image`` at ``[start, end)`` ranges, laid end to end."""
    out = bytearray()
    with open(image, "rb") as fh:
        for start, end in ranges:
            fh.seek(start)
            out += fh.read(end - start)
    return bytes(out)


#: What ``fsstat`` calls the unit of TSK's block addresses, per filesystem type.
_BLOCK_UNIT = {
    "fat": "Sector Size",
    "exfat": "Sector Size",
    "ntfs": "Cluster Size",
    "hfs": "Allocation Block Size",
    "ufs": "Fragment Size",
    "iso9660": "Block Size",
}


def blkls_free(
    image: Path, fstype: str, sector_offset: int = 0
) -> tuple[list[tuple[int, int]], int]:
    """The byte ranges of the blocks TSK's block walk (``blkls -l -e``) calls free (``f``),
    merged, and the end of the last block it lists; the unit of its addresses from
    ``fsstat`` (``fstype`` as ``-f`` takes it: ``fat``, ``ntfs``, ``hfs``, ...)."""
    where: list[str | Path] = ["-o", str(sector_offset)] if sector_offset else []
    stat = _tool("fsstat", "-f", fstype, *where, image)
    key = _BLOCK_UNIT[fstype if fstype in _BLOCK_UNIT else fstype.rstrip("0123456789")]
    m = re.search(rf"^{key}: ?(\d+)", stat, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"fsstat gives no {key!r}")
    unit = int(m.group(1))
    ranges: list[tuple[int, int]] = []
    listed = 0
    for line in _tool("blkls", "-f", fstype, "-l", "-e", *where, image).splitlines():
        addr, _, flag = line.partition("|")
        if not addr.isdigit():
            continue
        lo = int(addr) * unit
        listed = max(listed, lo + unit)
        if flag != "f":
            continue
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], lo + unit)
        else:
            ranges.append((lo, lo + unit))
    return ranges, listed
