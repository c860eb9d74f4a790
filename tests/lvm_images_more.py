"""More LVM2 test images: mirror, snapshot, raid0, and raid1 / raid5 / thin pool.

Built like ``tests.lvm_images`` (same isolated :class:`tests.lvm_truth.LvmSession`, loop
devices, ``--driverloaded n``, the same cache layout and fixtures), but for LVs that are made
of hidden sub-LVs. Each set directory holds the disk image(s), one standalone ext4 per LV that
holds a filesystem (``<lv>.ext4``), ``metadata-disk<N>.txt`` (``pvck --dump metadata`` of each
PV: the newest metadata text with its segment sections), ``lvs.json`` (the raw ``lvs -a
--segments --reportformat json`` rows with loop names replaced by the image names) and
``layout.json``.

What lvm2 2.03.16 can make here without device-mapper (activation off: ``--driverloaded n``):

``lvcreate`` refuses every layout of the brief; the exact errors are in
:data:`LVCREATE_REFUSALS` (a test re-checks them). What does work:

* mirror: ``lvcreate`` a linear LV, then ``lvconvert --type mirror -m1 --mirrorlog disk``
  on the inactive LV (``Conversion starts after activation.``: the metadata is complete).
* snapshot: ``lvcreate`` the origin and the COW LV, then ``lvconvert -s -Zn ORIGIN COW``
  (``-Zn`` is needed: lvm cannot zero the COW header without activation).
* raid0 (not asked for, but it is the one raid type ``lvcreate --type raid0`` makes here).

``lvconvert`` to raid1/raid5/raid0 says ``must be active``, to a thin pool ``thin-pool:
Required device-mapper target(s) not detected in your kernel.``. For ``lvm_raid1``,
``lvm_raid5`` and ``lvm_thin`` the metadata is therefore WRITTEN BY THIS MODULE and handed to
``vgcfgrestore``, which parses it, validates it (the same checks as every lvm command: LV and
PV segment consistency, sub-LV roles) and writes it in its own text format; ``lvs`` then
reports it like any other VG. How: every sub-LV is first made by ``lvcreate`` as a plain
linear LV under a placeholder name at the intended extents, so its section (id, extents) is
lvm's own; the dump is edited only to rename those sections (``r1_rimage_0`` ...), to drop
``VISIBLE`` from them and to add the top-level LV section(s) (:func:`raid_section`,
:func:`thin_pool_section`, :func:`thin_section`, following lvm2's ``raid.c`` / ``thin.c``
export). ``made_with`` in the description says which way a set was made. Things lvcreate would
add that are not modelled: raid5 reshape space (``data_offset`` 0 here), the dm-raid
superblock/bitmap in ``*_rmeta_*`` (written by the kernel on first activation; zero here, as
before activation), the mirror log contents (zero).

The images (:data:`KNOWN_LAYOUT_MORE` has the extents; every extent is 1 MiB, pe_start 1 MiB):

``lvm_mirror`` (lvconvert)
    Two 24 MiB disks, VG ``vgm``. ``pad`` (2 MiB, disk 2 PE 0-1, no fs); ``mir``: segment
    type ``mirror``, 12 MiB, legs ``mir_mimage_0`` (disk 1: PE 0-5 and 8-13, two segments:
    ``pad2`` sits on PE 6-7) and ``mir_mimage_1`` (disk 2: PE 2-7 and 9-14, lvm's choice),
    disk log ``mir_mlog`` (1 extent, disk 2 PE 8, between the leg's two segments). The ext4
    of ``mir`` is in each leg.
``lvm_snapshot`` (lvconvert)
    One 24 MiB disk, VG ``vgs``: ``origin`` 8 MiB (PE 0-3 and 6-9, ext4; ``pad`` on PE 4-5),
    ``snap`` its classic snapshot, COW store 4 MiB (PE 10-13, zero: no exceptions, so
    ``snap`` reads as ``origin``), chunk 4 KiB. The metadata also holds the hidden
    ``snapshot0`` LV (segment type ``snapshot``, ``origin``/``cow_store``) that lvs does not
    list.
``lvm_raid0`` (lvcreate)
    Two 16 MiB disks, VG ``vgz``: ``pad`` (disk 1 PE 0), ``r0`` raid0 8 MiB, 2 stripes of
    64 KiB over ``r0_rimage_0`` / ``r0_rimage_1`` (no rmeta), ext4.
``lvm_raid1`` (vgcfgrestore)
    Two 24 MiB disks, VG ``vgr1``: ``pad`` (disk 2 PE 0-1), ``r1`` raid1 12 MiB,
    ``r1_rmeta_0`` disk 1 PE 0, ``r1_rimage_0`` disk 1 PE 1-12, ``r1_rmeta_1`` disk 2 PE 2,
    ``r1_rimage_1`` disk 2 PE 3-8 and 11-16 (two segments; ``pad2`` on PE 9-10). Region size
    2 MiB. The ext4 of ``r1`` is in each rimage from its byte 0.
``lvm_raid5`` (vgcfgrestore)
    Three 16 MiB disks, VG ``vgr5``: ``r5`` raid5_ls 8 MiB (2 data stripes + parity, 64 KiB
    chunks), ``r5_rmeta_N`` PE 0 and ``r5_rimage_N`` PE 1-4 of disk N+1. Data and parity
    chunks are placed by md's ALGORITHM_LEFT_SYMMETRIC (:func:`raid5_ls_chunks`), parity is
    the XOR of the row.
``lvm_thin`` (vgcfgrestore + thin_restore)
    One 32 MiB disk, VG ``vgt``: ``lvol0_pmspare`` PE 0-1, ``pool_tmeta`` PE 2-3,
    ``pool_tdata`` PE 4-15 (thin pool ``pool``, 12 MiB, 64 KiB chunks), thin LVs ``thin1``
    (16 MiB virtual, device_id 1, ext4) and ``thin2`` (4 MiB virtual, device_id 2, two
    chunks of a pattern, no fs). ``pool_tmeta`` holds real thin-pool metadata written by
    ``thin_restore`` (``thin_check`` passes; ``thin_dump`` is the truth of the mapping). Only
    non-zero 64 KiB chunks are mapped, in a scattered order (:data:`THIN_ORDER`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import lvm_truth
from tests.ext_images import MiB, NeedsRoot, _data, _locked, e2fsprogs_version, tool_path
from tests.lvm_images import (
    BIG_FILE,
    BigFile,
    LvmImage,
    _sha256,
    _sparse_file,
    copy_to_lv,
    make_lv_fs,
    verify_lv,
)
from tests.lvm_truth import UNKNOWN_DEVICE, LvmSession, PhysicalRange, PvPlace

IMAGES_MORE_VERSION = "lvm-images-more-1"
KiB = 1024
EXTENT = 1 * MiB

PV_UUIDS_MORE = {
    "lvm_mirror": (
        "bmapPV-mirr-0000-0000-0000-0000-000001",
        "bmapPV-mirr-0000-0000-0000-0000-000002",
    ),
    "lvm_snapshot": ("bmapPV-snap-0000-0000-0000-0000-000001",),
    "lvm_raid0": (
        "bmapPV-rad0-0000-0000-0000-0000-000001",
        "bmapPV-rad0-0000-0000-0000-0000-000002",
    ),
    "lvm_raid1": (
        "bmapPV-rad1-0000-0000-0000-0000-000001",
        "bmapPV-rad1-0000-0000-0000-0000-000002",
    ),
    "lvm_raid5": tuple(f"bmapPV-rad5-0000-0000-0000-0000-00000{i}" for i in (1, 2, 3)),
    "lvm_thin": ("bmapPV-thin-0000-0000-0000-0000-000001",),
}

FS_UUIDS_MORE = {
    ("lvm_mirror", "mir"): "1a7e0000-0000-4000-8000-000000000101",
    ("lvm_snapshot", "origin"): "1a7e0000-0000-4000-8000-000000000102",
    ("lvm_raid0", "r0"): "1a7e0000-0000-4000-8000-000000000103",
    ("lvm_raid1", "r1"): "1a7e0000-0000-4000-8000-000000000104",
    ("lvm_raid5", "r5"): "1a7e0000-0000-4000-8000-000000000105",
    ("lvm_thin", "thin1"): "1a7e0000-0000-4000-8000-000000000106",
}

# Every LV and hidden sub-LV the tools report, with its areas: (disk index from 0, first PE,
# last PE) for an LV on PVs, or the sub-LVs it is made of.
KNOWN_LAYOUT_MORE: dict[str, dict[str, Any]] = {
    "lvm_mirror": {
        "vg": "vgm",
        "made_with": "lvconvert",
        "disks": 2,
        "lvs": {
            "pad": ("linear", [(1, 0, 1)]),
            "pad2": ("linear", [(0, 6, 7)]),
            "mir": ("mirror", ["mir_mimage_0", "mir_mimage_1"]),
            "mir_mimage_0": ("linear", [(0, 0, 5), (0, 8, 13)]),
            "mir_mimage_1": ("linear", [(1, 2, 7), (1, 9, 14)]),
            "mir_mlog": ("linear", [(1, 8, 8)]),
        },
        "copies": {"mir": ["mir_mimage_0", "mir_mimage_1"]},
    },
    "lvm_snapshot": {
        "vg": "vgs",
        "made_with": "lvconvert",
        "disks": 1,
        "lvs": {
            "origin": ("linear", [(0, 0, 3), (0, 6, 9)]),
            "pad": ("linear", [(0, 4, 5)]),
            "snap": ("linear", [(0, 10, 13)]),
        },
        "copies": {},
    },
    "lvm_raid0": {
        "vg": "vgz",
        "made_with": "lvcreate",
        "disks": 2,
        "lvs": {
            "pad": ("linear", [(0, 0, 0)]),
            "r0": ("raid0", ["r0_rimage_0", "r0_rimage_1"]),
            "r0_rimage_0": ("linear", [(0, 1, 4)]),
            "r0_rimage_1": ("linear", [(1, 0, 3)]),
        },
        "copies": {},
    },
    "lvm_raid1": {
        "vg": "vgr1",
        "made_with": "vgcfgrestore",
        "disks": 2,
        "lvs": {
            "pad": ("linear", [(1, 0, 1)]),
            "pad2": ("linear", [(1, 9, 10)]),
            "r1": ("raid1", ["r1_rimage_0", "r1_rimage_1"]),
            "r1_rmeta_0": ("linear", [(0, 0, 0)]),
            "r1_rimage_0": ("linear", [(0, 1, 12)]),
            "r1_rmeta_1": ("linear", [(1, 2, 2)]),
            "r1_rimage_1": ("linear", [(1, 3, 8), (1, 11, 16)]),
        },
        "copies": {"r1": ["r1_rimage_0", "r1_rimage_1"]},
    },
    "lvm_raid5": {
        "vg": "vgr5",
        "made_with": "vgcfgrestore",
        "disks": 3,
        "lvs": {
            "r5": ("raid5_ls", ["r5_rimage_0", "r5_rimage_1", "r5_rimage_2"]),
            **{f"r5_rmeta_{i}": ("linear", [(i, 0, 0)]) for i in range(3)},
            **{f"r5_rimage_{i}": ("linear", [(i, 1, 4)]) for i in range(3)},
        },
        "copies": {},
    },
    "lvm_thin": {
        "vg": "vgt",
        "made_with": "vgcfgrestore",
        "disks": 1,
        "lvs": {
            "lvol0_pmspare": ("linear", [(0, 0, 1)]),
            "pool_tmeta": ("linear", [(0, 2, 3)]),
            "pool_tdata": ("linear", [(0, 4, 15)]),
            "pool": ("thin-pool", ["pool_tdata"]),
            "thin1": ("thin", []),
            "thin2": ("thin", []),
        },
        "copies": {},
    },
}

# The lvcreate commands of the brief and what lvm2 2.03.16 answers with --driverloaded n.
# ``setup`` LVs are made first (linear, ``-an -Zn``).
LVCREATE_REFUSALS: dict[str, dict[str, Any]] = {
    "raid1": {
        "args": ["--type", "raid1", "-m1", "-L", "4m", "-n", "r1"],
        "error": "Can't create raid1 without using device-mapper kernel driver.",
    },
    "raid1_nosync": {
        "args": ["--nosync", "--type", "raid1", "-m1", "-L", "4m", "-n", "r1"],
        "error": "Can't create raid1 without using device-mapper kernel driver.",
    },
    "mirror": {
        "args": ["--type", "mirror", "-m1", "--mirrorlog", "core", "-L", "4m", "-n", "m1"],
        "error": "Can't create mirror without using device-mapper kernel driver.",
    },
    "thin-pool": {
        "args": ["--type", "thin-pool", "-L", "4m", "-n", "pool"],
        "error": "Can't create thin-pool without using device-mapper kernel driver.",
    },
    "snapshot": {
        "setup": ["origin"],
        "args": ["-s", "-L", "4m", "-n", "snap", "VG/origin"],
        "error": "Can't create snapshot without using device-mapper kernel driver.",
    },
    "raid5": {
        "args": ["--type", "raid5", "-i2", "-L", "4m", "-n", "r5"],
        "error": "Can't create raid5 without using device-mapper kernel driver.",
    },
}
# ``-Zn`` itself is refused for snapshots, before the activation check.
SNAPSHOT_ZERO_REFUSAL = "Option --zero is unsupported with snapshots."

SEG_FIELDS = (
    "lv_name,vg_name,lv_uuid,lv_attr,lv_size,lv_parent,lv_role,lv_layout,seg_start,seg_size,"
    "segtype,stripes,stripe_size,region_size,chunk_size,seg_pe_ranges,seg_le_ranges,"
    "seg_metadata_le_ranges,devices,metadata_devices,origin,pool_lv,data_lv,metadata_lv,"
    "mirror_log,thin_id,transaction_id"
)

THIN_CHUNK = 64 * KiB
RAID5_CHUNK = 64 * KiB


@dataclass(frozen=True)
class LvmMoreImage(LvmImage):
    """:class:`tests.lvm_images.LvmImage` plus: ``made_with`` (``lvcreate``, ``lvconvert`` or
    ``vgcfgrestore``: see the module doc), ``commands`` (what was run; ``diskN`` for the loop
    device of disk N), ``copies`` (LV -> the sub-LVs that each hold all of its bytes: mirror and
    raid1 legs), ``metadata_texts`` (``pvck --dump metadata`` per disk), ``lvs_json`` and
    ``extra`` (per-set facts: the thin XML, the raid5 geometry, ...)."""

    made_with: str = "lvcreate"
    commands: tuple[str, ...] = ()
    copies: dict[str, list[str]] = field(default_factory=dict)
    metadata_texts: tuple[Path, ...] = ()
    lvs_json: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, folder: Path) -> dict[str, Any]:
        data = super().to_json(folder)
        data["metadata_texts"] = [str(p.relative_to(folder)) for p in self.metadata_texts]
        data["lvs_json"] = str(self.lvs_json.relative_to(folder)) if self.lvs_json else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> LvmMoreImage:
        base = LvmImage.from_json(data, folder)
        return cls(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(LvmImage)},
            made_with=data["made_with"],
            commands=tuple(data["commands"]),
            copies=data["copies"],
            metadata_texts=tuple(folder / p for p in data["metadata_texts"]),
            lvs_json=folder / data["lvs_json"] if data["lvs_json"] else None,
            extra=data["extra"],
        )


# --------------------------------------------------------------------------------------------
# truth: lvs with sub-LVs


def _strip(name: str) -> str:
    """lvs writes hidden LVs as ``[name]``."""
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def _parse_area(session: LvmSession, item: str) -> dict[str, Any]:
    """One ``seg_le_ranges`` item: ``/dev/loopN:A-B`` (a PV) or ``[sub_lv]:A-B``."""
    name, _, numbers = item.rpartition(":")
    first, _, last = numbers.partition("-")
    lo, hi = int(first), int(last or first)
    name = _strip(name)
    if name in session.devices or name == UNKNOWN_DEVICE:
        place = session.place_of(name)
        return {
            "kind": "pv",
            "image": place.image if place else None,
            "disk": place.disk if place else None,
            "partition": place.partition if place else None,
            "pv_offset": place.offset if place else None,
            "missing": place is None,
            "first_pe": lo,
            "last_pe": hi,
        }
    return {"kind": "lv", "lv": name, "first_le": lo, "last_le": hi}


def _int(value: str) -> int:
    return int(value) if value.strip() else 0


def segments(session: LvmSession) -> list[dict[str, Any]]:
    """Every segment of every LV (``lvs -a --segments``), hidden sub-LVs included.

    Keys: the report's fields (``lv_name`` without lvs' brackets, ``hidden`` True where it had
    them; sizes in bytes), ``areas`` from ``seg_le_ranges`` and ``meta_areas`` from
    ``seg_metadata_le_ranges``: each ``{"kind": "pv", image, disk, partition, pv_offset,
    missing, first_pe, last_pe}`` or ``{"kind": "lv", "lv": name, first_le, last_le}``; and
    ``pe_ranges``: the PV areas alone, in the shape of :func:`tests.lvm_truth.lvs_segments`.
    """
    rows = session.report("lvs", "--segments", "-a", "-o", SEG_FIELDS, key="seg")
    out = []
    for row in rows:
        areas = [_parse_area(session, i) for i in row["seg_le_ranges"].split(",") if i]
        metas = [_parse_area(session, i) for i in row["seg_metadata_le_ranges"].split(",") if i]
        seg = {
            **row,
            "lv_name": _strip(row["lv_name"]),
            "hidden": row["lv_name"].startswith("["),
            "lv_parent": _strip(row["lv_parent"]),
            "areas": areas,
            "meta_areas": metas,
            "pe_ranges": [a for a in areas if a["kind"] == "pv"],
        }
        for key in ("lv_size", "seg_start", "seg_size", "stripes", "stripe_size"):
            seg[key] = int(row[key])
        for key in ("region_size", "chunk_size"):
            seg[key] = _int(row[key])
        out.append(seg)
    return sorted(out, key=lambda s: (s["vg_name"], s["lv_name"], s["seg_start"]))


def _device_names(session: LvmSession) -> dict[str, str]:
    return {dev: f"disk{place.disk}" for dev, place in session.devices.items()}


def raw_lvs_json(session: LvmSession) -> str:
    """The ``lvs -a --segments --reportformat json`` rows, loop names replaced by ``diskN``."""
    rows = session.report("lvs", "--segments", "-a", "-o", SEG_FIELDS, key="seg")
    text = json.dumps(rows, indent=1)
    for dev, name in sorted(_device_names(session).items(), key=lambda x: -len(x[0])):
        text = text.replace(dev, name)
    return text


def _through(sub: list[PhysicalRange], start: int, end: int, at: int) -> list[PhysicalRange]:
    """Bytes ``[start, end)`` of a sub-LV (``sub``: its ranges) as bytes ``at...`` of the
    parent LV."""
    return [
        PhysicalRange(r.image, r.start, r.end, at + r.lv_offset - start)
        for r in lvm_truth.lv_to_disk(sub, start, end)
    ]


def leaf_ranges(
    segs: list[dict[str, Any]], geometry: dict[tuple[Path, int], tuple[int, int]]
) -> dict[str, list[PhysicalRange]]:
    """Disk ranges of every LV that sits directly on PVs (linear/striped, hidden or not);
    ``geometry`` as :func:`tests.lvm_truth.geometry_of`."""
    by_lv: dict[str, list[dict[str, Any]]] = {}
    for seg in segs:
        by_lv.setdefault(seg["lv_name"], []).append(seg)
    leaves = [
        s
        for ss in by_lv.values()
        if all(s["segtype"] in ("linear", "striped") and s["pe_ranges"] for s in ss)
        for s in ss
    ]
    return lvm_truth.ranges_from_segments(leaves, geometry)


def raid5_ls_chunks(
    size: int, chunk: int, devices: int
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """md's raid5 ALGORITHM_LEFT_SYMMETRIC (dm-raid ``raid5_ls``) for an LV of ``size`` bytes.

    Returns the data chunks as (LV offset, device index, offset in that rimage) and the parity
    chunks as (device index, offset in that rimage), one per row. Row r: parity on device
    ``data_disks - r % devices``; data chunk i of the row on ``(parity + 1 + i) % devices``.
    """
    data_disks = devices - 1
    data, parity = [], []
    for k in range(size // chunk):
        row, i = divmod(k, data_disks)
        pd = data_disks - row % devices
        data.append((k * chunk, (pd + 1 + i) % devices, row * chunk))
        if i == 0:
            parity.append((pd, row * chunk))
    return data, parity


def _composite(
    seg: dict[str, Any], leaves: dict[str, list[PhysicalRange]], extent: int
) -> dict[str, Any]:
    """How one segment made of sub-LVs maps onto the disks."""
    subs = [a for a in seg["areas"] if a["kind"] == "lv"]
    at = seg["seg_start"]
    kind = seg["segtype"]
    if kind in ("mirror", "raid1"):
        copies = [
            _through(leaves[a["lv"]], a["first_le"] * extent, (a["last_le"] + 1) * extent, at)
            for a in subs
        ]
        return {"ranges": copies[0], "copies": copies}
    if kind == "raid0":
        chunk, n = seg["stripe_size"], len(subs)
        out = []
        for k in range(seg["seg_size"] // chunk):
            a = subs[k % n]
            start = a["first_le"] * extent + (k // n) * chunk
            out += _through(leaves[a["lv"]], start, start + chunk, at + k * chunk)
        return {"ranges": out}
    if kind == "raid5_ls":
        chunk, n = seg["stripe_size"], len(subs)
        data, parity = raid5_ls_chunks(seg["seg_size"], chunk, n)
        out = []
        for lv_off, dev, off in data:
            a = subs[dev]
            start = a["first_le"] * extent + off
            out += _through(leaves[a["lv"]], start, start + chunk, at + lv_off)
        par = []
        for dev, off in parity:
            a = subs[dev]
            start = a["first_le"] * extent + off
            par.append(_through(leaves[a["lv"]], start, start + chunk, 0))
        return {"ranges": out, "parity": par}
    if kind == "thin-pool":
        a = subs[0]
        rs = _through(leaves[a["lv"]], a["first_le"] * extent, (a["last_le"] + 1) * extent, at)
        return {"ranges": rs}
    raise ValueError(f"{seg['lv_name']}: no mapping for segment type {kind}")


def lv_maps(
    segs: list[dict[str, Any]], geometry: dict[tuple[Path, int], tuple[int, int]]
) -> dict[str, dict[str, Any]]:
    """LV name -> ``{"ranges": [...]}`` (disk ranges in LV order) for every LV lvs lists,
    plus ``copies`` (one range list per leg: mirror, raid1) and ``parity`` (raid5: per row,
    the parity chunk's ranges). Thin LVs have no ranges here (their mapping is in the pool
    metadata: :func:`thin_map`). ``geometry`` as :func:`tests.lvm_truth.geometry_of`; the VG
    has one extent size."""
    (extent,) = {e for _, e in geometry.values()}
    leaves = leaf_ranges(segs, geometry)
    out: dict[str, dict[str, Any]] = {lv: {"ranges": rs} for lv, rs in leaves.items()}
    for seg in segs:
        if seg["lv_name"] in leaves or seg["segtype"] == "thin":
            continue
        part = _composite(seg, leaves, extent)
        entry = out.setdefault(seg["lv_name"], {"ranges": []})
        entry["ranges"] += part["ranges"]
        for key in ("copies", "parity"):
            if key in part:
                if key in entry:
                    entry[key] = [x + y for x, y in zip(entry[key], part[key])]
                else:
                    entry[key] = part[key]
    return out


def report_more(images: Iterable[Path | str]) -> dict[str, Any]:
    """One read-only session over ``images``: ``segments`` (:func:`segments`), ``pvs``,
    ``vgs`` and ``maps`` (:func:`lv_maps`)."""
    with lvm_truth.session_over(list(images)) as session:
        segs = segments(session)
        pvs = session.pvs_info()
        vgs = session.vgs_info()
    geometry = lvm_truth.geometry_of(pvs)
    return {"segments": segs, "pvs": pvs, "vgs": vgs, "maps": lv_maps(segs, geometry)}


# --------------------------------------------------------------------------------------------
# thin pool metadata (thin-provisioning-tools)


def thin_dump(tmeta: Path) -> dict[str, Any]:
    """``thin_dump`` of a thin-pool metadata file: ``transaction``, ``data_block_size``
    (bytes), ``nr_data_blocks`` and ``devices``: dev_id -> {transaction, mapped_blocks,
    mappings: [(origin block, data block, length)]}."""
    xml = subprocess.run(
        [tool_path("thin_dump"), str(tmeta)], capture_output=True, text=True, check=True
    ).stdout
    root = ET.fromstring(xml)
    devices = {}
    for dev in root.findall("device"):
        maps = []
        for m in dev:
            if m.tag == "range_mapping":
                maps.append(
                    (int(m.get("origin_begin")), int(m.get("data_begin")), int(m.get("length")))
                )
            elif m.tag == "single_mapping":
                maps.append((int(m.get("origin_block")), int(m.get("data_block")), 1))
        devices[int(dev.get("dev_id"))] = {
            "transaction": int(dev.get("transaction")),
            "mapped_blocks": int(dev.get("mapped_blocks")),
            "mappings": maps,
        }
    return {
        "transaction": int(root.get("transaction")),
        "data_block_size": int(root.get("data_block_size")) * lvm_truth.SECTOR,
        "nr_data_blocks": int(root.get("nr_data_blocks")),
        "devices": devices,
    }


def thin_check(tmeta: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool_path("thin_check"), str(tmeta)], capture_output=True, text=True, check=False
    )


def thin_map(dump: dict[str, Any], dev_id: int, tdata: list[PhysicalRange]) -> list[PhysicalRange]:
    """Disk ranges of thin device ``dev_id`` (LV offsets; unmapped chunks are holes, which
    read as zeros) through the pool's data LV ranges ``tdata``."""
    bs = dump["data_block_size"]
    out = []
    for origin, data, length in dump["devices"][dev_id]["mappings"]:
        out += _through(tdata, data * bs, (data + length) * bs, origin * bs)
    return sorted(out, key=lambda r: r.lv_offset)


def read_sparse(ranges: Iterable[PhysicalRange], size: int) -> bytes:
    """The first ``size`` bytes of an LV whose ranges may leave holes (zeros there)."""
    out = bytearray(size)
    for r in ranges:
        if r.lv_offset >= size:
            continue
        with open(r.image, "rb") as fh:
            fh.seek(r.start)
            data = fh.read(min(r.end - r.start, size - r.lv_offset))
        out[r.lv_offset : r.lv_offset + len(data)] = data
    return bytes(out)


def read_ranges(ranges: Iterable[PhysicalRange]) -> bytes:
    out = bytearray()
    for r in ranges:
        with open(r.image, "rb") as fh:
            fh.seek(r.start)
            out += fh.read(r.end - r.start)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# building


class _Builder:
    """An LvmSession over fresh sparse disks, recording every lvm command it runs."""

    def __init__(self, name: str, folder: Path, sizes: list[int]) -> None:
        self.name, self.folder = name, folder
        self.session = LvmSession()
        self.commands: list[str] = []
        self.places: list[PvPlace] = []
        self.devs: list[str] = []
        try:
            single = len(sizes) == 1
            for i, size in enumerate(sizes, start=1):
                disk = folder / ("disk.img" if single else f"disk{i}.img")
                _sparse_file(disk, size)
                place = PvPlace(disk, 0, size, None, i)
                self.places.append(place)
                self.devs.append(self.session.attach(place, read_only=False))
            for dev, uuid in zip(self.devs, PV_UUIDS_MORE[name]):
                self.lvm("pvcreate", "--uuid", uuid, "--norestorefile", dev)
        except BaseException:
            self.session.close()
            raise

    def __enter__(self) -> _Builder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def lvm(self, *args: str | os.PathLike, ok: Iterable[int] = (0,)) -> str:
        proc = self.session.run(*map(str, args), ok=ok)
        line = "lvm " + " ".join([str(args[0]), "--driverloaded", "n", *map(str, args[1:])])
        for dev, disk in sorted(_device_names(self.session).items(), key=lambda x: -len(x[0])):
            line = line.replace(dev, disk)
        self.commands.append(line.replace(str(self.folder) + "/", ""))
        return proc.stdout + proc.stderr

    def dev(self, disk: int, pes: str | None = None) -> str:
        """The loop device of disk index ``disk`` (from 0), with ``:PES`` if given."""
        return self.devs[disk] + (f":{pes}" if pes else "")

    def linear(self, vg: str, lv: str, extents: int, disk: int, pes: str) -> None:
        self.lvm(
            "lvcreate", "-an", "-Zn", "-y", "-l", str(extents), "-n", lv, vg, self.dev(disk, pes)
        )

    def save_truth(self) -> tuple[tuple[Path, ...], Path, list[dict[str, Any]], Any]:
        """metadata-diskN.txt (pvck's output as it is: ``device = "/dev/loopN"`` is the build's
        loop device), lvs.json; returns them, the segments and the PV geometry."""
        texts = []
        for i, dev in enumerate(self.devs, start=1):
            path = self.folder / f"metadata-disk{i}.txt"
            path.write_text(self.session.run("pvck", "--dump", "metadata", dev).stdout)
            texts.append(path)
        lvs_path = self.folder / "lvs.json"
        lvs_path.write_text(raw_lvs_json(self.session))
        segs = segments(self.session)
        pvs = self.session.pvs_info()
        for pv in pvs:
            if pv["pe_start"] != EXTENT or pv["vg_extent_size"] != EXTENT:
                raise RuntimeError(f"{self.name}: unexpected PV geometry {pv}")
        return tuple(texts), lvs_path, segs, lvm_truth.geometry_of(pvs)

    # -- writing metadata by hand (vgcfgrestore)

    def metadata_text(self) -> str:
        """The newest metadata text of the first PV (pvck's dump, between the ``---``)."""
        dump = self.session.run("pvck", "--dump", "metadata", self.devs[0]).stdout
        return dump.split("---\n", 1)[1].rsplit("---", 1)[0]

    def restore(
        self, vg: str, renames: dict[str, str], sections: list[str], force: bool = False
    ) -> str:
        """Rename the placeholder LVs (hiding them), add ``sections`` at the top of
        ``logical_volumes`` and ``vgcfgrestore`` the result. Returns the file's text."""
        text = self.metadata_text()
        for old, new in renames.items():
            pattern = re.compile(rf"^{re.escape(old)} \{{\n", re.M)
            if len(pattern.findall(text)) != 1:
                raise RuntimeError(f"{self.name}: placeholder {old} not found once")
            text = pattern.sub(f"{new} {{\n", text)
            start = text.index(f"\n{new} {{\n")
            status = text.index("status = [", start)
            line_end = text.index("\n", status)
            line = text[status:line_end]
            if '"VISIBLE"' not in line:
                raise RuntimeError(f"{self.name}: {old} is not VISIBLE: {line}")
            text = text[:status] + line.replace(', "VISIBLE"', "") + text[line_end:]
        head = "\nlogical_volumes {\n"
        at = text.index(head) + len(head)
        text = text[:at] + "\n" + "\n\n".join(sections) + "\n" + text[at:]
        path = self.folder / "restore.vg"  # kept: what vgcfgrestore was given
        path.write_text(text)
        self.lvm("vgcfgrestore", *(["--force", "-y"] if force else []), "-f", path, vg)
        return text

    def creation(self, text: str | None = None) -> list[str]:
        """``creation_time`` / ``creation_host`` lines as lvm wrote them for an LV."""
        text = text if text is not None else self.metadata_text()
        return [
            re.search(r"^creation_time = .*$", text, re.M)[0],  # type: ignore[index]
            re.search(r"^creation_host = .*$", text, re.M)[0],  # type: ignore[index]
        ]


def lv_section(name: str, uuid: str, creation: list[str], segment: list[str], extents: int) -> str:
    """A visible LV with one segment of ``extents`` extents, in lvm's on-disk text style."""
    return "\n".join(
        [
            f"{name} {{",
            f'id = "{uuid}"',
            'status = ["READ", "WRITE", "VISIBLE"]',
            "flags = []",
            *creation,
            "segment_count = 1",
            "",
            "segment1 {",
            "start_extent = 0",
            f"extent_count = {extents}",
            "",
            *segment,
            "}",
            "}",
        ]
    )


def raid_section(kind: str, lv: str, images: int, region: int, stripe: int = 0) -> list[str]:
    """A raid segment's keys as lvm2's ``_raid_text_export_raid`` writes them (sectors)."""
    lines = [f'type = "{kind}"', f"device_count = {images}", f"region_size = {region}"]
    if stripe:
        lines.append(f"stripe_size = {stripe}")
    pairs = [f'"{lv}_rmeta_{i}", "{lv}_rimage_{i}"' for i in range(images)]
    return [*lines, "", "raids = [", ",\n".join(pairs), "]"]


def thin_pool_section(meta: str, data: str, transaction: int, chunk: int) -> list[str]:
    return [
        'type = "thin-pool"',
        f'metadata = "{meta}"',
        f'pool = "{data}"',
        f"transaction_id = {transaction}",
        f"chunk_size = {chunk}",
        'discards = "passdown"',
        "zero_new_blocks = 1",
    ]


def thin_section(pool: str, transaction: int, device_id: int) -> list[str]:
    return [
        'type = "thin"',
        f'thin_pool = "{pool}"',
        f"transaction_id = {transaction}",
        f"device_id = {device_id}",
    ]


def _fs(
    name: str, lv: str, folder: Path, workdir: Path, size: int, big_size: int
) -> tuple[Path, BigFile]:
    big = BigFile(BIG_FILE, f"{name}/{lv}/big", big_size)
    fs_path = folder / f"{lv}.ext4"
    make_lv_fs(
        fs_path, size, workdir, uuid=FS_UUIDS_MORE[(name, lv)], label=lv, big=big, block=1024
    )
    return fs_path, big


def _check_known(name: str, segs: list[dict[str, Any]], places: list[PvPlace]) -> None:
    want = KNOWN_LAYOUT_MORE[name]["lvs"]
    got = layout_of(segs, places)
    if got != want:
        raise RuntimeError(f"{name}: lvs says {got}, the builder aimed for {want}")


def layout_of(segs: list[dict[str, Any]], places: list[PvPlace]) -> dict[str, Any]:
    """LV -> (segment type of its first segment, PV areas as (disk index, first, last) or the
    sub-LV names) from :func:`segments`; the shape of :data:`KNOWN_LAYOUT_MORE`."""
    index = {(p.image, p.offset): i for i, p in enumerate(places)}
    got: dict[str, Any] = {}
    for seg in segs:
        _, areas = got.setdefault(seg["lv_name"], (seg["segtype"], []))
        for a in seg["areas"]:
            if a["kind"] == "pv":
                areas.append((index[(a["image"], a["pv_offset"])], a["first_pe"], a["last_pe"]))
            else:
                areas.append(a["lv"])
    return got


def _write_each(fs_path: Path, copies: list[list[PhysicalRange]]) -> None:
    for ranges in copies:
        copy_to_lv(fs_path, ranges)
        verify_lv(fs_path, ranges)


def _image(
    b: _Builder, vg: str, made_with: str, truth: tuple, sizes: dict[str, int], **kw: Any
) -> LvmMoreImage:
    texts, lvs_path, _, _ = truth
    return LvmMoreImage(
        name=b.name,
        vg=vg,
        images=tuple(p.image for p in b.places),
        pvs=tuple(b.places),
        pv_uuids=PV_UUIDS_MORE[b.name],
        lv_sizes=sizes,
        made_with=made_with,
        commands=tuple(b.commands),
        metadata_texts=texts,
        lvs_json=lvs_path,
        **kw,
    )


def _sizes(segs: list[dict[str, Any]]) -> dict[str, int]:
    return {s["lv_name"]: s["lv_size"] for s in segs}


def build_lvm_mirror(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_mirror", "vgm"
    with _Builder(name, folder, [24 * MiB, 24 * MiB]) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        b.linear(vg, "pad", 2, 1, "0-1")
        b.linear(vg, "mir", 6, 0, "0-5")
        b.linear(vg, "pad2", 2, 0, "6-7")
        b.lvm("lvextend", "-l", "12", f"{vg}/mir", b.dev(0, "8-13"))
        out = b.lvm(
            "lvconvert", "-y", "--type", "mirror", "-m1", "--mirrorlog", "disk",
            "--alloc", "anywhere", f"{vg}/mir", b.dev(1, "2-14"),
        )  # fmt: skip
        if "Conversion starts after activation" not in out:
            raise RuntimeError(f"{name}: lvconvert said {out}")
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "mir", folder, workdir, 12 * MiB, 7 * MiB)
    _write_each(fs_path, maps["mir"]["copies"])
    return _image(
        b, vg, "lvconvert", truth, _sizes(segs),
        filesystems={"mir": fs_path}, big_files={"mir": big},
        copies={"mir": ["mir_mimage_0", "mir_mimage_1"]},
        extra={"mirror_log": "mir_mlog", "region_size": 2 * MiB},
    )  # fmt: skip


def build_lvm_snapshot(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_snapshot", "vgs"
    with _Builder(name, folder, [24 * MiB]) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        b.linear(vg, "origin", 4, 0, "0-3")
        b.linear(vg, "pad", 2, 0, "4-5")
        b.lvm("lvextend", "-l", "8", f"{vg}/origin", b.dev(0, "6-9"))
        b.linear(vg, "snap", 4, 0, "10-13")
        b.lvm("lvconvert", "-y", "-Zn", "-s", f"{vg}/origin", f"{vg}/snap")
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "origin", folder, workdir, 8 * MiB, 4 * MiB)
    _write_each(fs_path, [maps["origin"]["ranges"]])
    text = truth[0][0].read_text()
    chunk = int(re.search(r"^chunk_size = (\d+)$", text, re.M)[1])  # type: ignore[index]
    return _image(
        b, vg, "lvconvert", truth, _sizes(segs),
        filesystems={"origin": fs_path}, big_files={"origin": big},
        extra={
            "origin": "origin",
            "cow_store": "snap",
            "snapshot_lv": "snapshot0",
            "chunk_size": chunk * lvm_truth.SECTOR,
            "cow_is_zero": True,
            "snap_reads_as": "origin",
        },
    )  # fmt: skip


def build_lvm_raid0(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_raid0", "vgz"
    with _Builder(name, folder, [16 * MiB, 16 * MiB]) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        b.linear(vg, "pad", 1, 0, "0")
        b.lvm(
            "lvcreate", "-an", "-Zn", "-y", "--type", "raid0", "-i", "2", "-I", "64k",
            "-L", "8m", "-n", "r0", vg,
        )  # fmt: skip
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "r0", folder, workdir, 8 * MiB, 5 * MiB)
    _write_each(fs_path, [maps["r0"]["ranges"]])
    return _image(
        b, vg, "lvcreate", truth, _sizes(segs),
        filesystems={"r0": fs_path}, big_files={"r0": big},
        extra={"stripes": 2, "stripe_size": 64 * KiB},
    )  # fmt: skip


def build_lvm_raid1(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_raid1", "vgr1"
    with _Builder(name, folder, [24 * MiB, 24 * MiB]) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        b.linear(vg, "pad", 2, 1, "0-1")
        b.linear(vg, "ph_meta0", 1, 0, "0")
        b.linear(vg, "ph_image0", 12, 0, "1-12")
        b.linear(vg, "ph_meta1", 1, 1, "2")
        b.linear(vg, "ph_image1", 6, 1, "3-8")
        b.linear(vg, "pad2", 2, 1, "9-10")
        b.lvm("lvextend", "-l", "12", f"{vg}/ph_image1", b.dev(1, "11-16"))
        renames = {
            "ph_meta0": "r1_rmeta_0",
            "ph_image0": "r1_rimage_0",
            "ph_meta1": "r1_rmeta_1",
            "ph_image1": "r1_rimage_1",
        }
        top = lv_section(
            "r1",
            "bmapLV-rad1-0000-0000-0000-0000-000001",
            b.creation(),
            raid_section("raid1", "r1", 2, region=4096),
            12,
        )
        b.restore(vg, renames, [top])
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "r1", folder, workdir, 12 * MiB, 7 * MiB)
    _write_each(fs_path, maps["r1"]["copies"])
    return _image(
        b, vg, "vgcfgrestore", truth, _sizes(segs),
        filesystems={"r1": fs_path}, big_files={"r1": big},
        copies={"r1": ["r1_rimage_0", "r1_rimage_1"]},
        extra={"region_size": 2 * MiB, "data_offset": 0, "rmeta_is_zero": True},
    )  # fmt: skip


def _raid5_write(fs_path: Path, data: list[PhysicalRange], parity: list[list[PhysicalRange]],
                 chunk: int, data_disks: int) -> None:  # fmt: skip
    """Write the data chunks (through :func:`copy_to_lv`) and each row's XOR parity."""
    copy_to_lv(fs_path, data)
    verify_lv(fs_path, data)
    content = fs_path.read_bytes()
    row_bytes = chunk * data_disks
    for row, prange in enumerate(parity):
        block = content[row * row_bytes : (row + 1) * row_bytes]
        acc = bytearray(chunk)
        for i in range(data_disks):
            piece = block[i * chunk : (i + 1) * chunk]
            acc = bytearray(x ^ y for x, y in zip(acc, piece))
        if not any(acc):
            continue
        pos = 0
        for r in prange:
            with open(r.image, "r+b") as fh:
                fh.seek(r.start)
                fh.write(acc[pos : pos + r.end - r.start])
            pos += r.end - r.start


def build_lvm_raid5(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_raid5", "vgr5"
    with _Builder(name, folder, [16 * MiB] * 3) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        renames = {}
        for i in range(3):
            b.linear(vg, f"ph_meta{i}", 1, i, "0")
            b.linear(vg, f"ph_image{i}", 4, i, "1-4")
            renames[f"ph_meta{i}"] = f"r5_rmeta_{i}"
            renames[f"ph_image{i}"] = f"r5_rimage_{i}"
        top = lv_section(
            "r5",
            "bmapLV-rad5-0000-0000-0000-0000-000001",
            b.creation(),
            raid_section("raid5_ls", "r5", 3, region=4096, stripe=RAID5_CHUNK // 512),
            8,
        )
        b.restore(vg, renames, [top])
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "r5", folder, workdir, 8 * MiB, 5 * MiB)
    _raid5_write(fs_path, maps["r5"]["ranges"], maps["r5"]["parity"], RAID5_CHUNK, 2)
    return _image(
        b, vg, "vgcfgrestore", truth, _sizes(segs),
        filesystems={"r5": fs_path}, big_files={"r5": big},
        extra={
            "layout": "raid5_ls (md ALGORITHM_LEFT_SYMMETRIC)",
            "devices": 3,
            "data_devices": 2,
            "stripe_size": RAID5_CHUNK,
            "region_size": 2 * MiB,
            "data_offset": 0,
        },
    )  # fmt: skip


# Order in which thin1's non-zero chunks get pool data blocks: chunk c sorts by (c % 3, c),
# so neighbouring LV chunks land in different places of the pool (as writes in any order do).
THIN_ORDER = "chunk c of thin1 sorted by (c % 3, c); thin2's two chunks come between"


def _thin_xml(
    thin1_chunks: list[int], nr_blocks: int, chunk_sectors: int
) -> tuple[str, dict[int, int]]:
    """The thin_restore XML: thin1 (dev 1) maps ``thin1_chunks``, thin2 (dev 2) maps its
    chunks 1 and 2. Returns the XML and thin1's chunk -> data block."""
    order = sorted(thin1_chunks, key=lambda c: (c % 3, c))
    half = len(order) // 2
    blocks: dict[int, int] = {}
    for n, c in enumerate(order[:half]):
        blocks[c] = n
    thin2 = {1: half, 2: half + 1}
    for n, c in enumerate(order[half:]):
        blocks[c] = half + 2 + n
    if len(blocks) + len(thin2) > nr_blocks:
        raise RuntimeError("the thin pool is too small")

    def device(dev_id: int, transaction: int, mapping: dict[int, int]) -> list[str]:
        lines = [
            f'  <device dev_id="{dev_id}" mapped_blocks="{len(mapping)}" '
            f'transaction="{transaction}" creation_time="0" snap_time="0">'
        ]
        for origin in sorted(mapping):
            lines.append(
                f'    <single_mapping origin_block="{origin}" data_block="{mapping[origin]}" '
                'time="0"/>'
            )
        return [*lines, "  </device>"]

    xml = "\n".join(
        [
            f'<superblock uuid="" time="0" transaction="2" flags="0" version="2" '
            f'data_block_size="{chunk_sectors}" nr_data_blocks="{nr_blocks}">',
            *device(1, 0, blocks),
            *device(2, 1, thin2),
            "</superblock>",
            "",
        ]
    )
    return xml, blocks


def build_lvm_thin(folder: Path, workdir: Path) -> LvmMoreImage:
    name, vg = "lvm_thin", "vgt"
    chunk_sectors = THIN_CHUNK // 512
    with _Builder(name, folder, [32 * MiB]) as b:
        b.lvm("vgcreate", "-s", "1m", vg, *b.devs)
        b.linear(vg, "phspare", 2, 0, "0-1")
        b.linear(vg, "phtmeta", 2, 0, "2-3")
        b.linear(vg, "phtdata", 12, 0, "4-15")
        creation = b.creation()
        sections = [
            lv_section(
                "pool",
                "bmapLV-thin-0000-0000-0000-0000-000001",
                creation,
                thin_pool_section("pool_tmeta", "pool_tdata", 2, chunk_sectors),
                12,
            ),
            lv_section(
                "thin1",
                "bmapLV-thin-0000-0000-0000-0000-000002",
                creation,
                thin_section("pool", 0, 1),
                16,
            ),
            lv_section(
                "thin2",
                "bmapLV-thin-0000-0000-0000-0000-000003",
                creation,
                thin_section("pool", 1, 2),
                4,
            ),
        ]
        renames = {
            "phspare": "lvol0_pmspare",
            "phtmeta": "pool_tmeta",
            "phtdata": "pool_tdata",
        }
        b.restore(vg, renames, sections, force=True)
        truth = b.save_truth()
    segs = truth[2]
    _check_known(name, segs, b.places)
    maps = lv_maps(segs, truth[3])
    fs_path, big = _fs(name, "thin1", folder, workdir, 16 * MiB, 6 * MiB)
    content = fs_path.read_bytes()
    nonzero = [
        c for c in range(len(content) // THIN_CHUNK)
        if any(content[c * THIN_CHUNK : (c + 1) * THIN_CHUNK])
    ]  # fmt: skip
    nr_blocks = 12 * MiB // THIN_CHUNK
    xml, _ = _thin_xml(nonzero, nr_blocks, chunk_sectors)
    (folder / "thin-metadata.xml").write_text(xml)
    tmeta_file = workdir / "tmeta.bin"
    _sparse_file(tmeta_file, 2 * MiB)
    subprocess.run(
        [tool_path("thin_restore"), "-i", str(folder / "thin-metadata.xml"), "-o", str(tmeta_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    b.commands.append("thin_restore -i thin-metadata.xml -o tmeta.bin  # copied to pool_tmeta")
    copy_to_lv(tmeta_file, maps["pool_tmeta"]["ranges"])
    verify_lv(tmeta_file, maps["pool_tmeta"]["ranges"])
    dump = thin_dump(tmeta_file)
    tdata = maps["pool_tdata"]["ranges"]
    bs = dump["data_block_size"]
    with open(b.places[0].image, "r+b") as fh:
        for origin, data, length in dump["devices"][1]["mappings"]:
            for r in _through(tdata, data * bs, (data + length) * bs, origin * bs):
                fh.seek(r.start)
                fh.write(content[r.lv_offset : r.lv_offset + r.end - r.start])
        thin2 = _data(f"{name}/thin2", 2 * THIN_CHUNK)
        for origin, data, length in dump["devices"][2]["mappings"]:
            for r in _through(tdata, data * bs, (data + length) * bs, origin * bs):
                fh.seek(r.start)
                off = r.lv_offset - THIN_CHUNK
                fh.write(thin2[off : off + r.end - r.start])
    if hashlib.sha256(read_sparse(thin_map(dump, 1, tdata), len(content))).hexdigest() != (
        _sha256(fs_path)
    ):
        raise RuntimeError(f"{name}: thin1 read back through thin_dump differs from its ext4")
    return _image(
        b, vg, "vgcfgrestore", truth, _sizes(segs),
        filesystems={"thin1": fs_path}, big_files={"thin1": big},
        extra={
            "pool": "pool",
            "tmeta": "pool_tmeta",
            "tdata": "pool_tdata",
            "pmspare": "lvol0_pmspare",
            "chunk_size": THIN_CHUNK,
            "transaction_id": 2,
            "thin_devices": {"thin1": 1, "thin2": 2},
            "thin1_mapped_chunks": len(nonzero),
            "thin2": {"seed": f"{name}/thin2", "chunks": [1, 2]},
            "order": THIN_ORDER,
            "metadata_xml": "thin-metadata.xml",
        },
    )  # fmt: skip


BUILDERS_MORE: dict[str, Callable[[Path, Path], LvmMoreImage]] = {
    "lvm_mirror": build_lvm_mirror,
    "lvm_snapshot": build_lvm_snapshot,
    "lvm_raid0": build_lvm_raid0,
    "lvm_raid1": build_lvm_raid1,
    "lvm_raid5": build_lvm_raid5,
    "lvm_thin": build_lvm_thin,
}
NAMES_MORE = tuple(BUILDERS_MORE)


# --------------------------------------------------------------------------------------------
# the cache (as tests.lvm_images: <root>/<version>/<name>/, layout.json written last)


def more_cache_version() -> str:
    return f"{IMAGES_MORE_VERSION}-lvm2-{lvm_truth.lvm_version()}-e2fsprogs-{e2fsprogs_version()}"


def lvm_more_image(name: str, cache_root: Path) -> LvmMoreImage:
    """The set ``name`` (one of :data:`NAMES_MORE`), built once into the cache."""
    folder = cache_root / more_cache_version()
    target = folder / name
    layout = target / "layout.json"
    with _locked(folder / f".{name}.lock"):
        if not layout.exists():
            lvm_truth.require_loops()
            shutil.rmtree(target, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=folder))
            try:
                partial = work / name
                partial.mkdir()
                built = BUILDERS_MORE[name](partial, work / "work")
                (partial / "layout.json").write_text(
                    json.dumps(built.to_json(partial), indent=1, sort_keys=True)
                )
                for item in partial.iterdir():
                    item.chmod(0o444)
                partial.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return LvmMoreImage.from_json(json.loads(layout.read_text()), target)


# --------------------------------------------------------------------------------------------
# pytest fixtures: import the ``*_fixture`` functions (and ``lvm_images_cache_fixture`` from
# tests.lvm_images) into a test module or a conftest.py.


def _get_or_skip(name: str, cache_root: Path) -> LvmMoreImage:
    try:
        return lvm_more_image(name, cache_root)
    except (NeedsRoot, FileNotFoundError) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session", name="lvm_more_image_factory")
def lvm_more_image_factory_fixture(lvm_images_cache: Path) -> Callable[[str], LvmMoreImage]:
    """``lvm_more_image_factory("lvm_mirror")`` -> LvmMoreImage; skips without root/loops."""
    return lambda name: _get_or_skip(name, lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_mirror_image")
def lvm_mirror_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_mirror", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_snapshot_image")
def lvm_snapshot_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_snapshot", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_raid0_image")
def lvm_raid0_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_raid0", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_raid1_image")
def lvm_raid1_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_raid1", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_raid5_image")
def lvm_raid5_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_raid5", lvm_images_cache)


@pytest.fixture(scope="session", name="lvm_thin_image")
def lvm_thin_image_fixture(lvm_images_cache: Path) -> LvmMoreImage:
    return _get_or_skip("lvm_thin", lvm_images_cache)
