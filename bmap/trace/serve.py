"""``bmap serve``: the real nbdkit serving an image with its log filter, on a Unix socket or a
localhost port, for a client to read while bmap names what it reads.

nbdkit reads a raw image itself (its file plugin). A container is read by qemu-nbd, read-only,
on a socket in the server's private folder, with nbdkit's nbd plugin in front of it: the log
filter sees the guest's reads in virtual-disk offsets, the offsets of the map. An NBD URI is
read by the nbd plugin directly. The format is the one bmap detected, never qemu's guess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bmap.errors import BmapError, ContainerError, ToolMissingError
from bmap.trace.logs import follow_lines
from bmap.trace.nbdkit import NbdkitParser
from bmap.trace.requests import Request

#: bmap's names of the containers qemu-nbd serves, and qemu's name for each.
QEMU_FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx"}
_NBDKIT_FORMATS = ("raw", "nbd")
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


def check_servable(image: Path | str, image_format: str) -> None:
    """Refuse, before any work, an image of a format ``serve`` has no server for.

    Raises:
        ContainerError: an EWF image (qemu cannot read it) or another format no server reads.
    """
    if image_format in QEMU_FORMATS or image_format in _NBDKIT_FORMATS:
        return
    if image_format == "ewf":
        raise ContainerError(
            f"{image}: bmap serve cannot serve an EWF (E01) image: neither nbdkit nor qemu-nbd "
            "reads it; export it to raw (ewfexport -u -f raw -t NAME IMAGE.E01) and serve that: "
            "its offsets, and its map, are the same"
        )
    raise ContainerError(f"{image}: bmap serve has no server for {image_format} images")


def _tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise ToolMissingError(
            f"{name} is not installed: install it with 'sudo apt-get install {package}'"
        )
    return exe


def _error_text(path: Path) -> str:
    """The last lines a program wrote to its error file, as one line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "?"
    return "; ".join(line for line in lines[-3:] if line) or "?"


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, a wait, SIGKILL if it does not go; reaped on every path (Ctrl-C included)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class NbdkitServer:
    """nbdkit with the log filter in front of the image: its file plugin for a raw image, its
    nbd plugin for an NBD URI or for qemu-nbd serving a container. Everything started is
    stopped, and the private folder (sockets, log) removed, by :meth:`stop` on every path (use
    it as a context manager).

    ``writable`` lets a client write a raw image. A container or an NBD export is never
    written: the client's writes go to a throwaway overlay (nbdkit's cow filter).
    """

    def __init__(
        self,
        image: Path | str,
        writable: bool = False,
        port: int | None = None,
        image_format: str = "raw",
    ) -> None:
        self.image = image
        self.writable = writable
        self.port = port
        self.format = image_format
        self.folder = Path(tempfile.mkdtemp(prefix="bmap-serve-"))
        self.socket = self.folder / "nbd.sock"
        self.log = self.folder / "nbdkit.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qemu: subprocess.Popen[bytes] | None = None
        """qemu-nbd, for a container."""

    @property
    def uri(self) -> str:
        if self.port is not None:
            return f"nbd://localhost:{self.port}"
        return f"nbd+unix:///?socket={self.socket}"

    @property
    def chain(self) -> str:
        """What reads the image, for people."""
        if self.format in QEMU_FORMATS:
            return f"{self.format}, read by qemu-nbd"
        return "NBD export, read by nbdkit's nbd plugin" if self.format == "nbd" else "raw"

    def start(self) -> NbdkitServer:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> NbdkitServer:
        check_servable(self.image, self.format)
        exe = _tool("nbdkit", "nbdkit")
        if self.format in QEMU_FORMATS:
            plugin = ["nbd", f"socket={self._start_qemu_nbd()}"]
        elif self.format == "nbd":
            plugin = ["nbd", f"uri={self.image}"]
        else:
            # file=: a bare path holding '=' would be taken for a key.
            plugin = ["file", f"file={os.path.abspath(self.image)}"]
        listen = (
            ["-i", "127.0.0.1", "-p", str(self.port)] if self.port else ["-U", str(self.socket)]
        )
        cmd = [exe, "-f", "--exit-with-parent", *listen, "--filter=log"]
        if self.writable and self.format != "raw":
            cmd += ["--filter=cow"]  # the filter nearest the plugin: writes stop there
        elif not self.writable:
            cmd += ["-r"]
        cmd += [*plugin, f"logfile={self.log}"]
        errors = self.folder / "nbdkit.err"
        with open(errors, "wb") as err:  # a file: a pipe nobody reads would fill and block
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BmapError(f"nbdkit failed to start: {_error_text(errors)}")
            if self._listening():
                return self
            time.sleep(0.02)
        raise BmapError(f"nbdkit did not start listening within {_START_TIMEOUT:g} s")

    def _start_qemu_nbd(self) -> Path:
        """qemu-nbd serving the container read-only on a socket of the private folder; its
        socket once it has opened the image (it writes its pid file then)."""
        exe = _tool("qemu-nbd", "qemu-utils")
        sock = self.folder / "qemu-nbd.sock"
        pidfile = self.folder / "qemu-nbd.pid"
        # An absolute path: qemu would take a name like "nbd:x" for a protocol.
        cmd = [
            exe,
            "--read-only",
            f"--format={QEMU_FORMATS[self.format]}",
            f"--socket={sock}",
            f"--pid-file={pidfile}",
            "--persistent",  # nbdkit connects once per client, one after another
            "--shared=0",  # and at once, for clients that open several connections
            os.path.abspath(self.image),
        ]
        # setpriv's parent-death signal takes qemu-nbd down with bmap, however bmap ends
        # (nbdkit's --exit-with-parent does the same for nbdkit).
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        errors = self.folder / "qemu-nbd.err"
        with open(errors, "wb") as err:
            self.qemu = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.qemu.poll() is not None:
                raise ContainerError(
                    f"{self.image}: qemu-nbd cannot serve it: {_error_text(errors)}"
                )
            with contextlib.suppress(OSError):
                if pidfile.read_text().strip():
                    return sock
            time.sleep(0.02)
        raise BmapError(f"qemu-nbd did not open {self.image} within {_START_TIMEOUT:g} s")

    def _listening(self) -> bool:
        if self.port is None:
            return self.socket.exists()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def running(self) -> bool:
        return (
            self.proc is not None
            and self.proc.poll() is None
            and (self.qemu is None or self.qemu.poll() is None)
        )

    def stop(self) -> None:
        """nbdkit first (its clients go), then qemu-nbd; the folder last, whatever happens."""
        try:
            _stop_process(self.proc)
        finally:
            try:
                _stop_process(self.qemu)
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> NbdkitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_captive(command: str, uris: list[str]) -> subprocess.Popen[bytes]:
    """Run a client the way nbdkit's captive mode does: ``$uri`` (and ``$nbd``) in the command
    is the first image's URI, ``$uri1``, ``$uri2``, ... each image's."""
    env = {**os.environ, "uri": uris[0], "nbd": uris[0]}
    env.update({f"uri{i}": uri for i, uri in enumerate(uris, start=1)})
    # A shell runs the user's own command line, as nbdkit's --run does.
    return subprocess.Popen(command, shell=True, env=env)


def follow_all(
    paths: list[str], done: Callable[[], bool], poll: float = 0.02
) -> Iterator[tuple[int, str | None]]:
    """The lines of several growing logs as ``(which, line)``, each log drained in turn;
    ``(which, None)`` when log ``which`` has nothing more for now (time to write what is
    complete). Ends once ``done()`` is true and everything written before was read."""
    followers = [follow_lines(path, None, poll=0) for path in paths]
    try:
        while True:
            finished = done()  # asked first: what was written before it is read below
            idle = True
            for which, follower in enumerate(followers):
                for line in follower:
                    if line is None:
                        break
                    idle = False
                    yield which, line
                yield which, None
            if finished:
                return
            if idle:
                time.sleep(poll)
    finally:
        for follower in followers:
            follower.close()


def serve_images(
    images: Sequence[Path | str],
    writers: list[Any],
    writable: bool,
    port: int | None,
    run_cmd: str | None,
    say: Callable[[str], None],
    formats: Sequence[str] | None = None,
) -> int:
    """Serve each image with its own nbdkit (socket, or ``port``, ``port + 1``, ...) and write
    the records of every disk as its requests complete, until the client is done: the
    ``run_cmd`` ended, or every connection made was closed (or a server stopped). ``writers``
    has one :class:`~bmap.trace.output.TraceWriter` per image; ``formats`` each image's
    format as bmap detected it (``raw`` for all by default; ``nbd`` for an NBD URI). Returns
    the client's exit code.
    """
    formats = list(formats) if formats is not None else ["raw"] * len(images)
    for image, image_format in zip(images, formats):
        check_servable(image, image_format)
    with contextlib.ExitStack() as stack:
        servers = []
        for i, (image, image_format) in enumerate(zip(images, formats)):
            server = NbdkitServer(image, writable, None if port is None else port + i, image_format)
            # Registered before it starts: stopped even when Ctrl-C comes while it starts.
            stack.callback(server.stop)
            servers.append(server.start())
            chain = "" if image_format == "raw" else f" ({server.chain})"
            say(
                f"serving {image}{chain} at {server.uri}"
                + (f" (disk {i + 1})" if len(images) > 1 else "")
            )
        client = run_captive(run_cmd, [s.uri for s in servers]) if run_cmd else None
        connects = [0] * len(servers)
        disconnects = [0] * len(servers)

        def done() -> bool:
            if not all(s.running() for s in servers):
                return True
            if client is not None:
                return client.poll() is not None
            return sum(connects) > 0 and all(d >= c for c, d in zip(connects, disconnects))

        parsers = [NbdkitParser() for _ in servers]
        numbers = [0] * len(servers)
        batches: list[list[Request]] = [[] for _ in servers]
        try:
            for which, line in follow_all([str(s.log) for s in servers], done):
                if line is None:
                    writers[which].requests(batches[which])
                    batches[which] = []
                    continue
                if " connection=" in line:
                    if " Connect " in line:
                        connects[which] += 1
                    elif " Disconnect " in line:
                        disconnects[which] += 1
                numbers[which] += 1
                batches[which] += parsers[which].feed(numbers[which], line)
            for which, parser in enumerate(parsers):
                writers[which].requests(batches[which] + parser.finish())
        except KeyboardInterrupt:
            pass
        finally:
            if client is not None and client.poll() is None:
                client.terminate()
        for writer in writers:
            writer.close()
        return client.wait() if client is not None else 0
