"""Ground truth for LVM2 images from outside bmap: the lvm2 tools themselves.

``lvs``, ``pvs`` and ``vgs`` say where every logical volume lives; ``pvck --dump`` says where
the label, the metadata areas and the metadata records are. Nothing here parses LVM's on-disk
structures itself, except :func:`lvm_crc32`, which the tests check against pvck's values.

Isolation. Every lvm command runs in an :class:`LvmSession`: a temporary ``LVM_SYSTEM_DIR``
holding its own ``lvm.conf`` (see :data:`LVM_CONF`) whose filter accepts exactly the loop
devices the session attached and nothing else, with backups, archives, hints, the devices
file, udev, lvmpolld, dbus and device-mapper (``--driverloaded n``) all off and the lock
files in the session's directory. The host's LVM state (``/etc/lvm``, ``/run/lvm``, other
loop devices, device-mapper) is neither read for configuration nor written. Every loop device
a session attaches is detached and its directory removed when it closes, also on errors.

The truth functions attach the images read-only (``losetup --read-only``): a whole image, or
each partition of an image with a partition table (from ``sfdisk --json``) at its offset,
since this machine has no udev to make ``/dev/loopNp2`` nodes. Loop device names mean nothing
outside a session, so every answer names the image path, the partition and the PV's byte
offset in the image instead.

Units: bytes, half-open ``[start, end)`` ranges in DISK coordinates (offsets in the image
file), except where a name says ``pe`` (physical extent numbers, inclusive as lvm prints
them). Needs root and loop devices; without them the functions raise :class:`NeedsRoot`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tests.ext_images import NeedsRoot, tool_path
from tests.ext_truth import block_runs_to_bytes, debugfs_stat, dumpe2fs_header

LVM_CRC_INITIAL = 0xF597A6CF  # lib/format_text/layout.h INITIAL_CRC
SECTOR = 512
UNKNOWN_DEVICE = "[unknown]"  # what lvs/pvs print for a PV that is not there
_JSON_LINE = re.compile(r'^\s*[\[\]{}"]')

# Every key here is accepted by lvm2 2.03.16 (``lvmconfig --validate`` says so; a test
# checks it). The 2.02 keys ``global/use_lvmetad`` and ``global/locking_type`` are accepted
# too but do nothing in 2.03, so they are left out. ``{accept}`` becomes one
# ``"a|^/dev/loopN$|",`` entry per attached device.
LVM_CONF = """\
# Written by tests/lvm_truth.py for one isolated session.
devices {{
    filter = [ {accept}"r|.*|" ]
    global_filter = [ {accept}"r|.*|" ]
    use_devicesfile = 0
    scan_lvs = 0
    hints = "none"
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    md_component_detection = 0
    multipath_component_detection = 0
}}
global {{
    locking_dir = "{lock_dir}"
    use_lvmpolld = 0
    event_activation = 0
    notify_dbus = 0
}}
activation {{
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}}
backup {{
    backup = 0
    archive = 0
    backup_dir = "{backup_dir}"
    archive_dir = "{archive_dir}"
}}
"""

# Environment of every lvm command (on top of the caller's environment).
LVM_ENV = {
    "LVM_SUPPRESS_FD_WARNINGS": "1",  # pytest's and subprocess' inherited descriptors
    "DM_DISABLE_UDEV": "1",
    "LC_ALL": "C",
}


class PvPlace(NamedTuple):
    """Where a (candidate) PV sits: ``size`` bytes at ``offset`` in ``image``.

    ``partition`` is the partition's number (GPT entry slot, 1-based) or None for a whole
    image; ``disk`` the 1-based index of the image in the list the caller gave.
    """

    image: Path
    offset: int
    size: int
    partition: int | None
    disk: int


class PhysicalRange(NamedTuple):
    """Bytes ``[start, end)`` of ``image`` hold bytes ``[lv_offset, lv_offset + end - start)``
    of an LV."""

    image: Path
    start: int
    end: int
    lv_offset: int


class FreeRange(NamedTuple):
    image: Path
    start: int
    end: int


class FileRange(NamedTuple):
    """Bytes ``[start, end)`` of ``image`` hold bytes ``[file_offset, ...)`` of a file."""

    image: Path
    start: int
    end: int
    file_offset: int


def lvm_crc32(data: bytes, initial: int = LVM_CRC_INITIAL) -> int:
    """LVM's checksum (``calc_crc``): the CRC-32 table of zlib, seeded with ``initial`` and
    without zlib's final inversion. zlib inverts on the way in and out, so invert both."""
    return ~zlib.crc32(data, ~initial & 0xFFFFFFFF) & 0xFFFFFFFF


def _int(value: str) -> int | None:
    """A report number; None where lvm has none (a PV without a VG has no extent size)."""
    value = value.strip()
    return int(value) if value else None


def require_loops() -> None:
    if os.geteuid() != 0:
        raise NeedsRoot("needs root to attach loop devices for the lvm tools")
    if not Path("/dev/loop-control").exists():
        raise NeedsRoot("this machine has no loop devices (/dev/loop-control missing)")


@functools.cache
def lvm_version() -> str:
    """``2.03.16``: from ``lvm version``, run without the host's lvm.conf (an empty
    ``LVM_SYSTEM_DIR``), so that it needs neither root nor loop devices."""
    with tempfile.TemporaryDirectory(prefix="bmap-lvm-version-") as empty:
        out = subprocess.run(
            [tool_path("lvm"), "version", "--driverloaded", "n"],
            capture_output=True,
            text=True,
            env={**os.environ, **LVM_ENV, "LVM_SYSTEM_DIR": empty},
            check=False,
        ).stdout
    m = re.search(r"LVM version:\s+(\S+)", out)
    if not m:
        raise RuntimeError(f"lvm version printed no version: {out!r}")
    return m[1].split("(")[0]


# --------------------------------------------------------------------------------------------
# partitions: which byte ranges of an image may hold a PV


def pv_places(images: Sequence[Path | str]) -> list[PvPlace]:
    """Each partition of each image that has a partition table, else the whole image."""
    places: list[PvPlace] = []
    for disk, image in enumerate(map(Path, images), start=1):
        proc = subprocess.run(
            [tool_path("sfdisk"), "--json", str(image)],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
        table = json.loads(proc.stdout)["partitiontable"] if proc.returncode == 0 else None
        if not table or not table.get("partitions"):
            places.append(PvPlace(image, 0, image.stat().st_size, None, disk))
            continue
        sector = int(table.get("sectorsize", SECTOR))
        for part in table["partitions"]:
            number = int(re.search(r"(\d+)$", part["node"])[1])  # type: ignore[index]
            places.append(
                PvPlace(image, part["start"] * sector, part["size"] * sector, number, disk)
            )
    return places


# --------------------------------------------------------------------------------------------
# the isolated session


class LvmSession:
    """An isolated LVM environment over loop devices this session attaches.

    Use as a context manager; :meth:`close` detaches every loop device (in reverse order)
    and removes the session's directory, whatever happened before.
    """

    def __init__(self) -> None:
        require_loops()
        self.dir = Path(tempfile.mkdtemp(prefix="bmap-lvm-"))
        (self.dir / "lock").mkdir()
        self.devices: dict[str, PvPlace] = {}
        self._write_conf()

    def __enter__(self) -> LvmSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for dev in reversed(list(self.devices)):
                subprocess.run(
                    [tool_path("losetup"), "--detach", dev], capture_output=True, check=False
                )
            self.devices.clear()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- setup

    @property
    def conf_text(self) -> str:
        return (self.dir / "lvm.conf").read_text()

    def _write_conf(self) -> None:
        accept = "".join(f'"a|^{re.escape(dev)}$|", ' for dev in self.devices)
        (self.dir / "lvm.conf").write_text(
            LVM_CONF.format(
                accept=accept,
                lock_dir=self.dir / "lock",
                backup_dir=self.dir / "backup",
                archive_dir=self.dir / "archive",
            )
        )

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **LVM_ENV, "LVM_SYSTEM_DIR": str(self.dir)}

    def attach(self, place: PvPlace, read_only: bool = True) -> str:
        """Attach ``place`` to a free loop device; the filter accepts it from now on."""
        args = [tool_path("losetup"), "--find", "--show"]
        if read_only:
            args.append("--read-only")
        if place.offset or place.partition is not None:
            args += ["--offset", str(place.offset), "--sizelimit", str(place.size)]
        proc = subprocess.run(
            [*args, str(place.image)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"losetup {place.image}: {proc.stderr.strip()}")
        dev = proc.stdout.strip()
        self.devices[dev] = place
        self._write_conf()
        return dev

    def attach_images(self, images: Sequence[Path | str]) -> list[str]:
        """Attach every place of :func:`pv_places` read-only."""
        return [self.attach(place) for place in pv_places(images)]

    def place_of(self, device: str) -> PvPlace | None:
        """The image place behind a device name lvm printed (None for a missing PV)."""
        if device == UNKNOWN_DEVICE:
            return None
        return self.devices[device]

    # -- running lvm

    def run(
        self, command: str, *args: str | os.PathLike, ok: Iterable[int] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        """``lvm COMMAND --driverloaded n ARGS...``; raise unless the exit code is in ``ok``."""
        argv = [tool_path("lvm"), command, "--driverloaded", "n", *map(str, args)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, check=False)
        if proc.returncode not in tuple(ok):
            raise RuntimeError(
                f"{' '.join(argv[1:])} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def report(self, command: str, *args: str, key: str) -> list[dict[str, str]]:
        """A ``--reportformat json`` report's rows (``key`` is ``lv``, ``seg``, ``pv``, ...)."""
        proc = self.run(command, "--reportformat", "json", "--units", "b", "--nosuffix", *args)
        # lvm prints some notices on stdout, inside the JSON ("Retrying metadata scan."):
        # every line of the JSON itself starts with a bracket, a brace or a quote.
        text = "\n".join(line for line in proc.stdout.splitlines() if _JSON_LINE.match(line))
        return [row for part in json.loads(text)["report"] for row in part.get(key, [])]

    # -- the reports

    def lvs_segments(self) -> list[dict[str, Any]]:
        rows = self.report(
            "lvs",
            "--segments",
            "-a",
            "-o",
            "lv_name,vg_name,lv_attr,lv_size,seg_start,seg_size,segtype,stripes,stripe_size,"
            "seg_pe_ranges,devices",
            key="seg",
        )
        segments = []
        for row in rows:
            ranges = []
            for item in row["seg_pe_ranges"].split():
                device, _, pes = item.rpartition(":")
                first, _, last = pes.partition("-")
                place = self.place_of(device)
                ranges.append(
                    {
                        "image": place.image if place else None,
                        "disk": place.disk if place else None,
                        "partition": place.partition if place else None,
                        "pv_offset": place.offset if place else None,
                        "missing": place is None,
                        "first_pe": int(first),
                        "last_pe": int(last or first),
                    }
                )
            segments.append(
                {
                    "lv_name": row["lv_name"],
                    "vg_name": row["vg_name"],
                    "lv_attr": row["lv_attr"],
                    "lv_size": int(row["lv_size"]),
                    "seg_start": int(row["seg_start"]),
                    "seg_size": int(row["seg_size"]),
                    "segtype": row["segtype"],
                    "stripes": int(row["stripes"]),
                    "stripe_size": int(row["stripe_size"]),
                    "pe_ranges": ranges,
                }
            )
        return sorted(segments, key=lambda s: (s["vg_name"], s["lv_name"], s["seg_start"]))

    def pvs_info(self) -> list[dict[str, Any]]:
        rows = self.report(
            "pvs",
            "-o",
            "+pe_start,pv_uuid,pv_pe_count,pv_pe_alloc_count,vg_extent_size,dev_size,pv_missing",
            key="pv",
        )
        out = []
        for row in rows:
            place = self.place_of(row["pv_name"])
            out.append(
                {
                    "image": place.image if place else None,
                    "disk": place.disk if place else None,
                    "partition": place.partition if place else None,
                    "pv_offset": place.offset if place else None,
                    "missing": place is None or bool(row["pv_missing"]),
                    "vg_name": row["vg_name"],
                    "pv_uuid": row["pv_uuid"],
                    "pv_attr": row["pv_attr"],
                    "pe_start": _int(row["pe_start"]),
                    "pv_pe_count": _int(row["pv_pe_count"]),
                    "pv_pe_alloc_count": _int(row["pv_pe_alloc_count"]),
                    "vg_extent_size": _int(row["vg_extent_size"]),
                    "dev_size": _int(row["dev_size"]),
                    "pv_size": _int(row["pv_size"]),
                    "pv_free": _int(row["pv_free"]),
                }
            )
        return out

    def vgs_info(self) -> list[dict[str, Any]]:
        rows = self.report(
            "vgs",
            "-o",
            "vg_name,vg_uuid,vg_attr,pv_count,lv_count,vg_missing_pv_count,vg_extent_size,"
            "vg_extent_count,vg_free_count,vg_seqno,vg_mda_count",
            key="vg",
        )
        return [{k: (int(v) if v.isdigit() else v) for k, v in row.items()} for row in rows]

    def pvs_segments(self) -> list[dict[str, Any]]:
        rows = self.report(
            "pvs",
            "--segments",
            "-o",
            "pv_name,pv_uuid,vg_name,pvseg_start,pvseg_size,lv_name",
            key="pvseg",
        )
        return [
            {
                "place": self.place_of(row["pv_name"]),
                "pv_uuid": row["pv_uuid"],
                "vg_name": row["vg_name"],
                "pvseg_start": int(row["pvseg_start"]),
                "pvseg_size": int(row["pvseg_size"]),
                "lv_name": row["lv_name"],
            }
            for row in rows
        ]

    def _geometry(self) -> dict[tuple[Path, int], tuple[int, int]]:
        return geometry_of(self.pvs_info())

    def physical_ranges(self) -> dict[str, list[PhysicalRange]]:
        return ranges_from_segments(self.lvs_segments(), self._geometry())

    def free_pe_ranges(self) -> list[FreeRange]:
        geometry = self._geometry()
        out = []
        for seg in self.pvs_segments():
            place = seg["place"]
            if seg["lv_name"] or place is None or not seg["pvseg_size"]:
                continue  # used, on a missing PV, or a PV without a VG (one empty row)
            pe_start, extent = geometry[(place.image, place.offset)]
            start = place.offset + pe_start + seg["pvseg_start"] * extent
            out.append(FreeRange(place.image, start, start + seg["pvseg_size"] * extent))
        return sorted(out)


@contextlib.contextmanager
def session_over(images: Sequence[Path | str]) -> Iterator[LvmSession]:
    """A session with every PV place of ``images`` attached read-only."""
    with LvmSession() as session:
        session.attach_images(images)
        yield session


# --------------------------------------------------------------------------------------------
# the truth functions (one read-only session each)


def lvm_report(images: Sequence[Path | str]) -> dict[str, Any]:
    """Everything below from one read-only session: ``segments`` (:func:`lvs_segments`),
    ``pvs``, ``vgs``, ``ranges`` (:func:`physical_ranges`), ``free`` and ``pvsegs``."""
    with session_over(images) as session:
        segments, pvs = session.lvs_segments(), session.pvs_info()
        return {
            "segments": segments,
            "pvs": pvs,
            "vgs": session.vgs_info(),
            "ranges": ranges_from_segments(segments, geometry_of(pvs)),
            "free": session.free_pe_ranges(),
            "pvsegs": session.pvs_segments(),
        }


def lvs_segments(images: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Every LV segment lvs reports (``-a``: hidden sub-LVs too), sorted by VG, LV, start.

    Keys: ``lv_name vg_name lv_attr lv_size seg_start seg_size segtype stripes stripe_size``
    (sizes in bytes; ``stripe_size`` is the chunk size, 0 for linear) and ``pe_ranges``: one
    dict per stripe (or the one area of a linear segment) with ``image disk partition
    pv_offset first_pe last_pe missing`` (image None and missing True for a missing PV).
    """
    with session_over(images) as session:
        return session.lvs_segments()


def pvs_info(images: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Every PV pvs reports: ``pe_start``, ``vg_extent_size``, ``pv_uuid``, counts, sizes
    (bytes; ``pe_start`` relative to the PV) and where it sits (``image``, ``pv_offset``)."""
    with session_over(images) as session:
        return session.pvs_info()


def vgs_info(images: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Every VG vgs reports (``vg_missing_pv_count``, ``vg_seqno``, ``vg_mda_count`` ...)."""
    with session_over(images) as session:
        return session.vgs_info()


def physical_ranges(images: Sequence[Path | str]) -> dict[str, list[PhysicalRange]]:
    """Every LV's bytes in disk coordinates, by LV name, sorted by LV offset.

    One range per PE range of a linear segment; a striped segment is expanded chunk by
    chunk (chunk k of the segment is on stripe ``k % stripes`` at ``(k // stripes) *
    stripe_size`` into that stripe's area), one range per chunk. Ranges on a missing PV are
    left out, so an LV of a VG with a missing PV has holes.
    """
    with session_over(images) as session:
        return session.physical_ranges()


def free_pe_ranges(images: Sequence[Path | str]) -> list[FreeRange]:
    """Runs of free physical extents (pvs --segments rows without an LV), disk bytes."""
    with session_over(images) as session:
        return session.free_pe_ranges()


def geometry_of(pvs: Iterable[dict[str, Any]]) -> dict[tuple[Path, int], tuple[int, int]]:
    """(image, pv_offset) -> (pe_start, extent_size) of every :func:`pvs_info` PV that is
    present and in a VG."""
    return {
        (pv["image"], pv["pv_offset"]): (pv["pe_start"], pv["vg_extent_size"])
        for pv in pvs
        if pv["image"] is not None and pv["vg_extent_size"]
    }


def ranges_from_segments(
    segments: Iterable[dict[str, Any]], geometry: dict[tuple[Path, int], tuple[int, int]]
) -> dict[str, list[PhysicalRange]]:
    """Disk ranges of each LV from :func:`lvs_segments` rows and each PV's (pe_start,
    extent_size) keyed by (image, pv_offset)."""
    out: dict[str, list[PhysicalRange]] = {}
    vg_of: dict[str, str] = {}
    for seg in segments:
        lv = seg["lv_name"]
        if vg_of.setdefault(lv, seg["vg_name"]) != seg["vg_name"]:
            raise ValueError(f"LV name {lv} is in two VGs; ask one VG at a time")
        ranges = out.setdefault(lv, [])
        areas: list[tuple[Path, int, int] | None] = []
        for area in seg["pe_ranges"]:
            if area["missing"]:
                areas.append(None)
                continue
            pe_start, extent = geometry[(area["image"], area["pv_offset"])]
            start = area["pv_offset"] + pe_start + area["first_pe"] * extent
            end = area["pv_offset"] + pe_start + (area["last_pe"] + 1) * extent
            areas.append((area["image"], start, end))
        if seg["stripes"] <= 1:
            for area in areas:
                if area is not None:
                    ranges.append(PhysicalRange(area[0], area[1], area[2], seg["seg_start"]))
            continue
        chunk, stripes = seg["stripe_size"], seg["stripes"]
        if len(areas) != stripes or seg["seg_size"] % (chunk * stripes):
            raise ValueError(f"{lv}: {stripes} stripes but areas {areas} / size {seg}")
        for k in range(seg["seg_size"] // chunk):
            area = areas[k % stripes]
            if area is None:
                continue
            start = area[1] + (k // stripes) * chunk
            ranges.append(
                PhysicalRange(area[0], start, start + chunk, seg["seg_start"] + k * chunk)
            )
    for ranges in out.values():
        ranges.sort(key=lambda r: r.lv_offset)
    return out


# --------------------------------------------------------------------------------------------
# reading and translating through the ranges


def lv_to_disk(ranges: Iterable[PhysicalRange], start: int, end: int) -> list[PhysicalRange]:
    """The disk ranges holding LV bytes ``[start, end)``, in LV order (cut at chunk, segment
    and PV boundaries). Raises if part of it is on no given image (a missing PV)."""
    out = []
    pos = start
    for r in sorted(ranges, key=lambda r: r.lv_offset):
        length = r.end - r.start
        lo, hi = max(pos, r.lv_offset), min(end, r.lv_offset + length)
        if lo >= hi:
            continue
        if lo != pos:
            break
        out.append(
            PhysicalRange(r.image, r.start + lo - r.lv_offset, r.start + hi - r.lv_offset, lo)
        )
        pos = hi
    if pos != end:
        raise ValueError(f"LV bytes [{pos:#x}, {end:#x}) are on no given image")
    return out


def read_lv(ranges: Iterable[PhysicalRange], size: int) -> bytes:
    """The first ``size`` bytes of an LV, read from the images through ``ranges``."""
    out = bytearray()
    handles: dict[Path, Any] = {}
    try:
        for r in lv_to_disk(ranges, 0, size):
            fh = handles.get(r.image) or handles.setdefault(r.image, open(r.image, "rb"))  # noqa: SIM115
            fh.seek(r.start)
            data = fh.read(r.end - r.start)
            if len(data) != r.end - r.start:
                raise ValueError(f"{r.image} ends before {r.end:#x}")
            out += data
    finally:
        for fh in handles.values():
            fh.close()
    return bytes(out)


def lv_sha256(ranges: Iterable[PhysicalRange], size: int) -> str:
    return hashlib.sha256(read_lv(ranges, size)).hexdigest()


def lv_file_extents(
    fs_image: Path | str, path: bytes | str, ranges: Iterable[PhysicalRange]
) -> list[FileRange]:
    """Where a file of the ext4 inside an LV lives on the disk images.

    ``fs_image`` is the standalone ext4 file whose bytes are the LV's (kept next to each
    LVM test image); debugfs ``stat`` gives the file's extents in LV bytes, and
    :func:`lv_to_disk` carries them through the segments and stripes. Ranges come in file
    order; one file extent becomes several ranges where it crosses a chunk, a segment or a
    PV boundary. Unwritten extents are included (they are allocated).
    """
    ranges = list(ranges)
    block_size = int(dumpe2fs_header(fs_image)["Block size"])
    extents = block_runs_to_bytes(debugfs_stat(fs_image, path)["data_extents"], block_size)
    out = []
    for ext in extents:
        for r in lv_to_disk(ranges, ext.physical, ext.physical + ext.length):
            out.append(FileRange(r.image, r.start, r.end, ext.logical + r.lv_offset - ext.physical))
    return out


# --------------------------------------------------------------------------------------------
# pvck: labels, metadata areas, metadata records


_PVCK_AT = re.compile(r"^(?P<key>[\w.\[\]]+) at (?P<at>\d+)(?: # (?P<note>.*))?$")
_PVCK_FIELD = re.compile(r"^(?P<key>[\w.\[\]]+) (?P<value>.*)$")
_PVCK_TEXT = re.compile(
    r"^metadata text at (?P<at>\d+) crc (?P<crc>0x[0-9a-f]+) # vgname (?P<vg>\S+) "
    r"seqno (?P<seqno>\d+)$"
)
_PVCK_RECORD = re.compile(
    r"^metadata at (?P<at>\d+) length (?P<length>\d+) crc (?P<crc>[0-9a-f]+) "
    r"vg (?P<vg>\S+) seqno (?P<seqno>\d+) id (?P<id>\S+)$"
)


def _number(value: str) -> int | str:
    if re.fullmatch(r"0x[0-9a-f]+", value):
        return int(value, 16)
    if re.fullmatch(r"\d+", value):
        return int(value)
    return value


def parse_pvck_headers(text: str) -> dict[str, Any]:
    """``pvck --dump headers`` output as data (offsets relative to the PV, as pvck prints).

    ``fields``: every ``key value`` line (``mda_header_1.raw_locn[0].checksum`` -> int);
    ``at``: every ``key at N`` line; ``checks``: pvck's ``CHECK:`` complaints;
    ``metadata_text``: one dict per ``metadata text at`` line (at, crc, vg, seqno; the crc
    pvck computed over the text); and the same values in structures:
    ``label_header``, ``pv_header`` (``data_areas``, ``metadata_areas``: lists of
    {at, offset, size}), ``pv_header_extension``, ``mda_headers`` (one per area, each with
    ``raw_locns``: {at, offset, size, checksum, flags, role}).
    """
    fields: dict[str, int | str] = {}
    at: dict[str, int] = {}
    notes: dict[str, str] = {}
    checks: list[str] = []
    texts: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("CHECK:"):
            checks.append(line[len("CHECK:") :].strip())
        elif m := _PVCK_TEXT.match(line):
            texts.append(
                {
                    "at": int(m["at"]),
                    "crc": int(m["crc"], 16),
                    "vg": m["vg"],
                    "seqno": int(m["seqno"]),
                }
            )
        elif m := _PVCK_AT.match(line):
            at[m["key"]] = int(m["at"])
            if m["note"]:
                notes[m["key"]] = m["note"]
        elif m := _PVCK_FIELD.match(line):
            fields[m["key"]] = _number(m["value"].strip())

    def sub(prefix: str) -> dict[str, Any]:
        return {
            k[len(prefix) + 1 :]: v
            for k, v in fields.items()
            if k.startswith(prefix + ".") and "[" not in k[len(prefix) + 1 :]
        }

    def locns(prefix: str) -> list[dict[str, Any]]:
        out = []
        i = 0
        while f"{prefix}[{i}]" in at:
            key = f"{prefix}[{i}]"
            out.append(
                {
                    "at": at[key],
                    "note": notes.get(key, ""),
                    **{k[len(key) + 1 :]: v for k, v in fields.items() if k.startswith(key + ".")},
                }
            )
            i += 1
        return out

    pv_locns = locns("pv_header.disk_locn")
    mda_headers = []
    n = 1
    while f"mda_header_{n}" in at:
        prefix = f"mda_header_{n}"
        raw_locns = locns(f"{prefix}.raw_locn")
        for r in raw_locns:
            r["role"] = r.pop("note")
        mda_headers.append({"index": n, "at": at[prefix], **sub(prefix), "raw_locns": raw_locns})
        n += 1
    return {
        "fields": fields,
        "at": at,
        "checks": checks,
        "metadata_text": texts,
        "label_header": {"at": at.get("label_header"), **sub("label_header")},
        "pv_header": {
            "at": at.get("pv_header"),
            **sub("pv_header"),
            "data_areas": [
                {"at": d["at"], "offset": d["offset"], "size": d["size"]}
                for d in pv_locns
                if d["note"] == "location of data area"
            ],
            "metadata_areas": [
                {"at": d["at"], "offset": d["offset"], "size": d["size"]}
                for d in pv_locns
                if d["note"] == "location of metadata area"
            ],
        },
        "pv_header_extension": {
            "at": at.get("pv_header_extension"),
            **sub("pv_header_extension"),
            "bootloader_areas": [
                {"at": d["at"], "offset": d["offset"], "size": d["size"]}
                for d in locns("pv_header_extension.disk_locn")
                if "list end" not in d["note"]
            ],
        },
        "mda_headers": mda_headers,
    }


def parse_pvck_records(text: str) -> list[dict[str, Any]]:
    """``pvck --dump metadata_all`` / ``metadata_search`` lines: one dict per record found
    in a metadata area (at: PV offset of the text, length, crc pvck computed, vg, seqno, id)."""
    out = []
    for line in text.splitlines():
        if m := _PVCK_RECORD.match(line.strip()):
            out.append(
                {
                    "at": int(m["at"]),
                    "length": int(m["length"]),
                    "crc": int(m["crc"], 16),
                    "vg": m["vg"],
                    "seqno": int(m["seqno"]),
                    "id": m["id"],
                }
            )
    return out


def pvck_dump(image: Path | str, offset: int = 0, size: int | None = None) -> dict[str, Any]:
    """``pvck --dump headers`` and ``--dump metadata_all`` (every metadata area) of the PV at
    ``offset`` in ``image`` (a whole-image PV is read as the plain file; a partition through
    a read-only loop device), parsed by :func:`parse_pvck_headers`, plus:

    ``pv_offset``; ``exit_code`` of ``pvck --dump headers``; ``records``: for each metadata
    area (in order) the records pvck finds in its ring (:func:`parse_pvck_records`);
    ``label_sector``: the label sector's disk range; ``metadata_areas_disk``: each
    metadata area's disk range; ``records_disk``: (mda index, disk start, disk end, seqno)
    per ring record, a wrapped record as two such pieces (its end of the ring, then what
    follows the 512-byte mda_header).
    """
    image = Path(image)
    with LvmSession() as session:
        if offset == 0 and size in (None, image.stat().st_size):
            target = str(image)
        else:
            full = image.stat().st_size - offset if size is None else size
            target = session.attach(PvPlace(image, offset, full, 0, 1))
        headers = session.run("pvck", "--dump", "headers", target, ok=(0, 5))
        dump = parse_pvck_headers(headers.stdout + headers.stderr)
        dump["exit_code"] = headers.returncode
        dump["records"] = []
        for mda in dump["mda_headers"]:
            proc = session.run(
                "pvck",
                "--dump",
                "metadata_all",
                "--settings",
                f"mda_num={mda['index']}",
                target,
                ok=(0, 5),
            )
            dump["records"].append(parse_pvck_records(proc.stdout))
    dump["pv_offset"] = offset
    label = dump["label_header"]
    if label.get("at") is not None:
        sector_start = offset + label["sector"] * SECTOR
        dump["label_sector"] = (sector_start, sector_start + SECTOR)
    else:
        dump["label_sector"] = None
    dump["metadata_areas_disk"] = [
        (offset + m["offset"], offset + m["offset"] + m["size"])
        for m in dump["pv_header"]["metadata_areas"]
    ]
    dump["records_disk"] = []
    for mda, records in zip(dump["mda_headers"], dump["records"]):
        ring_start, ring_end = offset + mda["start"], offset + mda["start"] + mda["size"]
        for r in records:
            start, end = offset + r["at"], offset + r["at"] + r["length"]
            if end <= ring_end:
                dump["records_disk"].append((mda["index"], start, end, r["seqno"]))
            else:  # wrapped: the rest follows the mda_header at the start of the area
                rest = ring_start + SECTOR + end - ring_end
                dump["records_disk"].append((mda["index"], start, ring_end, r["seqno"]))
                dump["records_disk"].append((mda["index"], ring_start + SECTOR, rest, r["seqno"]))
    return dump


def extract_metadata(
    image: Path | str, seqno: int, out: Path, offset: int = 0, size: int | None = None
) -> Path:
    """Write the ring record ``seqno`` of the PV's first metadata area to ``out`` (pvck
    ``--dump metadata_search --settings seqno=N -f``)."""
    with LvmSession() as session:
        target = str(image)
        if offset or size is not None:
            full = Path(image).stat().st_size - offset if size is None else size
            target = session.attach(PvPlace(Path(image), offset, full, 0, 1))
        session.run(
            "pvck",
            "--dump",
            "metadata_search",
            "--settings",
            f"seqno={seqno}",
            "-f",
            out,
            target,
        )
    if not out.exists() or not out.stat().st_size:
        raise RuntimeError(f"pvck found no metadata seqno {seqno} on {image}")
    return out


def fallback_truth(image: Path | str, seqno: int) -> dict[str, Any]:
    """What LVM itself says the older metadata record ``seqno`` describes, for a whole-image
    PV whose newest record is damaged (lvm does not fall back on its own: vgs finds no VG).

    On a sparse temporary copy: pvck extracts the record, ``pvck --repair`` writes it as the
    current metadata, then lvs and pvs read the copy. Image paths in the answer are the
    original's. Returns ``segments``, ``pvs``, ``ranges`` (:func:`physical_ranges` shape),
    ``free`` and ``vgs``.
    """
    image = Path(image)
    work = Path(tempfile.mkdtemp(prefix="bmap-lvm-fallback-"))
    try:
        copy = work / image.name
        subprocess.run(
            ["cp", "--sparse=always", str(image), str(copy)], check=True, capture_output=True
        )
        copy.chmod(0o644)
        text = extract_metadata(copy, seqno, work / f"seqno{seqno}.vg")
        with LvmSession() as session:
            dev = session.attach(PvPlace(copy, 0, copy.stat().st_size, None, 1), read_only=False)
            session.run("pvck", "--repair", "-y", "-f", text, dev)
            segments = session.lvs_segments()
            pvs = session.pvs_info()
            free = session.free_pe_ranges()
            vgs = session.vgs_info()
        for item in [*pvs, *(a for s in segments for a in s["pe_ranges"])]:
            if item["image"] == copy:
                item["image"] = image
        return {
            "segments": segments,
            "pvs": pvs,
            "ranges": ranges_from_segments(segments, geometry_of(pvs)),
            "free": [FreeRange(image, f.start, f.end) for f in free],
            "vgs": vgs,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def loops_of(image: Path | str) -> list[str]:
    """Loop devices backed by ``image`` right now (``losetup -j``): empty after any session."""
    proc = subprocess.run(
        [tool_path("losetup"), "-j", str(image)], capture_output=True, text=True, check=False
    )
    return [line.split(":", 1)[0] for line in proc.stdout.splitlines() if line.strip()]
