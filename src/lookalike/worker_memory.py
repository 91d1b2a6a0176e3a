"""Memory settings for short-lived worker processes.

NumPy work on batches of thumbnails allocates and frees arrays of about a megabyte many
times a second. glibc's malloc serves blocks that size with fresh ``mmap`` calls, or
gives the top of its heap back to the system after a free, so every new array costs a
page fault per 4 KiB page (~24,000 faults and a tenth of a second of kernel time for the
pair checks of 1,300 dedup candidates). A worker that lives for one job can keep what
it freed instead: :func:`keep_freed_memory` raises both glibc thresholds, so the same
pages are reused. Peak memory is unchanged (only what the worker already used is kept).
"""
from __future__ import annotations

import ctypes

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (glibc's upper limit for the setting on
#: 64-bit systems is 32 MiB).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept before any is returned to the system.
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Make this process's malloc reuse freed blocks instead of returning them to the
    system (glibc only); True where the setting took effect. For pool workers: call it
    in the initializer (a forked child has its own copy of the settings)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, where glibc
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
