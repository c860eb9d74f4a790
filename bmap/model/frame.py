"""The map as a pandas DataFrame with the documented columns (docs/format.md, "Table formats").

pandas is imported on first use: ``bmap map`` writes the text map without it.
"""

from __future__ import annotations

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
