"""`fundus-seg serve | segment | benchmark | rollout` (rollout's own commands live in serving.rollout.cli).

Heavy imports (TensorFlow, KServe, gRPC) happen inside the commands, so `fundus-seg --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.rollout import cli as rollout_cli


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the segmentation service (predictor + transformer) on 127.0.0.1",
        description="Start the TF-Serving-protocol predictor and the KServe transformer, as in the cluster, "
                    "on this machine. New model versions in the repository are picked up while serving. "
                    "Ctrl-C stops both.")
    serve.add_argument("--http-port", type=int, default=8080, help="transformer REST port (KServe v1 and v2)")
    serve.add_argument("--grpc-port", type=int, default=8081, help="transformer gRPC port (Open Inference Protocol v2)")
    serve.add_argument("--model-repo", type=Path, default=BUNDLED_MODEL_REPO,
                       help="model repository holding <model>/<version>/ (default: the bundled models/)")
    serve.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    serve.add_argument("--predictor-grpc-port", type=int, default=8500)
    serve.add_argument("--predictor-rest-port", type=int, default=8501)
    serve.add_argument("--predictor-api", choices=["grpc", "rest"], default="grpc",
                       help="how the transformer calls the predictor (TF Serving gRPC or REST)")
    serve.add_argument("--no-batching", action="store_true",
                       help="turn off the predictor's batching of concurrent requests")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.set_defaults(func=run_serve)

    segment = subparsers.add_parser(
        "segment", help="segment fundus images with a running service; prints JSON per image",
        description="Send images to a running service (`fundus-seg serve`) and print one JSON line per image: "
                    "disc (and cup) geometry, measurements, confidence, model version, timings.")
    segment.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    where = segment.add_mutually_exclusive_group()
    where.add_argument("--url", help="transformer REST URL (default http://127.0.0.1:8080)")
    where.add_argument("--grpc", metavar="HOST:PORT", help="use gRPC (Open Inference Protocol v2), e.g. 127.0.0.1:8081")
    segment.add_argument("--overlay", type=Path, metavar="DIR",
                         help="write <image>-overlay.png (disc and cup contours, the vCDR, LOW CONFIDENCE) here")
    segment.add_argument("--masks", type=Path, metavar="DIR",
                         help="write <image>-mask.png (the disc) and, from a two-stage model, <image>-cup.png here")
    segment.add_argument("--laterality", choices=["L", "R"],
                         help="the eye of every image given (L or R): rim widths are then nasal/temporal and the "
                              "ISNT rule is judged; without it they are the image's left/right")
    segment.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    segment.add_argument("--version", help="model version number or label (default: what the service routes to)")
    segment.add_argument("--timeout", type=float, default=60.0)
    segment.set_defaults(func=run_segment)

    from serving import benchmark

    bench = subparsers.add_parser(
        "benchmark", help="latency/throughput of the service over REST and gRPC vs the in-process floor",
        description=benchmark.__doc__.splitlines()[0])
    benchmark.build_parser(bench)
    bench.set_defaults(func=lambda args: benchmark.main(args, "fundus-seg benchmark " + " ".join(sys.argv[2:])))

    rollout_cli.register(subparsers)


def run_serve(args: argparse.Namespace) -> int:
    import signal

    from fundus_seg.model_repository import list_versions
    from serving.local_service import LocalService, LocalServiceConfig

    # Installed explicitly: a process started in the background inherits SIGINT *ignored*, and
    # Python then keeps ignoring it. `kill` (SIGTERM) stops as cleanly as Ctrl-C.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)

    config = LocalServiceConfig(model_repo=args.model_repo, model_name=args.model_name, host=args.host,
                         http_port=args.http_port, grpc_port=args.grpc_port,
                         predictor_grpc_port=args.predictor_grpc_port, predictor_rest_port=args.predictor_rest_port,
                         predictor_api=args.predictor_api, enable_batching=not args.no_batching,
                         verbose=args.verbose)
    versions = list_versions(config.model_repo, config.model_name)
    print(f"fundus-seg serve: model repository {config.model_repo / config.model_name} "
          f"({'no version yet: ready once one is published' if not versions else 'starting'})", file=sys.stderr)
    stack = LocalService(config)
    try:
        stack.start()
        print(f"fundus-seg serve: REST {config.url}/v1/models/{config.model_name}:predict, "
              f"gRPC {config.grpc_target} (Open Inference Protocol v2); Ctrl-C stops", file=sys.stderr)
        if stack.wait_ready(120):
            print(f"fundus-seg serve: ready; try `fundus-seg segment IMAGE --url {config.url}`", file=sys.stderr)
        else:
            print(f"fundus-seg serve: no model version loaded yet; requests get 503 until one is published "
                  f"to {config.model_repo / config.model_name}/<version>/", file=sys.stderr)
        return stack.wait()
    except KeyboardInterrupt:
        print("fundus-seg serve: stopping ...", file=sys.stderr)
        return 0
    finally:
        stack.stop()


def run_segment(args: argparse.Namespace) -> int:
    from serving.client import SegmentationError, connect, overlay

    client = connect(args.url, args.grpc, args.model_name, args.timeout)
    for folder in (args.overlay, args.masks):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    try:
        for path in args.images:
            record: dict = {"image": str(path)}
            try:
                data = path.read_bytes()
                [result] = client.segment([data], version=args.version, laterality=args.laterality)
                record.update(result.to_dict())
                if args.masks is not None:
                    record["mask"] = str(_write(args.masks / f"{path.stem}-mask.png", result.mask_png))
                    if result.cup_png is not None:
                        record["cup_mask"] = str(_write(args.masks / f"{path.stem}-cup.png", result.cup_png))
                if args.overlay is not None:
                    record["overlay"] = str(_write(args.overlay / f"{path.stem}-overlay.png", overlay(data, result)))
            except (OSError, SegmentationError) as exc:
                failures += 1
                record["error"] = str(exc)
            print(json.dumps(record), flush=True)
    finally:
        client.close()
    return 1 if failures else 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
