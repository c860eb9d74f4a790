"""Process-wide allocator settings for the command line.

bmap's work is whole-column numpy passes: many temporaries of a few MiB each, made and freed
over and over. glibc's malloc hands every block above its mmap threshold (128 KiB until it
adapts) straight back to the kernel when freed and maps fresh, zeroed pages for the next one,
so each pass pays page faults again. On the 2-core development VM that was half the run time
of the text assembler (4.1 s against 1.7 s for the same work; 2.1 s of it system time).
Raising the thresholds keeps freed blocks in the heap for reuse; the peak RSS (the largest
working set) does not change.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks up to 32 MiB instead of unmapping them.

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
