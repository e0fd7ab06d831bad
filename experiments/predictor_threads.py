"""TensorFlow's op threads in the one-machine predictor: gRPC p50 and throughput at concurrency 8 for each
`--tensorflow_intra_op_parallelism`, every variant its own service, all measured in turn with the floor.

    .venv/bin/python experiments/predictor_threads.py [--threads 0,1,2,2/1] [--requests 200] [--rounds 5]

docs/BENCHMARKS.md, "TensorFlow's op threads in the predictor". 0 is TensorFlow's default (one op thread
per core). `N/B` is N op threads with the batcher's num_batch_threads B (its default: 2), so that B model
calls run at once. Each service runs with batching, as `fundus-seg serve` does; the ratios are to the floor of the
same run, as in `fundus-seg benchmark`.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.benchmark import DEFAULT_IMAGE, FloorBench, interleave, latest_version_dir, serving_copy
from serving.client import GrpcClient
from serving.local_service import LocalService, LocalServiceConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="0,1,2", help="intra-op thread counts to compare")
    parser.add_argument("--requests", type=int, default=200, help="per row, all rounds together")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    image = DEFAULT_IMAGE.read_bytes()
    version_dir = latest_version_dir(BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME)
    variants = [tuple(int(n) for n in v.split("/")) for v in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        stacks, segments = [], {}
        try:
            for n, *batch_threads in variants:
                name = "/".join(str(v) for v in (n, *batch_threads))
                root = Path(scratch) / f"intra{name.replace('/', '-')}"
                repo = root / "models"
                serving_copy(version_dir, repo, DEFAULT_MODEL_NAME)
                extra = []
                if batch_threads:
                    parameters = root / "batching.txt"
                    parameters.write_text(f"num_batch_threads {{ value: {batch_threads[0]} }}\n")
                    extra = ["--batching_parameters_file", str(parameters)]
                config = LocalServiceConfig(model_repo=repo, http_port=0, grpc_port=0, predictor_grpc_port=0,
                                            predictor_rest_port=0, enable_batching=True, log_dir=root / "logs",
                                            predictor_intra_op_threads=n, extra_predictor_args=extra)
                stacks.append(LocalService(config).start())
                if not stacks[-1].wait_ready(180):
                    raise SystemExit(f"intra-op {name}: no version became ready")
                client = GrpcClient(config.grpc_target, DEFAULT_MODEL_NAME)
                segments[f"intra-op {name}"] = lambda client=client: client.segment([image])
            floor = FloorBench(image, version_dir, args.concurrency)
            floor.latency(10, record=False)
            floor.batched(2 * args.concurrency, record=False)
            for segment in segments.values():  # warm every stack's connections and batch sizes
                for _ in range(10):
                    segment()
            result, latency, _, throughput = interleave(floor, segments, args.requests, args.rounds,
                                                        args.concurrency)
            floor.close()
        finally:
            for stack in stacks:
                stack.stop()
    print(f"\nfloor: p50 {result.latency.p50:.1f} ms, batched {result.batched_ips:.1f} img/s")
    print("| predictor intra-op threads (/ batch threads) | gRPC p50 ms | / floor p50 | gRPC c=8 img/s | / floor batched |")
    print("|---|---|---|---|---|")
    for name, samples in latency.items():
        print(f"| {name.split()[-1]} | {samples.p50:.1f} | {samples.p50 / result.latency.p50:.2f} | "
              f"{throughput[name]:.1f} | {throughput[name] / result.batched_ips:.2f} |")


if __name__ == "__main__":
    main()
