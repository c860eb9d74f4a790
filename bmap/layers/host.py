"""The map in the container files' own coordinates: ``bmap map --host``.

A map of a virtual disk says which guest object each virtual-disk byte belongs to. The host
map says where those bytes sit in the files that hold the disk: the qcow2 file, its backing
files, its external data file. Its disks are those files (``host1``, ``host2``, ... in the
order met: each image, then its chain; a file shared by two images is one disk). It holds:

- ``v hostN``: each file, whole;
- ``m`` lines for the container's own structures (``qcow2-header``, ``l1-table``,
  ``l2-table``, ``refcount-table``, ``refcount-block``, ``snapshot-table``, ...), with, where
  it has one, the first virtual-disk offset the structure describes as FILE_OFFSET;
- ``m guest-data`` for every stored run of the virtual disk, and ``m compressed-cluster`` for
  each compressed cluster's bytes, with the virtual-disk offset as FILE_OFFSET;
- every line of the virtual-disk map but its ``v`` line, at the host offsets of its bytes
  (split where the clusters are), with the same object: ``f /dev/sda1 /etc/passwd`` on the
  bytes of the qcow2 file that hold it. A compressed cluster's lines cover its compressed
  bytes, whole, for each object with bytes in it;
- ``u unreferenced`` for a file's bytes that nothing above uses: leaked clusters, the bytes
  of a backing file that an upper layer overwrote (old data the guest no longer sees).

Zero clusters and clusters no layer stores have no host bytes and no line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bmap.errors import ContainerError, Finding
from bmap.images import DiskImage, HostFile, HostLayout, HostRuns, HostStructure
from bmap.model import intervals
from bmap.model.blockmap import NO_OFFSET, TYPE_CODE, BlockMap, ImageInfo, MapBuilder

Array = npt.NDArray[np.int64]


class _RawLayout:
    """A raw image holds its bytes where the guest sees them."""

    def __init__(self, image: DiskImage) -> None:
        self.image = image

    def host_files(self) -> list[HostFile]:
        return [HostFile(str(self.image.path), "raw", self.image.size)]

    def host_structures(self) -> list[HostStructure]:
        return []

    def host_runs(self) -> HostRuns:
        one = np.ones(1, dtype=np.int64)
        return HostRuns(
            guest_start=0 * one,
            guest_end=self.image.size * one,
            layer=0 * one,
            host_start=0 * one,
            host_length=self.image.size * one,
            compressed=np.zeros(1, dtype=bool),
        )


def layout_of(image: DiskImage) -> HostLayout:
    """Where the image's reader keeps each byte.

    Raises:
        ContainerError: the image's reader cannot say (the libyal readers, NBD).
    """
    if image.container is None:
        return _RawLayout(image)
    layout = getattr(image, "layout", None)
    if layout is not None:
        return layout  # type: ignore[no-any-return]
    raise ContainerError(
        f"{image.path}: --host needs a reader that knows where each byte sits in the file "
        f"(qcow2 or raw); the {image.format} reader does not"
    )


def _file_key(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return f"{st.st_dev}:{st.st_ino}"


def host_map(guest: BlockMap, images: Sequence[DiskImage]) -> BlockMap:
    """The host map of ``images`` from their virtual-disk map ``guest`` (see the module).

    The host map shares ``guest``'s object table (its objects keep their numbers) and adds
    its own objects to it: ``guest`` stays valid, with some objects that no line uses.
    """
    builder = MapBuilder()
    builder.objects = guest.objects  # the guest objects keep their numbers
    infos: list[ImageInfo] = []
    disk_of: dict[str, int] = {}
    used: dict[int, list[tuple[Array, Array]]] = {}
    for image in images:
        layout = layout_of(image)
        numbers = []
        for f in layout.host_files():
            key = _file_key(f.path)
            if key not in disk_of:
                disk_of[key] = len(disk_of) + 1
                n = disk_of[key]
                infos.append(ImageInfo(n, f.path, f.size, None, f.format))
                builder.add_object_extent("v", f"host{n}", n, 0, f.size)
            numbers.append(disk_of[key])
        disks = np.asarray(numbers, dtype=np.int64)
        structures = layout.host_structures()
        _add_structures(builder, structures, disks)
        runs = layout.host_runs()
        _add_runs(builder, runs, disks)
        _add_guest_lines(builder, guest, image.number, runs, disks)
        for finding in guest.findings:
            if finding.disk == image.number:
                builder.add_finding(_to_host(finding, int(disks[0])))
        # What the file's bytes hold: its structures and its stored runs (every guest line
        # lies inside a run).
        for s in structures:
            used.setdefault(int(disks[s.layer]), []).append(
                (np.array([s.offset]), np.array([s.offset + s.length]))
            )
        ends = runs.host_start + runs.host_length
        for layer in np.unique(runs.layer).tolist():
            pick = runs.layer == layer
            used.setdefault(int(disks[layer]), []).append((runs.host_start[pick], ends[pick]))
    for info in infos:
        parts = used.get(info.number, [])
        starts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        stops = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        free = intervals.subtract(
            (np.array([0], np.int64), np.array([info.size], np.int64)),
            intervals.union(starts, np.minimum(stops, info.size)),
        )
        obj = builder.add_object("u", f"host{info.number}", "unreferenced")
        builder.add_extents(obj, info.number, free[0], free[1])
    return builder.build(infos)


def _to_host(finding: Finding, disk: int) -> Finding:
    where = "" if finding.offset is None else f" (at virtual-disk offset {finding.offset:#x})"
    return Finding(finding.severity, disk, None, finding.source, finding.message + where)


def _add_structures(builder: MapBuilder, structures: Sequence[HostStructure], disks: Array) -> None:
    objects: dict[tuple[int, str], int] = {}
    for s in structures:
        n = int(disks[s.layer])
        key = (n, s.kind)
        if key not in objects:
            objects[key] = builder.add_object("m", f"host{n}", s.kind)
        builder.add_extent(objects[key], n, s.offset, s.offset + s.length, s.guest_offset)


def _add_runs(builder: MapBuilder, runs: HostRuns, disks: Array) -> None:
    for layer in np.unique(runs.layer).tolist():
        n = int(disks[layer])
        for compressed, kind in ((False, "guest-data"), (True, "compressed-cluster")):
            sel = (runs.layer == layer) & (runs.compressed == compressed)
            if sel.any():
                obj = builder.add_object("m", f"host{n}", kind)
                start = runs.host_start[sel]
                builder.add_extents(
                    obj, n, start, start + runs.host_length[sel], runs.guest_start[sel]
                )


def _add_guest_lines(
    builder: MapBuilder, guest: BlockMap, number: int, runs: HostRuns, disks: Array
) -> None:
    """Every guest line of disk ``number`` but ``v``, split at the runs, at host offsets."""
    sel = np.flatnonzero((guest.disk == number) & (guest.type_code != TYPE_CODE["v"]))
    s, e = guest.start[sel], guest.end[sel]
    gs, ge = runs.guest_start, runs.guest_end
    first = np.searchsorted(ge, s, side="right")  # the first run ending after the line starts
    last = np.searchsorted(gs, e, side="left")  # runs before this one start before it ends
    counts = np.maximum(last - first, 0)
    line = np.repeat(np.arange(len(sel)), counts)
    run = intervals.ragged_ranges(first, counts)
    lo = np.maximum(s[line], gs[run])
    hi = np.minimum(e[line], ge[run])
    packed = runs.compressed[run]
    host_lo = np.where(packed, runs.host_start[run], runs.host_start[run] + (lo - gs[run]))
    host_hi = np.where(packed, runs.host_start[run] + runs.host_length[run], host_lo + (hi - lo))
    offsets = guest.file_offset[sel][line]
    offsets = np.where(offsets == NO_OFFSET, NO_OFFSET, offsets + (lo - s[line]))
    objs = guest.obj[sel][line]
    layers = runs.layer[run]
    for layer in np.unique(layers).tolist():
        pick = layers == layer
        builder.add_extents(
            objs[pick], int(disks[layer]), host_lo[pick], host_hi[pick], offsets[pick]
        )
