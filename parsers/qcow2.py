"""QEMU's qcow2 image format: header, extensions, L1/L2 tables, compressed clusters, backing
chains and external data files, read natively.

Reference: QEMU's ``docs/interop/qcow2.txt``
(https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt).

Why native: the only Python binding (libqcow) returns zeros for some compressed clusters
without saying so; a forensic reader must either give the guest's bytes or say it cannot.

Everything here reads through positional readers (``pread(offset, size)``, short only at the
end; ``gather_into`` where they have it) handed in as :class:`HostFile`; backing and data
files are opened by a callback of the caller. Every table is bounded by the bytes the file
really holds: a hostile header cannot make us allocate more than the file's own size, and
every pointer is checked before it is followed. Damage met while reading (an L2 table past
the end of the file, a compressed cluster that does not inflate) reads as zeros and is
reported through ``on_damage(guest_offset, message)``; damage that leaves nothing readable
(no header, a loop of backing files) raises a :class:`~parsers.errors.ParserError`.

Guest offsets are virtual-disk offsets; host offsets are offsets in a layer's file.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import construct as cs
import numpy as np
import numpy.typing as npt

try:  # zlib-ng inflates a deflate cluster in half the time of the system zlib
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - a declared dependency; the same calls either way
    import zlib  # type: ignore[no-redef]

from parsers.errors import DamagedError, NotThisFormat, TruncatedError, UnsupportedError

MAGIC = b"QFI\xfb"

Header = cs.Struct(
    "magic" / cs.Const(MAGIC) * "QFI\\xfb",
    "version" / cs.Int32ub * "2 or 3",
    "backing_file_offset" / cs.Int64ub * "offset of the backing file's name, 0 for none",
    "backing_file_size" / cs.Int32ub * "length of the name, no NUL, < 1024",
    "cluster_bits" / cs.Int32ub * "cluster size = 1 << cluster_bits, 9..21",
    "size" / cs.Int64ub * "virtual disk size in bytes",
    "crypt_method" / cs.Int32ub * "0 none, 1 AES, 2 LUKS",
    "l1_size" / cs.Int32ub * "entries in the active L1 table",
    "l1_table_offset" / cs.Int64ub * "cluster-aligned",
    "refcount_table_offset" / cs.Int64ub * "cluster-aligned",
    "refcount_table_clusters" / cs.Int32ub,
    "nb_snapshots" / cs.Int32ub,
    "snapshots_offset" / cs.Int64ub * "the snapshot table, cluster-aligned",
)
assert Header.sizeof() == 72

HeaderV3 = cs.Struct(
    "incompatible_features" / cs.Int64ub * "bit 0 dirty, 1 corrupt, 2 data file, 3 "
    "compression type, 4 extended L2",
    "compatible_features" / cs.Int64ub * "bit 0 lazy refcounts",
    "autoclear_features" / cs.Int64ub * "bit 0 bitmaps, 1 raw external data",
    "refcount_order" / cs.Int32ub * "refcount width = 1 << refcount_order bits",
    "header_length" / cs.Int32ub * "bytes of header; extensions follow",
)
assert HeaderV3.sizeof() == 32

ExtensionHeader = cs.Struct(
    "type" / cs.Int32ub * "0 ends the list",
    "length" / cs.Int32ub * "bytes of data; padded to a multiple of 8",
)

FeatureName = cs.Struct(
    "type" / cs.Int8ub * "0 incompatible, 1 compatible, 2 autoclear",
    "bit" / cs.Int8ub,
    "name" / cs.Bytes(46) * "NUL padded",
)
assert FeatureName.sizeof() == 48

BitmapsExtension = cs.Struct(
    "nb_bitmaps" / cs.Int32ub,
    "reserved" / cs.Int32ub,
    "bitmap_directory_size" / cs.Int64ub,
    "bitmap_directory_offset" / cs.Int64ub,
)

FullDiskEncryption = cs.Struct(
    "offset" / cs.Int64ub * "the LUKS header's clusters",
    "length" / cs.Int64ub,
)

SnapshotHeader = cs.Struct(
    "l1_table_offset" / cs.Int64ub,
    "l1_size" / cs.Int32ub,
    "id_str_size" / cs.Int16ub,
    "name_size" / cs.Int16ub,
    "date_sec" / cs.Int32ub,
    "date_nsec" / cs.Int32ub,
    "vm_clock_nsec" / cs.Int64ub,
    "vm_state_size" / cs.Int32ub,
    "extra_data_size" / cs.Int32ub * "then extra data, the id string, the name; 8-aligned",
)
assert SnapshotHeader.sizeof() == 40

BitmapDirectoryEntry = cs.Struct(
    "bitmap_table_offset" / cs.Int64ub,
    "bitmap_table_size" / cs.Int32ub * "entries (u64)",
    "flags" / cs.Int32ub,
    "type" / cs.Int8ub * "1: dirty tracking bitmap",
    "granularity_bits" / cs.Int8ub,
    "name_size" / cs.Int16ub,
    "extra_data_size" / cs.Int32ub * "then extra data, the name; 8-aligned",
)
assert BitmapDirectoryEntry.sizeof() == 24

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_NAMES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_ENCRYPTION = 0x0537BE77
EXT_DATA_FILE = 0x44415441

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = 0x1F
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

COMPRESSION_TYPES = {0: "deflate", 1: "zstd"}

#: Bits 9-55 of L1, L2 and refcount table entries: a host offset.
OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2_COPIED = 1 << 63
L2_COMPRESSED = 1 << 62
L2_ZERO = 1

#: Bounds no real image comes near; a header past them is hostile or garbage.
MAX_VIRTUAL_SIZE = 1 << 62
MAX_BACKING_NAME = 1023
MAX_SNAPSHOTS = 65536
MAX_BITMAPS = 65535
MAX_CHAIN_DEPTH = 256
MAX_EXTENSIONS = 1024
#: Bytes of L2 tables each layer keeps (least recently used go first).
L2_CACHE_BYTES = 32 << 20
#: Inflated compressed clusters kept per layer.
COMPRESSED_CACHE_BYTES = 16 << 20

#: What a guest range is, in :class:`HostRuns` and the translation.
UNALLOCATED, DATA, ZERO, COMPRESSED, DAMAGED = range(5)
KIND_NAMES = ("unallocated", "data", "zero", "compressed", "damaged")


class Reader(Protocol):
    """A positional reader: ``size`` bytes at ``offset``, short only at its end."""

    def pread(self, offset: int, size: int) -> bytes: ...


@dataclass(frozen=True)
class HostFile:
    """A file under the image, opened read-only by the caller.

    Attributes:
        reader: reads it (its ``gather_into(buffer, offsets, positions, sizes)`` is used where
            it has one).
        size: in bytes.
        name: how the caller names it (its path); relative backing names are the caller's to
            resolve against it.
        identity: what makes two openings the same file (``(st_dev, st_ino)``); a chain that
            meets one twice is a loop.
    """

    reader: Reader
    size: int
    name: str
    identity: object = None


#: ``open_file(name, referrer, role, declared_format)``: open a backing file (``role``
#: ``backing``) or external data file (``data-file``) named ``name`` in ``referrer``.
#: ``declared_format`` is the backing format the image records (None when it records none).
#: Raises whatever the caller wants raised (a missing file).
Opener = Callable[[str, HostFile, str, "str | None"], HostFile]
#: ``on_damage(guest_offset, message)``.
DamageSink = Callable[[int, str], None]


@dataclass(frozen=True)
class Problem:
    """Something wrong or worth knowing found while opening (not while reading)."""

    level: str
    """``info``, ``warning`` or ``error``."""
    guest_offset: int | None
    message: str


@dataclass(frozen=True)
class Extension:
    type: int
    offset: int
    """Of its data, in the file."""
    length: int


@dataclass(frozen=True)
class Structure:
    """One of the file's own structures (for a map of the host file)."""

    kind: str
    host_offset: int
    length: int
    detail: str = ""


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    vm_state_size: int
    date_sec: int


@dataclass(frozen=True)
class Bitmap:
    name: str
    table_offset: int
    table_size: int
    """Entries (8 bytes each)."""
    flags: int
    granularity_bits: int


@dataclass(frozen=True)
class LayerFile:
    """A file of the chain, as :attr:`HostRuns.file` indexes them."""

    layer: int
    """Depth in the backing chain: 0 the image itself, 1 its backing file, ..."""
    role: str
    """``image`` (a qcow2 file of the chain), ``raw`` (a raw backing file), ``data-file``."""
    name: str
    format: str


@dataclass
class HostRuns:
    """Guest ranges and where their bytes are, as parallel numpy arrays (one row a run).

    ``kind`` indexes :data:`KIND_NAMES`; ``file`` indexes :meth:`Qcow2Image.layer_files`
    (-1: no file, for ``unallocated`` and ``damaged``); ``host_offset`` is -1 where no host
    bytes hold the range (unallocated, zero without preallocation, damaged). For ``data`` and
    preallocated ``zero`` it is the offset of ``guest_start``'s byte and ``host_length`` the
    run's length; for ``compressed`` it is the compressed bytes' offset and length (the whole
    cluster's, whatever part of it the run covers). ``query`` is the index of the range asked
    for that the run belongs to.
    """

    guest_start: npt.NDArray[np.int64]
    guest_end: npt.NDArray[np.int64]
    layer: npt.NDArray[np.int16]
    file: npt.NDArray[np.int16]
    kind: npt.NDArray[np.uint8]
    host_offset: npt.NDArray[np.int64]
    host_length: npt.NDArray[np.int64]
    query: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.guest_start)

    def rows(self) -> Iterator[tuple[int, int, int, str, int, int]]:
        """``(guest_start, guest_end, layer, kind name, host_offset, host_length)`` each."""
        for gs, ge, layer, kind, off, length in zip(
            self.guest_start.tolist(),
            self.guest_end.tolist(),
            self.layer.tolist(),
            self.kind.tolist(),
            self.host_offset.tolist(),
            self.host_length.tolist(),
        ):
            yield gs, ge, layer, KIND_NAMES[kind], off, length


def _runs(**columns: npt.ArrayLike) -> HostRuns:
    return HostRuns(
        guest_start=np.asarray(columns["guest_start"], np.int64),
        guest_end=np.asarray(columns["guest_end"], np.int64),
        layer=np.asarray(columns["layer"], np.int16),
        file=np.asarray(columns["file"], np.int16),
        kind=np.asarray(columns["kind"], np.uint8),
        host_offset=np.asarray(columns["host_offset"], np.int64),
        host_length=np.asarray(columns["host_length"], np.int64),
    )


class _Sink:
    """The damage callback shared by every layer of a chain; what is met before it is
    connected waits for it."""

    def __init__(self) -> None:
        self._callback: DamageSink | None = None
        self.pending: list[tuple[int, str]] = []
        self.seen: set[tuple[int, str]] = set()

    @property
    def callback(self) -> DamageSink | None:
        return self._callback

    @callback.setter
    def callback(self, callback: DamageSink | None) -> None:
        self._callback = callback
        if callback is not None:
            pending, self.pending = self.pending, []
            for offset, message in pending:
                callback(offset, message)

    def __call__(self, guest_offset: int, message: str) -> None:
        key = (guest_offset, message)
        if key in self.seen or len(self.seen) > 1_000_000:
            return
        self.seen.add(key)
        if self._callback is not None:
            self._callback(guest_offset, message)
        else:
            self.pending.append(key)


def _split_parts(
    offs: npt.NDArray[np.int64],
    poss: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    unit_bits: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pieces split at every ``1 << unit_bits`` boundary of their offsets."""
    first = offs >> unit_bits
    last = (offs + sizes - 1) >> unit_bits
    counts = last - first + 1
    if int(counts.max(initial=1)) == 1:
        return offs, poss, sizes
    total = int(counts.sum())
    row = np.repeat(np.arange(len(offs)), counts)
    before = np.cumsum(counts) - counts
    step = np.arange(total, dtype=np.int64) - np.repeat(before, counts)
    unit_start = (first[row] + step) << unit_bits
    start = np.maximum(unit_start, offs[row])
    end = np.minimum(unit_start + (1 << unit_bits), offs[row] + sizes[row])
    return start, poss[row] + (start - offs[row]), end - start


def _merge_contiguous(
    a: npt.NDArray[np.int64], p: npt.NDArray[np.int64], s: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Consecutive pieces contiguous both in ``a`` and in the buffer, joined."""
    if len(a) < 2:
        return a, p, s
    join = (a[:-1] + s[:-1] == a[1:]) & (p[:-1] + s[:-1] == p[1:])
    if not join.any():
        return a, p, s
    heads = np.flatnonzero(np.concatenate(([True], ~join)))
    return a[heads], p[heads], np.add.reduceat(s, heads)


def _zero_fill(
    buf: npt.NDArray[np.uint8], positions: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64]
) -> None:
    for pos, size in zip(positions.tolist(), sizes.tolist()):
        buf[pos : pos + size] = 0


def _gather(
    file: HostFile,
    buffer: memoryview,
    buf: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    positions: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
) -> None:
    """Read pieces of a host file into the buffer (all inside the file)."""
    gather = getattr(file.reader, "gather_into", None)
    if gather is not None:
        gather(buffer, offsets.tolist(), positions.tolist(), sizes.tolist())
        return
    for off, pos, size in zip(offsets.tolist(), positions.tolist(), sizes.tolist()):
        data = file.reader.pread(off, size)
        buffer[pos : pos + len(data)] = data
        if len(data) < size:
            buf[pos + len(data) : pos + size] = 0


class Layer(Protocol):
    """An image of a chain: a qcow2 file or a raw backing file."""

    size: int

    def gather_into(
        self,
        buffer: memoryview,
        offsets: npt.ArrayLike,
        positions: npt.ArrayLike,
        sizes: npt.ArrayLike,
    ) -> None: ...

    def own_runs(self) -> HostRuns: ...

    def layer_files(self) -> list[LayerFile]: ...


class RawLayer:
    """A raw backing file: its bytes are the guest's."""

    def __init__(self, file: HostFile, depth: int) -> None:
        self.file = file
        self.size = file.size
        self.depth = depth
        self.format = "raw"
        self.backing: Layer | None = None

    def gather_into(
        self,
        buffer: memoryview,
        offsets: npt.ArrayLike,
        positions: npt.ArrayLike,
        sizes: npt.ArrayLike,
    ) -> None:
        offs = np.asarray(offsets, np.int64)
        poss = np.asarray(positions, np.int64)
        sizs = np.minimum(np.asarray(sizes, np.int64), self.size - offs)
        keep = sizs > 0
        buf = np.frombuffer(buffer, np.uint8)
        _gather(self.file, buffer, buf, offs[keep], poss[keep], sizs[keep])

    def own_runs(self) -> HostRuns:
        return _runs(
            guest_start=[0],
            guest_end=[self.size],
            layer=[self.depth],
            file=[0],
            kind=[DATA],
            host_offset=[0],
            host_length=[self.size],
        )

    def layer_files(self) -> list[LayerFile]:
        return [LayerFile(self.depth, "raw", self.file.name, "raw")]


def _protocol_of(name: str) -> str | None:
    """The protocol of a backing name as qemu sees one (``json:``, ``nbd:``, ``http://``)."""
    if name.startswith("json:"):
        return "json:"
    colon = name.find(":")
    slash = name.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        return name[: colon + 1]
    return None


class Qcow2Image:
    """One qcow2 file and, below it, its backing chain.

    Args:
        file: the qcow2 file, opened read-only by the caller.
        open_file: opens backing and data files (see :data:`Opener`); None refuses images
            that need one.
        depth: the file's depth in its chain (0 for the image given).
        seen: identities of the files above it (a chain that meets one twice is a loop).

    Raises:
        NotThisFormat: no qcow2 magic.
        TruncatedError, DamagedError: a header that cannot be read or makes no sense.
        UnsupportedError: a feature this reader does not read (encryption, an unknown
            incompatible feature, a backing file behind a protocol).
    """

    def __init__(
        self,
        file: HostFile,
        open_file: Opener | None = None,
        *,
        depth: int = 0,
        seen: frozenset[object] = frozenset(),
        _sink: _Sink | None = None,
    ) -> None:
        self.file = file
        self.depth = depth
        self.format = "qcow2"
        self.problems: list[Problem] = []
        self._sink = _sink if _sink is not None else _Sink()
        self._read_header()
        self._read_extensions()
        self._check_features()
        self._read_l1()
        self._l2_cache: OrderedDict[int, tuple[npt.NDArray[np.uint64], int]] = OrderedDict()
        self._l2_cache_bytes = 0
        self._inflated: OrderedDict[int, bytes | None] = OrderedDict()
        self._inflated_bytes = 0
        self._own_runs: HostRuns | None = None
        self.data_file: HostFile | None = None
        self.backing: Layer | None = None
        if self.incompatible & INCOMPAT_DATA_FILE:
            if open_file is None:
                raise UnsupportedError("qcow2-header", 0, "needs an external data file")
            if self.data_file_name is None:
                raise DamagedError(
                    "qcow2-header", 0, "uses an external data file but does not name it"
                )
            self.data_file = open_file(self.data_file_name, file, "data-file", "raw")
        if self.backing_name is not None:
            self._open_backing(open_file, seen | {file.identity})

    # -- the header ---------------------------------------------------------------------

    def _read_header(self) -> None:
        head = self.file.reader.pread(0, 4096)
        if head[:4] != MAGIC:
            raise NotThisFormat("qcow2-header", 0, "no QFI\\xfb magic")
        if len(head) < Header.sizeof():
            raise TruncatedError("qcow2-header", 0, f"file of {len(head)} bytes")
        h = Header.parse(head)
        self.version = int(h.version)
        if self.version not in (2, 3):
            raise UnsupportedError("qcow2-header", 4, f"version {self.version} (not 2 or 3)")
        self.cluster_bits = int(h.cluster_bits)
        if not 9 <= self.cluster_bits <= 21:
            raise DamagedError(
                "qcow2-header", 20, f"cluster_bits {self.cluster_bits} outside 9..21"
            )
        self.cluster_size = 1 << self.cluster_bits
        if self.cluster_size > len(head):
            head += self.file.reader.pread(len(head), self.cluster_size - len(head))
        self._head = head
        self.virtual_size = int(h.size)
        if self.virtual_size > MAX_VIRTUAL_SIZE:
            raise DamagedError("qcow2-header", 24, f"virtual size {self.virtual_size:#x} absurd")
        self.crypt_method = int(h.crypt_method)
        self.l1_size = int(h.l1_size)
        self.l1_table_offset = int(h.l1_table_offset)
        self.refcount_table_offset = int(h.refcount_table_offset)
        self.refcount_table_clusters = int(h.refcount_table_clusters)
        self.nb_snapshots = int(h.nb_snapshots)
        self.snapshots_offset = int(h.snapshots_offset)
        self.backing_file_offset = int(h.backing_file_offset)
        self.backing_file_size = int(h.backing_file_size)
        self.incompatible = self.compatible = self.autoclear = 0
        self.refcount_order = 4
        self.header_length = 72
        self.compression_type = 0
        if self.version == 3:
            if len(head) < 104:
                raise TruncatedError("qcow2-header", 0, f"version 3 header in {len(head)} bytes")
            v3 = HeaderV3.parse(head[72:104])
            self.incompatible = int(v3.incompatible_features)
            self.compatible = int(v3.compatible_features)
            self.autoclear = int(v3.autoclear_features)
            self.refcount_order = int(v3.refcount_order)
            self.header_length = int(v3.header_length)
            if self.header_length < 104 or self.header_length > min(self.cluster_size, len(head)):
                raise DamagedError(
                    "qcow2-header", 100, f"header_length {self.header_length} makes no sense"
                )
            if self.header_length >= 105:
                self.compression_type = head[104]
            if self.refcount_order > 6:
                raise DamagedError(
                    "qcow2-header", 96, f"refcount_order {self.refcount_order} above 6"
                )
        self.size = self.virtual_size
        self.extended_l2 = bool(self.incompatible & INCOMPAT_EXTL2)
        self.l2_entry_size = 16 if self.extended_l2 else 8
        self.l2_bits = self.cluster_bits - (4 if self.extended_l2 else 3)
        self.l2_entries = 1 << self.l2_bits
        self.subcluster_bits = 5 if self.extended_l2 else 0
        self.unit_bits = self.cluster_bits - self.subcluster_bits
        # Compressed descriptor: bits 0..x-1 the host offset, x..61 extra 512-byte sectors.
        self.csize_shift = 62 - (self.cluster_bits - 8)

    def _read_extensions(self) -> None:
        self.extensions: list[Extension] = []
        self.feature_names: dict[tuple[int, int], str] = {}
        self.backing_format: str | None = None
        self.data_file_name: str | None = None
        self.bitmaps_extension: cs.Container | None = None
        self.encryption_extension: tuple[int, int] | None = None
        head = self._head
        end = self.cluster_size
        if self.backing_file_offset and self.backing_file_offset > self.header_length:
            # The name lies after the extensions, in the same cluster.
            end = min(end, self.backing_file_offset)
        pos = self.header_length
        for _ in range(MAX_EXTENSIONS):
            if pos + 8 > min(end, len(head)):
                self.problems.append(
                    Problem("warning", None, f"qcow2-header: extensions run past {pos:#x}")
                )
                break
            ext = ExtensionHeader.parse(head[pos : pos + 8])
            kind, length = int(ext.type), int(ext.length)
            if kind == EXT_END:
                break
            data_at = pos + 8
            if data_at + length > min(end, len(head)):
                self.problems.append(
                    Problem(
                        "warning", None, f"qcow2-header: extension {kind:#x} at {pos:#x} overruns"
                    )
                )
                break
            data = head[data_at : data_at + length]
            self.extensions.append(Extension(kind, data_at, length))
            if kind == EXT_BACKING_FORMAT:
                self.backing_format = data.decode("utf-8", "replace")
            elif kind == EXT_DATA_FILE:
                self.data_file_name = data.decode("utf-8", "surrogateescape")
            elif kind == EXT_FEATURE_NAMES:
                for i in range(length // 48):
                    entry = FeatureName.parse(data[i * 48 : i * 48 + 48])
                    name = bytes(entry.name).split(b"\0", 1)[0].decode("utf-8", "replace")
                    self.feature_names[(int(entry.type), int(entry.bit))] = name
            elif kind == EXT_BITMAPS and length >= 24:
                self.bitmaps_extension = BitmapsExtension.parse(data)
            elif kind == EXT_ENCRYPTION and length >= 16:
                fde = FullDiskEncryption.parse(data)
                self.encryption_extension = (int(fde.offset), int(fde.length))
            pos = data_at + ((length + 7) & ~7)
        self.backing_name: str | None = None
        if self.backing_file_offset:
            off, size = self.backing_file_offset, self.backing_file_size
            if size > MAX_BACKING_NAME or off + size > self.cluster_size or off < 72:
                raise DamagedError(
                    "qcow2-header",
                    8,
                    f"backing file name at {off:#x} ({size} bytes) makes no sense",
                )
            raw = head[off : off + size]
            if len(raw) < size:
                raise TruncatedError("qcow2-header", off, "backing file name cut off")
            if b"\0" in raw:
                raise DamagedError("qcow2-header", off, "backing file name holds a NUL byte")
            if size:
                self.backing_name = raw.decode("utf-8", "surrogateescape")

    def _feature(self, kind: int, bit: int) -> str:
        name = self.feature_names.get((kind, bit))
        return f"bit {bit} ({name})" if name else f"bit {bit}"

    def _check_features(self) -> None:
        if self.crypt_method:
            method = {1: "AES", 2: "LUKS"}.get(self.crypt_method, f"method {self.crypt_method}")
            raise UnsupportedError(
                "qcow2-header", 32, f"encrypted ({method}); bmap does not decrypt images"
            )
        unknown = self.incompatible & ~INCOMPAT_KNOWN
        if unknown:
            bits = ", ".join(self._feature(0, b) for b in range(64) if unknown >> b & 1)
            raise UnsupportedError("qcow2-header", 72, f"unknown incompatible feature {bits}")
        if self.incompatible & INCOMPAT_COMPRESSION:
            if self.compression_type not in COMPRESSION_TYPES:
                raise UnsupportedError(
                    "qcow2-header", 104, f"unknown compression type {self.compression_type}"
                )
        elif self.compression_type != 0:
            raise DamagedError(
                "qcow2-header",
                104,
                f"compression type {self.compression_type} without the compression-type bit",
            )
        if self.extended_l2 and self.cluster_bits < 14:
            raise DamagedError("qcow2-header", 20, "extended L2 entries with clusters under 16 KiB")
        if self.incompatible & INCOMPAT_DIRTY:
            self.problems.append(
                Problem(
                    "warning",
                    None,
                    "qcow2 image is marked dirty (not closed cleanly; refcounts may be stale)",
                )
            )
        if self.incompatible & INCOMPAT_CORRUPT:
            self.problems.append(Problem("warning", None, "qcow2 image is marked corrupt by qemu"))
        if self.l1_table_offset % self.cluster_size:
            raise DamagedError(
                "qcow2-header", 40, f"l1_table_offset {self.l1_table_offset:#x} not aligned"
            )

    def feature_list(self) -> list[str]:
        """The feature bits set, by the names the image's feature table (or the spec) gives."""
        known = {
            (0, 0): "dirty bit",
            (0, 1): "corrupt bit",
            (0, 2): "external data file",
            (0, 3): "compression type",
            (0, 4): "extended L2 entries",
            (1, 0): "lazy refcounts",
            (2, 0): "bitmaps",
            (2, 1): "raw external data",
        }
        out = []
        for kind, bits in enumerate((self.incompatible, self.compatible, self.autoclear)):
            for bit in range(64):
                if bits >> bit & 1:
                    name = self.feature_names.get((kind, bit)) or known.get((kind, bit))
                    out.append(
                        name or f"{('incompatible', 'compatible', 'autoclear')[kind]} bit {bit}"
                    )
        return out

    @property
    def compression(self) -> str:
        return COMPRESSION_TYPES.get(self.compression_type, "unknown")

    # -- the backing chain --------------------------------------------------------------

    def _open_backing(self, open_file: Opener | None, seen: frozenset[object]) -> None:
        name = self.backing_name
        assert name is not None
        where = f"backing file {name!r} of {self.file.name}"
        protocol = _protocol_of(name)
        if protocol == "json:":
            raise UnsupportedError(
                "qcow2-header", self.backing_file_offset, f"{where} is a json: pseudo-protocol"
            )
        if protocol is not None:
            raise UnsupportedError(
                "qcow2-header", self.backing_file_offset, f"{where} is a {protocol} protocol"
            )
        declared = self.backing_format
        if declared is not None and declared not in ("raw", "qcow2"):
            raise UnsupportedError(
                "qcow2-header",
                self.backing_file_offset,
                f"{where} is a {declared} image; bmap reads raw and qcow2 backing files only",
            )
        if open_file is None:
            raise UnsupportedError(
                "qcow2-header", self.backing_file_offset, f"{where}: cannot open"
            )
        if self.depth + 1 > MAX_CHAIN_DEPTH:
            raise DamagedError("qcow2-header", 0, f"backing chain deeper than {MAX_CHAIN_DEPTH}")
        backing = open_file(name, self.file, "backing", declared)
        if backing.identity is not None and backing.identity in seen:
            raise DamagedError(
                "qcow2-header", self.backing_file_offset, f"{where}: the backing chain loops"
            )
        fmt = declared
        if fmt is None:
            fmt = "qcow2" if backing.reader.pread(0, 4) == MAGIC else "raw"
            self.problems.append(
                Problem("info", None, f"{where}: format not recorded, read as {fmt}")
            )
        if fmt == "qcow2":
            self.backing = Qcow2Image(
                backing, open_file, depth=self.depth + 1, seen=seen, _sink=self._sink
            )
            self.problems.extend(self.backing.problems)
        else:
            self.backing = RawLayer(backing, self.depth + 1)

    def chain(self) -> list[Qcow2Image | RawLayer]:
        """This image and every backing file below it, top first."""
        out: list[Qcow2Image | RawLayer] = [self]
        layer: Layer | None = self.backing
        while layer is not None:
            assert isinstance(layer, Qcow2Image | RawLayer)
            out.append(layer)
            layer = layer.backing
        return out

    def layer_files(self) -> list[LayerFile]:
        """Every file the chain reads, in the order :attr:`HostRuns.file` indexes them: each
        qcow2 file, then its data file if any, down the chain."""
        files = [LayerFile(self.depth, "image", self.file.name, "qcow2")]
        if self.data_file is not None:
            files.append(LayerFile(self.depth, "data-file", self.data_file.name, "raw"))
        if self.backing is not None:
            files += self.backing.layer_files()
        return files

    def host_files(self) -> list[HostFile]:
        """The opened files, in the order of :meth:`layer_files`."""
        out: list[HostFile] = []
        for layer in self.chain():
            out.append(layer.file)
            if isinstance(layer, Qcow2Image) and layer.data_file is not None:
                out.append(layer.data_file)
        return out

    # -- damage ------------------------------------------------------------------------

    @property
    def on_damage(self) -> DamageSink | None:
        return self._sink.callback

    @on_damage.setter
    def on_damage(self, callback: DamageSink | None) -> None:
        self._sink.callback = callback

    def _damage(self, guest_offset: int, message: str) -> None:
        where = f"{self.file.name}: " if self.depth else ""
        self._sink(guest_offset, where + message)

    # -- tables ------------------------------------------------------------------------

    def _read_table(self, offset: int, count: int) -> npt.NDArray[np.uint64]:
        """``count`` big-endian u64 entries at ``offset``, as many as the file holds."""
        count = max(0, min(count, (self.file.size - offset) // 8))
        if count == 0:
            return np.zeros(0, np.uint64)
        raw = self.file.reader.pread(offset, count * 8)
        return np.frombuffer(raw[: len(raw) // 8 * 8], ">u8").astype(np.uint64)

    def _read_l1(self) -> None:
        per_l2 = self.l2_entries << self.cluster_bits
        self.l1_needed = -(-self.virtual_size // per_l2)
        want = min(self.l1_size, self.l1_needed)
        self.l1 = self._read_table(self.l1_table_offset, want)
        if self.l1_size < self.l1_needed:
            self.problems.append(
                Problem(
                    "error",
                    len(self.l1) * per_l2,
                    f"l1-table: {self.l1_size} entries, {self.l1_needed} needed for the disk's "
                    "size; the rest reads as zeros",
                )
            )
        elif len(self.l1) < want:
            self.problems.append(
                Problem(
                    "error",
                    len(self.l1) * per_l2,
                    f"l1-table at {self.l1_table_offset:#x}: {want} entries, {len(self.l1)} in "
                    "the file; the rest reads as zeros",
                )
            )

    def _l2(self, index: int) -> tuple[npt.NDArray[np.uint64], int] | None:
        """L2 table ``index`` (entries as native u64, two per cluster with extended L2) and
        how many of its clusters the file holds; None for no table (an unallocated L1
        entry); ``(empty, 0)`` for a damaged one."""
        cached = self._l2_cache.get(index)
        if cached is not None:
            self._l2_cache.move_to_end(index)
            return cached
        if index >= len(self.l1):
            return np.zeros(0, np.uint64), 0
        entry = int(self.l1[index])
        offset = entry & OFFSET_MASK
        if offset == 0:
            return None
        guest = index << (self.l2_bits + self.cluster_bits)
        where = f"l2-table at {offset:#x} (l1 index {index})"
        if offset % self.cluster_size or offset < self.cluster_size:
            self._damage(guest, f"{where}: bad offset; its clusters read as zeros")
            table = np.zeros(0, np.uint64)
        else:
            words = self.l2_entries * (2 if self.extended_l2 else 1)
            table = self._read_table(offset, words)
            if len(table) < words:
                self._damage(
                    guest,
                    f"{where}: past the end of the file; "
                    f"{len(table) * 8 // self.l2_entry_size} of {self.l2_entries} entries read, "
                    "the rest read as zeros",
                )
        valid = len(table) * 8 // self.l2_entry_size
        result = (table, valid)
        self._l2_cache[index] = result
        self._l2_cache_bytes += table.nbytes + 64
        while self._l2_cache_bytes > L2_CACHE_BYTES and len(self._l2_cache) > 1:
            _, (old, _n) = self._l2_cache.popitem(last=False)
            self._l2_cache_bytes -= old.nbytes + 64
        return result

    def _entries(
        self, clusters: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
        """The L2 entries of guest clusters: (entry, extended bitmap word, damaged)."""
        n = len(clusters)
        entry = np.zeros(n, np.uint64)
        bitmap = np.zeros(n, np.uint64)
        damaged = np.zeros(n, bool)
        l1i = clusters >> self.l2_bits
        l2i = clusters & (self.l2_entries - 1)
        if n == 1 or bool((l1i == l1i[0]).all()):
            groups: list[tuple[int, slice | npt.NDArray[np.intp]]] = [(int(l1i[0]), slice(None))]
        else:
            order = np.argsort(l1i, kind="stable")
            sorted_l1 = l1i[order]
            cuts = np.flatnonzero(np.diff(sorted_l1)) + 1
            groups = [(int(l1i[chunk[0]]), chunk) for chunk in np.split(order, cuts) if len(chunk)]
        for index, sel in groups:
            got = self._l2(index)
            if got is None:
                continue
            table, valid = got
            idx = l2i[sel]
            ok = idx < valid
            if not ok.all():
                dmg = damaged[sel]
                dmg |= ~ok
                damaged[sel] = dmg
            if self.extended_l2:
                e = np.where(ok, table[np.minimum(idx, max(valid - 1, 0)) * 2], 0) if valid else 0
                b = (
                    np.where(ok, table[np.minimum(idx, max(valid - 1, 0)) * 2 + 1], 0)
                    if valid
                    else 0
                )
                entry[sel] = e
                bitmap[sel] = b
            elif valid:
                entry[sel] = np.where(ok, table[np.minimum(idx, valid - 1)], 0)
        return entry, bitmap, damaged

    def _translate(
        self, units: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per allocation unit (cluster, or subcluster with extended L2): kind, host offset
        (data and preallocated zero: of the unit; compressed: of the compressed bytes; else
        -1), compressed length."""
        sc_bits = self.subcluster_bits
        clusters = units >> sc_bits
        entry, bitmap, damaged = self._entries(clusters)
        ent = entry
        compressed = (ent & np.uint64(L2_COMPRESSED)) != 0
        host = (ent & np.uint64(OFFSET_MASK)).astype(np.int64)
        kind = np.full(len(units), UNALLOCATED, np.uint8)
        clen = np.zeros(len(units), np.int64)
        cmask = (1 << self.csize_shift) - 1
        if self.extended_l2:
            sub = (units & 31).astype(np.uint64)
            alloc = ((bitmap >> sub) & np.uint64(1)) != 0
            zero = ((bitmap >> (sub + np.uint64(32))) & np.uint64(1)) != 0
            std = ~compressed
            kind[std & alloc & ~zero] = DATA
            kind[std & zero & ~alloc] = ZERO
            bad = std & ((alloc & zero) | (alloc & (host == 0) & (self.data_file is None)))
            host = np.where(
                kind == DATA,
                host + (sub.astype(np.int64) << self.unit_bits),
                np.where(kind == ZERO, -1, host),
            )
            bad |= compressed & (bitmap != 0)
        else:
            copied = (ent & np.uint64(L2_COPIED)) != 0
            allocated = (host != 0) | (copied & (self.data_file is not None))
            zero_flag = (
                (ent & np.uint64(L2_ZERO)) != 0 if self.version >= 3 else np.zeros(len(units), bool)
            )
            std = ~compressed
            kind[std & allocated & ~zero_flag] = DATA
            kind[std & zero_flag] = ZERO
            host = np.where(std & zero_flag & ~allocated, -1, host)
            bad = np.zeros(len(units), bool)
        kind[compressed] = COMPRESSED
        if compressed.any():
            if self.data_file is not None:
                bad |= compressed
            c = ent[compressed]
            coff = (c & np.uint64(cmask)).astype(np.int64)
            nsect = (
                (c >> np.uint64(self.csize_shift)) & np.uint64((1 << (62 - self.csize_shift)) - 1)
            ).astype(np.int64)
            host[compressed] = coff
            clen[compressed] = (coff & ~511) + (nsect + 1) * 512 - coff
        plain = (kind == DATA) | ((kind == ZERO) & (host > 0))
        bad |= plain & (
            (host & (self.cluster_size - 1 if not self.extended_l2 else (1 << self.unit_bits) - 1))
            != 0
        )
        bad |= damaged
        if bad.any():
            kind[bad] = DAMAGED
        host[(kind == UNALLOCATED) | (kind == DAMAGED)] = -1
        return kind, host, clen

    # -- reading -----------------------------------------------------------------------

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` guest bytes at ``offset`` (short only at the disk's end)."""
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        unit = offset >> self.unit_bits
        if (offset + size - 1) >> self.unit_bits == unit and self.backing is None:
            # One allocation unit: the common small read, without numpy.
            kind, host, _ = self._translate(np.array([unit], np.int64))
            if kind[0] == DATA:
                target = self.data_file or self.file
                at = int(host[0]) + (offset & ((1 << self.unit_bits) - 1))
                if at + size <= target.size:
                    data = target.reader.pread(at, size)
                    if len(data) == size:
                        return data
        out = bytearray(size)
        self.gather_into(memoryview(out), [offset], [0], [size])
        return bytes(out)

    def gather_into(
        self,
        buffer: memoryview,
        offsets: npt.ArrayLike,
        positions: npt.ArrayLike,
        sizes: npt.ArrayLike,
    ) -> None:
        """Read ``sizes[i]`` guest bytes at ``offsets[i]`` into ``buffer[positions[i]:]``;
        what lies past the disk's end is not touched. Pieces may span clusters."""
        offs = np.asarray(offsets, np.int64)
        poss = np.asarray(positions, np.int64)
        sizs = np.minimum(np.asarray(sizes, np.int64), self.size - offs)
        keep = sizs > 0
        if not keep.all():
            offs, poss, sizs = offs[keep], poss[keep], sizs[keep]
        if len(offs) == 0:
            return
        buf = np.frombuffer(buffer, np.uint8)
        po, pp, ps = _split_parts(offs, poss, sizs, self.unit_bits)
        kind, host, clen = self._translate(po >> self.unit_bits)
        unit_mask = (1 << self.unit_bits) - 1
        is_data = kind == DATA
        if is_data.all():
            self._read_data(buffer, buf, po, host + (po & unit_mask), pp, ps)
            return
        if is_data.any():
            self._read_data(
                buffer,
                buf,
                po[is_data],
                host[is_data] + (po[is_data] & unit_mask),
                pp[is_data],
                ps[is_data],
            )
        flat = (kind == ZERO) | (kind == DAMAGED)
        if flat.any():
            _, zp, zs = _merge_contiguous(pp[flat], pp[flat], ps[flat])
            _zero_fill(buf, zp, zs)
            bad = kind == DAMAGED
            if bad.any():
                self._report_runs(po[bad], ps[bad], "the cluster's table entry is damaged")
        unalloc = kind == UNALLOCATED
        if unalloc.any():
            self._read_backing(buffer, buf, po[unalloc], pp[unalloc], ps[unalloc])
        packed = kind == COMPRESSED
        if packed.any():
            self._read_compressed(
                buf, po[packed], pp[packed], ps[packed], host[packed], clen[packed]
            )

    def _report_runs(
        self, guest: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64], why: str
    ) -> None:
        g, _, s = _merge_contiguous(guest, guest, sizes)
        for start, size in zip(g.tolist()[:1000], s.tolist()[:1000]):
            self._damage(start, f"guest bytes {start:#x}+{size:#x}: {why}; read as zeros")

    def _read_data(
        self,
        buffer: memoryview,
        buf: npt.NDArray[np.uint8],
        guest: npt.NDArray[np.int64],
        at: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        size: npt.NDArray[np.int64],
    ) -> None:
        target = self.data_file or self.file
        at_m, pos_m, size_m = _merge_contiguous(at, pos, size)
        past = at_m + size_m > target.size
        if past.any():
            # Bytes past the end of the file (a cut image): zeros, and said so.
            keep = np.minimum(size_m, np.maximum(target.size - at_m, 0))
            for p, k, s in zip(pos_m[past].tolist(), keep[past].tolist(), size_m[past].tolist()):
                buf[p + k : p + s] = 0
            cut = at + size > target.size
            self._report_runs(
                guest[cut], size[cut], "its data cluster lies past the end of the file"
            )
            size_m = keep
            ok = size_m > 0
            at_m, pos_m, size_m = at_m[ok], pos_m[ok], size_m[ok]
        _gather(target, buffer, buf, at_m, pos_m, size_m)

    def _read_backing(
        self,
        buffer: memoryview,
        buf: npt.NDArray[np.uint8],
        guest: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        size: npt.NDArray[np.int64],
    ) -> None:
        guest, pos, size = _merge_contiguous(guest, pos, size)
        below = self.backing.size if self.backing is not None else 0
        inside = np.clip(below - guest, 0, None)
        inside = np.minimum(inside, size)
        if self.backing is not None and (inside > 0).any():
            sel = inside > 0
            self.backing.gather_into(buffer, guest[sel], pos[sel], inside[sel])
        rest = size - inside
        sel = rest > 0
        if sel.any():
            _zero_fill(buf, pos[sel] + inside[sel], rest[sel])

    def _read_compressed(
        self,
        buf: npt.NDArray[np.uint8],
        guest: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        size: npt.NDArray[np.int64],
        host: npt.NDArray[np.int64],
        clen: npt.NDArray[np.int64],
    ) -> None:
        cmask = self.cluster_size - 1
        for g, p, s, h, n in zip(
            guest.tolist(), pos.tolist(), size.tolist(), host.tolist(), clen.tolist()
        ):
            data = self._inflate(g & ~cmask, h, n)
            if data is None:
                buf[p : p + s] = 0
            else:
                start = g & cmask
                buf[p : p + s] = np.frombuffer(data, np.uint8, s, start)

    def _inflate(self, guest: int, host: int, length: int) -> bytes | None:
        """The cluster compressed at ``host`` (``length`` bytes), or None (reported)."""
        if host in self._inflated:
            self._inflated.move_to_end(host)
            return self._inflated[host]
        where = f"compressed cluster at {host:#x}"
        data: bytes | None = None
        if host >= self.file.size or host < self.cluster_size:
            self._damage(guest, f"{where}: outside the file; read as zeros")
        else:
            raw = self.file.reader.pread(host, length)
            try:
                if self.compression_type == 1:
                    import zstandard

                    reader = zstandard.ZstdDecompressor(max_window_size=1 << 25).stream_reader(
                        io.BytesIO(raw), read_across_frames=False
                    )
                    data = reader.read(self.cluster_size + 1)
                else:
                    inflater = zlib.decompressobj(-12)
                    data = inflater.decompress(raw, self.cluster_size + 1)
            except Exception as exc:  # zlib.error, zstandard.ZstdError: hostile bytes, any
                self._damage(guest, f"{where}: does not inflate ({exc}); read as zeros")
                data = None
            else:
                if len(data) != self.cluster_size:
                    self._damage(
                        guest,
                        f"{where}: inflates to {len(data)} bytes, not {self.cluster_size}; "
                        "read as zeros",
                    )
                    data = None
        self._inflated[host] = data
        self._inflated_bytes += self.cluster_size
        while self._inflated_bytes > COMPRESSED_CACHE_BYTES and len(self._inflated) > 1:
            self._inflated.popitem(last=False)
            self._inflated_bytes -= self.cluster_size
        return data

    # -- where the guest's bytes are ------------------------------------------------------

    def own_runs(self) -> HostRuns:
        """This file's own view of the whole disk (no fall-through to the backing file):
        runs of units of one kind, merged where their host bytes are contiguous."""
        if self._own_runs is not None:
            return self._own_runs
        per_l2_units = self.l2_entries << self.subcluster_bits
        total_units = (self.virtual_size + (1 << self.unit_bits) - 1) >> self.unit_bits
        empty = np.zeros(0, np.int64)
        pieces: list[tuple[np.ndarray, ...]] = [(empty, empty, empty, empty)]
        file_data = 1 if self.data_file is not None else 0
        # Only the L1 entries the file holds are walked; past them, one damaged run.
        tables = min(len(self.l1), -(-total_units // per_l2_units))
        for index in range(tables):
            first = index * per_l2_units
            count = min(per_l2_units, total_units - first)
            if int(self.l1[index]) & OFFSET_MASK == 0:
                pieces.append(
                    (
                        np.array([first]),
                        np.array([first + count]),
                        np.array([UNALLOCATED]),
                        np.array([-1]),
                    )
                )
                continue
            for chunk in range(first, first + count, 1 << 20):
                units = np.arange(chunk, min(chunk + (1 << 20), first + count), dtype=np.int64)
                kind, host, _ = self._translate(units)
                pieces.append(_merge_units(units, kind, host, 1 << self.unit_bits))
        if tables * per_l2_units < total_units:
            pieces.append(
                (
                    np.array([tables * per_l2_units]),
                    np.array([total_units]),
                    np.array([DAMAGED]),
                    np.array([-1]),
                )
            )
        starts = np.concatenate([p[0] for p in pieces]) << self.unit_bits
        ends = np.minimum(
            np.concatenate([p[1] for p in pieces]) << self.unit_bits, self.virtual_size
        )
        kinds = np.concatenate([p[2] for p in pieces]).astype(np.uint8)
        hosts = np.concatenate([p[3] for p in pieces]).astype(np.int64)
        # Join runs across L2 tables.
        starts, ends, kinds, hosts = _merge_runs(starts, ends, kinds, hosts)
        lengths = np.where(hosts >= 0, ends - starts, 0)
        packed = kinds == COMPRESSED
        if packed.any():
            units = starts[packed] >> self.unit_bits
            _, h, c = self._translate(units)
            hosts[packed] = h
            lengths[packed] = c
        files = np.where(hosts >= 0, np.where((kinds == DATA) | (kinds == ZERO), file_data, 0), -1)
        self._own_runs = _runs(
            guest_start=starts,
            guest_end=ends,
            layer=np.full(len(starts), self.depth),
            file=files,
            kind=kinds,
            host_offset=hosts,
            host_length=lengths,
        )
        return self._own_runs

    @cached_property
    def _chain_runs(self) -> HostRuns:
        own = self.own_runs()
        if self.backing is None:
            return own
        # File indexes: this file's then the backing chain's, shifted past ours.
        shift = 2 if self.data_file is not None else 1
        below = (
            self.backing._chain_runs
            if isinstance(self.backing, Qcow2Image)
            else self.backing.own_runs()
        )
        below = HostRuns(
            below.guest_start,
            below.guest_end,
            below.layer,
            np.where(below.file >= 0, below.file + shift, -1).astype(np.int16),
            below.kind,
            below.host_offset,
            below.host_length,
        )
        return _overlay(own, below, self.backing.size)

    def host_runs(self, start: npt.ArrayLike, end: npt.ArrayLike) -> HostRuns:
        """Where the bytes of guest ranges ``[start, end)`` are, through the whole chain.

        ``start`` and ``end`` are integers or equal-length arrays (100k ranges cost a few
        numpy passes over the chain's runs, computed once). Ranges are clipped to the disk.
        Runs come in the order of the ranges, each range's in guest order; :attr:`HostRuns.query`
        says which range a run belongs to. ``unallocated`` runs carry the layer where the
        look-up ended: the deepest layer, or the one whose end a shorter backing file reached.
        """
        s = np.atleast_1d(np.asarray(start, np.int64))
        e = np.minimum(np.atleast_1d(np.asarray(end, np.int64)), self.virtual_size)
        s = np.maximum(s, 0)
        runs = self._chain_runs
        first = np.searchsorted(runs.guest_end, s, side="right")
        last = np.searchsorted(runs.guest_start, e, side="left")
        counts = np.where(e > s, last - first, 0)
        total = int(counts.sum())
        query = np.repeat(np.arange(len(s)), counts)
        before = np.cumsum(counts) - counts
        idx = np.repeat(first, counts) + (np.arange(total) - np.repeat(before, counts))
        gs = runs.guest_start[idx]
        ge = runs.guest_end[idx]
        cs_ = np.maximum(gs, s[query])
        ce = np.minimum(ge, e[query])
        kind = runs.kind[idx]
        host = runs.host_offset[idx].copy()
        length = runs.host_length[idx].copy()
        linear = (host >= 0) & (kind != COMPRESSED)
        host[linear] += (cs_ - gs)[linear]
        length[linear] = (ce - cs_)[linear]
        out = HostRuns(cs_, ce, runs.layer[idx], runs.file[idx], kind, host, length, query)
        return out

    def cluster_table(self) -> HostRuns:
        """The whole disk's runs through the chain (:meth:`host_runs` of ``[0, size)``)."""
        return self.host_runs(0, self.virtual_size)

    # -- the file's own structures ----------------------------------------------------------

    @cached_property
    def snapshots(self) -> list[Snapshot]:
        out: list[Snapshot] = []
        if not self.nb_snapshots:
            return out
        count = min(self.nb_snapshots, MAX_SNAPSHOTS)
        offset = self.snapshots_offset
        if offset % self.cluster_size or offset < self.cluster_size:
            self.problems.append(
                Problem("warning", None, f"snapshot-table at {offset:#x}: bad offset")
            )
            return out
        for i in range(count):
            raw = self.file.reader.pread(offset, 40)
            if len(raw) < 40:
                self.problems.append(
                    Problem("warning", None, f"snapshot-table: entry {i} past the end")
                )
                break
            h = SnapshotHeader.parse(raw)
            extra, id_len, name_len = int(h.extra_data_size), int(h.id_str_size), int(h.name_size)
            body = self.file.reader.pread(offset + 40, extra + id_len + name_len)
            ident = body[extra : extra + id_len].decode("utf-8", "replace")
            name = body[extra + id_len : extra + id_len + name_len].decode("utf-8", "replace")
            out.append(
                Snapshot(
                    ident,
                    name,
                    int(h.l1_table_offset),
                    int(h.l1_size),
                    int(h.vm_state_size),
                    int(h.date_sec),
                )
            )
            offset += (40 + extra + id_len + name_len + 7) & ~7
            if offset >= self.file.size:
                if i + 1 < count:
                    self.problems.append(
                        Problem("warning", None, "snapshot-table: past the end of the file")
                    )
                break
        self._snapshot_table_end = offset
        return out

    @cached_property
    def bitmaps(self) -> list[Bitmap]:
        out: list[Bitmap] = []
        ext = self.bitmaps_extension
        if ext is None:
            return out
        offset = int(ext.bitmap_directory_offset)
        size = min(int(ext.bitmap_directory_size), max(0, self.file.size - offset), 64 << 20)
        raw = self.file.reader.pread(offset, size) if offset else b""
        pos = 0
        for _ in range(min(int(ext.nb_bitmaps), MAX_BITMAPS)):
            if pos + 24 > len(raw):
                break
            e = BitmapDirectoryEntry.parse(raw[pos : pos + 24])
            name_at = pos + 24 + int(e.extra_data_size)
            name = raw[name_at : name_at + int(e.name_size)].decode("utf-8", "replace")
            out.append(
                Bitmap(
                    name,
                    int(e.bitmap_table_offset),
                    int(e.bitmap_table_size),
                    int(e.flags),
                    int(e.granularity_bits),
                )
            )
            pos = (name_at + int(e.name_size) + 7) & ~7
        return out

    def structures(self) -> list[Structure]:
        """The file's own structures, sorted by host offset, each clipped to the file; what
        is wrong with them (past the end, overlapping) is in :meth:`structure_problems`."""
        return self._structures[0]

    def structure_problems(self) -> list[tuple[int, str]]:
        """``(host_offset, message)`` for structures past the file's end or overlapping."""
        return self._structures[1]

    @cached_property
    def _structures(self) -> tuple[list[Structure], list[tuple[int, str]]]:
        cs_ = self.cluster_size
        fsize = self.file.size
        found: list[Structure] = []
        problems: list[tuple[int, str]] = []

        def add(kind: str, offset: int, length: int, detail: str = "") -> bool:
            if offset <= 0 and kind != "qcow2-header":
                problems.append((offset, f"{kind} {detail}: at offset 0".strip()))
                return False
            if offset >= fsize:
                problems.append(
                    (
                        offset,
                        f"{kind} {detail} at {offset:#x}: past the end of the file".replace(
                            "  ", " "
                        ),
                    )
                )
                return False
            if offset + length > fsize:
                problems.append(
                    (
                        offset,
                        f"{kind} {detail} at {offset:#x}: runs past the end of the file".replace(
                            "  ", " "
                        ),
                    )
                )
                length = fsize - offset
            found.append(Structure(kind, offset, length, detail))
            return True

        add("qcow2-header", 0, cs_, f"version {self.version}")
        if self.l1_size:
            add("l1-table", self.l1_table_offset, self.l1_size * 8, f"{self.l1_size} entries")
        active_l2: set[int] = set()
        for i, e in enumerate(self.l1.tolist()):
            off = e & OFFSET_MASK
            if off:
                active_l2.add(off)
                add("l2-table", off, cs_, f"l1 index {i}")
        if self.refcount_table_clusters:
            rt_len = self.refcount_table_clusters * cs_
            if add("refcount-table", self.refcount_table_offset, rt_len):
                table = self._read_table(self.refcount_table_offset, rt_len // 8)
                for i, e in enumerate(table.tolist()):
                    off = e & OFFSET_MASK
                    if off:
                        add("refcount-block", off, cs_, f"refcount table index {i}")
        if self.snapshots:
            add(
                "snapshot-table",
                self.snapshots_offset,
                self._snapshot_table_end - self.snapshots_offset,
                f"{len(self.snapshots)} snapshots",
            )
            for snap in self.snapshots:
                label = f"snapshot {snap.id} {snap.name!r}"
                if add("snapshot-l1-table", snap.l1_table_offset, snap.l1_size * 8, label):
                    table = self._read_table(snap.l1_table_offset, min(snap.l1_size, fsize // 8))
                    for i, e in enumerate(table.tolist()):
                        off = e & OFFSET_MASK
                        if off and off not in active_l2:
                            active_l2.add(off)
                            add("snapshot-l2-table", off, cs_, f"{label} l1 index {i}")
        ext = self.bitmaps_extension
        if ext is not None:
            add(
                "bitmap-directory",
                int(ext.bitmap_directory_offset),
                int(ext.bitmap_directory_size),
                f"{int(ext.nb_bitmaps)} bitmaps",
            )
            for bm in self.bitmaps:
                if add("bitmap-table", bm.table_offset, bm.table_size * 8, bm.name):
                    table = self._read_table(bm.table_offset, min(bm.table_size, fsize // 8))
                    for i, e in enumerate(table.tolist()):
                        off = e & OFFSET_MASK
                        if off:
                            add("bitmap-data", off, cs_, f"{bm.name} entry {i}")
        if self.encryption_extension is not None:
            add("encryption-header", *self.encryption_extension)
        found.sort(key=lambda s: (s.host_offset, s.length))
        reach = -1
        holder: Structure | None = None
        for s in found:
            if holder is not None and s.host_offset < reach:
                problems.append(
                    (
                        s.host_offset,
                        f"{s.kind} ({s.detail}) at {s.host_offset:#x} overlaps "
                        f"{holder.kind} ({holder.detail}) at {holder.host_offset:#x}",
                    )
                )
            if s.host_offset + s.length > reach:
                reach = s.host_offset + s.length
                holder = s
        return found, problems

    def compressed_cluster_count(self) -> int:
        """Compressed clusters this file holds (reads every L2 table)."""
        runs = self.own_runs()
        return int(np.count_nonzero(runs.kind == COMPRESSED))


def _merge_units(
    units: npt.NDArray[np.int64],
    kind: npt.NDArray[np.uint8],
    host: npt.NDArray[np.int64],
    unit: int,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    """Consecutive units joined into runs (in units) where kind matches and host bytes go on."""
    return _merge_runs_units(units, units + 1, kind, host, unit)


def _merge_runs_units(
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    kind: npt.NDArray[np.uint8],
    host: npt.NDArray[np.int64],
    scale: int,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    if len(starts) == 0:
        return starts, ends, kind, host
    packed = kind[1:] == COMPRESSED
    same = (
        (kind[1:] == kind[:-1])
        & (starts[1:] == ends[:-1])
        & (
            (packed & (host[1:] == host[:-1]))
            | (~packed & (host[1:] < 0) & (host[:-1] < 0))
            | (
                ~packed
                & (host[:-1] >= 0)
                & (host[:-1] + (ends[:-1] - starts[:-1]) * scale == host[1:])
            )
        )
    )
    heads = np.flatnonzero(np.concatenate(([True], ~same)))
    tails = np.concatenate((heads[1:], [len(starts)])) - 1
    return starts[heads], ends[tails], kind[heads], host[heads]


def _merge_runs(
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    kind: npt.NDArray[np.uint8],
    host: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    return _merge_runs_units(starts, ends, kind, host, 1)


def _overlay(top: HostRuns, below: HostRuns, below_size: int) -> HostRuns:
    """The chain's runs: ``top``'s, with its unallocated runs read from ``below`` (and zeros
    past the end of ``below``, as unallocated in the layer that ran past it, as qemu says)."""
    # Elementary segments: every boundary of both lists.
    cuts = np.unique(
        np.concatenate(
            (top.guest_start, top.guest_end, below.guest_start, below.guest_end, [below_size])
        )
    )
    end_of_disk = int(top.guest_end[-1]) if len(top) else 0
    cuts = cuts[cuts <= end_of_disk]
    seg_s, seg_e = cuts[:-1], cuts[1:]
    t = np.searchsorted(top.guest_end, seg_s, side="right")
    from_top = top.kind[t] != UNALLOCATED
    b = np.minimum(np.searchsorted(below.guest_end, seg_s, side="right"), max(len(below) - 1, 0))
    in_below = seg_s < below_size
    use_below = ~from_top & in_below
    n = len(seg_s)
    bl = np.clip(b, 0, max(len(below) - 1, 0))
    has_below = len(below) > 0
    layer = np.where(
        use_below & has_below, below.layer[bl] if has_below else 0, top.layer[t]
    ).astype(np.int16)
    file = np.where(from_top, top.file[t], -1)
    kind = np.where(from_top, top.kind[t], UNALLOCATED)
    if has_below:
        file = np.where(use_below, below.file[bl], file)
        kind = np.where(use_below, below.kind[bl], kind)
    host = np.full(n, -1, np.int64)
    length = np.zeros(n, np.int64)
    # Offsets of linear runs move with the segment's start; compressed keep theirs.
    for src, sel, idx in ((top, from_top, t), (below, use_below, b)):
        if not sel.any():
            continue
        h = src.host_offset[idx[sel]]
        k = src.kind[idx[sel]]
        lin = (h >= 0) & (k != COMPRESSED)
        h = np.where(lin, h + (seg_s[sel] - src.guest_start[idx[sel]]), h)
        ln = np.where(lin, seg_e[sel] - seg_s[sel], src.host_length[idx[sel]])
        host[sel] = h
        length[sel] = ln
    # Rejoin pieces of one run (split by the other list's boundaries).
    same = (
        (kind[1:] == kind[:-1])
        & (layer[1:] == layer[:-1])
        & (file[1:] == file[:-1])
        & (
            ((kind[1:] == COMPRESSED) & (host[1:] == host[:-1]))
            | ((kind[1:] != COMPRESSED) & (host[1:] < 0) & (host[:-1] < 0))
            | ((kind[1:] != COMPRESSED) & (host[:-1] >= 0) & (host[:-1] + length[:-1] == host[1:]))
        )
    )
    heads = np.flatnonzero(np.concatenate(([True], ~same)))
    tails = np.concatenate((heads[1:], [n])) - 1
    lin = (host[heads] >= 0) & (kind[heads] != COMPRESSED)
    total = np.where(lin, seg_e[tails] - seg_s[heads], length[heads])
    return _runs(
        guest_start=seg_s[heads],
        guest_end=seg_e[tails],
        layer=layer[heads],
        file=file[heads],
        kind=kind[heads],
        host_offset=host[heads],
        host_length=total,
    )
