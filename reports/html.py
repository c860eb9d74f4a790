"""The report as one self-contained HTML file: overview, disk layout, space, tables, boot view.

Everything the page needs is inside it: the CSS, Plotly's JavaScript (inlined once), the
figures and the tables' data as JSON, and a small script of our own that sorts, filters and
pages the tables. It opens with no network, and a Content-Security-Policy in the page forbids
any request and any script but ours (by hash), so even a name that slipped through escaping
could not run.

Every string in the tables came from an image or a log, chosen by whoever made them:

- in HTML text and attributes it is escaped (:func:`html.escape`);
- the figures and table data are JSON inside ``<script type="application/json">`` blocks,
  with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX`` (:func:`script_json`), so
  no name can close the block; our script puts table cells in with ``textContent`` only;
- Plotly reads a few HTML tags in hover and tick text, so names given to it are escaped
  for HTML too (Plotly turns the entities back into the characters it shows).

Big maps are summarised, never drawn or listed whole: adjacent lines of one class on one
track are merged and a disk has at most :data:`MAX_BANDS` bands; each table holds at most
:data:`MAX_ROWS` rows (the largest, the most fragmented, ...), paged in the page; the boot
timeline holds at most :data:`MAX_POINTS` reads (evenly sampled beyond that).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

#: Bands drawn per disk in the layout (adjacent lines of a class are merged first).
MAX_BANDS = 5000
#: Rows of each table embedded in the page.
MAX_ROWS = 2000
#: Reads drawn in the boot timeline.
MAX_POINTS = 50_000

#: Colour of each class of band and read.
COLOURS = {
    "disk": "#d9d9d9",
    "partition": "#8da0cb",
    "logical volume": "#a6d854",
    "metadata": "#e78ac3",
    "directory": "#ffd92f",
    "file": "#66c2a5",
    "unallocated": "#f0f0f0",
    "unpartitioned": "#fc8d62",
    "slack": "#e5c494",
    "unused": "#fc8d62",
    "nothing mapped": "#b3b3b3",
}

_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` block: nothing in it can close the
    block or start a comment, and JavaScript reads it the same."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)
    return text.translate(_SCRIPT_ESCAPES)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if np.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _text(value: object) -> str:
    """A string from an image or a log, for HTML (and for Plotly's text, which reads tags)."""
    return html.escape(str(value), quote=True)


def human(size: float) -> str:
    """``size`` bytes for a reader: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def band_class(type_: str, kind: str) -> str:
    """The class a map line is drawn as."""
    if type_ == "v":
        return "disk"
    if type_ == "p":
        return "partition"
    if type_ == "l":
        return "logical volume"
    if type_ == "m":
        return "metadata"
    if type_ == "d":
        return "directory"
    if type_ == "f":
        return "file"
    if kind == "unpartitioned":
        return "unpartitioned"
    if kind.endswith("slack"):
        return "slack"
    return "unallocated"


# -- the disk layout ---------------------------------------------------------------------------


def layout_bands(frame: pd.DataFrame, max_bands: int = MAX_BANDS) -> pd.DataFrame:
    """The bands of one disk's picture: ``track, cls, start, end, label, count``.

    Tracks: the disk (its own structures and unpartitioned space), its partitions, its LVs'
    pieces, then one track per device with what lies inside it. Adjacent lines of one class on
    one track become one band; while there are more than ``max_bands``, bands of one class on
    one track closer than a grain (the disk's size over ``max_bands``, doubling) are merged.
    """
    if frame.empty:
        return pd.DataFrame(columns=["track", "cls", "start", "end", "label", "count"])
    disk_device = frame.loc[frame["type"] == "v", "device"]
    disk_name = str(disk_device.iloc[0]) if len(disk_device) else ""
    types = frame["type"].to_numpy()
    track = np.where(
        types == "p",
        "partitions",
        np.where(types == "l", "logical volumes", frame["device"].astype(str).to_numpy()),
    )
    cls = [band_class(t, k) for t, k in zip(types, frame["kind"].astype(str))]
    name = np.where(
        frame["path"].astype(str) != "",
        frame["path"].astype(str),
        np.where(np.isin(types, ("p", "l", "v")), frame["device"].astype(str), frame["kind"]),
    )
    lines = pd.DataFrame(
        {
            "track": track,
            "cls": cls,
            "start": frame["start"].to_numpy(np.int64),
            "end": frame["end"].to_numpy(np.int64),
            "label": name,
            # Partitions, LVs and the disk keep their own band, whatever lies next to them.
            "key": np.where(np.isin(types, ("p", "l", "v")), frame["device"].astype(str), ""),
        }
    )
    # The disk's own line is drawn as the track's background, under its structures.
    lines = lines.sort_values(["track", "cls", "key", "start"], kind="stable", ignore_index=True)
    size = int(lines["end"].max() - lines["start"].min()) or 1
    grain = 0
    while True:
        bands = _merge(lines, grain)
        if len(bands) <= max_bands or grain >= size:  # partitions and LVs are never merged
            break
        grain = max(1, grain * 2, size // max_bands)
    order = {disk_name: 0, "partitions": 1, "logical volumes": 2}
    bands["rank"] = bands["track"].map(lambda t: order.get(t, 3))
    return (
        bands.sort_values(["rank", "track", "start"], kind="stable", ignore_index=True)
        .drop(columns="rank")
        .reset_index(drop=True)
    )


def _merge(lines: pd.DataFrame, grain: int) -> pd.DataFrame:
    """Lines (sorted by track, class, key, start) merged where one class on one track leaves a gap
    of at most ``grain`` bytes."""
    start = lines["start"].to_numpy()
    same = np.ones(len(lines) - 1, dtype=bool) if len(lines) else np.zeros(0, dtype=bool)
    for column in ("track", "cls", "key"):
        values = lines[column].to_numpy()
        same &= values[1:] == values[:-1]
    # The furthest end so far within each (track, class, key): where a gap begins.
    reach = lines.groupby(["track", "cls", "key"], sort=False)["end"].cummax().to_numpy()
    new = np.concatenate(([True], ~same | (start[1:] > reach[:-1] + grain)))
    group = np.cumsum(new) - 1
    grouped = lines.assign(group=group).groupby("group", sort=False)
    out = grouped.agg(
        track=("track", "first"),
        cls=("cls", "first"),
        start=("start", "min"),
        end=("end", "max"),
        label=("label", "first"),
        count=("label", "size"),
    )
    return out.reset_index(drop=True)


def layout_figure(frame: pd.DataFrame, disk: object) -> go.Figure:
    """One disk's layout to scale: a horizontal band per (merged) map line, one row per
    track, hover naming the band."""
    bands = layout_bands(frame)
    tracks = list(dict.fromkeys(bands["track"]))
    fig = go.Figure()
    classes = sorted(set(bands["cls"]), key=lambda c: (c != "disk", c))  # the disk underneath
    for cls in classes:
        part = bands[bands["cls"] == cls]
        labels = [
            _text(label) if count == 1 else f"{_text(label)} and {count - 1} more"
            for label, count in zip(part["label"], part["count"])
        ]
        hover = [
            f"{label}<br>{cls}<br>{s:#x}-{e:#x} ({human(e - s)})"
            for label, s, e in zip(labels, part["start"], part["end"])
        ]
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[_text(t) for t in part["track"]],
                base=part["start"].to_numpy(),
                x=(part["end"] - part["start"]).to_numpy(),
                name=str(cls),
                marker={"color": COLOURS.get(str(cls), "#999999"), "line": {"width": 0}},
                hovertext=hover,
                hoverinfo="text",
            )
        )
    fig.update_layout(
        barmode="overlay",
        bargap=0.15,
        height=140 + 34 * len(tracks),
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        xaxis={"title": "disk offset (bytes)", "tickformat": "~s"},
        yaxis={
            "categoryorder": "array",
            "categoryarray": [_text(t) for t in reversed(tracks)],
            "automargin": True,
        },
        legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"},
        hoverlabel={"namelength": 0},
    )
    return fig


# -- space -------------------------------------------------------------------------------------


def space_figure(space: pd.DataFrame) -> go.Figure:
    """Bytes by (type, kind) per device, stacked."""
    fig = go.Figure()
    rows = space[space["bytes"] > 0]
    devices = [_text(d) for d in dict.fromkeys(rows["device"])]
    for (type_, kind), part in rows.groupby(["type", "kind"], sort=True):
        cls = band_class(str(type_), str(kind))
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[_text(d) for d in part["device"]],
                x=part["bytes"].to_numpy(),
                name=f"{_text(kind)} ({type_})",
                marker={"color": COLOURS.get(cls)} if cls in ("partition", "unpartitioned") else {},
                hovertext=[
                    f"{_text(d)}: {_text(kind)} {human(b)}"
                    for d, b in zip(part["device"], part["bytes"])
                ],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        barmode="stack",
        height=160 + 40 * len(devices),
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis={"title": "bytes", "tickformat": "~s"},
        yaxis={"categoryorder": "array", "categoryarray": devices[::-1], "automargin": True},
    )
    return fig


# -- the boot view -----------------------------------------------------------------------------


def read_class(reads: pd.DataFrame) -> np.ndarray:
    """Each read piece's class: metadata, directory, file, or unused (free space, nothing)."""
    types = reads["type"].fillna("").astype(str).to_numpy()
    return np.select(
        [types == "m", types == "d", types == "f", np.isin(types, ("v", "p", "l"))],
        ["metadata", "directory", "file", "nothing mapped"],
        "unused",
    )


def timeline_figure(reads: pd.DataFrame) -> tuple[go.Figure, str]:
    """Time (or request order, when the log has no times) against disk offset, one mark per
    read piece coloured by class; and what the x axis is."""
    times = pd.to_numeric(reads["time"], errors="coerce")
    if times.notna().any():
        x = (times - times.min()).to_numpy(float)
        axis = "seconds since the first request"
    else:
        x = reads["request"].to_numpy(float)
        axis = "request (the log has no times)"
    if len(reads) > MAX_POINTS:
        every = np.linspace(0, len(reads) - 1, MAX_POINTS).astype(np.int64)
        reads, x = reads.iloc[every], x[every]
    picked = reads.assign(x=x, cls=read_class(reads))
    fig = go.Figure()
    multi = "run" in picked and picked["run"].nunique() > 1
    for cls, part in picked.groupby("cls", sort=False):
        names = [
            _text(p) if p else f"{_text(d)} {_text(k)}"
            for p, d, k in zip(
                part["path"].fillna("").astype(str),
                part["device"].fillna(""),
                part["kind"].fillna(""),
            )
        ]
        if multi:
            names = [f"run {r}: {n}" for r, n in zip(part["run"], names)]
        fig.add_trace(
            go.Scattergl(
                x=part["x"].to_numpy(),
                y=part["start"].to_numpy(),
                mode="markers",
                name=str(cls),
                marker={"color": COLOURS.get(str(cls), "#333333"), "size": 5},
                hovertext=names,
                hoverinfo="text+x+y",
            )
        )
    fig.update_layout(
        height=460,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis={"title": axis},
        yaxis={"title": "disk offset (bytes)", "tickformat": "~s", "automargin": True},
    )
    return fig, axis


def top_directory(path: str) -> str:
    """``/usr/lib/x`` -> ``/usr``; a file in the root -> ``/``."""
    parts = path.split("/")
    return "/" + parts[1] if len(parts) > 2 else "/"


def bytes_by_directory(reads: pd.DataFrame) -> pd.DataFrame:
    """Bytes read per device and top-level directory (files and directories)."""
    named = reads[reads["type"].isin(["f", "d"]) & (reads["op"] == "read")]
    codes, paths = pd.factorize(named["path"])  # each distinct path's directory found once
    tops = np.array([top_directory(str(p)) for p in paths], dtype=object)
    out = named.assign(
        directory=tops[codes] if len(codes) else np.array([], dtype=object),
        bytes_read=(named["end"] - named["start"]).astype("int64"),
    )
    grouped = out.groupby(["device", "directory"], sort=False)["bytes_read"].sum().reset_index()
    return grouped.sort_values("bytes_read", ascending=False, ignore_index=True)


def runs_of_files(reads: pd.DataFrame) -> pd.DataFrame:
    """Per file read: the runs that read it, and whether every run did."""
    files = reads[reads["type"] == "f"]
    runs = sorted(reads["run"].unique()) if "run" in reads else [1]
    if "run" not in files:
        files = files.assign(run=1)
    grouped = files.groupby(["device", "path"], sort=False)["run"].agg(lambda r: sorted(set(r)))
    out = grouped.reset_index()
    out["runs"] = out["run"].map(len)
    out["read_by"] = [
        "every run" if len(r) == len(runs) else "runs " + ", ".join(str(int(x)) for x in r)
        for r in out["run"]
    ]
    return out.drop(columns="run").sort_values(["runs", "path"], ignore_index=True)


# -- the page ----------------------------------------------------------------------------------


def _table(frame: pd.DataFrame, columns: Sequence[str], limit: int = MAX_ROWS) -> dict[str, Any]:
    """A table's data for the page: its columns, at most ``limit`` rows, and the total."""
    part = frame.loc[:, list(columns)].head(limit)
    rows = [[_plain(v) for v in row] for row in part.itertuples(index=False)]
    return {"columns": list(columns), "rows": rows, "total": len(frame)}


class _Page:
    """The page's parts, in order, and the scripts whose hashes the CSP allows."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0
        self.tables = 0
        self.boot = False

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: go.Figure) -> None:
        self.figures += 1
        spec = json.loads(pio.to_json(fig, validate=False))
        self.add(
            f'<div class="figure" id="fig-{self.figures}"></div>'
            f'<script type="application/json" class="figure-data" data-for="fig-{self.figures}">'
            f"{script_json(spec)}</script>"
        )

    def table(self, title: str, data: dict[str, Any], note: str = "") -> None:
        self.tables += 1
        shown = len(data["rows"])
        more = f" (the first {shown} of {data['total']})" if data["total"] > shown else ""
        self.add(
            f'<h3>{html.escape(title)}{more}</h3>{note}<div class="table" id="table-{self.tables}">'
            f"</div>"
            f'<script type="application/json" class="table-data" data-for="table-{self.tables}">'
            f"{script_json(data)}</script>"
        )


def _csp(scripts: Sequence[str]) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )
    # 'unsafe-eval': Plotly's WebGL traces compile their shaders' code with Function.
    return (
        "default-src 'none'; "
        f"script-src {hashes} 'unsafe-eval'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; worker-src blob:"
    )


def write(
    tables: Mapping[str, pd.DataFrame], out: Path, meta: Mapping[str, Any] | None = None
) -> list[Path]:
    """The report of ``tables`` (``objects, extents, space, findings`` and, with a trace,
    ``reads``, as :mod:`reports.tables` makes them) to the file ``out``.

    ``meta``: ``images`` (a list of ``{"disk", "path", "size", "sha256"}``), ``version`` (of
    the tool) and ``date``; all optional.
    """
    meta = dict(meta or {})
    out.write_text(render(tables, meta), encoding="utf-8", errors="surrogateescape")
    return [out]


def render(tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> str:
    """The page as text."""
    objects = tables["objects"]
    extents = tables["extents"]
    space = tables["space"]
    findings = tables["findings"]
    reads = tables.get("reads")
    page = _Page()

    # (a) overview
    page.add('<section id="overview"><h2>Overview</h2>')
    rows = "".join(
        f"<tr><td>{_text(i.get('disk', ''))}</td><td>{_text(i.get('path', ''))}</td>"
        f"<td>{_text(human(i['size']) if i.get('size') is not None else '')}</td>"
        f'<td class="hash">{_text(i.get("sha256") or "not recorded")}</td></tr>'
        for i in meta.get("images", [])
    )
    page.add(
        '<table class="plain"><tr><th>disk</th><th>image</th><th>size</th><th>sha256</th></tr>'
        f"{rows}</table>"
    )
    counts = objects["type"].value_counts()
    summary = [
        ("disks", extents["disk"].nunique()),
        ("partitions", int(counts.get("p", 0))),
        ("logical volumes", int(counts.get("l", 0))),
        ("files", int(counts.get("f", 0))),
        ("directories", int(counts.get("d", 0))),
        ("metadata structures", int(counts.get("m", 0))),
        ("map lines", len(extents)),
        ("findings", len(findings)),
    ]
    if reads is not None:
        summary.append(("read pieces", len(reads)))
    page.add(
        '<ul class="counts">'
        + "".join(f"<li><b>{n:,}</b> {html.escape(what)}</li>" for what, n in summary)
        + "</ul>"
    )
    page.table(
        "Findings",
        _table(findings, ["severity", "disk", "offset", "source", "message"], limit=5 * MAX_ROWS),
    )
    page.add("</section>")

    # (b) layout
    page.add(
        '<section id="layout"><h2>Disk layout</h2><p>To scale. Hover a band to name it; '
        "adjacent lines of one class are merged, and a big map is summarised (at most "
        f"{MAX_BANDS:,} bands per disk).</p>"
    )
    for disk, part in extents.groupby("disk", sort=True):
        page.add(f"<h3>disk {_text(disk)}</h3>")
        page.figure(layout_figure(part, disk))
    page.add("</section>")

    # (c) space
    page.add('<section id="space"><h2>Space by kind per device</h2>')
    page.figure(space_figure(space))
    page.add("</section>")

    # (d) tables
    page.add('<section id="tables"><h2>Tables</h2>')
    columns = [
        "disk",
        "device",
        "path",
        "inode",
        "size",
        "extents",
        "first_offset",
        "fragmentation",
    ]
    files = objects[objects["type"] == "f"]
    page.table(
        "Largest files",
        _table(files.sort_values("size", ascending=False, kind="stable"), columns),
    )
    page.table(
        "Most fragmented files",
        _table(
            files[files["extents"] > 1].sort_values(
                ["fragmentation", "extents"], ascending=False, kind="stable"
            ),
            columns,
        ),
    )
    meta_objects = objects[objects["type"] == "m"]
    page.table(
        "Metadata structures",
        _table(
            meta_objects.sort_values("size", ascending=False, kind="stable"),
            ["disk", "device", "kind", "path", "size", "extents", "first_offset"],
        ),
    )
    free = extents[(extents["type"] == "u")]
    free = free.assign(size=free["end"] - free["start"]).sort_values(
        "size", ascending=False, kind="stable"
    )
    page.table(
        "Unallocated and unpartitioned regions",
        _table(free, ["disk", "device", "kind", "start", "end", "size"]),
        note="<p>Where hidden data would sit, largest first.</p>",
    )
    page.add("</section>")

    # (e) boot view
    if reads is not None and len(reads):
        _boot_view(page, objects, reads)

    title = "bmap report"
    if meta.get("images"):
        title += ": " + ", ".join(Path(str(i.get("path", ""))).name for i in meta["images"])
    return _assemble(page, title, meta)


def _boot_view(page: _Page, objects: pd.DataFrame, reads: pd.DataFrame) -> None:
    page.boot = True
    page.add('<section id="boot"><h2>Boot view</h2>')
    fig, _ = timeline_figure(reads)
    page.add("<h3>Reads over time and disk offset</h3>")
    if len(reads) > MAX_POINTS:
        page.add(f"<p>{MAX_POINTS:,} of {len(reads):,} read pieces, evenly sampled.</p>")
    page.figure(fig)
    touched = (
        objects[objects["first_access_rank"].notna()]
        if "first_access_rank" in objects
        else objects.iloc[0:0]
    )
    order = touched[touched["type"] == "f"].sort_values("first_access_rank", kind="stable")
    page.table(
        "Order of first reads of files",
        _table(
            order, ["first_access_rank", "device", "path", "bytes_read", "requests", "first_access"]
        ),
    )
    page.table(
        "Bytes read per file",
        _table(
            touched[touched["type"] == "f"].sort_values("bytes_read", ascending=False),
            ["device", "path", "bytes_read", "bytes_written", "requests", "size"],
        ),
    )
    by_dir = bytes_by_directory(reads)
    if len(by_dir):
        fig = go.Figure(
            go.Bar(
                x=[f"{_text(d)} {_text(p)}" for d, p in zip(by_dir["device"], by_dir["directory"])][
                    :40
                ],
                y=by_dir["bytes_read"].to_numpy()[:40],
                marker={"color": COLOURS["file"]},
            )
        )
        fig.update_layout(
            height=360,
            margin={"l": 10, "r": 10, "t": 30, "b": 40},
            yaxis={"title": "bytes read", "tickformat": "~s"},
        )
        page.add("<h3>Bytes read per top-level directory</h3>")
        page.figure(fig)
    unused = reads[~reads["type"].fillna("").isin(["m", "d", "f"])]
    flag = (
        f'<p class="flag">{len(unused):,} read piece(s) of unallocated, unpartitioned or '
        "unmapped space.</p>"
        if len(unused)
        else "<p>No read of unallocated or unpartitioned space.</p>"
    )
    page.table(
        "Reads of unused space",
        _table(
            unused,
            [
                c
                for c in ("run", "request", "time", "op", "device", "kind", "start", "end")
                if c in unused
            ],
        ),
        note=flag,
    )
    if "run" in reads and reads["run"].nunique() > 1:
        page.table(
            "Files by the runs that read them",
            _table(runs_of_files(reads), ["device", "path", "runs", "read_by"], limit=5 * MAX_ROWS),
            note=f"<p>{reads['run'].nunique()} runs.</p>",
        )
    page.add("</section>")


def write_fleet(
    tables: Mapping[str, pd.DataFrame], out: Path, meta: Mapping[str, Any] | None = None
) -> list[Path]:
    """The fleet report of a ``bmap batch`` dataset (:mod:`reports.fleet`'s tables: ``images``,
    ``space_by_kind``, ``boot_files``, ``where``) to the file ``out``."""
    meta = dict(meta or {})
    page = _Page()
    shown = tables["images"]
    page.add('<section id="overview"><h2>Images</h2>')
    failed = int((shown["error"] != "").sum()) if "error" in shown else 0
    page.add(
        f'<ul class="counts"><li>{len(shown)} images</li><li>{failed} failed</li>'
        f"<li>{human(float(shown['bytes'].sum()))}</li></ul>"
    )
    page.table("Images", _table(shown, list(shown.columns)))
    page.add("</section>")
    space = tables["space_by_kind"]
    page.add('<section id="space"><h2>Space by kind</h2>')
    images = [c for c in space.columns if c not in ("type", "kind", "images", "total")]
    if len(space) and images:
        top = space.head(12)
        fig = go.Figure(
            [
                go.Bar(name=f"{t} {k}", x=images, y=[int(row[i]) for i in images])
                for t, k, (_, row) in zip(top["type"], top["kind"], top.iterrows(), strict=True)
            ]
        )
        fig.update_layout(barmode="stack", height=420, margin={"t": 20}, yaxis_title="bytes")
        page.figure(fig)
    page.table("Bytes of each kind on each image", _table(space, list(space.columns)))
    page.add("</section>")
    boot = tables.get("boot_files")
    if boot is not None:
        page.boot = True
        page.add('<section id="boot"><h2>Files the boots read</h2>')
        page.table(
            "Each file read at boot: on how many of the traced images, and on which",
            _table(boot, list(boot.columns)),
        )
        page.add("</section>")
    places = tables.get("where")
    if places is not None:
        page.add('<section id="tables"><h2>Where each path sits</h2>')
        page.table("Each path's lines on each image", _table(places, list(places.columns)))
        page.add("</section>")
    nav = [("overview", "images"), ("space", "space")]
    nav += [("boot", "boot")] if boot is not None else []
    nav += [("tables", "where")] if places is not None else []
    out.write_text(
        _assemble(page, meta.get("title", "bmap fleet report"), meta, nav),
        encoding="utf-8",
        errors="surrogateescape",
    )
    return [out]


_NAV = [("overview", "overview"), ("layout", "layout"), ("space", "space"), ("tables", "tables")]


def _assemble(
    page: _Page,
    title: str,
    meta: Mapping[str, Any],
    nav: Sequence[tuple[str, str]] | None = None,
) -> str:
    plotly_js = plotly.offline.get_plotlyjs()
    scripts = [plotly_js, _SCRIPT]
    footer = (
        f"bmap {_text(meta.get('version', ''))}, {_text(meta.get('date', ''))}. "
        "Every name here came from an image or a log and is shown as text."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(scripts)}">'
        f"<title>{_text(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_text(title)}</h1><p>{footer}</p><nav>"
        + " ".join(
            f'<a href="#{anchor}">{_text(text)}</a>'
            for anchor, text in (
                nav if nav is not None else [*_NAV, *([("boot", "boot")] if page.boot else [])]
            )
        )
        + "</nav></header><main>"
        + "".join(page.parts)
        + f"</main><script>{plotly_js}</script><script>{_SCRIPT}</script></body></html>\n"
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fff}
header{background:#2d3e50;color:#fff;padding:8px 20px}header h1{margin:4px 0;font-size:20px}
header p{margin:2px 0;font-size:12px;opacity:.85}nav a{color:#cde;margin-right:12px}
main{padding:0 20px 40px}section{margin-top:18px}h2{border-bottom:2px solid #2d3e50}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;white-space:pre-wrap;word-break:break-all}th{background:#eef;cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}.hash{font-family:monospace}
.counts{display:flex;flex-wrap:wrap;gap:8px 24px;list-style:none;padding:0}
.flag{color:#b00;font-weight:bold}.table input{margin:4px 8px 4px 0}
.pager button{margin:0 4px}.sev-error td,.sev-warning td{background:#fee}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
"""

# Builds the figures and the tables from the JSON blocks. Cells are set with textContent only:
# no string from the data is ever parsed as HTML.
_SCRIPT = r"""
(function(){
"use strict";
var PAGE=50;
document.querySelectorAll("script.figure-data").forEach(function(el){
  var spec=JSON.parse(el.textContent);
  var cfg={displaylogo:false,responsive:true,showLink:false,showSendToCloud:false};
  Plotly.newPlot(document.getElementById(el.dataset.for),spec.data,spec.layout||{},cfg);
});
function cmp(a,b){
  if(a===null||a===undefined)return b===null||b===undefined?0:1;
  if(b===null||b===undefined)return -1;
  if(typeof a==="number"&&typeof b==="number")return a-b;
  return String(a).localeCompare(String(b));
}
function table(root,data){
  var state={sort:-1,dir:1,filter:"",page:0};
  var bar=document.createElement("div");
  var input=document.createElement("input");
  input.type="search";input.placeholder="filter";input.className="filter";
  var info=document.createElement("span");info.className="info";
  bar.appendChild(input);bar.appendChild(info);root.appendChild(bar);
  var t=document.createElement("table");var head=t.createTHead().insertRow();
  var body=t.createTBody();root.appendChild(t);
  var pager=document.createElement("div");pager.className="pager";
  var prev=document.createElement("button");prev.textContent="previous";
  var next=document.createElement("button");next.textContent="next";
  pager.appendChild(prev);pager.appendChild(next);root.appendChild(pager);
  var sevcol=data.columns.indexOf("severity");
  data.columns.forEach(function(c,i){
    var th=document.createElement("th");th.textContent=c;head.appendChild(th);
    th.addEventListener("click",function(){
      if(state.sort===i)state.dir=-state.dir;else{state.sort=i;state.dir=1;}
      head.querySelectorAll("th").forEach(function(h){h.className="";});
      th.className=state.dir>0?"asc":"desc";state.page=0;draw();
    });
  });
  function rows(){
    var r=data.rows;
    if(state.filter){var f=state.filter.toLowerCase();
      r=r.filter(function(row){return row.some(function(v){
        return v!==null&&String(v).toLowerCase().indexOf(f)>=0;});});}
    if(state.sort>=0){var i=state.sort,d=state.dir;
      r=r.slice().sort(function(a,b){return d*cmp(a[i],b[i]);});}
    return r;
  }
  function draw(){
    var r=rows();var pages=Math.max(1,Math.ceil(r.length/PAGE));
    state.page=Math.min(state.page,pages-1);
    while(body.firstChild)body.removeChild(body.firstChild);
    r.slice(state.page*PAGE,(state.page+1)*PAGE).forEach(function(row){
      var tr=body.insertRow();
      if(sevcol>=0)tr.className="sev-"+String(row[sevcol]).replace(/[^a-z]/g,"");
      row.forEach(function(v){var td=tr.insertCell();
        if(typeof v==="number"){td.className="num";}
        td.textContent=v===null?"":String(v);});
    });
    info.textContent=r.length+" row(s), page "+(state.page+1)+" of "+pages;
    prev.disabled=state.page===0;next.disabled=state.page>=pages-1;
  }
  input.addEventListener("input",function(){state.filter=input.value;state.page=0;draw();});
  prev.addEventListener("click",function(){state.page--;draw();});
  next.addEventListener("click",function(){state.page++;draw();});
  draw();
}
document.querySelectorAll("script.table-data").forEach(function(el){
  table(document.getElementById(el.dataset.for),JSON.parse(el.textContent));
});
})();
"""
