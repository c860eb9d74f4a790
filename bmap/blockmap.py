"""The block map: objects and their extents, columnar.

A map holds millions of extents, so extents are never Python objects: they live in numpy
arrays (disk, start, end, type, object number, offset inside the object), and each object
(a disk, a partition, a file, a structure) is one row of an :class:`ObjectTable`. The
:class:`MapBuilder` collects both, in any order and in chunks, and :meth:`MapBuilder.build`
sorts them once into the order of the format: disk, start ascending, end descending, the
enclosing object before what it contains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bmap import textcols
from bmap.errors import Finding
from bmap.escape import escape

#: The object types of the format, in the order of their codes.
TYPES = "vpldfmu"
TYPE_CODE = {letter: code for code, letter in enumerate(TYPES)}
#: The ``kind`` column of the table formats for the types whose kind is not their own word.
KIND_OF_TYPE = {"v": "disk", "p": "partition", "l": "lv", "d": "dir", "f": "file"}
#: When two lines cover the same bytes, the container comes first: disk, partition, LV, rest.
_CONTAINER_RANK = np.array([0, 1, 2, 3, 3, 3, 3], dtype=np.int8)

#: ``file_offset`` where it has no meaning.
NO_OFFSET = -1
#: ``inode`` where there is none.
NO_INODE = -1

COLUMNS = ["disk", "start", "end", "type", "device", "kind", "path", "file_offset", "inode"]


@dataclass(frozen=True)
class ImageInfo:
    """Provenance of one disk of the map."""

    number: int
    path: str
    size: int
    sha256: str | None = None


class ObjectTable:
    """The objects of a map, one row each, in columns.

    Row ``i`` is object number ``i``; extents point at it by that number.
    """

    def __init__(self) -> None:
        self.types: list[str] = []
        self.devices: list[str] = []
        self.kinds: list[str] = []
        self.paths: list[str] = []
        self.inodes: list[int] = []
        #: Each object's ID without its path (``"f /dev/sda1 "``, ``"p /dev/sda1"``), as a
        #: number into :attr:`head_texts`: the ID is ``head_texts[heads[i]] + paths[i]``.
        self.heads: list[int] = []
        self.head_texts: list[str] = []
        self._head_of: dict[tuple[str, str, str, bool], int] = {}
        self._heads_array: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._escaped_heads = textcols.table([])

    def __len__(self) -> int:
        return len(self.types)

    def add(
        self, type_: str, device: str, kind: str | None = None, path: str = "", inode: int = -1
    ) -> int:
        """Add one object and return its number.

        Args:
            type_: one letter of :data:`TYPES`.
            device: the device that holds it (``/dev/sda1``), or the object itself for v/p/l.
            kind: for ``m`` and ``u`` the kind word; for the others it follows from the type.
            path: path inside the filesystem, or the owning path of per-object metadata.
            inode: inode number where there is one.
        """
        if type_ not in TYPE_CODE:
            raise ValueError(f"unknown object type {type_!r}")
        if kind is None:
            if type_ not in KIND_OF_TYPE:
                raise ValueError(f"type {type_!r} needs a kind")
            kind = KIND_OF_TYPE[type_]
        self.types.append(type_)
        self.devices.append(device)
        self.kinds.append(kind)
        self.paths.append(path)
        self.inodes.append(inode)
        self.heads.append(self._head(type_, device, kind, path))
        return len(self.types) - 1

    def _head(self, type_: str, device: str, kind: str, path: str) -> int:
        """The ID of an object without its path, made once per (type, device, kind)."""
        key = (type_, device, kind, path != "")
        head = self._head_of.get(key)
        if head is None:
            if type_ in "vpl" and path:
                raise ValueError(f"a {type_!r} object has no path in its ID, got {path!r}")
            # The one rule (object_id) with a one-character path, and that character cut off.
            text = object_id(type_, device, kind, "/")[:-1] if path else object_id(
                type_, device, kind, ""
            )
            head = self._head_of[key] = len(self.head_texts)
            self.head_texts.append(text)
        return head

    def extend_classes(
        self,
        classes: Sequence[tuple[str, str]],
        codes: npt.NDArray[np.int64],
        device: str,
        paths: list[str],
        inodes: list[int],
    ) -> npt.NDArray[np.int64]:
        """Add many objects on one device at once, object ``i`` of (type, kind)
        ``classes[codes[i]]``; returns their numbers. No Python work per object but the
        lists' own growth."""
        first = len(self.types)
        n = len(codes)
        types = np.array([t for t, _ in classes], dtype=object)
        kinds = np.array([k for _, k in classes], dtype=object)
        heads = np.array([self._head(t, device, k, "/") for t, k in classes], dtype=np.int64)
        head_of = heads[codes]
        if "" in paths:
            for i in [i for i, p in enumerate(paths) if not p]:
                t, k = classes[int(codes[i])]
                head_of[i] = self._head(t, device, k, "")
        self.types.extend(types[codes].tolist())
        self.devices.extend([device] * n)
        self.kinds.extend(kinds[codes].tolist())
        self.paths.extend(paths)
        self.inodes.extend(inodes)
        self.heads.extend(head_of.tolist())
        return np.arange(first, first + n, dtype=np.int64)

    def id_fields(self, numbers: npt.NDArray[np.int64]) -> list[textcols.Pieces]:
        """``TYPE ID`` of the objects ``numbers`` as the text format writes them (escaped), as
        two fields for :func:`bmap.textcols.assemble`: the part before the path, then the
        path. Row ``i`` is object ``numbers[i]``. No ID string is made per object."""
        if len(self._heads_array) != len(self.heads):
            self._heads_array = np.array(self.heads, dtype=np.int64)
        if len(self._escaped_heads) != len(self.head_texts):
            self._escaped_heads = textcols.table(
                [escape(h).encode("utf-8", "surrogateescape") for h in self.head_texts]
            )
        p = self.paths
        return [
            textcols.pick(self._escaped_heads, self._heads_array[numbers]),
            escaped_pieces([p[i] for i in numbers.tolist()]),
        ]


ID_CHUNK = 16384
"""Texts escaped at once by :func:`escaped_pieces` (the temporaries stay small)."""


def escaped_pieces(texts: Sequence[str]) -> textcols.Pieces:
    """Texts (IDs, or the paths in them) escaped as the text map writes them
    (:func:`bmap.escape.escape`), as UTF-8 pieces, row ``i`` for ``texts[i]``.

    A chunk costs one join, one strict encode and a few numpy passes over the bytes; only a
    chunk that holds something to escape (a control character, a backslash, a byte that was
    not valid UTF-8) is escaped text by text. Escaped texts hold no newline: it separates
    them.
    """
    chunks = []
    for lo in range(0, len(texts), ID_CHUNK):
        part = texts[lo : lo + ID_CHUNK]
        text = "\n".join(part) + "\n"
        try:
            data = text.encode("utf-8")  # strict: a byte kept from invalid UTF-8 fails here
            blob = np.frombuffer(data, dtype=np.uint8)
            clean = int(np.count_nonzero(blob == 10)) == len(part) and not (
                ((blob < 0x20) & (blob != 10)).any()
                or (blob == 0x7F).any()
                or (blob == 0x5C).any()
            )
        except UnicodeEncodeError:
            clean = False
        if not clean:
            escaped = "\n".join([escape(t) for t in part]) + "\n"
            data = escaped.encode("utf-8", "surrogateescape")
        chunks.append(data)
    blob = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    ends = np.flatnonzero(blob == 10)
    starts = np.empty(len(ends), dtype=np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return textcols.Pieces(blob, starts, ends - starts)


def id_pieces(
    types: Sequence[str], devices: Sequence[str], kinds: Sequence[str], paths: Sequence[str]
) -> textcols.Pieces:
    """``TYPE ID`` of objects as the text map writes them, escaped (docs/format.md): for
    ``v p l`` the device, for ``d f`` the device and the path, for ``m u`` the device, the
    kind and the path if any. UTF-8 (``surrogateescape``) in one blob, row ``i`` for object
    ``i`` (:func:`object_name` of each)."""
    return escaped_pieces(list(map(object_id, types, devices, kinds, paths)))


def object_id(type_: str, device: str, kind: str, path: str) -> str:
    """``TYPE ID`` of an object before escaping (the format's rule, docs/format.md)."""
    if type_ in "vpl":
        return f"{type_} {device}"
    if type_ in "df":
        return f"{type_} {device} {path}"
    return f"{type_} {device} {kind} {path}" if path else f"{type_} {device} {kind}"


def object_name(type_: str, device: str, kind: str, path: str) -> str:
    """An object as the text map names it, escaped: ``f /dev/sda1 /etc/fstab``,
    ``m /dev/sda1 extent-tree /var/log/big.log``, ``p /dev/sda1`` (the type letter and the
    kind words need no escaping, so escaping the whole is escaping the device and path)."""
    return escape(object_id(type_, device, kind, path))


@dataclass
class BlockMap:
    """A finished, sorted map.

    The extent arrays all have one entry per line of the text format, in its order.
    """

    disk: npt.NDArray[np.uint16]
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    type_code: npt.NDArray[np.uint8]
    obj: npt.NDArray[np.int64]
    file_offset: npt.NDArray[np.int64]
    objects: ObjectTable
    images: list[ImageInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)

    def to_dataframe(self) -> Any:
        """The map as a pandas DataFrame with the documented columns (docs/format.md)."""
        objs = self.objects
        inode = np.asarray(objs.inodes, dtype=np.int64)[self.obj] if len(objs) else np.array([])
        return make_frame(
            disk=self.disk,
            start=self.start,
            end=self.end,
            type=_take(list(TYPES), self.type_code.astype(np.int64)),
            device=_take(objs.devices, self.obj),
            kind=_take(objs.kinds, self.obj),
            path=_take(objs.paths, self.obj),
            file_offset=_nullable(self.file_offset),
            inode=_nullable(inode),
        )

    def covered_bytes(self, disk: int | None = None) -> int:
        """Bytes covered by at least one line other than a whole-disk ``v`` line."""
        mask = self.type_code != TYPE_CODE["v"]
        if disk is not None:
            mask &= self.disk == disk
        total = 0
        # Disk numbers are small: bincount finds them (np.unique would import numpy.ma, 20 ms).
        for d in np.flatnonzero(np.bincount(self.disk[mask])).tolist():
            sel = mask & (self.disk == d)
            total += union_length(self.start[sel], self.end[sel])
        return total


def make_frame(**columns: Any) -> Any:
    """The map's DataFrame with the documented columns and dtypes, from array-likes.

    Strings stay Python objects: a name that is not valid UTF-8 is kept with
    ``surrogateescape``, which pandas' Arrow-backed string dtype would refuse.
    """
    import pandas as pd

    frame = pd.DataFrame(
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
    return frame


def _nullable(values: npt.NDArray[np.int64]) -> Any:
    """A pandas nullable Int64 column: negative values are missing."""
    import pandas as pd

    values = np.asarray(values, dtype=np.int64)
    return pd.arrays.IntegerArray(values, values < 0)


def _take(values: Sequence[str], index: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr[index] if len(index) else np.array([], dtype=object)


def union_length(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> int:
    """Total length of the union of half-open intervals, vectorised."""
    if len(starts) == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = np.maximum.accumulate(ends[order])
    # A new run begins where an interval starts after everything before it has ended.
    prev_end = np.concatenate(([s[0]], e[:-1]))
    new_run = s > prev_end
    run_id = np.cumsum(new_run)
    run_start = s[np.concatenate(([True], new_run[1:]))]
    run_end = np.zeros(run_id[-1] + 1, dtype=np.int64)
    np.maximum.at(run_end, run_id, e)
    return int((run_end - run_start).sum())


class MapBuilder:
    """Collects objects and extents in any order; :meth:`build` sorts them once."""

    def __init__(self) -> None:
        self.objects = ObjectTable()
        self.findings: list[Finding] = []
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._disk: list[int] = []
        self._start: list[int] = []
        self._end: list[int] = []
        self._obj: list[int] = []
        self._file_offset: list[int] = []

    def add_object(
        self, type_: str, device: str, kind: str | None = None, path: str = "", inode: int = -1
    ) -> int:
        """See :meth:`ObjectTable.add`."""
        return self.objects.add(type_, device, kind, path, inode)

    def add_objects(
        self,
        classes: Sequence[tuple[str, str]],
        codes: npt.NDArray[np.int64],
        device: str,
        paths: list[str],
        inodes: list[int],
    ) -> npt.NDArray[np.int64]:
        """See :meth:`ObjectTable.extend_classes`."""
        return self.objects.extend_classes(classes, codes, device, paths, inodes)

    def add_extent(
        self, obj: int, disk: int, start: int, end: int, file_offset: int = NO_OFFSET
    ) -> None:
        """One extent ``[start, end)`` of object ``obj`` on ``disk``; empty ones are dropped."""
        if end <= start:
            return
        self._disk.append(disk)
        self._start.append(start)
        self._end.append(end)
        self._obj.append(obj)
        self._file_offset.append(file_offset)

    def add_object_extent(
        self,
        type_: str,
        device: str,
        disk: int,
        start: int,
        end: int,
        kind: str | None = None,
        path: str = "",
        file_offset: int = 0,
    ) -> int:
        """An object that is one range (a partition, a table): add both at once."""
        obj = self.add_object(type_, device, kind, path)
        self.add_extent(obj, disk, start, end, file_offset)
        return obj

    def add_extents(
        self,
        obj: int | npt.ArrayLike,
        disk: int,
        starts: npt.ArrayLike,
        ends: npt.ArrayLike,
        file_offsets: npt.ArrayLike | None = None,
    ) -> None:
        """Many extents at once, from arrays (the fast path for filesystems)."""
        s = np.asarray(starts, dtype=np.int64)
        e = np.asarray(ends, dtype=np.int64)
        keep = e > s
        n = int(keep.sum())
        if n == 0:
            return
        o = np.broadcast_to(np.asarray(obj, dtype=np.int64), s.shape)[keep]
        fo = (
            np.full(n, NO_OFFSET, dtype=np.int64)
            if file_offsets is None
            else np.broadcast_to(np.asarray(file_offsets, dtype=np.int64), s.shape)[keep]
        )
        self._chunks.append((np.full(n, disk, dtype=np.uint16), s[keep], e[keep], o, fo))

    def add_finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extent_count(self) -> int:
        """How many extents were added so far."""
        return len(self._start) + sum(len(c[1]) for c in self._chunks)

    def build(self, images: Sequence[ImageInfo] = ()) -> BlockMap:
        """Sort every extent into the format's order and freeze the map."""
        chunks = list(self._chunks)
        if self._start:
            chunks.append(
                (
                    np.asarray(self._disk, dtype=np.uint16),
                    np.asarray(self._start, dtype=np.int64),
                    np.asarray(self._end, dtype=np.int64),
                    np.asarray(self._obj, dtype=np.int64),
                    np.asarray(self._file_offset, dtype=np.int64),
                )
            )
        if chunks:
            disk, start, end, obj, file_offset = (np.concatenate(c) for c in zip(*chunks))
        else:
            disk = np.zeros(0, np.uint16)
            start = end = obj = file_offset = np.zeros(0, np.int64)
        codes = np.asarray([TYPE_CODE[t] for t in self.objects.types], dtype=np.uint8)
        type_code = codes[obj] if len(obj) else np.zeros(0, np.uint8)
        # lexsort: the last key is the primary one.
        order = np.lexsort((obj, _CONTAINER_RANK[type_code], -end, start, disk))
        return BlockMap(
            disk=disk[order],
            start=start[order],
            end=end[order],
            type_code=type_code[order],
            obj=obj[order],
            file_offset=file_offset[order],
            objects=self.objects,
            images=list(images),
            findings=list(self.findings),
        )
