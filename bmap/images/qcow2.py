"""qcow2 images: the virtual disk a qcow2 file (and its backing chain) holds, read natively
by :mod:`parsers.qcow2`.

Backing and external data files are opened here, read-only like every input: a relative
name is resolved against the directory of the image that names it, a chain that meets the
same file twice (``st_dev``, ``st_ino``) is a loop, and a missing file is one clear
:class:`~bmap.errors.ContainerError`. Damage met while reading becomes findings of the
virtual disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bmap.errors import ContainerError, ImageError, Severity
from bmap.images.containers import (
    ChainLink,
    ContainerInfo,
    HostStructure,
    VirtualDisk,
)
from bmap.images.containers import (
    HostFile as LayoutFile,
)
from bmap.images.containers import (
    HostRuns as LayoutRuns,
)
from bmap.images.files import Image
from parsers.errors import ParserError
from parsers.qcow2 import (
    AUTOCLEAR_BITMAPS,
    AUTOCLEAR_DATA_FILE_RAW,
    COMPAT_LAZY_REFCOUNTS,
    COMPRESSED,
    DATA,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    ZERO,
    HostFile,
    Qcow2Image,
    RawLayer,
)

_SEVERITY = {"info": Severity.INFO, "warning": Severity.WARNING, "error": Severity.ERROR}
#: L2 tables up to this many bytes are read at open to count compressed clusters.
_COUNT_COMPRESSED_BELOW = 8 << 20


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def open_qcow2(file: Image) -> VirtualDisk:
    """The virtual disk of a qcow2 image, with its backing chain and data file.

    Raises:
        ContainerError: a qcow2 bmap cannot read (encrypted, an unknown incompatible feature,
            a damaged header, a backing file missing, looping or behind a protocol).
    """
    opened: list[Image] = []

    def open_file(name: str, referrer: HostFile, role: str, declared: str | None) -> HostFile:
        what = "backing file" if role == "backing" else "external data file"
        path = Path(name)
        if not path.is_absolute():
            path = Path(referrer.name).parent / path
        try:
            image = Image(path, file.number)
        except ImageError as exc:
            raise ContainerError(
                f"{file.path}: {what} {name!r} (named by {referrer.name}) cannot be opened: {exc}"
            ) from None
        opened.append(image)
        if role == "backing" and declared is None:
            _refuse_other_container(image, name, referrer.name)
        return HostFile(image, image.size, str(path), _identity(image.fd))

    top = HostFile(file, file.size, str(file.path), _identity(file.fd))
    try:
        qcow = Qcow2Image(top, open_file)
    except ParserError as exc:
        for image in opened:
            image.close()
        raise ContainerError(f"{file.path}: qcow2: {exc}") from None
    except BaseException:
        for image in opened:
            image.close()
        raise
    disk = VirtualDisk(
        qcow, container_info(qcow), file=file, closers=[image.close for image in opened]
    )

    def on_damage(guest_offset: int, message: str) -> None:
        disk.damage(Severity.ERROR, guest_offset, "qcow2", message)

    qcow.on_damage = on_damage
    disk.layout = Qcow2Layout(qcow)
    for problem in qcow.problems:
        disk.damage(_SEVERITY[problem.level], problem.guest_offset, "qcow2", problem.message)
    return disk


def _refuse_other_container(image: Image, name: str, referrer: str) -> None:
    """A backing file whose format the image does not record: refused when its bytes are
    another container (qemu would probe it; bmap reads raw and qcow2 backing files only)."""
    from bmap.images import HEAD_SIZE, IMAGE_FORMATS

    head = image.pread(0, HEAD_SIZE)
    for image_format in IMAGE_FORMATS:
        if image_format.at_end:
            continue
        if image_format.recognises(head):
            if image_format.name in ("qcow2", "raw"):
                return
            raise ContainerError(
                f"{referrer}: backing file {name!r} is a {image_format.name} image; "
                "bmap reads raw and qcow2 backing files only"
            )


def container_info(qcow: Qcow2Image) -> ContainerInfo:
    """What ``bmap info`` says of a qcow2 image and its chain."""
    chain: list[ChainLink] = []
    for layer in qcow.chain():
        if isinstance(layer, Qcow2Image):
            if layer.data_file is not None:
                chain.append(ChainLink("data-file", layer.data_file.name, "raw"))
            if layer.backing is not None:
                below = layer.backing
                fmt = "qcow2" if isinstance(below, Qcow2Image) else "raw"
                assert isinstance(below, Qcow2Image | RawLayer)
                chain.append(ChainLink("backing", below.file.name, fmt))
    details = {
        "version": str(qcow.version),
        "extended_l2": "yes" if qcow.extended_l2 else "no",
        "snapshots": str(qcow.nb_snapshots),
        "dirty": "yes" if qcow.incompatible & INCOMPAT_DIRTY else "no",
        "corrupt": "yes" if qcow.incompatible & INCOMPAT_CORRUPT else "no",
        "encryption": "none",
        "lazy_refcounts": "yes" if qcow.compatible & COMPAT_LAZY_REFCOUNTS else "no",
        "refcount_bits": str(1 << qcow.refcount_order),
    }
    if qcow.autoclear & AUTOCLEAR_BITMAPS or qcow.bitmaps_extension is not None:
        try:
            details["bitmaps"] = ", ".join(b.name for b in qcow.bitmaps) or "none"
        except ParserError:
            details["bitmaps"] = "unreadable"
    if qcow.data_file is not None:
        raw = qcow.autoclear & AUTOCLEAR_DATA_FILE_RAW
        details["data_file"] = qcow.data_file.name + (" (raw)" if raw else "")
    features = qcow.feature_list()
    if features:
        details["features"] = ", ".join(features)
    compression = qcow.compression
    if len(qcow.l1) * qcow.cluster_size <= _COUNT_COMPRESSED_BELOW:
        count = qcow.compressed_cluster_count()
        details["compressed_clusters"] = str(count)
        if count == 0:
            compression = "none"  # the header's type is only what a compressed cluster would use
    return ContainerInfo(
        format="qcow2",
        virtual_size=qcow.virtual_size,
        file_size=qcow.file.size,
        cluster_size=qcow.cluster_size,
        compression=compression,
        chain=tuple(chain),
        details=details,
    )


class Qcow2Layout:
    """Where a qcow2 chain keeps each byte of its virtual disk
    (:class:`~bmap.images.containers.HostLayout`, for ``bmap map --host``): its files in the
    order :meth:`parsers.qcow2.Qcow2Image.layer_files` gives them, each qcow2 file's own
    structures, and the runs of stored guest bytes."""

    def __init__(self, qcow: Qcow2Image) -> None:
        self.qcow = qcow
        self._files = qcow.layer_files()

    def host_files(self) -> list[LayoutFile]:
        opened = self.qcow.host_files()
        return [LayoutFile(f.name, f.format, h.size) for f, h in zip(self._files, opened)]

    def host_structures(self) -> list[HostStructure]:
        out: list[HostStructure] = []
        for layer in self.qcow.chain():
            if not isinstance(layer, Qcow2Image):
                continue
            index = next(
                i for i, f in enumerate(self._files) if f.role == "image" and f.layer == layer.depth
            )
            # An L2 table describes the guest range of its L1 entry.
            span = layer.cluster_size // (16 if layer.extended_l2 else 8) * layer.cluster_size
            for s in layer.structures():
                guest = -1
                if s.kind == "l2-table" and s.detail.startswith("l1 index "):
                    guest = int(s.detail.removeprefix("l1 index ")) * span
                out.append(HostStructure(index, s.kind, s.host_offset, s.length, guest))
        # Preallocated zero clusters: host bytes the guest reads as zeros.
        runs = self.qcow.cluster_table()
        zero = np.flatnonzero((runs.kind == ZERO) & (runs.host_offset >= 0) & (runs.file >= 0))
        for i in zero.tolist():
            out.append(
                HostStructure(
                    int(runs.file[i]),
                    "zero-cluster",
                    int(runs.host_offset[i]),
                    int(runs.host_length[i]),
                    int(runs.guest_start[i]),
                )
            )
        return out

    def host_runs(self) -> LayoutRuns:
        runs = self.qcow.cluster_table()
        keep = ((runs.kind == DATA) | (runs.kind == COMPRESSED)) & (runs.file >= 0)
        keep &= runs.host_offset >= 0
        return LayoutRuns(
            guest_start=runs.guest_start[keep],
            guest_end=runs.guest_end[keep],
            layer=runs.file[keep].astype(np.int64),
            host_start=runs.host_offset[keep],
            host_length=runs.host_length[keep],
            compressed=runs.kind[keep] == COMPRESSED,
        )
