"""Work in a forked child process, its results streamed back: how ``bmap trace`` scans and
annotates an nbdkit log file on the other core while this process formats and writes.

CPython runs one thread's Python code at a time: two threads that each issue thousands of
short numpy calls mostly wait for each other (measured: the nbdkit scanner in a thread took
3.3 s of wall time for 1.2 s of work). A child process runs on the other core with nothing
shared. Forked (``multiprocessing``'s fork context, so the child starts with this process's
memory and needs nothing pickled to begin), it gets messages and sends its items back through
``multiprocessing`` pipes, pickled (numpy arrays pickle as their bytes). A thread here drains
the results pipe into a bounded queue, so that the child is not held up while this process is
busy; the pipe's capacity and the queue's depth bound how far it runs ahead.

The child writes nothing to stdout or stderr and ignores Ctrl-C: the parent decides what the
user sees, and stops it. An exception raised by the work is raised in the parent, in order.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Generic, NoReturn, TypeVar, cast

from bmap.errors import BmapError

T = TypeVar("T")

Receive = Callable[..., Any]
"""``receive(wait=True)``: the parent's next message; with ``wait=False``, None at once when
none has come."""

_ITEM, _END, _ERROR, _DIED = 0, 1, 2, 3


class WorkerError(BmapError):
    """The child process ended without finishing its work (killed, or crashed)."""


class Forked(Generic[T]):
    """The items of ``work()`` (or ``work(receive)`` with ``inbox``), made in a forked child
    from the moment this is created.

    :meth:`send` hands the child a message (with ``inbox``). :meth:`close` (also on leaving a
    ``with`` block) stops the child and waits for it.
    """

    def __init__(
        self, work: Callable[..., Iterator[T]], depth: int = 8, inbox: bool = False
    ) -> None:
        context = multiprocessing.get_context("fork")
        self._results, child_results = context.Pipe(duplex=False)
        child_inbox, self._inbox = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child,
            args=(work, inbox, child_results, child_inbox, (self._results, self._inbox)),
            name="bmap-worker",
            daemon=True,
        )
        self._process.start()
        child_results.close()
        child_inbox.close()
        _grow_pipe(self._results.fileno())
        self._done = False
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=depth)
        self._reader = threading.Thread(target=self._drain, name="bmap-worker-pipe", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            while True:
                entry = self._results.recv()
                self._queue.put(entry)
                if entry[0] != _ITEM:
                    return
        except Exception:  # EOF (the child is gone), a closed pipe, a damaged pickle
            self._queue.put((_DIED, None))

    def send(self, message: Any) -> None:
        """Hand the child an object: its work takes it with ``receive``."""
        try:
            self._inbox.send(message)
        except OSError:  # BrokenPipeError: the child is gone; say why, not "broken pipe"
            self._raise_why_the_child_ended()

    def _raise_why_the_child_ended(self) -> NoReturn:
        while True:
            try:
                kind, item = self._queue.get(timeout=5.0)
            except queue.Empty:
                kind, item = _DIED, None
            if kind != _ITEM:  # results it made before it failed are of no use now
                self._ended(kind, item)
                raise WorkerError("the worker process ended without taking its message")

    def _ended(self, kind: int, item: Any) -> None:
        """The child's last word: raise its error, or say that it died; an end is fine."""
        self._done = True
        self._process.join()
        if kind == _ERROR:
            raise item
        if kind == _DIED:
            raise WorkerError(
                f"the worker process ended before its work was done ({self._status()})"
            )

    def _status(self) -> str:
        code = self._process.exitcode
        if code is None:
            return "no status"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def __iter__(self) -> Forked[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, item = self._queue.get()
        if kind == _ITEM:
            return cast(T, item)
        self._ended(kind, item)
        raise StopIteration

    def close(self) -> None:
        self._done = True
        self._process.terminate()  # nothing happens if it has ended
        self._process.join()
        self._inbox.close()
        while self._reader.is_alive():  # it ends soon: the child is gone
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._results.close()

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe (Linux), so that one pickled batch fits; no matter if refused."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _child(
    work: Callable[..., Iterator[Any]],
    inbox: bool,
    results: Connection,
    messages: Connection,
    parents_ends: tuple[Connection, Connection],
) -> None:
    """In the child: run ``work`` and send its items, then an end or the error it raised.

    The parent's ends of the pipes are closed here first, so that a parent that stops
    reading, or closes the inbox, is seen as an end (not a wait that never ends).
    """
    for end in parents_ends:
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def receive(wait: bool = True) -> Any:
        if not wait and not messages.poll():
            return None
        return messages.recv()

    try:
        try:
            for item in work(receive) if inbox else work():
                results.send((_ITEM, item))  # each item as soon as it is made
            results.send((_END, None))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except BaseException as exc:  # sent to the parent, raised there
            try:
                results.send((_ERROR, exc))
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception:  # an exception that does not pickle: say what it was
                results.send((_ERROR, WorkerError(f"{type(exc).__name__}: {exc}")))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent stopped reading: nothing more to do
