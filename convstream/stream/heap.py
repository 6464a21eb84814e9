"""Hand the C heap's free pages back to the kernel, so a worker's RSS follows its live memory.

With ``rocksdb://``, RocksDB's own memory is bounded by settings (memtables, one block cache
holding the index and filter blocks too). Traced over a state-growth run to 2M identifiers, it
stayed within 30 MiB of memtables and the 64 MiB cache; Python's object count did not grow
either. What grew was glibc malloc's heap: memory freed between live chunks stays in the heap as
free chunks, and glibc returns only the top of a heap to the kernel. RSS then climbs with the
heap's high-water mark and its fragmentation (the heap grew from 255 to 300 MiB between 1M and
2M identifiers, 80-160 MiB of it free).

``malloc_trim(0)`` releases the free pages inside the heap too (``madvise``), and consolidates
free chunks. Called every 10 seconds, it kept the heap at 265 MiB from 0.9M to 2M identifiers
(BENCHMARKS.md, 2026-11-26). It runs in a thread: it takes a few milliseconds to tens of
milliseconds, and ctypes releases the GIL for it. Where the C library is not glibc (or a
preloaded allocator such as jemalloc manages the heap instead), there is nothing to call, or the
call finds nothing to release.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def available() -> bool:
    """Whether this C library can release free heap pages (glibc)."""
    return _TRIM is not None


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def release_free_heap() -> int:
    """``malloc_trim(0)``: bytes of RSS given back (0 without glibc, or if other threads
    allocated as much meanwhile)."""
    if _TRIM is None:
        return 0
    before = rss_bytes()
    _TRIM(0)
    return max(before - rss_bytes(), 0)
