"""What one Predict to the predictor costs beyond the model: the same signature called in this process and
over gRPC (the transformer's client), batch 1, uint8 input, on a quiet one-machine predictor.

    .venv/bin/python experiments/predictor_hop.py [--version-dir models/optic-disc/4] [--requests 200] [--no-batching]
        [--minimal] [--sync-client]

docs/BENCHMARKS.md, "Runs of 2026-12-06". The in-process figure is taken before and after the gRPC one.
`--minimal` also times a bare server in a child process: a synchronous grpc.server whose handler thread reads the
TensorProto, calls the signature and writes the reply, with none of the predictor's version management, validation,
batching or metrics, on one TensorFlow op thread as the predictor runs; the child first times the same calls in its
own process on that one thread. What the predictor's own code costs per Predict is its figure less the bare
server's (docs/BENCHMARKS.md, "A bare server"). `--sync-client` alternates, request by request, the transformer's
grpc.aio client with a synchronous stub called in a worker thread (docs/BENCHMARKS.md, "Three more probes").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fundus_seg.model_repository import SEGMENT_SIGNATURE, SERVING_SIGNATURE
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.local_service import LocalService, LocalServiceConfig, free_port
from serving.transformer.predictor_client import GrpcPredictor

SIGNATURES = (SERVING_SIGNATURE, SEGMENT_SIGNATURE)
WARM_UP = 20


def bare_server(version_dir: str, port: int, requests: int) -> None:
    """The child of --minimal: time the signatures here on one op thread, print that, then serve them bare."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    import tensorflow as tf

    from serving.protos.tensorflow.core.framework import types_pb2
    from serving.protos.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    tf.config.threading.set_intra_op_parallelism_threads(1)
    loaded = tf.saved_model.load(version_dir)
    functions = {name: loaded.signatures[name] for name in SIGNATURES}
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3), dtype=np.uint8))
    in_process = {}
    for name, function in functions.items():
        [key] = function.structured_input_signature[1]
        samples = []
        for i in range(WARM_UP + requests):
            started = time.perf_counter()
            {k: v.numpy() for k, v in function(**{key: image}).items()}
            if i >= WARM_UP:
                samples.append((time.perf_counter() - started) * 1000)
        in_process[name] = statistics.median(samples)

    class Bare(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            function = functions[request.model_spec.signature_name]
            [key] = function.structured_input_signature[1]
            tensor = request.inputs[key]
            array = np.frombuffer(tensor.tensor_content, np.uint8).reshape([d.size for d in tensor.tensor_shape.dim])
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = 1
            for name, value in function(**{key: tf.constant(array)}).items():
                value = value.numpy()
                proto = response.outputs[name]
                proto.dtype = types_pb2.DT_FLOAT
                proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=s) for s in value.shape)
                proto.tensor_content = value.tobytes()
            return response

    server = grpc.server(ThreadPoolExecutor(4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(json.dumps(in_process), flush=True)
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, default=BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME / "4")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-batching", action="store_true")
    parser.add_argument("--minimal", action="store_true", help="also time a bare server (see the docstring)")
    parser.add_argument("--sync-client", action="store_true",
                        help="alternate the grpc.aio client with a synchronous stub in a thread")
    parser.add_argument("--bare-server", nargs=2, metavar=("VERSION_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server[0], int(args.bare_server[1]), args.requests)
        return

    import tensorflow as tf

    image = np.random.default_rng(0).integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(args.version_dir))
    functions = {name: loaded.signatures[name] for name in SIGNATURES}

    def in_process(name: str) -> list[float]:
        function = functions[name]
        [key] = function.structured_input_signature[1]
        samples = []
        for i in range(WARM_UP + args.requests):
            started = time.perf_counter()
            function(**{key: tf.constant(image)})
            if i >= WARM_UP:
                samples.append((time.perf_counter() - started) * 1000)
        return samples

    async def over_grpc(target: str) -> dict[str, list[float]]:
        predictor = GrpcPredictor(target, DEFAULT_MODEL_NAME)
        samples: dict[str, list[float]] = {}
        for name in SIGNATURES:
            for _ in range(WARM_UP):
                await predictor.predict(image, signature=name)
            samples[name] = []
            for _ in range(args.requests):
                started = time.perf_counter()
                await predictor.predict(image, signature=name)
                samples[name].append((time.perf_counter() - started) * 1000)
        await predictor.close()
        return samples

    async def aio_against_sync(target: str) -> dict[str, dict[str, list[float]]]:
        """The same Predict through the transformer's grpc.aio client and a synchronous stub in a worker thread,
        alternating request by request (which goes first alternates too), so drift slows both alike."""
        import grpc

        from serving.protos.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        from serving.transformer.predictor_client import INPUT, OUTPUTS, to_tensor_proto

        predictor = GrpcPredictor(target, DEFAULT_MODEL_NAME)
        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1),
                                                         ("grpc.max_receive_message_length", -1)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        loop = asyncio.get_running_loop()

        def sync_predict(name: str) -> None:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = DEFAULT_MODEL_NAME, name
            request.inputs[INPUT].CopyFrom(to_tensor_proto(image))
            request.output_filter.extend(OUTPUTS[name])
            stub.Predict(request, timeout=30)

        clients = {"grpc.aio": lambda name: predictor.predict(image, signature=name),
                   "sync stub in a thread": lambda name: loop.run_in_executor(None, sync_predict, name)}
        samples = {client: {name: [] for name in SIGNATURES} for client in clients}
        for i in range(WARM_UP + args.requests):
            for client, call in list(clients.items())[:: 1 if i % 2 else -1]:
                for name in SIGNATURES:
                    started = time.perf_counter()
                    await call(name)
                    if i >= WARM_UP:
                        samples[client][name].append((time.perf_counter() - started) * 1000)
        await predictor.close()
        channel.close()
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
            clients = (asyncio.run(aio_against_sync(f"{config.host}:{config.predictor_grpc_port}"))
                       if args.sync_client else {})
    for name in SIGNATURES:
        print(f"{name}: in-process p50 {statistics.median(before[name]):.2f} / {statistics.median(after[name]):.2f} ms "
              f"(before / after), over gRPC p50 {statistics.median(remote[name]):.2f} ms")
    for client, by_signature in clients.items():
        print(f"{client}, alternating: " + ", ".join(
            f"{name} p50 {statistics.median(values):.2f} ms" for name, values in by_signature.items()))
    if args.minimal:
        port = free_port()
        child = subprocess.Popen([sys.executable, __file__, "--bare-server", str(args.version_dir), str(port),
                                  "--requests", str(args.requests)], stdout=subprocess.PIPE, text=True)
        try:
            one_thread = json.loads(child.stdout.readline())
            bare = asyncio.run(over_grpc(f"127.0.0.1:{port}"))
        finally:
            child.kill()
            child.wait()
        for name in SIGNATURES:
            print(f"{name}: bare server: in-process on one op thread p50 {one_thread[name]:.2f} ms, "
                  f"over gRPC p50 {statistics.median(bare[name]):.2f} ms")


if __name__ == "__main__":
    main()
