"""The ``bmap`` program: the process set-up that only a program may do, the commands, and a
quick exit.

Nothing in the library changes the state of the process it runs in: the environment, the
garbage collector, malloc, signal handlers. :func:`run`, the console entry point (and
``python -m bmap``), does, for the one process that is the ``bmap`` command:

- ``OPENBLAS_NUM_THREADS=1`` before numpy is imported: bmap does no linear algebra, and
  OpenBLAS starting a thread per core made importing numpy cost twice as much on small
  machines;
- the cyclic garbage collector's first generation collected 100 times less often: a map is
  built from a few hundred thousand small objects with no reference cycles, which the
  collector would only rescan over and over (about 5% of a large map's time); it still runs,
  so that ``trace --follow`` and ``serve``, which run as long as a guest does, cannot grow
  without bound;
- glibc's malloc told to keep freed blocks for reuse (:func:`keep_freed_memory`);
- the exit with ``os._exit`` once the output is flushed.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import NoReturn

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: The collector's first-generation threshold in the program (Python's default is 700).
GC_THRESHOLD = 70_000

APPLIED: dict[str, object] = {}
"""What :func:`set_up_process` did, by name (for the tests and ``--debug``)."""


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks up to 32 MiB instead of unmapping them.

    bmap's work is whole-column numpy passes: many temporaries of a few MiB each, made and
    freed over and over. glibc's malloc hands every block above its mmap threshold (128 KiB
    until it adapts) straight back to the kernel when freed and maps fresh, zeroed pages for
    the next one, so each pass pays page faults again. On the 2-core development VM that was
    half the run time of the text assembler (4.1 s against 1.7 s for the same work; 2.1 s of
    it system time). Raising the thresholds keeps freed blocks in the heap for reuse; the
    peak RSS (the largest working set) does not change.

    Returns False where there is no glibc ``mallopt`` (another libc): nothing changes then.
    """
    try:
        # The process's own symbols: glibc's, without a search for the library.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1
    ok &= mallopt(_M_TOP_PAD, 16 << 20) == 1
    return bool(ok)


def set_up_process() -> None:
    """The set-up of the ``bmap`` process (see the module's docstring); call it first."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        APPLIED["openblas_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)
    APPLIED["gc_threshold"] = GC_THRESHOLD
    APPLIED["malloc"] = keep_freed_memory()


def run() -> NoReturn:
    """The ``bmap`` program: the process set-up, :func:`bmap.cli.commands.main`, then a quick
    exit.

    A map of a large filesystem leaves a few hundred thousand objects on the heap; freeing
    them one by one at interpreter shutdown took about 0.07 s of every ``bmap map`` of /usr.
    Everything the command wrote is flushed first (an output file is closed by its writer),
    so the process can leave with ``os._exit`` (not under a profiler or coverage tool, which
    write their reports at exit). Tests call ``main`` in-process instead, with no set-up.
    """
    set_up_process()
    from bmap.cli.commands import main

    code: int
    try:
        main(prog_name="bmap")
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    if sys.gettrace() is not None or sys.getprofile() is not None:
        # A profiler or coverage tool runs us: it writes its report at a normal exit.
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the reader went away, or the stream is closed: nothing left to deliver
    os._exit(code)
