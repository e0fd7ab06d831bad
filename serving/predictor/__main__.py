"""`python -m serving.predictor`: tensorflow_model_server's command line, on our predictor.

Flags keep TF Serving's names (underscores; dashed spellings work too), so one command line fits
both. Flags are parsed before TensorFlow is imported, so `--help` and flag errors are instant.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from serving.predictor.config import (
    BatchingConfig,
    ConfigError,
    PredictorConfig,
    ServerLimits,
    SignatureContract,
    TensorContract,
)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.predictor", description=__doc__.splitlines()[0])

    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines too")

    def flag(name: str, **kwargs) -> None:
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*spellings, dest=name, **kwargs)

    defaults = PredictorConfig.__dataclass_fields__
    flag("port", type=int, default=8500, help="gRPC port (0 = any free port)")
    flag("rest_api_port", type=int, default=8501, help="REST port (0 = any free port)")
    flag("host", default=defaults["host"].default, help="address to bind (default: all interfaces)")
    flag("model_name", default="default", help="name of the model given by --model_base_path")
    flag("model_base_path", type=Path, help="directory holding <version>/saved_model.pb")
    flag("model_config_file", type=Path, help="TF Serving ModelServerConfig text proto (many models, "
                                               "version policies and labels); re-read while running")
    flag("model_config_file_poll_wait_seconds", type=float, default=None,
         help="seconds between re-reads of --model_config_file (default: the file system poll "
              "interval; <= 0: read once)")
    flag("file_system_poll_wait_seconds", type=float, default=1.0,
         help="seconds between scans for new versions (<= 0: scan once)")
    flag("enable_batching", type=_bool, nargs="?", const=True, default=False,
         help="merge concurrent requests into batches")
    flag("batching_parameters_file", type=Path, help="TF Serving BatchingParameters text proto")
    batching = BatchingConfig()
    for name, value in vars(batching).items():
        flag(name, type=int, default=None, help=f"batching parameter (default {value})")
    flag("max_request_bytes", type=int, default=defaults["max_request_bytes"].default,
         help="largest accepted request body / gRPC message")
    flag("model_threads", type=int, default=defaults["model_threads"].default,
         help="worker threads running model calls")
    for name, value in vars(ServerLimits()).items():
        flag(name, type=type(value), default=None, help=f"server limit (default {value})")
    contract = SignatureContract()
    flag("required_signature", default=contract.name,
         help="signature every version must have before it serves ('' serves any loadable SavedModel)")
    flag("required_input", type=TensorContract.parse, action="append", default=[], metavar="KEY[:DTYPE[:SHAPE]]",
         help="an input of the required signature, e.g. images:float32:-1,128,128,3 (repeatable; "
              "given any, the inputs must be exactly these)")
    flag("required_output", type=TensorContract.parse, action="append", default=[], metavar="KEY[:DTYPE[:SHAPE]]",
         help="an output the required signature must have, e.g. disc_probability:float32 (repeatable)")
    flag("tensorflow_intra_op_parallelism", type=int, default=0)
    flag("tensorflow_inter_op_parallelism", type=int, default=0)
    flag("log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def config_from_args(args: argparse.Namespace) -> PredictorConfig:
    batching = None
    if args.enable_batching:
        batching = (BatchingConfig.from_file(args.batching_parameters_file)
                    if args.batching_parameters_file else BatchingConfig())
        for name in vars(BatchingConfig()):
            if getattr(args, name) is not None:  # explicit flags win over the file
                setattr(batching, name, getattr(args, name))
        batching.__post_init__()
    limits = ServerLimits(**{name: getattr(args, name) for name in vars(ServerLimits())
                             if getattr(args, name) is not None})
    if args.required_signature:
        contract = SignatureContract(args.required_signature, tuple(args.required_input), tuple(args.required_output))
    elif args.required_input or args.required_output:
        raise ConfigError("--required_input and --required_output need a --required_signature")
    else:
        contract = None
    return PredictorConfig(
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        model_config_file=args.model_config_file,
        host=args.host,
        grpc_port=args.port,
        rest_api_port=args.rest_api_port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        batching=batching,
        max_request_bytes=args.max_request_bytes,
        model_threads=args.model_threads,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        limits=limits,
        required_signature=contract,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        from fundus_seg.quiet_tensorflow import load_tensorflow

        load_tensorflow(verbose=args.verbose)  # the predictor's own lines first; TensorFlow's with --verbose
        from serving.heap import freeze_startup_heap
        from serving.predictor.server import PredictorServer

        freeze_startup_heap()  # TensorFlow's import heap: no full collection walks it during a hot swap
        PredictorServer(config).run()
    except ConfigError as exc:
        print(f"serving.predictor: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_code = main()
    # The server has stopped cleanly; skip the interpreter's teardown of TensorFlow (seconds).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
