"""What a hot swap costs the requests served meanwhile, in one process: the serving thread predicts (stage 1 and
stage 2, batch 1) in a loop while a loader thread at the predictor's niceness and GIL switch interval loads a second
copy of the version, as `serving.predictor.model_manager` does; the garbage collector's pauses are recorded (docs/BENCHMARKS.md).

    .venv/bin/python experiments/swap_gc_pause.py [--version models/optic-disc/3] [--freeze] [--switch-interval-ms 5]

--freeze calls `serving.heap.freeze_startup_heap()` after TensorFlow's import, as the predictor's entry point does.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="models/optic-disc/3")
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--steady-s", type=float, default=5.0)
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="the GIL switch interval while the loader runs (default: the predictor's, "
                             "LOADING_SWITCH_INTERVAL_S; Python's own is 5 ms)")
    args = parser.parse_args()
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(verbose=False)
    import numpy as np

    from serving.heap import freeze_startup_heap
    from serving.predictor.model_manager import LOADING_SWITCH_INTERVAL_S, _yield_to_serving, short_gil_turns
    from serving.predictor.servable import Servable

    if args.freeze:
        freeze_startup_heap()
    pauses, started = [], [0.0]

    def on_gc(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append({"generation": info["generation"], "ms": round((time.perf_counter() - started[0]) * 1e3, 1)})

    gc.callbacks.append(on_gc)
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (1, 128, 128, 3))  # equalised bytes, in each signature's dtype (uint8 or float32)

    def feeds(servable) -> list:
        """Both stages' signatures with their inputs, built once so the timed loop runs the model calls only."""
        return [(signature, {key: crop.astype(spec.numpy_dtype) for key, spec in signature.inputs.items()})
                for signature in (servable.signature(name) for name in ("serving_default", "segment"))]

    def request(feed: list) -> float:
        begin = time.perf_counter()
        for signature, inputs in feed:
            signature.run(inputs)
        return (time.perf_counter() - begin) * 1e3

    def summary(latencies: list[float]) -> dict:
        latencies = sorted(latencies)
        return {"n": len(latencies), "p50_ms": round(latencies[len(latencies) // 2], 1),
                "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1), "max_ms": round(latencies[-1], 1)}

    serving = feeds(Servable.load(args.version))
    end = time.perf_counter() + args.steady_s
    steady = []
    while time.perf_counter() < end:
        steady.append(request(serving))
    loaded = {}
    interval_s = LOADING_SWITCH_INTERVAL_S if args.switch_interval_ms is None else args.switch_interval_ms / 1000

    def load() -> None:
        _yield_to_serving()
        with short_gil_turns(interval_s):
            loaded["next"] = Servable.load(args.version)

    pauses.clear()
    loader = threading.Thread(target=load)
    begin = time.perf_counter()
    loader.start()
    during = []
    while loader.is_alive():
        during.append(request(serving))
    load_s = time.perf_counter() - begin
    during_pauses = [p for p in pauses if p["ms"] >= 5]
    begin = time.perf_counter()
    gc.collect()
    print(json.dumps({"freeze": args.freeze, "switch_interval_ms": interval_s * 1000,
                      "steady": summary(steady), "during_load": summary(during),
                      "load_s": round(load_s, 1), "gc_pauses_during_load_over_5ms": during_pauses,
                      "full_collection_ms": round((time.perf_counter() - begin) * 1e3, 1)}))


if __name__ == "__main__":
    main()
