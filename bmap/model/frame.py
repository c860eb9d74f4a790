"""The map as a pandas DataFrame with the documented columns (docs/format.md, "Table formats").

pandas is imported on first use: ``bmap map`` writes the text map without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["disk", "start", "end", "type", "device", "kind", "path", "file_offset", "inode"]
"""The columns of the table formats and of every map DataFrame, in order."""


def make_frame(**columns: Any) -> pd.DataFrame:
    """The map's DataFrame with the documented columns and dtypes, from array-likes.

    Strings stay Python objects: a name that is not valid UTF-8 is kept with
    ``surrogateescape``, which pandas' Arrow-backed string dtype would refuse.
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "disk": np.asarray(columns["disk"], dtype=np.int64),
            "start": np.asarray(columns["start"], dtype=np.int64),
            "end": np.asarray(columns["end"], dtype=np.int64),
            **{
                name: pd.Series(np.asarray(columns[name], dtype=object), dtype=object)
                for name in ("type", "device", "kind", "path")
            },
            "file_offset": pd.array(columns["file_offset"], dtype="Int64"),
            "inode": pd.array(columns["inode"], dtype="Int64"),
        },
        columns=COLUMNS,
    )


def nullable(values: npt.ArrayLike) -> pd.arrays.IntegerArray:
    """A pandas nullable Int64 column: negative values are missing."""
    import pandas as pd

    array = np.asarray(values, dtype=np.int64)
    return pd.arrays.IntegerArray(array, array < 0)


def take_texts(values: Sequence[str], index: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    """``values[index[i]]`` for every ``i``, as an object array."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr[index] if len(index) else np.array([], dtype=object)


MAX_DISK = 65535
"""Disks are numbered from 1; the table formats and Parquet keep the number in 16 bits."""
MAX_OFFSET = (1 << 63) - 1
"""Offsets, sizes and inode numbers of a map fit a signed 64-bit integer."""
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def bounded_int(value: Any, what: str, low: int = 0, high: int = MAX_OFFSET) -> int:
    """``value`` (an int, or decimal text of at most 19 digits) if within ``[low, high]``.

    Raises:
        ValueError: anything else: the number is never converted past 19 digits, so Python's
            limit on converting long numbers is never reached.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = int(value)
    else:
        shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
        raise ValueError(f"{what}: {shown!r} is not a number of at most 19 digits")
    if not low <= number <= high:
        raise ValueError(f"{what}: {number} is outside {low}..{high}")
    return number
