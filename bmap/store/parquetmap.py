"""The Parquet map format: the table columns, typed (docs/format.md, "Parquet").

``disk`` uint16; ``start``, ``end`` int64; ``type`` and ``kind`` dictionary (categorical);
``device``, ``path`` string; ``file_offset``, ``inode`` nullable int64. The text map's header
(format version, generator, images, findings) is in the file's key-value metadata as JSON, under
the keys of :data:`METADATA_KEYS`.

Names are bytes on disk. A map whose every device, kind and path is valid UTF-8 stores them as
they are (``bmap-names: utf-8``); one with a name that is not (a byte kept by bmap with
``surrogateescape``) stores all of them escaped as the text map's ID is (``bmap-names:
escaped``, :mod:`bmap.model.escape`), so that each row's string is still valid UTF-8 and the
bytes come back exactly.

The map is written a part at a time, one row group per part (:meth:`BlockMap.parts`): a map
spilled to disk is never held whole. pyarrow is imported on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bmap import __version__
from bmap.errors import Finding, MapFormatError
from bmap.model.blockmap import TYPES, BlockMap, ImageInfo
from bmap.model.escape import escape, unescape
from bmap.model.frame import COLUMNS, MAX_DISK, MAX_OFFSET, make_frame

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: The first (and last) four bytes of every Parquet file.
MAGIC = b"PAR1"
FORMAT_VERSION = 1
#: Rows per row group, and per part of the map taken at a time while writing.
ROWS_PER_GROUP = 1 << 16
#: A file claiming more rows than this per byte is refused, so that what a read holds (the
#: DataFrame: about 200 bytes a row) stays in proportion to the file's real size: run-length
#: encoding lets a few bytes claim millions of equal rows. A map's rows differ (each its own
#: range): bmap writes the /usr map in 16 bytes a row (BENCHMARKS.md), a million extents of
#: one file at a perfectly regular stride in 8.
MAX_ROWS_PER_BYTE = 1

#: The key-value metadata bmap writes (values are UTF-8 text; JSON where said).
KEY_FORMAT = "bmap-format"
"""The format's version, ``"1"``."""
KEY_GENERATOR = "bmap-generator"
"""``"bmap 0.1.0"``."""
KEY_NAMES = "bmap-names"
"""``"utf-8"``: device, kind and path as they are; ``"escaped"``: as the text map's ID."""
KEY_IMAGES = "bmap-images"
"""JSON list: ``{"number", "path", "size", "sha256", "format", "chain": [[role, format,
path], ...]}`` per disk."""
KEY_FINDINGS = "bmap-findings"
"""JSON list: ``{"severity", "disk", "offset", "source", "message"}`` per finding."""
METADATA_KEYS = (KEY_FORMAT, KEY_GENERATOR, KEY_NAMES, KEY_IMAGES, KEY_FINDINGS)

_INTEGERS = ("disk", "start", "end", "file_offset", "inode")
_TEXTS = ("type", "device", "kind", "path")
_NULLABLE = ("path", "file_offset", "inode")


def sniff(head: bytes) -> bool:
    return head.startswith(MAGIC)


def schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """The columns of docs/format.md, typed."""
    import pyarrow as pa

    category = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("disk", pa.uint16(), nullable=False),
            pa.field("start", pa.int64(), nullable=False),
            pa.field("end", pa.int64(), nullable=False),
            pa.field("type", category, nullable=False),
            pa.field("device", pa.string(), nullable=False),
            pa.field("kind", category, nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("file_offset", pa.int64()),
            pa.field("inode", pa.int64()),
        ],
        metadata=metadata,
    )


# -- writing --------------------------------------------------------------------------------


def write(bmap: BlockMap, path: str | os.PathLike[str]) -> None:
    """Write ``bmap`` to the file ``path``, one row group per :data:`ROWS_PER_GROUP` lines.

    Raises:
        OSError: the file cannot be written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    objs = bmap.objects
    devices, kinds, paths = objs.devices, objs.kinds, objs.paths
    escaped = not _all_utf8(devices, kinds, paths)
    if escaped:
        devices, kinds, paths = ([escape(t) for t in texts] for texts in (devices, kinds, paths))
    # Per object, once: a part's rows take theirs by object number.
    kind_names = sorted(set(kinds))
    kind_number = {k: i for i, k in enumerate(kind_names)}
    obj_kind = np.fromiter((kind_number[k] for k in kinds), dtype=np.int32, count=len(kinds))
    obj_device = pa.array(devices, pa.string())
    obj_path = pa.array(paths, pa.string())
    obj_inode = np.asarray(objs.inodes, dtype=np.int64)
    del devices, kinds, paths
    type_names = pa.array(list(TYPES), pa.string())
    kind_dictionary = pa.array(kind_names, pa.string())

    meta = metadata(bmap.images, bmap.findings, escaped)
    table_schema = schema(meta)
    try:
        with pq.ParquetWriter(
            os.fspath(path), table_schema, compression="zstd", write_statistics=True
        ) as writer:
            if not len(bmap):
                writer.write_table(table_schema.empty_table())
            for part in bmap.parts(ROWS_PER_GROUP):
                obj = bmap.obj[part]
                take = pa.array(obj)
                file_offset = bmap.file_offset[part]
                inode = obj_inode[obj]
                columns = [
                    pa.array(bmap.disk[part], pa.uint16()),
                    pa.array(bmap.start[part], pa.int64()),
                    pa.array(bmap.end[part], pa.int64()),
                    pa.DictionaryArray.from_arrays(
                        pa.array(bmap.type_code[part].astype(np.int32)), type_names
                    ),
                    obj_device.take(take),
                    pa.DictionaryArray.from_arrays(pa.array(obj_kind[obj]), kind_dictionary),
                    obj_path.take(take),
                    pa.array(file_offset, pa.int64(), mask=file_offset < 0),
                    pa.array(inode, pa.int64(), mask=inode < 0),
                ]
                writer.write_table(
                    pa.Table.from_arrays(columns, schema=table_schema), row_group_size=len(obj)
                )
    except pa.ArrowException as exc:
        # pyarrow's I/O errors are OSErrors already; its others (a capacity limit) are the
        # writer's failure too, said as such.
        raise OSError(str(exc)) from exc


def _all_utf8(*texts: Sequence[str]) -> bool:
    """Whether every text encodes as UTF-8 (none holds a byte kept with surrogateescape)."""
    for column in texts:
        for lo in range(0, len(column), ROWS_PER_GROUP):
            joined = "".join(column[lo : lo + ROWS_PER_GROUP])
            if not joined.isascii():
                try:
                    joined.encode("utf-8")
                except UnicodeEncodeError:
                    return False
    return True


def metadata(images: Sequence[ImageInfo], findings: Sequence[Finding], escaped: bool) -> dict:
    """The key-value metadata of a map file: what the text map's header lines say.

    JSON is ASCII: a byte of a name that is not UTF-8 is the lone surrogate ``\\udcNN``
    (Python's ``surrogateescape``, as in JSON lines)."""
    return {
        KEY_FORMAT: str(FORMAT_VERSION),
        KEY_GENERATOR: f"bmap {__version__}",
        KEY_NAMES: "escaped" if escaped else "utf-8",
        KEY_IMAGES: json.dumps(
            [
                {
                    "number": i.number,
                    "path": i.path,
                    "size": i.size,
                    "sha256": i.sha256,
                    "format": i.format,
                    "chain": [list(link) for link in i.chain],
                }
                for i in images
            ]
        ),
        KEY_FINDINGS: json.dumps(
            [
                {
                    "severity": str(f.severity),
                    "disk": f.disk,
                    "offset": f.offset,
                    "source": f.source,
                    "message": f.message,
                }
                for f in findings
            ]
        ),
    }


# -- reading --------------------------------------------------------------------------------


def _open(path: str | os.PathLike[str], name: str) -> Any:
    """The file's footer read (``pyarrow.parquet.ParquetFile``).

    Raises:
        MapFormatError: not a readable Parquet file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Text columns stay dictionaries: a value repeated on many rows is made once, never
        # once per row (a small file may repeat a long value a million times).
        return pq.ParquetFile(os.fspath(path), read_dictionary=list(_TEXTS))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise MapFormatError(f"{name}: not a readable Parquet file: {_short(exc)}") from None


def _check_size(parquet: Any, path: str | os.PathLike[str], name: str) -> None:
    """Refuse a file that claims more rows than its bytes can hold (:data:`MAX_ROWS_PER_BYTE`):
    the rows are made in memory, and run-length encoding lets a few bytes claim millions."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise MapFormatError(f"{name}: cannot read: {exc.strerror or exc}") from None
    rows = parquet.metadata.num_rows
    if rows < 0 or rows > MAX_ROWS_PER_BYTE * size:
        raise MapFormatError(f"{name}: Parquet footer claims {rows} rows in {size} bytes")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _key_values(parquet: Any) -> dict[str, str]:
    """The file's key-value metadata as text (keys and values that are not UTF-8 left out)."""
    raw = parquet.schema_arrow.metadata or {}
    out = {}
    for key, value in raw.items():
        try:
            out[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def _json_list(meta: dict[str, str], key: str, name: str) -> list[Any]:
    text = meta.get(key)
    if text is None:
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise MapFormatError(f"{name}: Parquet metadata {key!r} is not JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MapFormatError(f"{name}: Parquet metadata {key!r} is not a list of objects")
    return value


def _names_escaped(meta: dict[str, str], name: str) -> bool:
    names = meta.get(KEY_NAMES, "utf-8")
    if names not in ("utf-8", "escaped"):
        raise MapFormatError(f"{name}: Parquet metadata {KEY_NAMES!r} is {names[:40]!r}")
    return names == "escaped"


def _int(value: Any, what: str, low: int = 0, high: int = MAX_OFFSET) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what}: {str(value)[:40]!r} is not a number in {low}..{high}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: {str(value)[:40]!r} is not text")
    return value


def read_images(path: str | os.PathLike[str], name: str) -> list[ImageInfo]:
    """The images a Parquet map records (:data:`KEY_IMAGES`).

    Raises:
        MapFormatError: not a Parquet file, or metadata that does not follow the format.
    """
    return _images(_key_values(_open(path, name)), name)


def read_findings(
    path: str | os.PathLike[str], name: str
) -> list[tuple[str, int, int | None, str, str]]:
    """The findings a Parquet map records (:data:`KEY_FINDINGS`): ``(severity, disk, offset,
    source, message)`` each, as :func:`bmap.store.textmap.read_findings` gives them.

    Raises:
        MapFormatError: not a Parquet file, or metadata that does not follow the format.
    """
    return _findings(_key_values(_open(path, name)), name)


def _images(meta: dict[str, str], name: str) -> list[ImageInfo]:
    images = []
    for number, entry in enumerate(_json_list(meta, KEY_IMAGES, name), start=1):
        try:
            sha256 = entry.get("sha256")
            chain = entry.get("chain", [])
            if not isinstance(chain, list) or not all(
                isinstance(link, list) and len(link) == 3 for link in chain
            ):
                raise ValueError("chain: not a list of [role, format, path]")
            images.append(
                ImageInfo(
                    number=_int(entry.get("number"), "number", 1, MAX_DISK),
                    path=_text(entry.get("path"), "path"),
                    size=_int(entry.get("size"), "size"),
                    sha256=None if sha256 is None else _text(sha256, "sha256"),
                    format=_text(entry.get("format", "raw"), "format"),
                    chain=tuple(
                        (_text(r, "role"), _text(f, "format"), _text(p, "path"))
                        for r, f, p in chain
                    ),
                )
            )
        except ValueError as exc:
            raise MapFormatError(f"{name}: Parquet metadata image {number}: {exc}") from None
    return images


def _findings(meta: dict[str, str], name: str) -> list[tuple[str, int, int | None, str, str]]:
    out = []
    for number, entry in enumerate(_json_list(meta, KEY_FINDINGS, name), start=1):
        try:
            offset = entry.get("offset")
            out.append(
                (
                    _text(entry.get("severity"), "severity"),
                    _int(entry.get("disk"), "disk", 1, MAX_DISK),
                    None if offset is None else _int(offset, "offset"),
                    _text(entry.get("source"), "source"),
                    _text(entry.get("message"), "message"),
                )
            )
        except ValueError as exc:
            raise MapFormatError(f"{name}: Parquet metadata finding {number}: {exc}") from None
    return out


def read(path: str | os.PathLike[str], name: str) -> pd.DataFrame:
    """A Parquet map as the DataFrame of :func:`bmap.model.frame.make_frame`: the same columns,
    dtypes and values as the map read from its text or CSV form.

    Integer columns of any integer type and text columns as string or dictionary of string are
    taken (a map written by another tool); anything else is refused, as are nulls outside
    ``path``, ``file_offset`` and ``inode``, and metadata that does not follow the format. The
    range checks are the caller's (:func:`bmap.store.mapfile.read_map`).

    Raises:
        MapFormatError: not a readable Parquet file, or not a map.
    """
    import pyarrow as pa

    parquet = _open(path, name)
    meta = _key_values(parquet)
    escaped = _names_escaped(meta, name)
    # The header is checked with the rows: a map whose metadata is damaged is refused whole.
    _images(meta, name)
    _findings(meta, name)
    _check_schema(parquet.schema_arrow, name)
    _check_size(parquet, path, name)
    try:
        table = parquet.read(columns=COLUMNS)
        columns = {c: table.column(c) for c in COLUMNS}
        del table
        out: dict[str, Any] = {}
        for column in _INTEGERS:
            out[column] = _integers(columns.pop(column), column, name)
        for column in _TEXTS:
            out[column] = _texts(columns.pop(column), column, escaped, name)
    except (pa.ArrowException, OSError) as exc:
        raise MapFormatError(f"{name}: damaged Parquet map: {_short(exc)}") from None
    bad = ~np.isin(out["type"], list(TYPES))
    if bad.any():
        row = int(np.argmax(bad))
        raise MapFormatError(f"{name}: map row {row + 1}: unknown type {out['type'][row]!r}")
    return make_frame(**out)


def _check_schema(arrow_schema: pa.Schema, name: str) -> None:
    import pyarrow as pa

    names = list(arrow_schema.names)
    if sorted(names) != sorted(COLUMNS):
        raise MapFormatError(
            f"{name}: Parquet columns {', '.join(names)[:200]}; a map has {', '.join(COLUMNS)}"
        )
    for field in arrow_schema:
        kind = field.type
        if field.name in _INTEGERS:
            ok = pa.types.is_integer(kind)
        else:
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            ok = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if not ok:
            raise MapFormatError(f"{name}: Parquet column {field.name!r} is {field.type}")


def _integers(column: pa.ChunkedArray, what: str, name: str) -> Any:
    """An int64 numpy array (a nullable Int64 array for :data:`_NULLABLE` columns).

    Raises:
        MapFormatError: a null where none may be; a value past int64 (an unsigned 64-bit
            column) raises pyarrow's error, which the caller turns into one.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.type != pa.int64():
        column = column.cast(pa.int64())  # safe: raises past int64
    nulls = column.null_count
    if nulls and what not in _NULLABLE:
        raise MapFormatError(f"{name}: Parquet column {what!r} has {nulls} null(s)")
    values = pc.fill_null(column, 0).to_numpy() if nulls else column.to_numpy()
    values = np.ascontiguousarray(values, dtype=np.int64)
    if what not in _NULLABLE:
        return values
    mask = column.is_null().to_numpy(zero_copy_only=False) if nulls else np.zeros(len(values), bool)
    return pd.arrays.IntegerArray(values, np.asarray(mask, dtype=bool))


def _texts(column: pa.ChunkedArray, what: str, escaped: bool, name: str) -> npt.NDArray[Any]:
    """An object array of Python strings, each distinct value made (and unescaped) once.

    Raises:
        MapFormatError: a null where none may be, or a bad escape.
    """
    import pyarrow as pa

    nulls = column.null_count
    if nulls and what not in _NULLABLE:
        raise MapFormatError(f"{name}: Parquet column {what!r} has {nulls} null(s)")
    parts = []
    # A chunk at a time: a column of a big map may hold more text than one array can.
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        values = chunk.dictionary.to_pylist()
        if None in values:  # a dictionary may hold a null of its own
            if what not in _NULLABLE:
                raise MapFormatError(f"{name}: Parquet column {what!r} has a null")
            values = ["" if v is None else v for v in values]
        if escaped:
            try:
                values = [unescape(v) for v in values]
            except ValueError as exc:
                raise MapFormatError(f"{name}: Parquet column {what!r}: {exc}") from None
        table = np.empty(len(values) + 1, dtype=object)
        table[: len(values)] = values
        table[-1] = ""  # a null path: no path
        indices = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        parts.append(table[np.asarray(indices, dtype=np.int64)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=object)
