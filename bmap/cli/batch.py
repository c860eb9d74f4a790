"""``bmap batch``: many images on Dask into one Parquet dataset (:mod:`bmap.fleet.batch`).

Registered on the ``bmap`` group by :mod:`bmap.cli.commands`; Dask and pyarrow are imported
only when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bmap.cli.commands import formula_guard_option, main, parse_size, python_strings
from bmap.errors import ExitCode
from bmap.model.escape import printable


@main.command("batch")
@click.argument("images", nargs=-1, metavar="IMAGE|DIR|A+B...")
@click.option(
    "--from",
    "listing",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file listing entries, one per line (an image, a directory, or A+B for the disks "
    "of one machine); '#' starts a comment; paths relative to the file's folder.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The dataset folder to write (new, or empty): images.parquet and map/image=NAME/.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of the local Dask cluster (default: one per core).",
)
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    help="Use the running Dask scheduler at ADDR (tcp://host:8786) instead of a local "
    "cluster; its workers must see the images and DATASET at the same paths.",
)
@click.option(
    "--memory-limit",
    metavar="SIZE",
    default="1536M",
    show_default=True,
    help="Memory budget of each image's map, as for bmap map (0 for none).",
)
@click.option(
    "--worker-memory",
    metavar="SIZE",
    default=None,
    help="Memory of each local worker process; Dask restarts a worker that passes it and the "
    "image it was mapping is listed as failed (default: the memory limit plus 1G).",
)
@click.option("--no-sha256", is_flag=True, help="Do not hash the images (faster).")
@click.option(
    "--trace",
    "trace_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder of boot logs, one per entry, each named after it (NAME.log, NAME.csv, ...; "
    "any format bmap trace reads): each is cut at its image's objects into DATASET/trace.",
)
@click.option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False, writable=True),
    default=None,
    help="Where a big map's lines spill (as for bmap map).",
)
def batch_command(
    images: tuple[str, ...],
    listing: Path | None,
    out: Path,
    workers: int | None,
    scheduler: str | None,
    memory_limit: str,
    worker_memory: str | None,
    no_sha256: bool,
    trace_dir: Path | None,
    temp_dir: str | None,
) -> None:
    """Map many images on Dask, each entry in a worker, into one Parquet dataset partitioned
    by image, with a table of the images (path, size, sha256, format, findings). One image
    that cannot be mapped never stops the batch: the summary lists it, and the exit is 10."""
    from bmap.fleet.batch import Options, entries_from, run_batch

    try:
        budget = parse_size(memory_limit) or None
        per_worker = parse_size(worker_memory) if worker_memory else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if per_worker is None and budget is not None:
        per_worker = budget + (1 << 30)
    if not images and listing is None:
        raise click.UsageError("give images, directories or --from FILE")
    if out.exists() and any(out.iterdir()):
        raise click.UsageError(f"{out}: the dataset folder exists and is not empty")
    entries = entries_from(images, listing)
    if not entries:
        raise click.UsageError("no images found in what was given")
    bar = _Bar(len(entries))
    try:
        result = run_batch(
            entries,
            Options(
                str(out.resolve()),
                budget,
                not no_sha256,
                temp_dir,
                str(trace_dir.resolve()) if trace_dir is not None else None,
            ),
            workers=workers,
            scheduler=scheduler,
            worker_memory=per_worker,
            progress=bar.update,
        )
    finally:
        bar.close()
    failed = result.failed
    mapped = len(result.rows) - len(failed)
    click.echo(
        f"bmap: mapped {mapped} of {len(result.rows)} entries on {result.workers} worker(s) in "
        f"{result.seconds:.1f} s into {out}",
        err=True,
    )
    for row in failed:
        line = f"bmap: failed: {row['image']}: exit {row['exit']}: {row['error']}"
        click.echo(printable(line), err=True)
    if trace_dir is not None:
        traced = [r for r in result.rows if r["trace"] and not r["trace_error"]]
        click.echo(f"bmap: {len(traced)} boot log(s) annotated into {out / 'trace'}", err=True)
        for row in result.rows:
            if row["trace_error"]:
                click.echo(
                    printable(f"bmap: trace: {row['image']}: {row['trace_error']}"), err=True
                )
    if failed:
        sys.exit(int(ExitCode.PARTIAL))
    if any(row["exit"] for row in result.rows):
        sys.exit(max(int(row["exit"]) for row in result.rows))


class _Bar:
    """A progress bar on stderr (tqdm), only on a terminal."""

    def __init__(self, total: int) -> None:
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", file=sys.stderr, leave=False)

    def update(self, done: int, total: int, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(str(row["image"])[:30])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command("fleet")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="PATH",
    help="A file path to find on every image (where it sits on each); several allowed.",
)
@click.option(
    "--csv",
    "csv_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write every table into this folder: images, space_by_kind, boot_files, where.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the HTML report to this .html file.",
)
@formula_guard_option
@python_strings
def fleet_command(
    dataset: Path,
    paths: tuple[str, ...],
    csv_dir: Path | None,
    output: Path | None,
    no_formula_guard: bool,
) -> None:
    """Fleet questions over a bmap batch DATASET: space by kind across the images, the files
    every image's boot read and those only some read (with --trace in the batch), and where
    each --path sits on each image."""
    from bmap.errors import MapFormatError
    from bmap.fleet.batch import read_dataset, read_image_table, read_traces
    from reports import csvout, fleet, html

    if csv_dir is None and output is None:
        raise click.UsageError("say where the report goes: --csv DIR or -o FILE.html")
    if not (dataset / "images.parquet").is_file():
        raise MapFormatError(f"{dataset}: not a bmap batch dataset (no images.parquet)")
    try:
        table = read_image_table(dataset)
    except Exception as exc:  # pyarrow's errors: a damaged table is a bad input
        raise MapFormatError(f"{dataset}/images.parquet: cannot read: {exc}") from None
    missing = [c for c in ("image", "paths", "sizes", "lines", "exit", "error") if c not in table]
    if missing:
        raise MapFormatError(f"{dataset}/images.parquet: no column {missing[0]!r}")
    maps = read_dataset(dataset)  # each partition through read_map: a damaged one is exit 6
    try:
        reads = read_traces(dataset)
    except Exception as exc:  # pyarrow's errors: a damaged trace partition is a bad input
        raise MapFormatError(f"{dataset}/trace: cannot read: {exc}") from None
    made = {
        "images": fleet.images(table),
        "space_by_kind": fleet.space_by_kind(maps),
    }
    traced = []
    if "trace" in table and "trace_error" in table:
        traced = list(table.loc[(table["trace"] != "") & (table["trace_error"] == ""), "image"])
    if traced:
        made["boot_files"] = fleet.boot_files(reads, traced)
    if paths:
        made["where"] = fleet.where(maps, paths)
    written = []
    if csv_dir is not None:
        written += csvout.write(made, csv_dir, guard=not no_formula_guard)
    if output is not None:
        written += html.write_fleet(made, output, {"title": f"bmap fleet: {dataset.name}"})
    for path in written:
        click.echo(f"bmap: wrote {path}", err=True)
