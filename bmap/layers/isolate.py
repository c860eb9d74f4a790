"""Running a layer whose parser is C code (The Sleuth Kit) in a child process, so that a crash
or a hang inside that code ends the child, not bmap.

:func:`run_isolated` forks; the child runs the layer on its copy of the map builder through a
:class:`Recording` of it, which writes every call that adds to the builder (with its result)
to a shared temporary file as it is made; the parent then replays the calls on its own
builder. The child's builder started as the parent's exact copy, so each call returns the
same object numbers in both (checked: a mismatch is an internal error). What the child
returns, or raises, is sent the same way.

A child that dies by a signal, whose CPU time does not move for :data:`STALL_SECONDS` (a C
loop waiting on its own lock: TSK's orphan scan once did), or that uses more CPU than the
caller's budget (which follows the evidence's real size, never a count read from it) is ended
and reported as :class:`Isolated` (``crashed``, ``stalled``, ``overran``); nothing of its work
reaches the builder.

Without ``os.fork`` (or with ``BMAP_IN_PROCESS=1`` in the environment, for a debugger), the
layer runs in process.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import select
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import numpy as np

from bmap.model.blockmap import MapBuilder

T = TypeVar("T")

#: A child whose CPU time has not moved for this long is taken to be waiting on itself.
STALL_SECONDS = 30.0
#: Clock ticks per second of ``/proc/PID/stat``'s CPU times.
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: How often the parent looks at the child's CPU time.
_POLL_SECONDS = 1.0
#: The child's exit code after it wrote its result (any other: it failed before).
_DONE = 0
#: The child's exit code where it could not write its record (EX_OSERR: a full temp dir).
_UNRECORDED = 71


@dataclass(frozen=True)
class Isolated(Exception):
    """The isolated layer did not finish: ``how`` is ``crashed``, ``stalled``, ``overran``
    (its CPU budget) or ``failed`` (its work could not be recorded); ``why`` says so in words
    (``killed by SIGSEGV``)."""

    how: str
    why: str


class Recording:
    """A map builder whose adding calls are written to ``out`` as they are made (with their
    results); everything else is the builder's own."""

    ADDING = frozenset(
        {
            "add_object",
            "add_objects",
            "add_extent",
            "add_extents",
            "add_object_extent",
            "add_finding",
        }
    )

    def __init__(self, builder: MapBuilder, out: IO[bytes]) -> None:
        self._builder = builder
        self._out = out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._builder, name)
        if name not in self.ADDING:
            return attr  # looked up each time: a value may change

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            # Written now: a caller may reuse its arrays after the call.
            pickle.dump(("call", name, args, kwargs, result), self._out, protocol=5)
            return result

        setattr(self, name, call)  # made once per method
        return call


def in_process() -> bool:
    """Whether isolated layers run in this process."""
    return not hasattr(os, "fork") or os.environ.get("BMAP_IN_PROCESS") == "1"


def run_isolated(
    layer: Callable[[MapBuilder], T],
    builder: MapBuilder,
    temp_dir: str | None,
    cpu_budget: float | None = None,
) -> T:
    """``layer(builder)``, run in a child process and replayed here; raises :class:`Isolated`
    where the child crashed, stalled or used more than ``cpu_budget`` seconds of CPU (None:
    no limit), and whatever ``layer`` raised in the child."""
    if in_process():
        return layer(builder)
    with tempfile.TemporaryFile(dir=temp_dir) as out:
        ended, alive = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; its work is checked through the parent
                os.close(ended)
                _child(layer, builder, out)
            os.close(alive)
            alive = -1
            status = _wait(pid, ended, cpu_budget)
        finally:
            os.close(ended)
            if alive >= 0:
                os.close(alive)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            raise Isolated("crashed", f"killed by {signal.Signals(sig).name}")
        if os.WEXITSTATUS(status) == _UNRECORDED:
            where = temp_dir or tempfile.gettempdir()
            raise Isolated("failed", f"its work could not be written to {where} (is it full?)")
        if os.WEXITSTATUS(status) != _DONE:
            raise Isolated("crashed", f"ended with exit code {os.WEXITSTATUS(status)}")
        out.seek(0)
        return _replay(out, builder)


def _child(layer: Callable[[MapBuilder], Any], builder: MapBuilder, out: IO[bytes]) -> None:
    code = _UNRECORDED
    # A crash here is reported by the parent, in one line: no Python stack dump on stderr
    # (pytest and PYTHONFAULTHANDLER turn one on).
    faulthandler.disable()
    try:
        try:
            result = layer(Recording(builder, out))  # type: ignore[arg-type]
            record: tuple[Any, ...] = ("return", result)
        except BaseException as exc:
            record = ("raise", exc)
        try:
            pickle.dump(record, out, protocol=5)
        except Exception as exc:
            pickle.dump(("raise", RuntimeError(repr(exc))), out, protocol=5)
        out.flush()
        code = _DONE
    finally:
        os._exit(code)


def _cpu_ticks(pid: int) -> int | None:
    """The child's user + system CPU time in clock ticks (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _wait(pid: int, ended: int, cpu_budget: float | None) -> int:
    """The child's wait status, once ``ended`` (the read end of a pipe only the child holds
    open) says it is gone; a child whose CPU time stands still for STALL_SECONDS, or passes
    ``cpu_budget`` seconds, is killed and :class:`Isolated` raised."""
    ticks, since = _cpu_ticks(pid), time.monotonic()
    try:
        while True:
            readable, _, _ = select.select([ended], [], [], _POLL_SECONDS)
            if readable:
                return os.waitpid(pid, 0)[1]
            now = _cpu_ticks(pid)
            if cpu_budget is not None and now is not None and now / _TICKS_PER_SECOND > cpu_budget:
                raise Isolated("overran", f"used more than {cpu_budget:.0f} s of CPU")
            if now != ticks:
                ticks, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_SECONDS:
                raise Isolated(
                    "stalled", f"used no CPU for {STALL_SECONDS:.0f} s (it waits on itself)"
                )
    except BaseException:
        # Stalled, past its budget, or interrupted here (Ctrl-C): the child goes.
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise


def _replay(out: IO[bytes], builder: MapBuilder) -> Any:
    while True:
        try:
            record = pickle.load(out)
        except EOFError:
            raise RuntimeError("the isolated layer's record ends before its result") from None
        if record[0] == "return":
            return record[1]
        if record[0] == "raise":
            raise record[1]
        _, name, args, kwargs, expected = record
        result = getattr(builder, name)(*args, **kwargs)
        if not _same(result, expected):
            raise RuntimeError(f"replaying the isolated layer: {name} gave other object numbers")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)
