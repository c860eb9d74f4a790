"""Fleet questions over a ``bmap batch`` dataset: pure pandas, frames in, frames out.

Inputs are the image table (``DATASET/images.parquet``), the maps of every image with an
``image`` column (``bmap.fleet.batch.read_dataset``: the columns :func:`bmap.read_map` gives)
and, where the batch had boot logs, their reads with an ``image`` column
(``bmap.fleet.batch.read_traces``: the reports' read columns, :data:`reports.tables.READ_COLUMNS`).

Why pandas over Parquet and not DuckDB: the per-image tables already exist as pandas functions
(:func:`reports.tables.space`), pyarrow reads one image's partition of the dataset at a time
(the dataset is partitioned by image), and the answers are small (a row per kind, per file read
at boot, per place of a path). DuckDB would add a second query engine and a dependency for the
same group-bys; it would pay off for ad-hoc SQL over thousands of images, which the dataset
supports as it is (``duckdb.sql("SELECT ... FROM 'DATASET/map/*/*.parquet'")``).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from reports.tables import CONTAINERS, space


def images(table: pd.DataFrame) -> pd.DataFrame:
    """One row per entry: its disks, their total size, its lines, exit code, error and boot
    log's requests."""
    out = pd.DataFrame(
        {
            "image": table["image"],
            "disks": table["paths"].map(len),
            "bytes": table["sizes"].map(lambda s: int(sum(s))),
            "lines": table["lines"],
            "exit": table["exit"],
            "error": table["error"],
        }
    )
    if "requests" in table:
        out["boot_requests"] = table["requests"]
    return out.reset_index(drop=True)


def space_by_kind(maps: pd.DataFrame) -> pd.DataFrame:
    """Bytes of each type and kind of object on each image (as :func:`reports.tables.space`
    counts them: the union of a kind's ranges on each device, so hard links count once), the
    containers (disks, partitions, LVs) left out: ``type, kind``, then one column per image,
    then ``images`` (how many images hold that kind) and ``total``."""
    parts = []
    for name, frame in maps.groupby("image", sort=True):
        per = space(frame.drop(columns="image"))
        per = per[(per["type"] != "") & ~per["type"].isin(CONTAINERS)]
        sums = per.groupby(["type", "kind"], sort=True)["bytes"].sum().rename(str(name))
        parts.append(sums)
    if not parts:
        return pd.DataFrame(columns=["type", "kind", "images", "total"])
    wide = pd.concat(parts, axis=1).fillna(0).astype("int64")
    wide["images"] = (wide > 0).sum(axis=1)
    wide["total"] = wide.drop(columns="images").sum(axis=1)
    return wide.reset_index().sort_values(["total", "type", "kind"], ascending=[False, True, True])


def boot_files(reads: pd.DataFrame, traced: Iterable[str] | None = None) -> pd.DataFrame:
    """The files the boots read: for each path of an ``f`` object read, on how many of the
    traced images, whether every traced image read it, which images, and the bytes read on all
    of them. ``traced``: the images that had a boot log (default: those in ``reads``)."""
    names = sorted(set(traced) if traced is not None else set(reads["image"]))
    files = reads[(reads["type"].astype(str) == "f") & (reads["op"].astype(str) == "read")]
    if files.empty:
        return pd.DataFrame(columns=["path", "images", "of", "every", "which", "bytes_read"])
    files = files.assign(length=files["end"] - files["start"], path=files["path"].astype(str))
    grouped = files.groupby("path", sort=True)
    out = pd.DataFrame(
        {
            "images": grouped["image"].nunique(),
            "which": grouped["image"].agg(lambda s: ", ".join(sorted(set(s)))),
            "bytes_read": grouped["length"].sum(),
        }
    ).reset_index()
    out.insert(2, "of", len(names))
    out.insert(3, "every", out["images"] == len(names))
    return out.sort_values(["every", "images", "path"], ascending=[False, False, True]).reset_index(
        drop=True
    )


def where(maps: pd.DataFrame, paths: Iterable[str]) -> pd.DataFrame:
    """Where each of ``paths`` sits on each image: its lines (files, directories, and the
    metadata named after it), in disk order."""
    wanted = list(paths)
    sel = maps[maps["path"].isin(wanted)]
    columns = ["path", "image", "disk", "device", "type", "kind", "start", "end", "file_offset"]
    return sel[columns].sort_values(["path", "image", "disk", "start"]).reset_index(drop=True)
