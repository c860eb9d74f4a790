"""``bmap batch``: many images mapped on a Dask cluster into one Parquet dataset.

Mapping an image is independent work, so each entry (one image, or the images of one machine:
``a.img+b.img`` for a volume group across disks) is one Dask task. A task opens its images
read-only, maps them within the memory budget, writes the map as Parquet into the dataset's
partition for that image and returns one row of the image table. A task never raises: an
image that cannot be mapped is a row with its error, and the batch goes on.

The dataset (``DATASET``)::

    DATASET/images.parquet                  one row per entry (see IMAGE_COLUMNS)
    DATASET/map/image=<name>/part-0.parquet the entry's map, as ``bmap map -f parquet``
    DATASET/trace/image=<name>/part-0.parquet with ``--trace DIR``: the entry's boot log (the
                                            file of DIR named after it) cut at the map's
                                            objects, the reports' table of read pieces

``pyarrow.dataset.dataset(DATASET / "map", partitioning="hive")`` reads every map at once
with an ``image`` column. Workers started by ``dask worker`` elsewhere must see the images and
the dataset at the same paths (a shared filesystem); paths are made absolute here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from bmap.errors import BmapError, ExitCode, ImageError, exit_code_for

#: The image table's columns, in order.
IMAGE_COLUMNS = (
    "image",  # the entry's name: the dataset's partition value
    "paths",  # list of the image files, disk 1 first
    "sizes",  # list: each disk's size in bytes (a container's virtual size)
    "sha256",  # list: each disk's SHA-256 (None with --no-sha256)
    "formats",  # list: raw, qcow2, vmdk, ...
    "lines",  # lines of the map (0 where it failed)
    "findings",  # JSON: [{"severity", "disk", "offset", "source", "message"}, ...]
    "exit",  # what `bmap map` of the entry exits with (0, 3, 9; 4, 5, 8, ... where it failed)
    "error",  # why it failed, one line ("" where it did not)
    "seconds",  # the task's wall time
    "worker",  # host:pid of the worker that ran it
    "trace",  # the boot log annotated against the map ("" where there was none)
    "requests",  # the log's requests
    "trace_error",  # why the log could not be read ("" where it could)
)
#: Files of a directory given as input that are not images: maps, logs, notes.
NOT_IMAGES = frozenset(
    (".bmap", ".csv", ".jsonl", ".parquet", ".json", ".log", ".txt", ".md", ".xml", ".sha256")
)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Entry:
    """One machine: its images, disk 1 first, and the name its rows carry."""

    name: str
    paths: tuple[str, ...]


def _at(arg: str, base: Path | None) -> Path:
    return Path(arg) if base is None or Path(arg).is_absolute() else base / arg


def _one_entry(arg: str, base: Path | None = None) -> list[tuple[str, ...]]:
    """The entries an argument names: an image, a directory of images, or ``a+b+...``."""
    path = _at(arg, base)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix not in NOT_IMAGES
        )
        return [(str(p.resolve()),) for p in files]
    if path.exists():
        return [(str(path.resolve()),)]
    if "+" in arg:
        parts = [_at(p, base) for p in arg.split("+")]
        missing = [str(p) for p in parts if not p.is_file()]
        if not missing:
            return [tuple(str(p.resolve()) for p in parts)]
        raise ImageError(f"{missing[0]}: no such file (in the entry {arg!r})")
    raise ImageError(f"{arg}: no such file or directory")


def entries_from(args: Sequence[str], listing: str | os.PathLike[str] | None = None) -> list[Entry]:
    """The entries of ``bmap batch``'s arguments and of a listing file (one entry per line,
    ``#`` comments, paths relative to the listing's folder), in order; each entry named after
    its first image (suffixes dropped; ``a+b`` for a set), unique, and safe as a folder name.

    Raises:
        ImageError: an argument or a listed entry names no file.
    """
    found: list[tuple[str, ...]] = []
    for arg in args:
        found.extend(_one_entry(arg))
    if listing is not None:
        where = Path(listing)
        try:
            text = where.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise ImageError(f"{where}: cannot read: {exc.strerror or exc}") from None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.extend(_one_entry(line, where.parent))
    entries: list[Entry] = []
    taken: set[str] = set()
    for paths in found:
        stem = "+".join(Path(p).name.split(".", 1)[0] or Path(p).name for p in paths)
        name = _NAME_UNSAFE.sub("_", stem) or "image"
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique)
        entries.append(Entry(unique, paths))
    return entries


@dataclass(frozen=True)
class Options:
    """What every task is given."""

    out: str
    memory_limit: int | None
    sha256: bool = True
    temp_dir: str | None = None
    trace_dir: str | None = None
    """A folder of boot logs, each named after its entry (``NAME.log``, ``NAME.csv``, ...)."""


def map_entry(entry: Entry, options: Options) -> dict[str, Any]:
    """Map one entry into its partition of the dataset and return its row of the image table
    (:data:`IMAGE_COLUMNS`). Runs in a Dask worker; never raises."""
    from bmap.images import open_images
    from bmap.layers.mapper import map_images
    from bmap.store.mapfile import write_map

    started = time.monotonic()
    row = _row(entry, f"{socket.gethostname()}:{os.getpid()}")
    try:
        opened = open_images(entry.paths)
        try:
            bmap = map_images(
                opened,
                with_sha256=options.sha256,
                memory_limit=options.memory_limit,
                temp_dir=options.temp_dir,
            )
        finally:
            for image in opened:
                image.close()
        folder = Path(options.out) / "map" / f"image={entry.name}"
        folder.mkdir(parents=True, exist_ok=True)
        write_map(bmap, folder / "part-0.parquet", "parquet")
        row["sizes"] = [info.size for info in bmap.images]
        row["sha256"] = [info.sha256 for info in bmap.images]
        row["formats"] = [info.format for info in bmap.images]
        row["lines"] = len(bmap)
        row["findings"] = json.dumps(
            [
                {
                    "severity": str(f.severity),
                    "disk": f.disk,
                    "offset": f.offset,
                    "source": f.source,
                    "message": f.message,
                }
                for f in bmap.findings
            ]
        )
        row["exit"] = exit_code_for(bmap.findings)
        if options.trace_dir is not None:
            _trace_entry(entry, bmap, options, row)
    except BmapError as exc:
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        row["exit"] = int(exc.exit_code)
    except MemoryError:
        row["error"] = "ran out of memory"
        row["exit"] = int(ExitCode.OVER_BUDGET)
    except Exception as exc:  # a bug in bmap: the batch goes on, the row says so
        row["error"] = f"internal error: {type(exc).__name__}: {exc}"
        row["exit"] = int(ExitCode.INTERNAL)
    row["seconds"] = round(time.monotonic() - started, 3)
    return row


def log_of(folder: str | os.PathLike[str], name: str) -> Path | None:
    """The boot log of entry ``name`` in ``folder``: the file whose name, cut before its first
    dot, is ``name`` (the first, sorted), or None."""
    found = sorted(
        p
        for p in Path(folder).glob(f"{glob_escape(name)}.*")
        if p.is_file() and not p.name.startswith(".")
    )
    exact = [p for p in found if p.name.split(".", 1)[0] == name]
    return exact[0] if exact else None


def _trace_entry(entry: Entry, bmap: Any, options: Options, row: dict[str, Any]) -> None:
    """The entry's boot log, if there is one, cut at its map's objects into its partition of
    ``DATASET/trace``; what went wrong with the log goes into the row, not the batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bmap.trace.logs import detect_format, parse
    from bmap.trace.reads import reads_frame
    from bmap.trace.requests import Columns

    assert options.trace_dir is not None
    log = log_of(options.trace_dir, entry.name)
    if log is None:
        return
    row["trace"] = str(log)
    try:
        with open(log, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.readlines()
        fmt = detect_format(lines[:50])
        if fmt is None:
            row["trace_error"] = f"{log}: no line in its first 50 is a known trace format"
            return
        requests, _ = parse(lines, fmt)
        reads = reads_frame(bmap.to_dataframe(), Columns.of(requests))
    except (OSError, BmapError) as exc:
        row["trace_error"] = f"{log}: {exc}"
        return
    row["requests"] = len(requests)
    folder = Path(options.out) / "trace" / f"image={entry.name}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("type", "device", "kind", "path"):
        reads[name] = reads[name].astype(str)
    pq.write_table(pa.Table.from_pandas(reads, preserve_index=False), folder / "part-0.parquet")


@dataclass
class BatchResult:
    """What a batch did: one row per entry, in the entries' order."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["error"]]


Progress = Callable[[int, int, dict[str, Any]], None]
"""Called as each entry ends: ``(done, total, its row)``."""


def run_batch(
    entries: Sequence[Entry],
    options: Options,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    worker_memory: int | None = None,
    progress: Progress | None = None,
    task: Callable[[Entry, Options], dict[str, Any]] = map_entry,
) -> BatchResult:
    """Map every entry on Dask: a local cluster of ``workers`` processes (one thread each,
    ``worker_memory`` bytes each, Dask's nanny restarting one that passes it), or the running
    scheduler at ``scheduler``; write the image table; return the rows.

    A task whose worker died (killed for memory, say) is a row with that error; the batch
    goes on. ``task`` is what runs each entry (:func:`map_entry`; tests give another).
    """
    from dask.distributed import Client, LocalCluster, as_completed

    started = time.monotonic()
    Path(options.out).mkdir(parents=True, exist_ok=True)
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            memory_limit=worker_memory or "auto",
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    result = BatchResult()
    try:
        result.workers = len(client.scheduler_info().get("workers", {}))
        futures = {
            client.submit(task, entry, options, key=f"bmap-{i}-{entry.name}", pure=False): i
            for i, entry in enumerate(entries)
        }
        rows: list[dict[str, Any] | None] = [None] * len(entries)
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # the worker died or the task could not run
                row = _lost(entries[i], exc)
            rows[i] = row
            if progress is not None:
                progress(done, len(entries), row)
        result.rows = [r for r in rows if r is not None]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    write_image_table(result.rows, Path(options.out) / "images.parquet")
    result.seconds = time.monotonic() - started
    return result


def _row(entry: Entry, worker: str) -> dict[str, Any]:
    """An entry's row of the image table before its task fills it in."""
    return {
        "image": entry.name,
        "paths": list(entry.paths),
        "sizes": [],
        "sha256": [],
        "formats": [],
        "lines": 0,
        "findings": "[]",
        "exit": 0,
        "error": "",
        "seconds": 0.0,
        "worker": worker,
        "trace": "",
        "requests": 0,
        "trace_error": "",
    }


def _lost(entry: Entry, exc: BaseException) -> dict[str, Any]:
    text = str(exc).splitlines()[0] if str(exc) else ""
    row = _row(entry, "")
    row["exit"] = int(ExitCode.INTERNAL)
    row["error"] = f"the task did not finish: {type(exc).__name__}: {text}"
    return row


def write_image_table(rows: Iterable[dict[str, Any]], path: Path) -> None:
    """The image table as Parquet, typed (lists of strings and int64, JSON findings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    schema = pa.schema(
        [
            ("image", pa.string()),
            ("paths", pa.list_(pa.string())),
            ("sizes", pa.list_(pa.int64())),
            ("sha256", pa.list_(pa.string())),
            ("formats", pa.list_(pa.string())),
            ("lines", pa.int64()),
            ("findings", pa.string()),
            ("exit", pa.int16()),
            ("error", pa.string()),
            ("seconds", pa.float64()),
            ("worker", pa.string()),
            ("trace", pa.string()),
            ("requests", pa.int64()),
            ("trace_error", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)


def read_image_table(dataset: str | os.PathLike[str]) -> Any:
    """The image table of a dataset as a pandas DataFrame."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(dataset) / "images.parquet").to_pandas()


def read_dataset(dataset: str | os.PathLike[str], images: Iterable[str] | None = None) -> Any:
    """The maps of a dataset (every image's, or those named) as one pandas DataFrame: the
    ``image`` column, then the columns :func:`bmap.read_map` gives, with its types."""
    import pandas as pd

    from bmap.store.mapfile import read_map

    root = Path(dataset) / "map"
    wanted = None if images is None else set(images)
    frames = []
    for folder in sorted(root.glob("image=*")):
        name = folder.name.removeprefix("image=")
        if wanted is not None and name not in wanted:
            continue
        for part in sorted(folder.glob("*.parquet")):
            frame = read_map(part)
            frame.insert(0, "image", name)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["image"])
    return pd.concat(frames, ignore_index=True)


def read_traces(dataset: str | os.PathLike[str], images: Iterable[str] | None = None) -> Any:
    """The reads of a dataset's boot logs (every image's, or those named) as one pandas
    DataFrame: the ``image`` column, then the reports' read columns."""
    import pandas as pd
    import pyarrow.parquet as pq

    wanted = None if images is None else set(images)
    frames = []
    for folder in sorted((Path(dataset) / "trace").glob("image=*")):
        name = folder.name.removeprefix("image=")
        if wanted is not None and name not in wanted:
            continue
        for part in sorted(folder.glob("*.parquet")):
            frame = pq.read_table(part).to_pandas()
            frame.insert(0, "image", name)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["image"])
    return pd.concat(frames, ignore_index=True)
