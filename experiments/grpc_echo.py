"""What Python gRPC alone costs per call on this machine: a grpc.aio server in a child process answers a 128 KB
reply (stage 2's two 128x128 float32 maps) to a 48 KB request (one 128x128x3 uint8 crop), with nothing else
done, optionally after a hop to a worker thread (as the predictor hands a Predict to its model thread), or over a
Unix domain socket instead of loopback TCP (what a collocated transformer and predictor could share). The
floor under `experiments/predictor_hop.py`'s figure for one Predict beyond the model.

    .venv/bin/python experiments/grpc_echo.py [--calls 500]

docs/BENCHMARKS.md, "Runs of 2026-12-07".
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from serving.local_service import free_port

REQUEST, REPLY = b"x" * (128 * 128 * 3), b"y" * (128 * 128 * 2 * 4)


async def serve(address: str, thread_hop: bool) -> None:
    pool = ThreadPoolExecutor(2)

    async def echo(request: bytes, context) -> bytes:
        if thread_hop:
            await asyncio.get_running_loop().run_in_executor(pool, int)
        return REPLY

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int) -> None:
    """The same echo on grpcio's synchronous server: the handler runs in one of its pool threads."""
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: REPLY)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def round_trips(address: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/Echo/Call")
        await channel.channel_ready()
        for _ in range(50):
            await call(REQUEST)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await call(REQUEST)
            samples.append((time.perf_counter() - started) * 1000)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--thread-hop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sync-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.sync_server:
            serve_sync(int(args.serve.rsplit(":", 1)[1]))
        else:
            asyncio.run(serve(args.serve, args.thread_hop))
        return
    variants = {"grpc.aio, no worker-thread hop": [], "grpc.aio, a worker-thread hop": ["--thread-hop"],
                "the synchronous server (handler in its pool thread)": ["--sync-server"],
                "grpc.aio over a Unix domain socket": ["--unix"]}
    socket_dir = tempfile.mkdtemp(prefix="grpc-echo-")
    for name, flags in variants.items():
        address = f"unix://{socket_dir}/echo.sock" if "--unix" in flags else f"127.0.0.1:{free_port()}"
        server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", address,
                                   *(f for f in flags if f != "--unix")])
        try:
            samples = asyncio.run(round_trips(address, args.calls))
        finally:
            server.terminate()
            server.wait(10)
        print(f"{name}: p50 {statistics.median(samples):.2f} ms, "
              f"p90 {sorted(samples)[int(len(samples) * 0.9)]:.2f} ms")
    shutil.rmtree(socket_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
