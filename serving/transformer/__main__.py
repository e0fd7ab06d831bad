"""`python -m serving.transformer`: the KServe transformer process.

Takes KServe's own flags (``--model_name``, ``--predictor_host``, ``--http_port``, ``--grpc_port``,
... exactly what an InferenceService passes) plus ours. KServe's `--protocol` means the Open
Inference Protocol, which TF Serving does not speak; how we talk to TF Serving is
``--predictor_api grpc|rest``. Our flags are parsed before KServe is imported, so ``--help`` and
flag errors are instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fundus_seg.units import MiB
from serving.transformer.config import (
    HttpLimits,
    TransformerConfig,
    TransformerConfigError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.transformer", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    defaults = TransformerConfig()
    parser.add_argument("--model_name", default=defaults.model_name)
    parser.add_argument("--predictor_host", default=defaults.predictor_host,
                        help="host:port of the predictor's gRPC port (or REST port with --predictor_api rest)")
    parser.add_argument("--predictor_api", choices=["grpc", "rest"], default=defaults.predictor_api,
                        help="TF Serving protocol used to call the predictor")
    parser.add_argument("--predictor_timeout_s", type=float, default=defaults.predictor_timeout_s)
    parser.add_argument("--rollout_file", type=Path, default=None,
                        help="one-machine canary split (<model repo>/rollout.json); re-read when it changes")
    parser.add_argument("--max_request_bytes", type=int, default=defaults.max_request_bytes,
                        help=f"largest request body / gRPC message (default {defaults.max_request_bytes // MiB} MiB)")
    parser.add_argument("--max_images", type=int, default=defaults.max_images, help="images per request")
    parser.add_argument("--decode_threads", type=int, default=defaults.workers,
                        help="threads decoding, preparing and post-processing images")
    parser.add_argument("--max_inflight_bytes", type=int, default=defaults.max_inflight_bytes,
                        help="request bodies held at once, all connections together (default "
                             f"{defaults.max_inflight_bytes // MiB} MiB); more get 503 + Retry-After")
    parser.add_argument("--pixel_budget", type=int, default=defaults.pixel_budget,
                        help="full-size pixels decoded or post-processed at once (default "
                             f"{defaults.pixel_budget:,}); sizes the memory limit, see docs/SERVING.md")
    parser.add_argument("--retained_pixels", type=int, default=defaults.retained_pixels,
                        help="two-stage versions: decoded pixels kept between stage 1 and the crops (default "
                             f"{defaults.retained_pixels:,}); an image that does not fit is decoded again instead")
    parser.add_argument("--drain_s", type=float, default=defaults.drain_s,
                        help="on SIGTERM, how long in-flight requests may take to finish")
    http = HttpLimits()
    parser.add_argument("--max_header_bytes", type=int, default=http.max_header_bytes,
                        help="request line + headers; larger get 431")
    parser.add_argument("--header_timeout_s", type=float, default=http.header_timeout_s,
                        help="a request's headers must arrive within this (and no body pause may be longer)")
    parser.add_argument("--body_timeout_s", type=float, default=http.body_timeout_s,
                        help="a request's whole body must arrive within this")
    parser.add_argument("--max_connections", type=int, default=http.max_connections,
                        help="open HTTP connections; more get 503")
    parser.add_argument("--verbose", action="store_true",
                        help="accepted for symmetry with the predictor; the transformer imports no TensorFlow")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all interfaces)")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, _ = build_parser().parse_known_args(argv)  # the rest are KServe's flags
    try:
        config = TransformerConfig(model_name=args.model_name, predictor_host=args.predictor_host,
                                   predictor_api=args.predictor_api, predictor_timeout_s=args.predictor_timeout_s,
                                   rollout_file=args.rollout_file, max_request_bytes=args.max_request_bytes,
                                   max_images=args.max_images, workers=args.decode_threads,
                                   max_inflight_bytes=args.max_inflight_bytes, pixel_budget=args.pixel_budget,
                                   retained_pixels=args.retained_pixels, drain_s=args.drain_s,
                                   http=HttpLimits(max_header_bytes=args.max_header_bytes,
                                                   header_timeout_s=args.header_timeout_s,
                                                   body_timeout_s=args.body_timeout_s,
                                                   max_connections=args.max_connections))
    except TransformerConfigError as exc:
        print(f"serving.transformer: error: {exc}", file=sys.stderr)
        return 2
    from serving.heap import freeze_startup_heap, keep_request_buffers

    keep_request_buffers()  # before any thread: each request's photo and masks reuse freed memory
    from serving.transformer.server import serve  # no TensorFlow: the TF Serving messages are serving.protos

    freeze_startup_heap()
    serve(config, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
