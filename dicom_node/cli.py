"""`fundus-seg dicom-node` (and `python -m dicom_node`): the C-STORE SCP with its model watcher."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from fundus_seg.errors import FundusSegError
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default 11112)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a pod)")
    parser.add_argument("--ae-title", default="FUNDUSSEG", help="this node's AE title (default FUNDUSSEG)")
    parser.add_argument("--forward", metavar="HOST:PORT:AET",
                        help="send each SEG object with C-STORE to this node (e.g. the PACS)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write each SEG (<uid>.dcm) and its FHIR Observation (<uid>.observation.json) here")
    parser.add_argument("--model-repo", default=str(BUNDLED_MODEL_REPO),
                        help="model repository, a folder or s3://bucket/prefix (default: the bundled models/)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--poll-s", type=float, default=5.0, help="seconds between looks for a newer version")
    parser.add_argument("--frame", type=int, default=None,
                        help="segment this frame (0-based) of multi-frame images (default: refuse them)")


def register(subparsers: argparse._SubParsersAction) -> None:
    node = subparsers.add_parser(
        "dicom-node", help="a DICOM node (C-STORE SCP) that segments every fundus photo it receives",
        description="Receive fundus photos by C-STORE (Ophthalmic Photography, VL Photographic), segment each "
                    "with the latest model version (picked up while running), and send the DICOM SEG object to "
                    "--forward and/or write it with its FHIR Observation to --out.")
    add_arguments(node)
    node.set_defaults(func=run_node)


def run_node(args: argparse.Namespace) -> int:
    from dicom_node.models import ModelWatcher
    from dicom_node.node import Delivery, Destination, FundusNode, serve
    from fundus_seg.quiet_tensorflow import load_tensorflow

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        forward = Destination.parse(args.forward) if args.forward else None
        delivery = Delivery(args.ae_title, forward, args.out)
    except ValueError as exc:
        raise FundusSegError(str(exc)) from None
    if not 0 < len(args.ae_title) <= 16:
        raise FundusSegError(f"--ae-title must have 1 to 16 characters, got {args.ae_title!r}")
    load_tensorflow(getattr(args, "verbose", False))
    watcher = ModelWatcher(args.model_repo, args.model_name)
    watcher.poll()  # start with the latest version, if there is one (else: 0xA700 until one appears)
    threading.Thread(target=watcher.run, args=(args.poll_s,), daemon=True, name="model-watcher").start()
    server = serve(FundusNode(watcher, delivery, frame=args.frame), args.host, args.port, args.ae_title, block=False)
    logging.getLogger("dicom_node").info("listening on %s:%d as %s", args.host, args.port, args.ae_title)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    watcher.stop()
    return 0
