"""The C allocator tuned for a daemon whose threads pass batches to each other.

Why: glibc's malloc hands the top of a heap back to the kernel whenever a free leaves more than
the trim threshold there (128 KiB by default), and serves each request above the mmap
threshold (128 KiB at first, rising to what was freed, 32 MiB at most) with pages of its own.
The daemon's reader, learner, writer and checkpoint threads each build and drop batch-sized
buffers (decoded columns, encoded predictions, packed key states), so every batch re-grew a
trimmed heap and took its pages again from the kernel as fresh zeroed pages: on a
million-record run of new keys, 676k minor page faults and 9 s of system time in a 28 s run
(``perf record -e page-faults``: 41% in ``sysmalloc``). A trim threshold above a batch's
working set and the mmap threshold at its maximum keep those pages in the process, to be
reused: 343k faults (about one per resident page) and 3.3 s of system time on the same run.

Each thread keeps its own arena: one arena for all (``M_ARENA_MAX`` 1) cut the faults alike but
made librdkafka's threads queue on its lock (predictions produced back to Kafka: 85k against
101k records/s with the default arenas, same machine, same minutes).

The settings are glibc's ``mallopt`` parameters (``man 3 mallopt``); each can still be set by
its ``MALLOC_*_`` environment variable, which then wins. Elsewhere (musl, macOS) nothing is
done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameter → (its environment variable, the value set here).
SETTINGS = {
    -1: ("MALLOC_TRIM_THRESHOLD_", 256 << 20),  # M_TRIM_THRESHOLD: keep up to 256 MiB freed
    -3: ("MALLOC_MMAP_THRESHOLD_", 32 << 20),  # M_MMAP_THRESHOLD: glibc's largest on 64-bit
}


def tune() -> list[str]:
    """Apply :data:`SETTINGS` (those whose environment variable is unset) through glibc's
    ``mallopt``; returns the names of those it set. Called at start, before the daemon's
    threads allocate."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return []
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return [name for param, (name, value) in SETTINGS.items()
            if name not in os.environ and mallopt(param, value) == 1]
