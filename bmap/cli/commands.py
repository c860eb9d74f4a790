"""The ``bmap`` commands: thin click wrappers over the library.

Every error a user can cause ends in one line on stderr and an exit code from
:class:`bmap.errors.ExitCode` (docs/cli.md), never a traceback; ``--debug`` shows the
traceback of an internal error. Calling :func:`main` changes nothing of the process it runs
in; the ``bmap`` program sets its process up first (:mod:`bmap.cli.program`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from bmap import __version__
from bmap.cli.render import (
    disk_dict,
    disk_tree,
    hits_table,
    vg_dict,
    vg_tree,
)
from bmap.errors import (
    BmapError,
    ExitCode,
    Finding,
    ImageError,
    MapFormatError,
    exit_code_for,
)
from bmap.images import DiskImage, Image, format_of, is_uri, open_image, open_images
from bmap.layers.mapper import map_disks, map_images
from bmap.layers.partitions import discover
from bmap.model.escape import printable
from bmap.model.ids import object_name
from bmap.model.units import human_size
from bmap.store.mapfile import (
    FILE_FORMATS,
    FORMATS,
    TEXT_FORMATS,
    binary_format,
    read_map,
    sniff_file,
    write_map,
)

if TYPE_CHECKING:
    import pandas as pd

    from bmap.trace.annotate import Annotator
    from bmap.trace.logjob import NbdkitLogJob
    from bmap.trace.output import TraceWriter
    from bmap.trace.requests import Columns, TraceParser

_SUFFIXES = {
    "": 1,
    "s": 512,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
}
_NUMBER = re.compile(r"(0x[0-9a-f]{1,16}|\d{1,19})([a-z]*)", re.IGNORECASE)
_MAX_OFFSET = (1 << 63) - 1


def parse_size(text: str) -> int:
    """A byte count or offset: ``1048576``, ``0x100000``, ``1M``, ``4KiB``, ``2048s`` (sectors
    of 512 bytes). Suffixes are binary (K = 1024).

    Raises:
        ValueError: anything else.
    """
    match = _NUMBER.fullmatch(text.strip())
    if not match:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"not an offset: {shown!r} (use 1048576, 0x100000, 1M, 2048s)")
    number, suffix = match.groups()
    if suffix.lower() not in _SUFFIXES:
        raise ValueError(f"unknown suffix {suffix!r} in {text!r} (K, M, G, T, KiB, ..., s)")
    value = (int(number, 16) if number[:2].lower() == "0x" else int(number)) * _SUFFIXES[
        suffix.lower()
    ]
    if value > _MAX_OFFSET:
        raise ValueError(f"{text!r} is past the largest offset a disk can have (2**63 - 1)")
    return value


def parse_query(text: str) -> tuple[int, int]:
    """``OFFSET`` or ``OFFSET+LENGTH`` -> ``(start, end)``."""
    offset, plus, length = text.partition("+")
    start = parse_size(offset)
    size = parse_size(length) if plus else 1
    if size <= 0:
        raise ValueError(f"empty range: {text!r}")
    if start + size > _MAX_OFFSET:
        raise ValueError(f"{text!r} ends past the largest offset a disk can have (2**63 - 1)")
    return start, start + size


def _fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"bmap: {message}", err=True)
    sys.exit(int(code))


class _Group(click.Group):
    """Turns every error into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except BmapError as exc:
            _fail(str(exc), exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERNAL)
        except BrokenPipeError:
            # The reader went away (bmap ... | head): not an error of ours.
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            finally:
                sys.exit(0)
        except Exception as exc:
            if debug:
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(a bug in bmap; run again with --debug for the traceback and report it)",
                ExitCode.INTERNAL,
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bmap")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def main(debug: bool) -> None:
    """Map disk images: which bytes belong to which partition, structure and file.

    Exit codes: 0 done; 1 internal error; 2 bad usage; 3 done, but the input is damaged (see
    the findings); 4 an input cannot be read; 5 an input is not a disk image; 6 a map file is
    not valid.
    """


def _sector_size_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--sector-size",
        type=click.Choice(["auto", "512", "4096"]),
        default="auto",
        show_default=True,
        help="Logical sector size; auto finds the GPT header or asks the block device.",
    )(f)


def _sector_size(value: str) -> int | None:
    return None if value == "auto" else int(value)


MAX_SHOWN_FINDINGS = 200
"""Findings printed on stderr; the rest are counted (a map file's header keeps them all, and
a crafted table can make one per entry: 65,535 for a GPT whose entries all overlap)."""


def _report_findings(findings: Sequence[Finding], where: str = "") -> None:
    for f in findings[:MAX_SHOWN_FINDINGS]:
        click.echo(printable(f"bmap: {f}"), err=True)
    if len(findings) > MAX_SHOWN_FINDINGS:
        more = len(findings) - MAX_SHOWN_FINDINGS
        click.echo(f"bmap: ... and {more} more finding(s){where}", err=True)


def _exit_for(findings: Sequence[Finding]) -> int:
    return exit_code_for(findings)


class _LazyProgress:
    """Progress bars on stderr, one per stage of the work, shown only on a terminal and only
    once the work has taken a moment (:data:`bmap.layers.mapper.Progress`)."""

    DELAY = 0.5

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()
        self.bar: Any = None
        self.stage = ""
        self.shown = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.shown = stage, 0
        if self.bar is None:
            if time.monotonic() - self.started < self.DELAY or done >= total:
                return
            self.bar = click.progressbar(
                length=max(total, 1), label=printable(stage), file=sys.stderr
            )
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class _ImageArg(click.ParamType):
    """An IMAGE argument: an NBD URI kept as the text given (a Path would fold its ``//``),
    anything else a Path."""

    name = "image"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            self.fail(f"not a path or NBD URI: {value!r}", param, ctx)
        return value if is_uri(value) else Path(value)


_IMAGE = _ImageArg()


def _uri_stem(uri: str) -> str:
    """A file name for a map of an NBD export: its export name, else its socket's or host's."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(uri)
    socket = parse_qs(parts.query).get("socket", [""])[0]
    name = unquote(parts.path).strip("/") or Path(socket).stem or parts.hostname or ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return f"nbd-{name}" if name else "nbd"


def _default_output(first: Path | str, fmt: str) -> Path:
    suffix = "bmap" if fmt == "bmap" else fmt
    if isinstance(first, str):  # an NBD URI: the map goes to the current directory
        return Path.cwd() / f"{_uri_stem(first)}.{suffix}"
    if first.is_block_device():
        return Path.cwd() / f"{first.name}.{suffix}"
    return first.with_name(f"{first.name}.{suffix}")


@main.command("map")
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Where to write the map ('-' for stdout). Default: <first image>.bmap.",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, "bmaptool")),
    default=None,
    help="bmap (text, default), csv, jsonl or parquet (to a file, not stdout); by default "
    "taken from the output's extension. bmaptool: bmaptool's XML block map (version 2.0) of "
    "one raw image, listing every block but the filesystems' free ones (docs/bmaptool.md); "
    "default output <image>.bmap, where bmaptool copy looks for it.",
)
@click.option("--sha256", is_flag=True, help="Record each image's SHA-256 in the map header.")
@click.option(
    "--host",
    is_flag=True,
    help="Write the map in the container files' own coordinates: where each object's bytes "
    "sit in the qcow2 file and its backing files, with the qcow2's own structures.",
)
@click.option(
    "--bmaptool-keep-free",
    is_flag=True,
    help="With --format bmaptool: bmaptool's own rule, every block that is not a hole of the "
    "image file (free blocks included), as bmaptool create lists them.",
)
@click.option(
    "--memory-limit",
    metavar="SIZE",
    default="1536M",
    show_default=True,
    help="Memory budget of the map (1536M, 8G, ...; 0 for none). A filesystem whose mapping "
    "would need more than is left is not mapped inside: a finding says so, and the exit is 9.",
)
@click.option(
    "--temp-dir",
    type=click.Path(exists=True, file_okay=False, writable=True),
    default=None,
    help="Where the map's lines go once they pass an eighth of the memory budget: sorted runs "
    "in unnamed files, gone when bmap ends (about 43 bytes a line; default: $TMPDIR or /tmp).",
)
@_sector_size_option
def map_command(
    images: tuple[Path, ...],
    output: Path | None,
    fmt: str | None,
    sha256: bool,
    host: bool,
    bmaptool_keep_free: bool,
    memory_limit: str,
    temp_dir: str | None,
    sector_size: str,
) -> None:
    """Map IMAGE... (disk 1, 2, ... in the order given) and write the block map."""
    if fmt is None:
        ext = output.suffix.lstrip(".") if output is not None and str(output) != "-" else ""
        fmt = ext if ext in FORMATS else "bmap"
    if fmt == "bmaptool" and (len(images) > 1 or host):
        from bmap.store.bmaptool import BmaptoolExportError

        raise BmaptoolExportError(
            "--format bmaptool: bmaptool flashes one raw image; give one IMAGE"
            + (" and no --host" if host else f", not {len(images)}")
        )
    if bmaptool_keep_free and fmt != "bmaptool":
        raise click.BadParameter("only with --format bmaptool", param_hint="--bmaptool-keep-free")
    if output is not None and str(output) == "-" and fmt not in (*TEXT_FORMATS, "bmaptool"):
        raise click.BadParameter(
            f"the {fmt} format is written to a file, not to stdout: give -o FILE",
            param_hint="-o",
        )
    try:
        budget = parse_size(memory_limit) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory-limit") from None
    # bmaptool's XML goes where bmaptool copy looks for it, IMAGE.bmap (a text map there is
    # not overwritten unasked, below).
    target = output or _default_output(images[0], "bmap" if fmt == "bmaptool" else fmt)
    opened = open_images(images)
    try:
        if str(target) != "-":
            _refuse_to_overwrite_input(target, opened)
        if fmt == "bmaptool":
            from bmap.store.bmaptool import BmaptoolExportError

            if opened[0].format != "raw":
                raise BmaptoolExportError(
                    f"--format bmaptool: {images[0]} is read as {opened[0].format}; bmaptool "
                    "copies the image file's own bytes: give it a raw image (qemu-img convert "
                    "-O raw, ewfexport -f raw)"
                )
            try:
                existing = sniff_file(target) if output is None and target.exists() else None
            except MapFormatError:
                existing = None  # not a map of bmap's (an earlier bmaptool XML): replaced
            if existing is not None:
                raise BmaptoolExportError(
                    f"--format bmaptool: {target} holds a bmap map; give -o {target} to "
                    "replace it, or another -o"
                )
        progress = _LazyProgress()
        try:
            bmap = map_images(
                opened,
                sector_size=_sector_size(sector_size),
                with_sha256=sha256,
                progress=progress,
                memory_limit=budget,
                temp_dir=temp_dir,
            )
        finally:
            progress.close()
        if host:
            from bmap.layers.host import host_map

            bmap = host_map(bmap, opened)
        mapped = ""
        if fmt == "bmaptool":
            from bmap.store.bmaptool import write_bmaptool

            try:
                xml = write_bmaptool(
                    bmap,
                    opened[0].path,
                    sys.stdout if str(target) == "-" else target,
                    keep_free=bmaptool_keep_free,
                )
            except OSError as exc:
                raise ImageError(f"{target}: cannot write the map: {exc.strerror or exc}") from None
            sys.stdout.flush()
            mapped = (
                f", {xml.mapped_blocks} of {xml.blocks_count} blocks of {xml.block_size} "
                f"bytes listed in {xml.ranges} range(s)"
            )
        elif str(target) == "-":
            write_map(bmap, sys.stdout, fmt)
            sys.stdout.flush()
        else:
            try:
                write_map(bmap, target, fmt)
            except OSError as exc:
                raise ImageError(f"{target}: cannot write the map: {exc.strerror or exc}") from None
        _report_findings(
            bmap.findings,
            " (all in the map's header)"
            if fmt == "bmap" or fmt in FILE_FORMATS
            else " (bmap info --json lists them all)",
        )
        total = sum(i.size for i in bmap.images)
        covered = bmap.covered_bytes()
        where = "stdout" if str(target) == "-" else str(target)
        click.echo(
            f"bmap: wrote {where} ({fmt}): {len(bmap.images)} disk(s), "
            f"{len(bmap.objects)} objects, {len(bmap)} lines, {human_size(covered)} of "
            f"{human_size(total)} covered, {len(bmap.findings)} finding(s){mapped}",
            err=True,
        )
        sys.exit(_exit_for(bmap.findings))
    finally:
        for image in opened:
            image.close()


def _refuse_to_overwrite_input(target: Path, images: Sequence[DiskImage]) -> None:
    """Refuse a map written over any file an image reads: the image, and the backing files,
    extents and segments of a container (an NBD URI is no file here: it never matches)."""
    if not target.exists():
        return
    for image in images:
        chain = image.container.chain if image.container is not None else ()
        for path in (image.path, *(link.path for link in chain)):
            try:
                same = os.path.samefile(target, path)
            except OSError:
                continue
            if same:
                raise ImageError(f"{target}: is an input image; refusing to write the map over it")


@main.command("info")
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Also list table structures and gaps.")
@_sector_size_option
def info_command(images: tuple[Path, ...], as_json: bool, show_all: bool, sector_size: str) -> None:
    """Show the layout of IMAGE...: tables, partitions and what each holds."""
    from bmap.layers.lvm import assemble, find_pvs

    opened = open_images(images)
    try:
        disks = [discover(image, _sector_size(sector_size)) for image in opened]
        pvs, pv_findings = find_pvs(disks)
        views, vg_findings = assemble(pvs)
        findings = [f for d in disks for f in d.findings] + pv_findings + vg_findings
        findings += [f for v in views for f in v.findings]
        findings += [f for image in opened for f in image.findings]
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "disks": [disk_dict(d) for d in disks],
                        "volume_groups": [vg_dict(v) for v in views],
                    },
                    indent=2,
                )
            )
        else:
            for i, disk in enumerate(disks):
                if i:
                    click.echo("")
                for line in disk_tree(disk, show_all):
                    click.echo(line)
            for view in views:
                click.echo("")
                for line in vg_tree(view):
                    click.echo(line)
            _report_findings(findings, " (--json lists them all)")
        if not any(d.recognised for d in disks):
            _fail(
                f"{', '.join(str(d.image.path) for d in disks)}: not a disk image: "
                "no partition table and no recognised content",
                ExitCode.NOT_A_DISK,
            )
        sys.exit(_exit_for(findings))
    finally:
        for image in opened:
            image.close()


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b"\0" in head and binary_format(head) is None


def _is_image(source: Path) -> bool:
    """A block device, binary bytes that are no binary map (Parquet), or a file an image
    format recognises (a VMDK descriptor is text and starts with '#', as a map does)."""
    if source.is_block_device() or _looks_binary(source):
        return True
    try:
        with Image(source) as file:
            image_format = format_of(file)
    except BmapError:
        return False
    return image_format is not None and image_format.name != "raw"


def _load_for_lookup(source: Path | str) -> pd.DataFrame:
    """A map file as a DataFrame, or an image (a file, a container, an NBD URI) mapped in
    memory."""
    if isinstance(source, str) or _is_image_path(source):
        with open_image(source) as image:
            return map_disks([discover(image)]).to_dataframe()
    return _read_map_file(source)


def _is_image_path(source: Path) -> bool:
    if not source.exists():
        raise MapFormatError(f"{source}: no such file")
    if source.is_dir():
        raise MapFormatError(f"{source}: is a directory, not a map")
    return _is_image(source)


def _read_map_file(source: Path) -> pd.DataFrame:
    """A map file in any format (Parquet told by its magic before any text is read); every
    error names the file."""
    sniff_file(source)
    return read_map(source)


@main.command("lookup")
@click.argument("map_file", metavar="MAP", type=_IMAGE)
@click.argument("queries", nargs=-1, required=True, metavar="OFFSET[+LENGTH]...")
@click.option(
    "-d",
    "--disk",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Disk number in a multi-disk map.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--max-hits",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="At most this many objects per OFFSET, the innermost (0: all); the rest are counted.",
)
def lookup_command(
    map_file: Path | str, queries: tuple[str, ...], disk: int, as_json: bool, max_hits: int
) -> None:
    """What is at each OFFSET of a disk: every object, innermost first, with the offset inside it.

    MAP is a map file (bmap, csv or jsonl) or a disk image, mapped on the fly. OFFSET accepts
    decimal, 0x hex, K/M/G/T suffixes (binary) and s for 512-byte sectors.
    """
    try:
        ranges = [parse_query(q) for q in queries]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="OFFSET") from None
    from bmap.store.lookup import Rows, lookup

    frame = _load_for_lookup(map_file)
    answers = lookup(frame, disk, ranges, str(map_file), max_hits or None)
    rows = Rows(frame)
    del frame
    if as_json:
        out = [
            {
                "disk": a.disk,
                "start": a.start,
                "end": a.end,
                "objects": [rows.record(r, off) for r, off in a.hits],
                "more": a.more,
            }
            for a in answers
        ]
        click.echo(json.dumps(out, indent=2))
        return
    for a in answers:
        size = a.end - a.start
        label = f"disk {a.disk} {a.start:#x}" + (f"+{size:#x}" if size > 1 else "")
        click.echo(f"{label}:")
        if not a.hits:
            click.echo("  nothing in the map covers these bytes")
            continue
        table = [
            (
                printable(object_name(rows.type[r], rows.device[r], rows.kind[r], rows.path[r])),
                f"at {off:#x}" if off >= 0 else "at ?",
                f"[{int(rows.start[r]):#x}, {int(rows.end[r]):#x})",
            )
            for r, off in a.hits
        ]
        click.echo("\n".join(hits_table(table)))
        if a.more:
            click.echo(f"  ... and {a.more} more (--max-hits 0 shows them all)")


class _LogFormatChoice(click.Choice):
    """``--input-format``: ``auto`` or a format of :data:`bmap.trace.logs.LOG_FORMATS`, looked
    up only when the option is used (the other commands never import the trace)."""

    def __init__(self) -> None:
        super().__init__(["auto"])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        from bmap.trace.logs import LOG_FORMATS

        return ["auto", *LOG_FORMATS]

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # always the table's


_input_format_option = click.option(
    "--input-format",
    type=_LogFormatChoice(),
    default="auto",
    show_default=True,
    help="The logs' format; auto looks at each log's first lines.",
)
_log_disk_option = click.option(
    "-d",
    "--disk",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Which disk of the map the logs are of.",
)


def _detected_format(name: str, head: Sequence[str], chosen: str) -> str:
    """The log format asked for, or (``auto``) the one its first lines show.

    Raises:
        MapFormatError: no line of ``head`` is of a known format.
    """
    from bmap.trace.logs import detect_format

    if chosen != "auto":
        return chosen
    found = detect_format(head)
    if not found:
        raise MapFormatError(f"{name}: no line in its first 50 is a known trace format")
    return found


@main.command("trace")
@click.argument("map_file", metavar="MAP", type=_IMAGE)
@click.argument("logs", nargs=-1, required=True, metavar="LOG...")
@_input_format_option
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "jsonl"]),
    default="text",
    show_default=True,
)
@click.option("--summary", is_flag=True, help="Per object totals instead of the records.")
@_log_disk_option
@click.option(
    "--follow", is_flag=True, help="Keep reading the log as it grows, like tail -f; Ctrl-C ends."
)
def trace_command(
    map_file: Path | str,
    logs: tuple[str, ...],
    input_format: str,
    fmt: str,
    summary: bool,
    disk: int,
    follow: bool,
) -> None:
    """Name the objects behind every request of an I/O log (nbdkit log filter, QEMU block
    trace events, blkparse output, or offset,length CSV).

    MAP is a map file or a disk image (mapped on the fly); LOG may be '-' for stdin.
    """
    from bmap.store.lookup import disks_of
    from bmap.trace.annotate import Annotator

    if follow and len(logs) != 1:
        raise click.BadParameter("--follow takes one log", param_hint="LOG")
    # The first log is opened (and its format known) before the map is loaded: a log that
    # cannot be read fails at once, and an nbdkit log file is scanned in a child process
    # while the map loads.
    first = None if follow else _OpenLog(logs[0], input_format)
    try:
        frame = _load_for_lookup(map_file)
        if disk not in disks_of(frame):
            raise MapFormatError(f"{map_file}: has no disk {disk}")
        annotator = Annotator(frame, disk)
        del frame  # the annotator keeps what it needs; its memory is reused for the output
        writer = _trace_writer(annotator, fmt, summary, live=follow)
        if follow:
            try:
                _follow(writer, logs[0], input_format)
            except KeyboardInterrupt:
                pass
            writer.close()
            return
        unparsed = 0
        for i, log in enumerate(logs):
            current = first if i == 0 else _OpenLog(log, input_format)
            assert current is not None
            if current.job is not None:
                writer.consume(current.job)
            else:
                _trace_lines(writer, current.parser, current.lines)
            unparsed += current.parser.unparsed
            for number, text in current.parser.first_unparsed:
                click.echo(
                    f"bmap: {log}:{number}: not a {current.parser.name} line: {text!r}", err=True
                )
        writer.close()
    finally:
        if first is not None:
            first.close()
    if unparsed:
        click.echo(f"bmap: {unparsed} line(s) of no known format were skipped", err=True)
    if writer.disk_offsets_only:
        click.echo(
            "bmap: the map has no offsets inside files (text .bmap): ranges are disk offsets; "
            "use a csv or jsonl map, or the image, for offsets inside each object",
            err=True,
        )


class _OpenLog:
    """A log whose format is known: its lines, or for a file of a format read in blocks
    (nbdkit's) a job that reads and scans it in a child process from now on."""

    def __init__(self, name: str, input_format: str, job: bool = True) -> None:
        from bmap.trace.logjob import NbdkitLogJob
        from bmap.trace.logs import LOG_FORMATS
        from bmap.trace.nbdkit import NbdkitParser

        chosen = input_format
        # A regular file of nbdkit's log is read in blocks by the job; anything else (stdin,
        # a named pipe, other formats) line by line.
        try:
            regular = name != "-" and stat.S_ISREG(os.stat(name).st_mode)
        except OSError:
            regular = False  # _log_lines says what is wrong with it
        lines: Any = iter(())
        head: list[str] = []
        if chosen == "auto" or not (chosen == "nbdkit" and regular):
            lines = _log_lines(name)
            for line in lines:
                head.append(line)
                if len(head) >= 50:
                    break
        chosen = _detected_format(name, head, chosen)
        self.name = name
        self.parser: TraceParser = LOG_FORMATS[chosen]()
        self.lines: Iterable[str] = _chain(head, lines)
        self.job: NbdkitLogJob | None = None
        self._blocks: IO[bytes] | None = None
        self._records: IO[bytes] | None = None
        if chosen == "bmap-csv" and regular and not job:
            if hasattr(lines, "close"):
                lines.close()
            try:
                self._records = open(name, "rb")  # noqa: SIM115 - columns() closes it
            except OSError as exc:
                raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from None
        if chosen == "nbdkit" and regular:
            if hasattr(lines, "close"):
                lines.close()
            try:
                fh = open(name, "rb")  # noqa: SIM115 - the job (or columns()) closes it
            except OSError as exc:
                raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from None
            assert isinstance(self.parser, NbdkitParser)
            if job:
                self.job = NbdkitLogJob(fh, name, self.parser)
            else:
                self._blocks = fh

    def columns(self) -> Columns:
        """Every request of the log, here (made with ``job=False``): an nbdkit log file is
        read in blocks, anything else line by line."""
        from bmap.trace.nbdkit import NbdkitParser, nbdkit_log_columns
        from bmap.trace.requests import Columns

        if self._blocks is not None:
            assert isinstance(self.parser, NbdkitParser)
            fh, self._blocks = self._blocks, None
            return Columns.concat(list(nbdkit_log_columns(fh, self.parser, self.name)))
        if self._records is not None:
            from bmap.trace.records import RecordCsvParser, csv_columns

            with self._records as fh:
                self._records = None
                whole = csv_columns(fh)
            assert isinstance(self.parser, RecordCsvParser)
            if whole is not None:
                columns, self.parser.disks = whole
                return columns
            self.lines = _log_lines(self.name)  # a record breaks a rule: line by line
        requests = []
        for number, line in enumerate(self.lines, start=1):
            requests += self.parser.feed(number, line.rstrip("\n"))
        requests += self.parser.finish()
        return Columns.of(requests)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        if self._blocks is not None:
            self._blocks.close()
        if self._records is not None:
            self._records.close()


def _trace_writer(
    annotator: Annotator, fmt: str, summary: bool, live: bool, header: bool = True
) -> TraceWriter:
    """Records to stdout's bytes (text written to stdout before is flushed first)."""
    from bmap.trace.output import TraceWriter

    sys.stdout.flush()
    return TraceWriter(annotator, fmt, summary, sys.stdout.buffer, live=live, header=header)


def _follow(writer: TraceWriter, log: str, input_format: str, stop: Any = None) -> None:
    """Annotate a growing log: every completed request is written as soon as its line is."""
    from bmap.trace.logs import LOG_FORMATS, detect_format, follow_lines

    source = (line.rstrip("\n") for line in sys.stdin) if log == "-" else follow_lines(log, stop)
    parser = None
    waiting: list[str] = []
    batch: list[Any] = []
    number = 0
    for line in source:
        if line is None:  # nothing more for now: write what is complete
            writer.requests(batch)
            batch = []
            continue
        if parser is None:
            chosen = input_format if input_format != "auto" else detect_format([line])
            if chosen is None:
                waiting.append(line)
                if len(waiting) > 50:
                    raise MapFormatError(f"{log}: no line in its first 50 is a known trace format")
                continue
            parser = LOG_FORMATS[chosen]()
            for early in waiting:
                number += 1
                batch += parser.feed(number, early)
            waiting = []
        number += 1
        batch += parser.feed(number, line)
        if log == "-" or len(batch) >= 4096:
            writer.requests(batch)
            batch = []
    if parser is not None:
        batch += parser.finish()
    writer.requests(batch)


@main.command("serve")
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@click.option(
    "--map",
    "map_file",
    type=click.Path(path_type=Path),
    help="A map of the images (by default they are mapped first, together).",
)
@click.option(
    "--run",
    "run_cmd",
    help="Run this client with $uri (the first image) and $uri1, $uri2, ... set; stop when it "
    "ends.",
)
@click.option("--writable", is_flag=True, help="Let the client write (read-only by default).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Listen on this localhost port (the next images on the next ports) instead of Unix "
    "sockets.",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "jsonl"]),
    default="text",
    show_default=True,
)
def serve_command(
    images: tuple[Path | str, ...],
    map_file: Path | None,
    run_cmd: str | None,
    writable: bool,
    port: int | None,
    fmt: str,
) -> None:
    """Serve IMAGE... with the real nbdkit and name, live, what the client reads.

    Each image gets its own nbdkit; its NBD URI is printed on stderr. A container (qcow2,
    VMDK, VHD, VHDX) is read by qemu-nbd behind nbdkit, an NBD URI by nbdkit's nbd plugin: the
    reads are named in virtual-disk offsets. Then one record per run of requests, from every
    disk as its requests complete, until the client disconnects (or the --run command ends, or
    Ctrl-C). Every server is stopped and its socket removed on every way out.
    """
    from bmap.store.lookup import disks_of
    from bmap.trace.annotate import Annotator
    from bmap.trace.serve import check_servable, serve_images

    if port is not None and port + len(images) - 1 > 65535:
        raise click.BadParameter(f"{len(images)} images need ports up to {port + len(images) - 1}")
    formats = []
    for image in images:
        # One clear error for a bad path before any server starts; the format bmap sees is
        # the one the server reads the image as.
        with open_image(image) as checked:
            formats.append(checked.format)
        check_servable(image, formats[-1])
    if map_file is not None:
        frame = _load_for_lookup(map_file)
    else:
        opened = open_images(list(images))
        try:
            frame = map_disks([discover(img) for img in opened]).to_dataframe()
        finally:
            for img in opened:
                img.close()
    present = disks_of(frame)
    for disk in range(1, len(images) + 1):
        if disk not in present:
            raise MapFormatError(f"{map_file}: has no disk {disk} (for {images[disk - 1]})")
    writers = [
        _trace_writer(Annotator(frame, disk), fmt, False, live=True, header=disk == 1)
        for disk in range(1, len(images) + 1)
    ]
    del frame
    code = serve_images(
        list(images),
        writers,
        writable,
        port,
        run_cmd,
        lambda message: click.echo(f"bmap: {message}", err=True),
        formats,
    )
    if code:
        click.echo(f"bmap: the --run command exited with {code}", err=True)


def _trace_lines(writer: TraceWriter, parser: TraceParser, lines: Iterable[str]) -> None:
    """Any log line by line, annotated a batch of requests at a time."""
    batch: list[Any] = []
    for number, line in enumerate(lines, start=1):
        batch += parser.feed(number, line.rstrip("\n"))
        if len(batch) >= 65536:
            writer.requests(batch)
            batch = []
    writer.requests(batch + parser.finish())


def _chain(head: list[str], rest: Any) -> Any:
    yield from head
    yield from rest


def _log_lines(log: str) -> Any:
    if log == "-":
        return iter(sys.stdin)
    try:
        return iter(open(log, encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise ImageError(f"{log}: cannot read: {exc.strerror or exc}") from None


#: ``--no-formula-guard`` of the commands that write CSV tables (report, fleet).
formula_guard_option = click.option(
    "--no-formula-guard",
    is_flag=True,
    help="Write CSV cells that start with = + - @ as they are (by default they are quoted with "
    "a leading ' so that spreadsheets do not run them as formulas).",
)


def python_strings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` with pandas' strings held as Python objects (``mode.string_storage``,
    for the call only): with pyarrow installed, pandas 3 infers Arrow-backed strings when it
    groups by names, and Arrow refuses a name's bytes that are not UTF-8 (kept with
    ``surrogateescape``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import pandas as pd

        with pd.option_context("mode.string_storage", "python"):
            return command(*args, **kwargs)

    return wrapper


@main.command("report")
@click.argument("sources", nargs=-1, required=True, metavar="MAP...", type=_IMAGE)
@click.option(
    "--trace",
    "traces",
    multiple=True,
    metavar="LOG",
    help="An I/O log of a run (nbdkit, qemu, blkparse, CSV); several for several runs.",
)
@_input_format_option
@_log_disk_option
@click.option(
    "--csv",
    "csv_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write every table into this folder: objects, extents, space, findings (and reads).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the HTML report to this .html file (or the objects table to a .csv file).",
)
@formula_guard_option
@python_strings
def report_command(
    sources: tuple[Path | str, ...],
    traces: tuple[str, ...],
    input_format: str,
    disk: int,
    csv_dir: Path | None,
    output: Path | None,
    no_formula_guard: bool,
) -> None:
    """Tables for analysts from MAP... (one map file in any format, or images, mapped first)
    and, with --trace, what a client read: per object, its size, extents, place and
    fragmentation, and its bytes read and first access.
    """
    from bmap.store.lookup import disks_of
    from reports import csvout, tables

    if csv_dir is None and output is None:
        raise click.UsageError("say where the report goes: --csv DIR, -o FILE.html or -o FILE.csv")
    suffix = output.suffix.lower() if output is not None else ""
    if output is not None and suffix not in (".csv", ".html", ".htm"):
        raise click.BadParameter(
            "give a .html file (the report) or a .csv file (the objects table)",
            param_hint="-o",
        )
    frame, found = _load_for_report(sources)
    if traces and disk not in disks_of(frame):
        raise MapFormatError(f"{sources[0]}: has no disk {disk}")
    reads = _reads_of(frame, traces, input_format, disk) if traces else None
    made = {
        "objects": tables.objects(frame, reads),
        "extents": tables.extents(frame),
        "space": tables.space(frame),
        "findings": tables.findings(found),
    }
    if reads is not None:
        made["reads"] = reads
    guard = not no_formula_guard
    written: list[Path] = []
    try:
        if csv_dir is not None:
            written += csvout.write(made, csv_dir, guard=guard)
        if output is not None and suffix == ".csv":
            written.append(csvout.write_table(made["objects"], output, guard=guard))
        elif output is not None:
            from reports import html

            written += html.write(made, output, _report_meta(sources, frame))
    except OSError as exc:
        raise ImageError(f"cannot write the report: {exc.strerror or exc}") from None
    click.echo(
        f"bmap: wrote {len(written)} file(s): {len(made['objects'])} objects, "
        f"{len(frame)} extents, {len(found)} finding(s)"
        + (f", {len(reads)} read piece(s)" if reads is not None else ""),
        err=True,
    )


def _report_meta(sources: Sequence[Path | str], frame: pd.DataFrame) -> dict[str, Any]:
    """What the HTML report says of its input: the images (path, size, and sha256 where a
    text map's header records it), the bmap version and the date."""
    import datetime

    disks = frame[frame["type"] == "v"].groupby("disk")["end"].max()
    names = [str(s) for s in sources]
    images: list[dict[str, Any]] = [
        {
            "disk": int(disk),
            "path": names[int(disk) - 1] if len(names) >= int(disk) else names[0],
            "size": int(size),
            "sha256": None,
        }
        for disk, size in zip(disks.index.tolist(), disks.tolist())
    ]
    if len(sources) == 1 and isinstance(sources[0], Path) and not _is_image_path(sources[0]):
        recorded = _header_images(sources[0])
        for image in images:
            image.update(recorded.get(image["disk"], {}))
    now = datetime.datetime.now(datetime.UTC)
    return {"images": images, "version": __version__, "date": now.strftime("%Y-%m-%d %H:%M UTC")}


def _header_images(path: Path) -> dict[int, dict[str, Any]]:
    """The ``# image N PATH size=.. sha256=..`` lines of a text map's header (a Parquet map's
    metadata)."""
    from bmap.store.mapfile import read_images

    if sniff_file(path) in FILE_FORMATS:
        return {
            i.number: {"path": i.path, **({"sha256": i.sha256} if i.sha256 else {})}
            for i in read_images(path)
        }
    found: dict[int, dict[str, Any]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.startswith("#"):
                    break
                words = line.split()
                if len(words) < 4 or words[1] != "image" or not re.fullmatch(r"\d{1,5}", words[2]):
                    continue
                fields = dict(w.split("=", 1) for w in words[4:] if "=" in w)
                entry: dict[str, Any] = {"path": words[3]}
                if "sha256" in fields:
                    entry["sha256"] = fields["sha256"]
                found[int(words[2])] = entry
    except OSError:
        pass
    return found


def _load_for_report(
    sources: Sequence[Path | str],
) -> tuple[pd.DataFrame, list[tuple[str, int, int | None, str, str]]]:
    """The map and its findings: images are mapped together (disk 1, 2, ...); a map file is
    read, with the findings its header records."""
    from bmap.store.mapfile import read_findings

    images = [s for s in sources if isinstance(s, str) or _is_image_path(s)]
    if images and len(images) == len(sources):
        opened = open_images(sources)
        try:
            bmap = map_images(opened)
        finally:
            for image in opened:
                image.close()
        rows = [(str(f.severity), f.disk, f.offset, f.source, f.message) for f in bmap.findings]
        return bmap.to_dataframe(), rows
    if images or len(sources) > 1:
        raise click.UsageError("give images (mapped together), or one map file")
    source = sources[0]
    assert isinstance(source, Path)
    return _read_map_file(source), read_findings(source)


def _reads_of(frame: pd.DataFrame, logs: Sequence[str], input_format: str, disk: int) -> Any:
    """Every request of the logs cut at the map's objects (bmap.trace.reads), numbered on
    through the logs, with the run (the log's number, from 1) each came from. A log that is
    ``bmap trace`` output names its disk: that disk is used, unless ``--disk`` says another
    (an error)."""
    import pandas as pd

    from bmap.store.lookup import disks_of
    from bmap.trace.reads import reads_frame

    explicit = click.get_current_context().get_parameter_source("disk")
    parts = []
    base = 0
    for run, log in enumerate(logs, start=1):
        opened = _OpenLog(log, input_format, job=False)
        try:
            columns = opened.columns()
        finally:
            opened.close()
        _say_unparsed(log, opened.parser)
        on = disk
        named = sorted(getattr(opened.parser, "disks", ()))
        if len(named) > 1:
            raise MapFormatError(f"{log}: records of {len(named)} disks; a trace is of one")
        if named and named[0] != disk:
            if explicit == click.core.ParameterSource.COMMANDLINE:
                raise MapFormatError(f"{log}: its records are of disk {named[0]}, not {disk}")
            on = named[0]
            if on not in disks_of(frame):
                raise MapFormatError(f"{log}: its records are of disk {on}, not in the map")
        part = reads_frame(frame, columns, on, run)
        part["request"] += base
        base += len(columns)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _say_unparsed(log: str, parser: TraceParser) -> None:
    for number, text in parser.first_unparsed:
        click.echo(f"bmap: {log}:{number}: not a {parser.name} line: {text!r}", err=True)
    if parser.unparsed:
        click.echo(f"bmap: {log}: {parser.unparsed} line(s) of no known format skipped", err=True)


# bmap batch lives in its own module (Dask and pyarrow are imported only when it runs).
from bmap.cli import batch as _batch  # noqa: E402, F401 - registers the command
