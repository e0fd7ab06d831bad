"""The heaps of a long-running server: what was imported at start-up is never garbage, so the cyclic garbage
collector should stop walking it; and the buffers each request allocates and frees should be reused, not handed
back to the kernel and faulted in again.

A full (generation 2) collection walks every tracked object and holds the GIL while it does. In the predictor,
TensorFlow's import alone is most of the heap: loading a new version allocates enough to trigger one, and
that collection stalled every request for 348 ms on 2 cores in the middle of a hot swap, 69 ms once frozen
(`experiments/swap_gc_pause.py`, docs/BENCHMARKS.md). `gc.freeze()` moves what exists into the permanent generation, which
collections skip (CPython's advice for servers, and Instagram's); everything allocated later (model versions,
requests) is collected as before, so an unloaded version is still freed.

glibc's malloc maps every block over its threshold (128 KB at start) with mmap and unmaps it on free, so a request's decoded photo (2.7 MB
for a DRISHTI one), its full-size masks and the 128 KB stage-2 answer are new pages on every request: about 1,300
page faults and 3.5 ms for one DRISHTI decode in a process without TensorFlow (the transformer), whose page faults
cost a virtual machine more than a host (`experiments/request_page_faults.py`). TensorFlow's own large
frees raise glibc's adaptive threshold, so the in-process floor did not pay this and the transformer did.
`keep_request_buffers` fixes the threshold instead: in the transformer, and in the benchmark's process, whose
floor does the transformer's work. Not in the predictor: TensorFlow's frees already raise the threshold there, and
holding its many threads to two arenas made a hot swap's p99 2.10-2.30x the steady p99 in three benchmark runs,
1.92-2.00x without (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import ctypes
import gc

from fundus_seg.units import MiB

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's <malloc.h>
MMAP_THRESHOLD = 16 * MiB  # blocks from this size up are still mapped and returned at once: Pillow's image
# blocks (16 MiB each) and a photo's pixels beyond 5.6 MP, so the largest images cost what they did before
TRIM_THRESHOLD = 32 * MiB  # free memory kept at an arena's top before it is returned to the kernel
ARENA_MAX = 2  # arenas that may each keep that much (glibc's default: eight per core); measured on 2 cores


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; returns how many were frozen.
    Call it in a server process's entry point after its imports and before it serves."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def keep_request_buffers() -> bool:
    """Make glibc's malloc keep freed blocks of up to MMAP_THRESHOLD for reuse (at most TRIM_THRESHOLD free at the
    top of each of ARENA_MAX arenas); False where the C library is not glibc. Call it first in a server's entry
    point, before its threads start: the memory this keeps is bounded by what one burst of requests used, which
    the transformer's pixel budget bounds."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, ARENA_MAX)))
