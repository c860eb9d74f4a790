"""The report's tables as CSV files, guarded against spreadsheet formula injection.

Every name in a table came from an image or a log, chosen by whoever made them. A cell that
begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by spreadsheets as a
formula (OWASP's "CSV injection"); such text cells are written with a leading ``'``, which
spreadsheets show as text and hide. Numbers are never touched. ``guard=False``
(``--no-formula-guard``) writes the cells as they are, for tools that are not spreadsheets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guarded(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula quoted."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values):
            continue
        # Each distinct text is checked once (devices, types and kinds repeat a lot).
        codes, uniques = pd.factorize(values)
        first = pd.Series(np.asarray(uniques, dtype=object)).str.slice(0, 1)
        risky_unique = first.isin(FORMULA_START).to_numpy(dtype=bool)  # not text: NaN, False
        risky = np.append(risky_unique, False)[codes]  # code -1 (a missing value) stays
        if risky.any():
            values = values.astype(object)
            out[column] = values.where(~risky, "'" + values[risky].astype(str)).astype(object)
    return out


def write_table(frame: pd.DataFrame, path: Path, *, guard: bool = True) -> Path:
    """One table to ``path`` (RFC 4180, UTF-8; names that are not UTF-8 as their bytes)."""
    (guarded(frame) if guard else frame).to_csv(
        path, index=False, encoding="utf-8", errors="surrogateescape", lineterminator="\r\n"
    )
    return path


def write(tables: Mapping[str, pd.DataFrame], out: Path, *, guard: bool = True) -> list[Path]:
    """Every table to ``out/<name>.csv``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_table(frame, out / f"{name}.csv", guard=guard) for name, frame in tables.items()]
