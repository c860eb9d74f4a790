"""The forked worker: items in order, the child's exceptions raised in the parent, a child
that dies is one clear error, and no child outlives its consumer."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from bmap.errors import MapFormatError
from bmap.trace.worker import Forked, WorkerError


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its state in /proc says Z.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] == "Z"


def test_items_come_in_order_with_numpy_payloads():
    def work():
        for i in range(50):
            yield i, np.arange(i * 1000, dtype=np.int64)  # ~50 pickles of up to 400 KB

    with Forked(work) as items:
        got = list(items)
    assert [i for i, _ in got] == list(range(50))
    assert all(int(a.sum()) == sum(range(i * 1000)) for i, a in got)


def test_the_work_runs_in_another_process():
    with Forked(lambda: iter([os.getpid()])) as items:
        (child,) = list(items)
    assert child != os.getpid()


def test_an_exception_in_the_child_is_raised_here_after_the_items_before_it():
    def work():
        yield 1
        yield 2
        raise MapFormatError("log.txt: a line longer than 128 MiB; not a log")

    items = Forked(work)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(MapFormatError, match="longer than 128 MiB"):
        next(items)
    items.close()


def test_a_child_killed_by_a_signal_is_a_clear_error():
    def work():
        yield os.getpid()
        time.sleep(30)
        yield "never"

    items = Forked(work)
    child = next(items)
    os.kill(child, signal.SIGKILL)
    with pytest.raises(WorkerError, match="killed by signal 9"):
        next(items)
    items.close()
    assert _gone(child)


def test_closing_early_stops_the_child():
    def work():
        yield os.getpid()
        yield from range(10**9)

    items = Forked(work)
    child = next(items)
    items.close()
    assert _gone(child)


def test_a_child_that_failed_before_a_message_raises_its_error_on_send():
    """Not BrokenPipeError: the CLI reads that as "stdout was closed" and exits 0."""

    def work(receive):
        raise MapFormatError("the child's own reason")
        yield receive()

    items = Forked(work, inbox=True)
    time.sleep(0.3)
    with pytest.raises(MapFormatError, match="the child's own reason"):
        items.send(b"x" * (2 << 20))  # more than a pipe holds
    items.close()


def test_messages_reach_the_child_whole():
    def work(receive):
        first = receive(wait=True)
        yield int(first.sum())
        yield receive(wait=False)

    items = Forked(work, inbox=True)
    big = np.arange(3_000_000, dtype=np.int64)  # 24 MB: many partial reads of the pipe
    items.send(big)
    assert next(items) == int(big.sum())
    assert next(items) is None
    items.close()
