"""``bmap serve``: the real nbdkit serving an image with its log filter, on a Unix socket or a
localhost port, for a client to read while bmap names what it reads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bmap.errors import BmapError, ExitCode


class ToolMissingError(BmapError):
    """A program bmap runs is not installed."""

    exit_code = ExitCode.MISSING_TOOL


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


def run_captive(command: str, uri: str) -> subprocess.Popen[bytes]:
    """Run a client the way nbdkit's captive mode does: ``$uri`` in the command is the URI."""
    env = {**os.environ, "uri": uri, "nbd": uri}
    # A shell runs the user's own command line, as nbdkit's --run does.
    return subprocess.Popen(command, shell=True, env=env)
