"""A trace as a table for the reports: every request cut where the map's objects change, one
row per piece with its object (``reports.tables.READ_COLUMNS``), in the order the requests
completed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmap.model.blockmap import NO_OFFSET
from bmap.trace.annotate import Annotator
from bmap.trace.requests import OPS, Columns


def reads_frame(frame: pd.DataFrame, columns: Columns, disk: int = 1, run: int = 1) -> pd.DataFrame:
    """The pieces of the requests ``columns`` (on ``disk`` of the map ``frame``) with their
    objects.

    Columns: ``run`` (as given: the log's number), ``request`` (its number, from 0, in
    completion order), ``time`` (seconds since the epoch, NaN where the log has none), ``op``,
    ``status``, ``disk``, ``start``, ``end`` (the piece on the disk), ``type``, ``device``,
    ``kind``, ``path`` (categories; empty where the map names nothing there), ``file_offset``
    (where the piece starts inside its object, or NA), ``requests`` (how many logged requests
    the piece's request stands for: 1, or a merged record's count,
    :attr:`~bmap.trace.requests.Request.stands_for`).
    """
    annotator = Annotator(frame, disk)
    pieces = annotator.pieces(columns, columns.status)
    request = np.cumsum(pieces.request_start) - 1
    row = pieces.row
    known = row >= 0
    safe = np.maximum(row, 0)

    def take(name: str) -> pd.Categorical:
        # Categories: the map's distinct names and "" (nothing in the map); no string per
        # row, so a million pieces cost their codes.
        codes, uniques = pd.factorize(frame[name].astype(object).fillna(""))
        names = list(uniques)
        if "" not in names:
            names.append("")
        empty = names.index("")
        picked = np.where(known, codes[safe], empty) if len(frame) else np.full(len(row), 0)
        # Object categories: pandas' Arrow-backed strings (pandas 3 with pyarrow) refuse a
        # name's bytes kept with surrogateescape.
        return pd.Categorical.from_codes(picked, categories=pd.Index(names, dtype=object))

    inside = known & pieces.offset_known & (frame["file_offset"].notna().to_numpy()[safe])
    offsets = np.where(inside, pieces.start, NO_OFFSET)
    return pd.DataFrame(
        {
            "run": np.full(len(row), run, dtype="int64"),
            "request": request.astype("int64"),
            "time": pieces.time,
            "op": pd.Categorical.from_codes(pieces.op, categories=pd.Index(OPS)),
            "status": pd.Categorical.from_codes(
                pieces.status, categories=pd.Index(columns.status_names)
            ),
            "disk": np.full(len(row), disk, dtype="int64"),
            "start": pieces.disk_start,
            "end": pieces.disk_end,
            "type": take("type"),
            "device": take("device"),
            "kind": take("kind"),
            "path": take("path"),
            "file_offset": pd.Series(offsets, dtype="Int64").mask(offsets < 0),
            "requests": columns.weights()[request] if len(request) else np.zeros(0, np.int64),
        }
    )
