"""Work in a forked child process, its results streamed back through a pipe.

CPython runs one thread's Python code at a time: two threads that each issue thousands of
short numpy calls mostly wait for each other (measured: the nbdkit scanner in a thread took
3.3 s of wall time for 1.2 s of work). A child process runs on the other core with nothing
shared. Forked once the map is loaded, it inherits the map and the annotator as they are
(copy on write), so only the results cross the pipe, pickled (numpy arrays pickle as their
bytes). The pipe's capacity bounds how far the child runs ahead.

Where there is no ``fork`` (not Linux or another Unix), :class:`Forked` runs the work in
this process instead: the same items, one core.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, Generic, NoReturn, TypeVar, cast

from bmap.errors import BmapError

T = TypeVar("T")


class WorkerError(BmapError):
    """The child process ended without finishing its work (killed, or crashed)."""


class Forked(Generic[T]):
    """The items of ``work()``, made in a forked child from the moment this is created.

    An exception raised by the work is raised here, in order. :meth:`close` (also on leaving
    a ``with`` block) stops the child and waits for it. The child writes nothing to stdout or
    stderr and ignores Ctrl-C: the parent decides what the user sees, and stops it.
    """

    def __init__(
        self, work: Callable[..., Iterator[T]], depth: int = 8, inbox: bool = False
    ) -> None:
        self._pid = 0
        self._local: Iterator[T] | None = None
        self._file: IO[bytes] | None = None
        self._inbox: IO[bytes] | None = None
        self._mail: list[Any] = []
        self._done = False
        self.forked = hasattr(os, "fork")
        """Whether the work runs in a child (else here, as it is iterated)."""
        if not self.forked:
            self._local = work(self._local_receive) if inbox else work()
            return
        read_end, write_end = os.pipe()
        inbox_read, inbox_write = os.pipe() if inbox else (-1, -1)
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            if inbox:
                os.close(inbox_write)
            _child(write_end, work, inbox_read)
        os.close(write_end)
        if inbox:
            os.close(inbox_read)
            self._inbox = os.fdopen(inbox_write, "wb")
        self._pid = pid
        self._file = os.fdopen(read_end, "rb", buffering=1 << 16)
        _grow_pipe(read_end)
        # A thread here drains the pipe into a queue (it waits in read() with the GIL
        # released): the child is never held up by this process being busy.
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=depth)
        self._reader = threading.Thread(target=self._drain, name="bmap-worker-pipe", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self._file is not None
        try:
            while True:
                entry = pickle.load(self._file)
                self._queue.put(entry)
                if entry[0] != _ITEM:
                    return
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            self._queue.put((_DIED, None))

    def send(self, message: Any) -> None:
        """Hand the child an object (with ``inbox``): its work takes it with ``receive``."""
        if self._inbox is None:
            self._mail.append(message)
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._inbox.write(struct.pack("<Q", len(data)) + data)
            self._inbox.flush()
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
        status = self._reap()
        if kind == _ERROR:
            raise item
        if kind == _DIED:
            raise WorkerError(f"the worker process ended before its work was done ({status})")

    def _local_receive(self, wait: bool = True) -> Any:
        if self._mail:
            return self._mail.pop(0)
        if wait:
            raise WorkerError("the work waits for a message that was never sent")
        return None

    def __iter__(self) -> Forked[T]:
        return self

    def __next__(self) -> T:
        if self._local is not None:
            return next(self._local)
        if self._done or self._file is None:
            raise StopIteration
        kind, item = self._queue.get()
        if kind == _ITEM:
            return cast(T, item)
        self._ended(kind, item)
        raise StopIteration

    def close(self) -> None:
        self._done = True
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._reap()
        if self._inbox is not None:
            try:
                self._inbox.close()
            except OSError:
                pass  # the child is gone: nothing more to tell it
            self._inbox = None
        if self._file is not None:
            if self._reader.is_alive():
                self._drain_rest()
            self._file.close()
            self._file = None

    def _drain_rest(self) -> None:
        """Let the reader thread end: the child is gone, so its reads end soon."""
        while self._reader.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass

    def _reap(self) -> str:
        if not self._pid:
            return "reaped"
        pid, self._pid = self._pid, 0
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return "no status"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.WEXITSTATUS(status)}"

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ITEM, _END, _ERROR, _DIED = 0, 1, 2, 3


def _read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size:
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            raise EOFError("the parent closed the pipe")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe (Linux), so that one pickled batch fits; no matter if refused."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _child(fd: int, work: Callable[..., Iterator[Any]], inbox: int) -> NoReturn:
    """Run ``work`` and send its items; never returns (``os._exit``, so that nothing of the
    parent's, buffered output or cleanup handlers, runs twice). With an ``inbox`` descriptor
    the work is called with ``receive(wait)``, which returns the parent's next message, or
    None at once when ``wait`` is false and none has come."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        def receive(wait: bool = True) -> Any:
            # Messages are framed (a length, then the pickle) and read from the descriptor
            # itself, so that select() tells the truth about what is waiting.
            if not wait and not select.select([inbox], [], [], 0)[0]:
                return None
            (size,) = struct.unpack("<Q", _read_exactly(inbox, 8))
            return pickle.loads(_read_exactly(inbox, size))

        items = work(receive) if inbox >= 0 else work()
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            try:
                for item in items:
                    pickle.dump((_ITEM, item), out, protocol=pickle.HIGHEST_PROTOCOL)
                    out.flush()  # each item as soon as it is made
                pickle.dump((_END, None), out, protocol=pickle.HIGHEST_PROTOCOL)
            except BrokenPipeError:
                raise
            except BaseException as exc:  # sent to the parent, raised there
                try:
                    pickle.dump((_ERROR, exc), out, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # an exception that does not pickle: say what it was
                    error = WorkerError(f"{type(exc).__name__}: {exc}")
                    pickle.dump((_ERROR, error), out, protocol=pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        code = 0  # the parent stopped reading: nothing more to do
    except BaseException:
        code = 1
    finally:
        os._exit(code)
