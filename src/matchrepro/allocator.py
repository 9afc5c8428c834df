"""The process's memory allocator setting for tensor-heavy CPU work.

glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with freshly
mapped pages and unmaps them on ``free``. A job that allocates and frees tensors of that size
over and over (NCNet's 4D correlation volumes, about 90 MB per demo pair, and what the
neighbourhood consensus makes of them) then spends its time in the kernel zero-filling pages:
the demo's NCNet matching on HPatches took 41 s, 31 s of it kernel time.

:func:`keep_freed_memory` makes ``malloc`` take such blocks from the heap and keep freed memory
for reuse (up to ``trim_threshold`` bytes above the heap's top are kept). The arithmetic does
not change: torch aligns every tensor to 64 bytes either way, and the outputs are bitwise equal
(``tests/unit/test_allocator.py``, docs/performance.md). The cost is a higher peak resident
memory, since freed blocks stay in the process. ``MATCHREPRO_MALLOC=system`` keeps glibc's
defaults; on other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
OPT_OUT = "MATCHREPRO_MALLOC"


def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (whose ``mallopt`` does something), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # musl's mallopt is a no-op stub


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve large blocks from the heap and keep freed memory (glibc only); True when applied.

    Call it once at the start of a process, before the large tensors are made. Returns False
    (and changes nothing) when ``MATCHREPRO_MALLOC=system`` is set or the C library is not glibc.
    """
    libc = None if os.environ.get(OPT_OUT, "").lower() == "system" else glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
