"""A trace as a table for the reports: every request cut where the map's objects change, one
row per piece with its object (``reports.tables.READ_COLUMNS``), in the order the requests
completed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bmap.model.blockmap import NO_OFFSET
from bmap.trace.annotate import Annotator
from bmap.trace.requests import OPS, Columns, Request


def reads_frame(frame: pd.DataFrame, requests: Sequence[Request], disk: int = 1) -> pd.DataFrame:
    """The pieces of ``requests`` (on ``disk`` of the map ``frame``) with their objects.

    Columns: ``request`` (its number, from 0, in completion order), ``time`` (seconds since
    the epoch, NaN where the log has none), ``op``, ``status``, ``disk``, ``start``, ``end`` (the
    piece on the disk), ``type``, ``device``, ``kind``, ``path`` (empty where the map names
    nothing there), ``file_offset`` (where the piece starts inside its object, or NA).
    """
    columns = Columns.of(requests)
    annotator = Annotator(frame, disk)
    pieces = annotator.pieces(columns, columns.status)
    request = np.cumsum(pieces.request_start) - 1
    row = pieces.row
    known = row >= 0
    safe = np.maximum(row, 0)

    def take(name: str) -> pd.Series:
        values = frame[name].to_numpy(dtype=object)[safe] if len(frame) else np.array([], object)
        return pd.Series(np.where(known, values, ""), dtype=object)

    inside = known & pieces.offset_known & (frame["file_offset"].notna().to_numpy()[safe])
    offsets = np.where(inside, pieces.start, NO_OFFSET)
    return pd.DataFrame(
        {
            "request": request.astype("int64"),
            "time": pieces.time,
            "op": np.asarray(OPS, dtype=object)[pieces.op],
            "status": np.asarray(columns.status_names, dtype=object)[pieces.status],
            "disk": np.full(len(row), disk, dtype="int64"),
            "start": pieces.disk_start,
            "end": pieces.disk_end,
            "type": take("type"),
            "device": take("device"),
            "kind": take("kind"),
            "path": take("path"),
            "file_offset": pd.Series(offsets, dtype="Int64").mask(offsets < 0),
        }
    )
