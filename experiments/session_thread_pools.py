"""Whether a per-call choice of TensorFlow op threads could serve both latency and throughput: the version's
signatures loaded into TF1 sessions that each own their op pool (TF_OVERRIDE_GLOBAL_THREADPOOL=1, as TF Serving's
per-session thread pools do), one session with one op thread and one with two, in one process.

    .venv/bin/python experiments/session_thread_pools.py [--version-dir models/optic-disc/5] [--requests 100]

TensorFlow's eager runtime sets one op pool per process (docs/BENCHMARKS.md, "A bare server, and op threads against
batch threads"), so the predictor cannot give a lone request two op threads and concurrent batches one each. Sessions
can; this measures whether two op threads would make a lone call faster there (docs/BENCHMARKS.md, "Three more
probes"). Prints the p50 per signature and batch for each session, the sessions timed in alternation.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ["TF_OVERRIDE_GLOBAL_THREADPOOL"] = "1"  # each session's devices own their intra-op pool

from fundus_seg.model_repository import SEGMENT_SIGNATURE, SERVING_SIGNATURE  # noqa: E402
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME  # noqa: E402

WARM_UP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, default=BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME / "5")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()

    def session(op_threads: int):
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=op_threads, inter_op_parallelism_threads=2)
        graph = tf.Graph()
        sess = tf.compat.v1.Session(graph=graph, config=config)
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(args.version_dir))
        feeds = {}
        for name in (SERVING_SIGNATURE, SEGMENT_SIGNATURE):
            signature = meta_graph.signature_def[name]
            [tensor] = signature.inputs.values()
            feeds[name] = (tensor.name, [output.name for output in signature.outputs.values()])
        return sess, feeds

    sessions = {threads: session(threads) for threads in (1, 2)}
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        images = rng.integers(0, 255, (batch, 128, 128, 3), dtype=np.uint8)
        for name in (SERVING_SIGNATURE, SEGMENT_SIGNATURE):
            samples: dict[int, list[float]] = {threads: [] for threads in sessions}
            for i in range(WARM_UP + args.requests):
                for threads in sorted(sessions, reverse=bool(i % 2)):
                    sess, feeds = sessions[threads]
                    key, outputs = feeds[name]
                    started = time.perf_counter()
                    sess.run(outputs, {key: images})
                    if i >= WARM_UP:
                        samples[threads].append((time.perf_counter() - started) * 1000)
            print(f"{name}, batch {batch}: " + ", ".join(
                f"{threads} op thread{'s' if threads > 1 else ''} p50 {statistics.median(values):.2f} ms"
                for threads, values in samples.items()), flush=True)


if __name__ == "__main__":
    main()
