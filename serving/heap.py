"""The interpreter's heap in a long-running server: what was imported at start-up is never garbage, so the
cyclic garbage collector should stop walking it.

A full (generation 2) collection walks every tracked object and holds the GIL while it does. In the predictor,
TensorFlow's import alone is most of the heap: loading a new version allocates enough to trigger one, and
that collection stalled every request for 348 ms on 2 cores in the middle of a hot swap, 69 ms once frozen
(`experiments/swap_gc_pause.py`, docs/BENCHMARKS.md). `gc.freeze()` moves what exists into the permanent generation, which
collections skip (CPython's advice for servers, and Instagram's); everything allocated later (model versions,
requests) is collected as before, so an unloaded version is still freed.
"""
from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; returns how many were frozen.
    Call it in a server process's entry point after its imports and before it serves."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
