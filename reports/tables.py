"""The report's tables: pandas DataFrames from the documented map columns, nothing else.

Inputs are the map (``disk, start, end, type, device, kind, path, file_offset, inode``, as
:func:`bmap.read_map` gives it), the findings, and, with a trace, the reads: one row per piece
of a request on one object (:data:`READ_COLUMNS`). Every function here is pure: frames in,
frames out; the CLI reads and writes files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

#: What identifies an object in a map: its line's ID, and the disk it is on (an LV spread over
#: two disks is one object per disk here: its pieces, each where it lies).
OBJECT_KEY = ["disk", "type", "device", "kind", "path"]

#: The columns of the reads table the CLI builds from a trace (``reads.csv``): one row per
#: piece of a request on one object, in the order the requests completed. ``run`` is the
#: log's number (from 1, several logs being several runs); ``requests`` is how many logged
#: requests the row's request stands for (1, except for ``bmap trace`` output read back,
#: whose records merge consecutive requests to one object).
READ_COLUMNS = [
    "run",
    "request",
    "time",
    "op",
    "status",
    "disk",
    "start",
    "end",
    "type",
    "device",
    "kind",
    "path",
    "file_offset",
    "requests",
]

#: Object types that contain others (a disk, a partition, an LV): their bytes are the
#: sum of what lies inside, so they are not "used" space themselves.
CONTAINERS = ("v", "p", "l")
#: Kinds of ``u`` lines: the space no object uses, where hidden data would sit.
FREE_KINDS = ("unallocated", "unpartitioned", "free-extents", "volume-slack", "cluster-slack")

MiB = 1 << 20


def objects(frame: pd.DataFrame, reads: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per object: its bytes on disk, extents, first and last disk offset and
    fragmentation (breaks per MiB: ``(extents - 1) / size in MiB``, 0 for a contiguous
    object); with ``reads``, the bytes read and written, requests, first and last access and
    the rank of its first access."""
    f = frame.assign(
        length=(frame["end"] - frame["start"]).astype("int64"),
        inode=frame["inode"].astype("Int64"),
    )
    grouped = f.groupby(OBJECT_KEY, sort=False, dropna=False)
    out = grouped.agg(
        inode=("inode", "first"),
        size=("length", "sum"),
        extents=("length", "size"),
        first_offset=("start", "min"),
        last_offset=("end", "max"),
    ).reset_index()
    out["last_offset"] = out["last_offset"] - 1
    out["fragmentation"] = np.where(
        out["size"] > 0, (out["extents"] - 1) / (out["size"] / MiB), 0.0
    ).round(3)
    if reads is not None:
        out = out.merge(access(reads), on=OBJECT_KEY, how="left")
        for column in ("bytes_read", "bytes_written", "requests"):
            out[column] = out[column].fillna(0).astype("int64")
        out["first_access_rank"] = out["first_access_rank"].astype("Int64")
    return out.sort_values(["disk", "first_offset", "type"], kind="stable", ignore_index=True)


def object_codes(frame: pd.DataFrame) -> np.ndarray:
    """A number per row naming its object (:data:`OBJECT_KEY`): equal rows, equal numbers,
    from 0 in order of first appearance. Each column is factorized once; grouping by one
    integer is much cheaper than by five text columns over a million reads."""
    code = np.zeros(len(frame), dtype=np.int64)
    for column in OBJECT_KEY:
        values, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        code, _ = pd.factorize(code * len(uniques) + values)
    return code.astype(np.int64)


def access(reads: pd.DataFrame) -> pd.DataFrame:
    """Per object of the reads: bytes read and written, requests, first and last access time
    and the rank of the first access (1 = the first object the client touched). A request
    counts once per object, however many of its pieces lie in it (as many times as the
    ``requests`` column says it stands for)."""
    key = object_codes(reads)
    length = (reads["end"] - reads["start"]).to_numpy(np.int64)
    is_read = (reads["op"] == "read").to_numpy()
    request = reads["request"].to_numpy(np.int64)
    weight = reads["requests"].to_numpy(np.int64) if "requests" in reads else 1
    first_piece = ~pd.DataFrame({"k": key, "r": request}).duplicated().to_numpy()
    groups = len(np.unique(key)) if len(key) else 0
    _, first_row = np.unique(key, return_index=True)
    out = reads.iloc[first_row][OBJECT_KEY].reset_index(drop=True)
    out["bytes_read"] = np.bincount(key, np.where(is_read, length, 0), groups).astype(np.int64)
    out["bytes_written"] = np.bincount(key, np.where(is_read, 0, length), groups).astype(np.int64)
    out["requests"] = np.bincount(key, np.where(first_piece, weight, 0), groups).astype(np.int64)
    times = pd.Series(reads["time"].to_numpy(float)).groupby(key)
    out["first_access"] = times.min().to_numpy()
    out["last_access"] = times.max().to_numpy()
    first_request = pd.Series(request).groupby(key).min().to_numpy()
    out["first_access_rank"] = pd.Series(first_request).rank(method="dense").astype("int64")
    return out


def _union_bytes(starts: np.ndarray, ends: np.ndarray) -> int:
    """Bytes covered by the union of ``[starts, ends)``."""
    if len(starts) == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    # A range starts a new run where it begins after everything before it has ended.
    new = np.concatenate(([True], s[1:] >= reach[:-1]))
    run_start = s[new]
    run_end = np.maximum.reduceat(e, np.flatnonzero(new))
    return int((run_end - run_start).sum())


def space(frame: pd.DataFrame) -> pd.DataFrame:
    """Per device (each disk, partition and LV): its size, and the bytes of each type and kind
    of what lies in it (the union of that kind's ranges, so hard links count once), with the
    share of the device and the device's coverage: the bytes under any line of its contents,
    over its size. A disk's contents include its partitions; a device with nothing mapped
    inside has one row with no type and 0 bytes."""
    rows: list[tuple[object, ...]] = []
    is_container = frame["type"].isin(CONTAINERS)
    containers = frame[is_container].assign(is_disk=lambda f: f["type"] == "v")
    # Each device's contents, and each disk's partitions, found once; devices with nothing
    # inside (a crafted GPT has 65,536 partitions over one range) cost no pandas call each.
    contents_of = dict(iter(frame[~is_container].groupby(["disk", "device"], sort=False)))
    partitions_of = dict(iter(frame[frame["type"] == "p"].groupby("disk", sort=False)))
    grouped = containers.groupby(["disk", "device"], sort=False)
    devices = grouped.agg(
        lines=("start", "size"), lo=("start", "min"), hi=("end", "max"), is_disk=("is_disk", "max")
    )
    for (disk, device), lines, lo, hi, is_disk in (
        zip(
            devices.index.tolist(),
            devices["lines"].tolist(),
            devices["lo"].tolist(),
            devices["hi"].tolist(),
            devices["is_disk"].tolist(),
            strict=True,
        )
        if len(devices)
        else []
    ):
        if lines == 1:
            size = hi - lo
        else:  # an LV in pieces, or a line repeated
            own = grouped.get_group((disk, device))
            size = _union_bytes(own["start"].to_numpy(), own["end"].to_numpy())
        contents = contents_of.get((disk, device))
        if is_disk:  # a disk holds its partitions
            contents = pd.concat([c for c in (contents, partitions_of.get(disk)) if c is not None])
        if contents is None or contents.empty:
            rows.append((disk, device, size, "", "", 0, 0))
            continue
        covered = _union_bytes(contents["start"].to_numpy(), contents["end"].to_numpy())
        for (type_, kind), part in contents.groupby(["type", "kind"], sort=True):
            used = _union_bytes(part["start"].to_numpy(), part["end"].to_numpy())
            rows.append((disk, device, size, type_, kind, used, covered))
    out = pd.DataFrame(
        rows, columns=["disk", "device", "device_size", "type", "kind", "bytes", "covered"]
    )
    whole = out["device_size"].where(out["device_size"] > 0)
    out["share"] = (out["bytes"] / whole).round(6)
    out["coverage"] = (out["covered"] / whole).round(6)
    return out.drop(columns="covered")


def findings(rows: Iterable[Sequence[object]]) -> pd.DataFrame:
    """The findings as a table: ``(severity, disk, offset, source, message)`` each."""
    return pd.DataFrame(list(rows), columns=["severity", "disk", "offset", "source", "message"])


def extents(frame: pd.DataFrame) -> pd.DataFrame:
    """The map's rows, in the map's order."""
    return frame.reset_index(drop=True)


def free_regions(frame: pd.DataFrame) -> pd.DataFrame:
    """The unused regions (unallocated, unpartitioned, free extents, slack): where hidden
    data would sit, largest first."""
    free = frame[(frame["type"] == "u") & frame["kind"].isin(FREE_KINDS)]
    out = free.assign(size=free["end"] - free["start"])
    return out.sort_values("size", ascending=False, kind="stable", ignore_index=True)
