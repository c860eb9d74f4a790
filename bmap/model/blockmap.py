"""The block map: objects and their extents, columnar.

A map holds millions of extents, so extents are never Python objects: they live in numpy
arrays (disk, start, end, type, object number, offset inside the object), and each object
(a disk, a partition, a file, a structure) is one row of an :class:`ObjectTable`. The
:class:`MapBuilder` collects both, in any order and in chunks, and :meth:`MapBuilder.build`
sorts them once into the order of the format: disk, start ascending, end descending, the
enclosing object before what it contains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bmap.errors import Finding, Severity
from bmap.model import ids, spill, textcols
from bmap.model.escape import escape
from bmap.model.frame import make_frame, nullable, take_texts
from bmap.model.ids import escaped_pieces, object_id

if TYPE_CHECKING:
    import pandas as pd

#: The object types of the format, in the order of their codes.
TYPES = "vpldfmu"
TYPE_CODE = {letter: code for code, letter in enumerate(TYPES)}
#: The ``kind`` column of the table formats for the types whose kind is not their own word.
KIND_OF_TYPE = {"v": "disk", "p": "partition", "l": "lv", "d": "dir", "f": "file"}
#: When two lines cover the same bytes, the container comes first: disk, partition, LV, rest
#: (by type code).
CONTAINER_RANK = np.array([0, 1, 2, 3, 3, 3, 3], dtype=np.int8)

#: ``file_offset`` where it has no meaning.
NO_OFFSET = -1
#: ``inode`` where there is none.
NO_INODE = -1


@dataclass(frozen=True)
class ImageInfo:
    """Provenance of one disk of the map."""

    number: int
    path: str
    size: int
    sha256: str | None = None
    format: str = "raw"
    """The container format the disk was read through (``raw``, ``qcow2``, ``vmdk``, ...)."""
    chain: tuple[tuple[str, str, str], ...] = ()
    """The files the container reads beside itself: ``(role, format, path)`` in order."""


class IntColumn:
    """A growing column of integers: single values and whole arrays appended, one array out.

    Objects come one at a time (a partition) or a hundred thousand at once (the names of a
    filesystem); a Python list of ints would cost a conversion each way.
    """

    def __init__(self, dtype: type[np.signedinteger[Any]] = np.int64) -> None:
        self.dtype = dtype
        self._parts: list[npt.NDArray[Any]] = []
        self._pending: list[int] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, value: int) -> None:
        self._pending.append(value)
        self._size += 1

    def extend(self, values: npt.ArrayLike) -> None:
        self._flush()
        part = np.asarray(values, dtype=self.dtype)
        self._parts.append(part)
        self._size += len(part)

    def array(self) -> npt.NDArray[Any]:
        self._flush()
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts else np.zeros(0, self.dtype)]
        return self._parts[0]

    def _flush(self) -> None:
        if self._pending:
            self._parts.append(np.array(self._pending, dtype=self.dtype))
            self._pending = []


class PathColumn:
    """Many paths, each a shared prefix and a name of a byte blob: path ``i`` is
    ``prefixes[prefix[i]]`` followed by the bytes ``names[name_start[i]:][:name_len[i]]``
    decoded as bmap keeps names (UTF-8 with ``surrogateescape``).

    A filesystem walk names each file by its directory's path and its own stored name. Kept
    this way, no ``str`` is made per file: the text map is written from the escaped prefixes
    and the name bytes, and :attr:`ObjectTable.paths` makes the strings only when asked.
    """

    def __init__(
        self,
        prefixes: list[str],
        prefix: npt.NDArray[np.integer[Any]],
        names: bytes,
        name_start: npt.NDArray[np.integer[Any]],
        name_len: npt.NDArray[np.integer[Any]],
    ) -> None:
        self.prefixes = prefixes
        self.prefix = prefix
        self.names = names
        self.name_start = name_start
        self.name_len = name_len

    @classmethod
    def of_texts(cls, texts: Sequence[str]) -> PathColumn:
        """Whole paths, each its own prefix."""
        n = len(texts)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(list(texts), np.arange(n, dtype=np.int64), b"", zeros, zeros)

    @classmethod
    def concat(cls, parts: Sequence[PathColumn]) -> PathColumn:
        prefixes: list[str] = []
        prefix, starts = [], []
        blobs = [p.names for p in parts if p.names]
        names_size = 0
        for p in parts:
            # In int64: the columns may be narrow, the offsets into the whole are not.
            prefix.append(p.prefix.astype(np.int64) + len(prefixes))
            prefixes.extend(p.prefixes)
            starts.append(p.name_start.astype(np.int64) + (names_size if p.names else 0))
            names_size += len(p.names)
        return cls(
            prefixes,
            np.concatenate(prefix) if parts else np.zeros(0, np.int64),
            blobs[0] if len(blobs) == 1 else b"".join(blobs),
            np.concatenate(starts) if parts else np.zeros(0, np.int64),
            np.concatenate([p.name_len for p in parts]) if parts else np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.prefix)

    def take(self, index: npt.NDArray[np.integer[Any]] | slice) -> PathColumn:
        """The paths ``index``, sharing this column's prefixes and names (a slice shares
        the columns too)."""
        return PathColumn(
            self.prefixes,
            self.prefix[index],
            self.names,
            self.name_start[index],
            self.name_len[index],
        )

    def text(self, i: int) -> str:
        start = int(self.name_start[i])
        name = self.names[start : start + int(self.name_len[i])]
        return self.prefixes[int(self.prefix[i])] + name.decode("utf-8", "surrogateescape")


class ObjectTable:
    """The objects of a map, one row each, in columns.

    Row ``i`` is object number ``i``; extents point at it by that number. An object's path
    is kept as a prefix text and a name in a byte blob (:class:`PathColumn`); a path added
    whole is its own prefix with no name.
    """

    def __init__(self) -> None:
        # Type, device and kind by a class number: a filesystem's objects are of a few
        # dozen classes. The lists of :attr:`types`, :attr:`devices`, :attr:`kinds` and
        # :attr:`inodes` are made only when asked for (the text writer never asks).
        self._classes: list[tuple[str, str, str]] = []
        self._class_of: dict[tuple[str, str, str], int] = {}
        # Columns as narrow as their values allow (a filesystem has millions of objects):
        # class, head and prefix numbers count things held in Python lists.
        self._class = IntColumn(np.int32)
        self._inodes = IntColumn()
        self._lists: dict[str, list[Any]] = {}
        #: Each object's ID without its path (``"f /dev/sda1 "``, ``"p /dev/sda1"``), as a
        #: number into :attr:`head_texts`: the ID is ``head_texts[heads[i]] + paths[i]``.
        self.heads = IntColumn(np.int32)
        self.head_texts: list[str] = []
        self._head_of: dict[tuple[str, str, str, bool], int] = {}
        # The paths: prefix number and name (start, length) per object, in the columns'
        # prefixes (text 0 is "") and names (blobs laid end to end).
        self._prefix_texts: list[str] = [""]
        self._prefix = IntColumn(np.int32)
        self._name_start = IntColumn()
        self._name_len = IntColumn(np.int32)
        self._name_blobs: list[bytes] = []
        self._names_size = 0
        #: Columns already laid out: ``id(part) -> (part, its first number)``; the part is
        #: held so that its id stays its own.
        self._laid_out: dict[int, tuple[object, int]] = {}
        self._paths: list[str] = []
        self._escaped_heads = textcols.table([])
        self._escaped_prefixes = textcols.table([])
        self._names_array = np.zeros(0, dtype=np.uint8)
        self._names_dirty: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self._class)

    def _class_number(self, type_: str, device: str, kind: str) -> int:
        key = (type_, device, kind)
        number = self._class_of.get(key)
        if number is None:
            number = self._class_of[key] = len(self._classes)
            self._classes.append(key)
        return number

    def _list(self, name: str) -> list[Any]:
        """One of the per-object lists, made from the columns on first use."""
        made = self._lists.get(name)
        if made is None or len(made) != len(self):
            if name == "inodes":
                made = self._inodes.array().tolist()
            else:
                which = ("types", "devices", "kinds").index(name)
                table = np.empty(len(self._classes), dtype=object)
                table[:] = [c[which] for c in self._classes]
                made = table[self._class.array()].tolist()
            self._lists[name] = made
        return made

    @property
    def types(self) -> list[str]:
        return self._list("types")

    @property
    def devices(self) -> list[str]:
        return self._list("devices")

    @property
    def kinds(self) -> list[str]:
        return self._list("kinds")

    @property
    def inodes(self) -> list[int]:
        return self._list("inodes")

    def type_codes(self) -> npt.NDArray[np.uint8]:
        """Every object's type as its code (:data:`TYPE_CODE`)."""
        codes = np.array([TYPE_CODE[t] for t, _, _ in self._classes], dtype=np.uint8)
        return codes[self._class.array()]

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
        head = self._head(type_, device, kind, path)
        self._class.append(self._class_number(type_, device, kind))
        self._inodes.append(inode)
        self.heads.append(head)
        if path:
            self._prefix.append(len(self._prefix_texts))
            self._prefix_texts.append(path)
        else:
            self._prefix.append(0)
        self._name_start.append(0)
        self._name_len.append(0)
        return len(self) - 1

    def _head(self, type_: str, device: str, kind: str, path: str) -> int:
        """The ID of an object without its path, made once per (type, device, kind)."""
        key = (type_, device, kind, path != "")
        head = self._head_of.get(key)
        if head is None:
            if type_ in "vpl" and path:
                raise ValueError(f"a {type_!r} object has no path in its ID, got {path!r}")
            # The one rule (object_id) with a one-character path, and that character cut off.
            text = (
                object_id(type_, device, kind, "/")[:-1]
                if path
                else object_id(type_, device, kind, "")
            )
            head = self._head_of[key] = len(self.head_texts)
            self.head_texts.append(text)
        return head

    def _lay_out(self, part: object, size: int, add: Callable[[], None]) -> int:
        """The first number of a column part (prefixes, names) in the table's own, added
        once however many objects share it."""
        known = self._laid_out.get(id(part))
        if known is None:
            known = self._laid_out[id(part)] = (part, size)
            add()
        return known[1]

    def extend_classes(
        self,
        classes: Sequence[tuple[str, str]],
        codes: npt.NDArray[np.int64],
        device: str,
        paths: PathColumn,
        inodes: npt.ArrayLike,
    ) -> npt.NDArray[np.int64]:
        """Add many objects on one device at once, object ``i`` of (type, kind)
        ``classes[codes[i]]`` with path ``i`` of ``paths`` and inode ``inodes[i]``; returns
        their numbers. No Python work per object."""
        first = len(self)
        n = len(codes)
        class_numbers = np.array(
            [self._class_number(t, device, k) for t, k in classes], dtype=np.int64
        )
        heads = np.array([self._head(t, device, k, "/") for t, k in classes], dtype=np.int64)
        head_of = heads[codes]
        prefix_base = self._lay_out(
            paths.prefixes,
            len(self._prefix_texts),
            lambda: self._prefix_texts.extend(paths.prefixes),
        )
        names_base = self._lay_out(paths.names, self._names_size, lambda: self._add_names(paths))
        # An empty path has the head without the trailing space (rare: a walk's prefixes
        # all start with "/"; `in` scans the list in C).
        empty = np.zeros(0, dtype=np.int64)
        if "" in paths.prefixes:
            prefix_empty = np.array([not t for t in paths.prefixes], dtype=bool)
            empty = np.flatnonzero(prefix_empty[paths.prefix] & (paths.name_len == 0))
        for i in empty.tolist():
            t, k = classes[int(codes[i])]
            head_of[i] = self._head(t, device, k, "")
        self._class.extend(class_numbers[codes])
        self._inodes.extend(np.asarray(inodes, dtype=np.int64))
        self.heads.extend(head_of)
        # In int64: a narrow column plus the table's offsets could wrap.
        self._prefix.extend(paths.prefix.astype(np.int64) + prefix_base)
        self._name_start.extend(paths.name_start.astype(np.int64) + names_base)
        self._name_len.extend(paths.name_len)
        return np.arange(first, first + n, dtype=np.int64)

    def _add_names(self, paths: PathColumn) -> None:
        self._name_blobs.append(paths.names)
        self._names_size += len(paths.names)

    def _columns(self) -> tuple[npt.NDArray[np.int64], ...]:
        """``(heads, prefix, name_start, name_len)`` as arrays."""
        columns = (self.heads, self._prefix, self._name_start, self._name_len)
        return tuple(c.array() for c in columns)

    def _names_blob(self) -> bytes:
        if len(self._name_blobs) > 1:
            self._name_blobs = [b"".join(self._name_blobs)]
        return self._name_blobs[0] if self._name_blobs else b""

    @property
    def paths(self) -> list[str]:
        """Every object's path (made on first use, and again after objects are added)."""
        if len(self._paths) != len(self):
            _, prefix, start, length = self._columns()
            encoded = textcols.table(
                [t.encode("utf-8", "surrogateescape") for t in self._prefix_texts]
            )
            names = np.frombuffer(self._names_blob(), dtype=np.uint8)
            paths: list[str] = []
            for lo in range(0, len(self), ids.ID_CHUNK):
                part = slice(lo, lo + ids.ID_CHUNK)
                paths += textcols.texts(
                    [
                        textcols.pick(encoded, prefix[part]),
                        textcols.Pieces(names, start[part], length[part]),
                    ]
                )
            self._paths = paths
        return self._paths

    def id_fields(self, numbers: npt.NDArray[np.int64]) -> list[textcols.Pieces]:
        """``TYPE ID`` of the objects ``numbers`` as the text format writes them (escaped), as
        three fields for :func:`bmap.model.textcols.assemble`: the part before the path, the path's
        prefix, its name. Row ``i`` is object ``numbers[i]``. No ID string is made per
        object: escaping is per character, so the escaped parts make the escaped whole."""
        heads, prefix, start, length = self._columns()
        if len(self._escaped_heads) != len(self.head_texts):
            self._escaped_heads = textcols.table(
                [escape(h).encode("utf-8", "surrogateescape") for h in self.head_texts]
            )
        if len(self._escaped_prefixes) != len(self._prefix_texts):
            self._escaped_prefixes = escaped_pieces(self._prefix_texts)
        if len(self._names_array) != self._names_size:
            self._names_array = np.frombuffer(self._names_blob(), dtype=np.uint8)
            self._names_dirty = None
        # Most names are their own escaped text and are written from the name bytes; the
        # few others (a backslash, a control character, invalid UTF-8) from a second field.
        start, length = start[numbers], length[numbers]
        dirty_at = self._dirty_positions()
        dirty = np.flatnonzero(
            np.searchsorted(dirty_at, start + length) != np.searchsorted(dirty_at, start)
        )
        fields = [
            textcols.pick(self._escaped_heads, heads[numbers]),
            textcols.pick(self._escaped_prefixes, prefix[numbers]),
            textcols.Pieces(self._names_array, start, length),
        ]
        if len(dirty):
            blob = self._names_blob()
            escaped = escaped_pieces(
                [
                    blob[s : s + n].decode("utf-8", "surrogateescape")
                    for s, n in zip(start[dirty].tolist(), length[dirty].tolist())
                ]
            )
            mask = np.zeros(len(numbers), dtype=bool)
            mask[dirty] = True
            fields[2] = textcols.Pieces(self._names_array, start, np.where(mask, 0, length))
            fields.append(
                textcols.merge(mask, escaped, textcols.literal(b"", len(numbers) - len(dirty)))
            )
        return fields

    def _dirty_positions(self) -> npt.NDArray[np.int64]:
        """Where the names hold a byte that needs escaping, ascending: a name needs escaping
        where one falls inside it. If the names are not all valid UTF-8, every byte above
        0x7f counts (the names escaped one by one are right either way). Positions, not a
        count per byte: names rarely need escaping, and the count cost 4 bytes per byte of
        every name."""
        if self._names_dirty is None:
            u8 = self._names_array
            dirty = (u8 < 0x20) | (u8 == 0x5C) | (u8 == 0x7F)
            try:
                self._names_blob().decode("utf-8")
            except UnicodeDecodeError:
                dirty |= u8 >= 0x80
            self._names_dirty = np.flatnonzero(dirty).astype(np.int64)
        return self._names_dirty


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
    #: Where the columns were merged from sorted runs on disk: their files (see
    #: :mod:`bmap.model.spill`); None for a map held in memory.
    merged: spill.Merged | None = None

    def __len__(self) -> int:
        return len(self.start)

    def parts(self, size: int = 1 << 12) -> Iterator[slice]:
        """The map's lines ``size`` at a time, in order. A map merged from runs on disk gives
        back each part's pages once the next is asked for, so a pass over it holds one part."""
        for lo in range(0, len(self), size):
            part = slice(lo, min(lo + size, len(self)))
            yield part
            if self.merged is not None:
                self.merged.release(part.start, part.stop)

    def to_dataframe(self) -> pd.DataFrame:
        """The map as a pandas DataFrame with the documented columns (docs/format.md)."""
        objs = self.objects
        inode = np.asarray(objs.inodes, dtype=np.int64)[self.obj] if len(objs) else np.array([])
        return make_frame(
            disk=self.disk,
            start=self.start,
            end=self.end,
            type=take_texts(list(TYPES), self.type_code.astype(np.int64)),
            device=take_texts(objs.devices, self.obj),
            kind=take_texts(objs.kinds, self.obj),
            path=take_texts(objs.paths, self.obj),
            file_offset=nullable(self.file_offset),
            inode=nullable(inode),
        )

    def covered_bytes(self, disk: int | None = None) -> int:
        """Bytes covered by at least one line other than a whole-disk ``v`` line.

        One pass over the lines in the map's order (by disk, then start), a chunk at a time:
        a line adds what it reaches past the furthest end before it. No sort and no copy of
        the map.
        """
        total = 0
        v = TYPE_CODE["v"]
        reach = 0  # the furthest end so far on the current disk
        current = -1
        for part in self.parts(COVER_CHUNK):
            d = self.disk[part]
            # A part may span disks: each disk's own run of lines, reach starting afresh.
            cuts = np.flatnonzero(np.diff(d)) + 1
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(d)]):
                here = int(d[lo])
                if here != current:
                    current, reach = here, 0
                if disk is not None and here != disk:
                    continue
                start = self.start[part][lo:hi]
                # A v line counts for nothing: its end becomes its start.
                end = np.where(self.type_code[part][lo:hi] == v, start, self.end[part][lo:hi])
                before = np.maximum.accumulate(np.concatenate(([reach], end)))[:-1]
                total += int(np.clip(end - np.maximum(start, before), 0, None).sum())
                reach = max(reach, int(end.max()))
        return total


#: Lines taken at a time by :meth:`BlockMap.covered_bytes`.
COVER_CHUNK = 1 << 18


#: What a map line and an object cost while the map is built, sorted and written (their
#: columns, and the sort's and writers' working copies), for the memory budget.
LINE_BYTES = 100
OBJECT_BYTES = 48
#: The process before any map: the interpreter, numpy and pandas, bmap's own modules (40-41
#: MiB measured by bench/scale.py's start-up run).
BASELINE_BYTES = 48 << 20


#: Lines the builder holds at least before it spills them to a sorted run on disk (a run
#: costs a file, a sort and a merge); see :mod:`bmap.model.spill`.
MIN_SPILL_LINES = 1 << 16
#: The share of the memory budget the held lines may take (at :data:`LINE_BYTES` each)
#: before they are spilled: an eighth.
SPILL_SHARE = 8


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def spill_lines_for(memory_limit: int | None) -> int | None:
    """How many lines a builder with this budget holds before it spills them (None: it
    never does)."""
    if memory_limit is None:
        return None
    return max(MIN_SPILL_LINES, memory_limit // SPILL_SHARE // LINE_BYTES)


class MapBuilder:
    """Collects objects and extents in any order; :meth:`build` sorts them once.

    ``progress(stage, done, total)`` is told of long work by the layers that fill the
    builder (:data:`bmap.layers.mapper.Progress`).

    With a memory budget, the builder holds at most ``spill_lines`` lines (by default an
    eighth of the budget, :func:`spill_lines_for`); past that it writes them, sorted, as a run
    to an unnamed temporary file in ``temp_dir`` (None: the system's, ``$TMPDIR``), and
    :meth:`build` merges the runs (:mod:`bmap.model.spill`). The objects stay in memory.
    """

    def __init__(
        self,
        progress: Callable[[str, int, int], None] | None = None,
        memory_limit: int | None = None,
        *,
        spill_lines: int | None = None,
        temp_dir: str | None = None,
    ) -> None:
        self.progress = progress or _no_progress
        #: The memory budget of the whole map in bytes (None: no budget); see :meth:`room`.
        self.memory_limit = memory_limit
        self.spill_lines = spill_lines if spill_lines is not None else spill_lines_for(memory_limit)
        self.temp_dir = temp_dir
        self.objects = ObjectTable()
        self.findings: list[Finding] = []
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._held = 0  # lines in _chunks
        self._disk: list[int] = []
        self._start: list[int] = []
        self._end: list[int] = []
        self._obj: list[int] = []
        self._file_offset: list[int] = []
        self._runs: list[spill.Run] = []

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
        paths: PathColumn,
        inodes: npt.ArrayLike,
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
        self._flush_singles()  # the lines keep the order they came in
        self._chunks.append((np.full(n, disk, dtype=np.uint16), s[keep], e[keep], o, fo))
        self._held += n
        if self.spill_lines is not None and self._held > self.spill_lines:
            self._spill()

    def add_finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def held_bytes(self) -> int:
        """About what the map built so far holds in memory, and will cost to sort and write
        (lines spilled to disk cost nothing here)."""
        return self._held_lines() * LINE_BYTES + len(self.objects) * OBJECT_BYTES

    def room(self) -> int | None:
        """Bytes of the memory budget left for a layer's work (None: no budget): the limit,
        less the process's own start-up and what the map already holds."""
        if self.memory_limit is None:
            return None
        return self.memory_limit - BASELINE_BYTES - self.held_bytes()

    def extent_count(self) -> int:
        """How many extents were added so far, spilled or held."""
        return self._held_lines() + sum(r.lines for r in self._runs)

    def _held_lines(self) -> int:
        return len(self._start) + self._held

    def _flush_singles(self) -> None:
        """The lines added one at a time, as a chunk after those before them."""
        if self._start:
            self._chunks.append(
                (
                    np.asarray(self._disk, dtype=np.uint16),
                    np.asarray(self._start, dtype=np.int64),
                    np.asarray(self._end, dtype=np.int64),
                    np.asarray(self._obj, dtype=np.int64),
                    np.asarray(self._file_offset, dtype=np.int64),
                )
            )
            self._held += len(self._start)
            self._disk, self._start, self._end, self._obj, self._file_offset = [], [], [], [], []

    def _take_held(self) -> spill.Columns:
        """The held lines as columns (``type_code`` too), in the order they were added; the
        builder holds none after.

        Each column is laid end to end one at a time, so this costs the lines and about one
        column more, not two copies."""
        self._flush_singles()
        chunks = self._chunks
        self._chunks = []
        self._held = 0
        names = ("disk", "start", "end", "obj", "file_offset")
        dtypes = (np.uint16, np.int64, np.int64, np.int64, np.int64)
        parts: list[list[npt.NDArray[Any]]] = [list(c) for c in zip(*chunks)] or [
            [] for _ in dtypes
        ]
        del chunks
        columns: spill.Columns = {}
        for name, column, dtype in zip(names, parts, dtypes):
            columns[name] = np.concatenate(column) if column else np.zeros(0, dtype)
            column.clear()
        obj = columns["obj"]
        columns["type_code"] = self.objects.type_codes()[obj] if len(obj) else np.zeros(0, np.uint8)
        return columns

    def _spill(self) -> None:
        """Write the held lines, sorted, as a run on disk. If that fails (no room in the
        temporary directory, say), they stay in memory, a finding says why, and the builder
        spills no more."""
        columns = spill.sorted_columns(self._take_held(), CONTAINER_RANK)
        try:
            self._runs.append(spill.Run(columns, self.temp_dir))
        except OSError as exc:
            self.spill_lines = None
            disk = int(columns["disk"][0]) if len(columns["disk"]) else 1
            self.add_finding(
                Finding(
                    Severity.INFO,
                    disk,
                    None,
                    "map spill",
                    f"cannot write the map's lines to a temporary file "
                    f"({exc.strerror or exc}): they are held in memory, past the budget",
                )
            )
            names = ("disk", "start", "end", "obj", "file_offset")
            self._chunks.append(tuple(columns[n] for n in names))
            self._held = len(columns["start"])

    def build(self, images: Sequence[ImageInfo] = ()) -> BlockMap:
        """Sort every extent into the format's order and freeze the map.

        The builder's extents move into the map: it is empty of extents afterwards. A map
        held in memory is sorted there; one spilled in runs is merged from them into files
        the map's columns read (:mod:`bmap.model.spill`).
        """
        merged = None
        if self._runs:
            if self._held_lines():
                self._spill()
            # If that spill failed, the lines are in memory: the runs join them there.
            merged = None if self._held_lines() else self._merge()
            self._unspill()
        if merged is not None:
            columns = merged.columns
        else:
            columns = spill.sorted_columns(self._take_held(), CONTAINER_RANK)
        return BlockMap(
            **{name: columns[name] for name, _ in spill.COLUMNS},
            objects=self.objects,
            images=list(images),
            findings=list(self.findings),
            merged=merged,
        )

    def _merge(self) -> spill.Merged | None:
        """The runs merged (None if that failed, with a finding: the runs are kept, to be read
        back into memory and sorted there)."""
        runs, self._runs = self._runs, []
        total = sum(r.lines for r in runs)
        block = max(LINES_PER_MERGE_BLOCK, (self.spill_lines or 0) // (2 * len(runs)))
        try:
            return spill.merge(
                runs,
                CONTAINER_RANK,
                block,
                self.temp_dir,
                lambda done, _: self.progress("merging sorted runs", done, total),
            )
        except OSError as exc:
            self._runs = runs
            self.add_finding(
                Finding(
                    Severity.INFO,
                    1,
                    None,
                    "map spill",
                    f"cannot merge the map's sorted runs ({exc.strerror or exc}): the map is "
                    "sorted in memory, past the budget",
                )
            )
            return None

    def _unspill(self) -> None:
        """Read any runs left back into memory, to be sorted there: before the lines held,
        which came after them."""
        self._flush_singles()
        names = ("disk", "start", "end", "obj", "file_offset")
        chunks = []
        for run in self._runs:
            columns = run.read(0, run.lines)
            run.close()
            chunks.append(tuple(columns[n] for n in names))
            self._held += run.lines
        self._chunks[:0] = chunks
        self._runs = []


#: Lines of each run held at least while runs are merged.
LINES_PER_MERGE_BLOCK = 1 << 12
