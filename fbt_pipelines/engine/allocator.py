"""Keep freed memory in the process for the next backtest of a sweep (glibc's malloc).

A compiled sweep backtests one set after another on each of its threads, and each
backtest allocates its per-bar equity (8 bytes a bar: 2.8 MB for a year of
minute bars) and its trade records, and frees them at the end. With glibc's
defaults a freed block of that size is often handed back to the kernel at
once (the heap is trimmed, or the block was its own ``mmap``), and the next
set faults the same pages in again. Measured on this 2-core machine:

- a year of ES minute bars, 1,000 ``sma_crossover`` sets on 2 threads:
  2.28M minor page faults, 4.2 s of system time and no gain over one thread
  (9.2 s vs 5.0 s wall); tuned: 367 faults, 3.1 s wall (1.7x one thread);
- two years of 6A minute bars, 200 sets on one thread: 28.4 ms a set,
  tuned 11.4 ms.

:func:`keep_freed_memory` sets, once per process, ``M_MMAP_THRESHOLD``
(32 MB: blocks below it come from the arenas' heaps), ``M_TRIM_THRESHOLD``
(256 MB: a heap is trimmed only above that much free at its top) and
``M_TOP_PAD`` (64 MB: what a heap keeps when it grows or is trimmed). The
process then holds up to a few hundred MB of freed memory for reuse instead
of returning it; nothing else changes. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20))

_lock = threading.Lock()
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once (module docstring); True when it took effect."""
    global _done
    with _lock:
        if _done is None:
            _done = _apply()
        return _done


def _apply() -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc only: other libcs number the parameters differently
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
