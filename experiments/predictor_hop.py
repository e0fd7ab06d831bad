"""What one Predict to the predictor costs beyond the model: the same signature called in this process and
over gRPC (the transformer's client), batch 1, uint8 input, on a quiet one-machine predictor.

    .venv/bin/python experiments/predictor_hop.py [--version-dir models/optic-disc/4] [--requests 200] [--no-batching]

docs/BENCHMARKS.md, "Runs of 2026-12-06". The in-process figure is taken before and after the gRPC one.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fundus_seg.model_repository import SEGMENT_SIGNATURE, SERVING_SIGNATURE
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.local_service import LocalService, LocalServiceConfig
from serving.transformer.predictor_client import GrpcPredictor

SIGNATURES = (SERVING_SIGNATURE, SEGMENT_SIGNATURE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, default=BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME / "4")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-batching", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    image = np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(args.version_dir))
    functions = {name: loaded.signatures[name] for name in SIGNATURES}

    def in_process(name: str) -> list[float]:
        function = functions[name]
        [key] = function.structured_input_signature[1]
        samples = []
        for i in range(20 + args.requests):
            started = time.perf_counter()
            function(**{key: tf.constant(image)})
            if i >= 20:
                samples.append((time.perf_counter() - started) * 1000)
        return samples

    async def over_grpc(target: str) -> dict[str, list[float]]:
        predictor = GrpcPredictor(target, DEFAULT_MODEL_NAME)
        samples: dict[str, list[float]] = {}
        for name in SIGNATURES:
            for _ in range(20):
                await predictor.predict(image, signature=name)
            samples[name] = []
            for _ in range(args.requests):
                started = time.perf_counter()
                await predictor.predict(image, signature=name)
                samples[name].append((time.perf_counter() - started) * 1000)
        await predictor.close()
        return samples

    with tempfile.TemporaryDirectory(prefix="predictor-hop-") as scratch:
        repo = Path(scratch) / "models"
        shutil.copytree(args.version_dir, repo / DEFAULT_MODEL_NAME / args.version_dir.name)
        config = LocalServiceConfig(model_repo=repo, model_name=DEFAULT_MODEL_NAME, http_port=0, grpc_port=0,
                                    predictor_grpc_port=0, predictor_rest_port=0,
                                    enable_batching=not args.no_batching, log_dir=Path(scratch) / "logs")
        with LocalService(config) as stack:
            if not stack.wait_ready(180):
                raise SystemExit(f"no version became ready from {args.version_dir}")
            before = {name: in_process(name) for name in SIGNATURES}
            remote = asyncio.run(over_grpc(f"{config.host}:{config.predictor_grpc_port}"))
            after = {name: in_process(name) for name in SIGNATURES}
    for name in SIGNATURES:
        print(f"{name}: in-process p50 {statistics.median(before[name]):.2f} / {statistics.median(after[name]):.2f} ms "
              f"(before / after), over gRPC p50 {statistics.median(remote[name]):.2f} ms")


if __name__ == "__main__":
    main()
