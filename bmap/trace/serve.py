"""``bmap serve``: the real nbdkit serving an image with its log filter, on a Unix socket or a
localhost port, for a client to read while bmap names what it reads."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bmap.errors import BmapError, ToolMissingError
from bmap.trace.logs import follow_lines
from bmap.trace.nbdkit import NbdkitParser
from bmap.trace.requests import Request


class NbdkitServer:
    """nbdkit's file plugin with the log filter; stopped, and its socket and log removed, by
    :meth:`stop` on every path (use it as a context manager)."""

    def __init__(self, image: Path, writable: bool = False, port: int | None = None) -> None:
        self.image = image
        self.writable = writable
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="bmap-serve-"))
        self.socket = self.folder / "nbd.sock"
        self.log = self.folder / "nbdkit.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        if self.port is not None:
            return f"nbd://localhost:{self.port}"
        return f"nbd+unix:///?socket={self.socket}"

    def start(self) -> NbdkitServer:
        exe = shutil.which("nbdkit")
        if exe is None:
            self.stop()
            raise ToolMissingError(
                "nbdkit is not installed: install it with 'sudo apt-get install nbdkit'"
            )
        listen = (
            ["-i", "127.0.0.1", "-p", str(self.port)] if self.port else ["-U", str(self.socket)]
        )
        cmd = [exe, "-f", "--exit-with-parent", *listen, "--filter=log"]
        cmd += [] if self.writable else ["-r"]
        cmd += ["file", str(self.image), f"logfile={self.log}"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(
                    errors="replace"
                )
                self.stop()
                raise BmapError(f"nbdkit failed to start: {err.strip().splitlines()[-1:] or '?'}")
            if self._listening():
                return self
            time.sleep(0.02)
        self.stop()
        raise BmapError("nbdkit did not start listening within 10 s")

    def _listening(self) -> bool:
        if self.port is None:
            return self.socket.exists()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
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
    images: list[Path],
    writers: list[Any],
    writable: bool,
    port: int | None,
    run_cmd: str | None,
    say: Callable[[str], None],
) -> int:
    """Serve each image with its own nbdkit (socket, or ``port``, ``port + 1``, ...) and write
    the records of every disk as its requests complete, until the client is done: the
    ``run_cmd`` ended, or every connection made was closed (or a server stopped). ``writers``
    has one :class:`~bmap.trace.output.TraceWriter` per image. Returns the client's exit code.
    """
    with contextlib.ExitStack() as stack:
        servers = []
        for i, image in enumerate(images):
            server = NbdkitServer(image, writable, None if port is None else port + i)
            servers.append(stack.enter_context(server))
            say(
                f"serving {image} at {server.uri}" + (f" (disk {i + 1})" if len(images) > 1 else "")
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
