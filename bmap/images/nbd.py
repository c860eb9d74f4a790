"""An NBD export as a disk image, read through libnbd, the NBD project's own client.

``nbd://host[:port]/export``, ``nbd+unix:///export?socket=/path`` and the other URIs of the
NBD URI specification (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md) are
handed to ``nbd_connect_uri`` as they are. The export is only ever read: no write, trim or
zero request is sent. Reads are split at the server's maximum block size and aligned to its
minimum; :meth:`NbdReader.gather_into` sends a batch of reads at once (libnbd's
``aio_pread`` straight into the caller's buffer) rather than one round trip each.

libnbd's Python binding is Debian's ``python3-libnbd`` (it is not on PyPI); the Makefile links
its two files into the venv.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bmap.errors import ImageError, ToolMissingError
from bmap.images.containers import ContainerInfo, VirtualDisk

_MAX_REQUEST = 32 << 20
"""The largest read sent when the server names no maximum (the limit qemu-nbd and nbdkit
keep, and libnbd's own)."""
_IN_FLIGHT = 64
"""Reads of one batch in flight at once."""
_PREFIX = re.compile(r"^nbd_[a-z_]+: ")


def _libnbd() -> ModuleType:
    try:
        import nbd
    except ImportError:
        raise ToolMissingError(
            "NBD URIs are read with libnbd's Python binding, which is not installed: install it "
            "with 'sudo apt-get install python3-libnbd' (make install links it into the venv)"
        ) from None
    return nbd


def _reason(exc: Any) -> str:
    """libnbd's message without the function's name in front."""
    text = str(getattr(exc, "string", None) or exc)
    return _PREFIX.sub("", text).removeprefix("handshake: ")


class NbdReader:
    """Positional reads of one NBD export over one libnbd handle."""

    def __init__(self, nbd: ModuleType, handle: Any, uri: str, size: int) -> None:
        self.nbd = nbd
        self.handle = handle
        self.uri = uri
        self.size = size
        self.align = max(1, handle.get_block_size(nbd.SIZE_MINIMUM))
        largest = handle.get_block_size(nbd.SIZE_MAXIMUM) or _MAX_REQUEST
        self.max_request = max(self.align, min(largest, _MAX_REQUEST) // self.align * self.align)

    def _error(self, offset: int, exc: Any) -> ImageError:
        return ImageError(f"{self.uri}: read error at {offset:#x}: {_reason(exc)}")

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at the end of the export."""
        size = min(size, self.size - offset)
        if size <= 0:
            return b""
        start = offset - offset % self.align
        end = min(-(-(offset + size) // self.align) * self.align, self.size)
        pieces = []
        try:
            for at in range(start, end, self.max_request):
                pieces.append(self.handle.pread(min(self.max_request, end - at), at))
        except self.nbd.Error as exc:
            raise self._error(at, exc) from None
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if start == offset and len(data) == size:
            return bytes(data)
        return bytes(data[offset - start : offset - start + size])

    def gather_into(
        self,
        buffer: memoryview,
        offsets: Sequence[int],
        positions: Sequence[int],
        sizes: Sequence[int],
    ) -> None:
        """Read each piece straight into ``buffer``, as many reads in flight at once as the
        connection takes; pieces reaching past the end are cut short there."""
        nbd = self.nbd
        handle = self.handle
        align = self.align
        batch: list[tuple[int, int]] = []  # (cookie, offset)
        for offset, position, size in zip(offsets, positions, sizes):
            size = min(size, self.size - offset)
            if size <= 0:
                continue
            if offset % align or (size % align and offset + size != self.size):
                buffer[position : position + size] = self.pread(offset, size)
                continue
            for part in range(0, size, self.max_request):
                length = min(self.max_request, size - part)
                target = nbd.Buffer.from_buffer(buffer[position + part : position + part + length])
                try:
                    batch.append((handle.aio_pread(target, offset + part), offset + part))
                except nbd.Error as exc:
                    self._finish(batch)
                    raise self._error(offset + part, exc) from None
                if len(batch) >= _IN_FLIGHT:
                    self._finish(batch)
                    batch = []
        self._finish(batch)

    def _finish(self, batch: list[tuple[int, int]]) -> None:
        """Wait for every read of ``batch``; the first that failed raises, once all are done
        (none is left writing into the buffer)."""
        handle = self.handle
        failed: ImageError | None = None
        while handle.aio_in_flight() > 0:
            handle.poll(-1)
        for cookie, offset in batch:
            try:
                handle.aio_command_completed(cookie)
            except self.nbd.Error as exc:
                failed = failed or self._error(offset, exc)
        if failed is not None:
            raise failed

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.shutdown()
            except self.nbd.Error:
                pass  # the server went first; libnbd closes the socket all the same
            del handle  # libnbd closes the handle when the last reference goes


def _details(nbd: ModuleType, handle: Any, uri: str) -> dict[str, str]:
    details = {"uri": uri, "protocol": str(handle.get_protocol())}
    asked = handle.get_export_name()
    details["export"] = asked or "(default)"
    for name, getter in (
        ("canonical-export", "get_canonical_export_name"),
        ("description", "get_export_description"),
    ):
        try:
            value = getattr(handle, getter)()
        except (nbd.Error, AttributeError):
            continue  # the server did not say, or this libnbd cannot ask
        if value and value != asked:
            details[name] = str(value)
    flags = [
        name
        for name in ("multi_conn", "cache", "df", "flush", "trim", "zero", "fua")
        if getattr(handle, f"can_{name}")()
    ]
    details["server-read-only"] = "yes" if handle.is_read_only() else "no"
    details["can"] = ", ".join(flags) or "read"
    sizes = [
        handle.get_block_size(k) for k in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM)
    ]
    if any(sizes):
        details["block-sizes"] = "/".join(str(s) if s else "-" for s in sizes)
    details["libnbd"] = str(handle.get_version())
    return details


def open_nbd(uri: str, number: int) -> VirtualDisk:
    """Connect to the NBD export ``uri`` and give it as disk ``number``, read-only.

    Raises:
        ToolMissingError: libnbd's Python binding is not installed.
        ImageError: a bad URI, nothing listening, no such export, an empty export.
    """
    nbd = _libnbd()
    handle = nbd.NBD()
    try:
        handle.set_uri_allow_local_file(False)
        handle.connect_uri(uri)
        size = handle.get_size()
    except nbd.Error as exc:
        raise ImageError(f"{uri}: cannot connect to the NBD server: {_reason(exc)}") from None
    reader = NbdReader(nbd, handle, uri, size)
    try:
        if size <= 0:
            raise ImageError(f"{uri}: the NBD export is empty (0 bytes)")
        info = ContainerInfo(
            format="nbd", virtual_size=size, file_size=size, details=_details(nbd, handle, uri)
        )
    except nbd.Error as exc:
        reader.close()
        raise ImageError(f"{uri}: the NBD server went away: {_reason(exc)}") from None
    except BaseException:
        reader.close()
        raise
    return VirtualDisk(reader, info, path=uri, number=number, closers=[reader.close])
