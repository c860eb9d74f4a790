"""The JSON-lines map format: one object per line with the documented columns.

ASCII only (``ensure_ascii``); a byte that is not valid UTF-8 is the lone surrogate
U+DC80..U+DCFF, Python's ``surrogateescape`` convention. Per-object text is made once per
object, not once per line.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING

from bmap.errors import MapFormatError
from bmap.model.blockmap import BlockMap
from bmap.model.frame import COLUMNS, make_frame
from bmap.store.csvmap import append_record, empty_rows
from bmap.store.textmap import line_chunks

if TYPE_CHECKING:
    import pandas as pd


def sniff(first_line: str) -> bool:
    return first_line.startswith("{")


def write(bmap: BlockMap, fh: IO[str]) -> None:
    objs = bmap.objects
    dumps = json.dumps
    tail = [
        f'"type":{dumps(objs.types[i])},"device":{dumps(objs.devices[i])},'
        f'"kind":{dumps(objs.kinds[i])},"path":{dumps(objs.paths[i])}'
        for i in range(len(objs))
    ]
    inodes = ["null" if n < 0 else str(n) for n in objs.inodes]
    for lines in line_chunks(bmap):
        fh.write(
            "".join(
                f'{{"disk":{d},"start":{s},"end":{e},{tail[o]},'
                f'"file_offset":{"null" if fo < 0 else fo},"inode":{inodes[o]}}}\n'
                for d, s, e, o, fo in lines
            )
        )


def read(fh: IO[str], name: str) -> pd.DataFrame:
    rows = empty_rows()
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            append_record(rows, [rec[c] for c in COLUMNS])
        except (ValueError, KeyError, TypeError) as exc:
            raise MapFormatError(f"{name}:{number}: not a map record: {exc}") from None
        except RecursionError:
            raise MapFormatError(f"{name}:{number}: not a map record: nested too deep") from None
    return make_frame(**rows)
