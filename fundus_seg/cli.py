"""`fundus-seg` console script: each component registers its own subcommands.

Components own their commands (`<component>/cli.py` exposes `register(subparsers)`),
so this file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMPONENT_CLIS = ("training_job.cli", "serving.cli", "fundus_seg.data_cli")
TENSORFLOW_COMMANDS = {"train", "evaluate", "model-info", "benchmark"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fundus-seg", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's start-up lines (device probing, CPU features)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMPONENT_CLIS:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TENSORFLOW_COMMANDS:
        from fundus_seg.quiet_tensorflow import load_tensorflow

        load_tensorflow(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # user-facing errors: one clear line, non-zero exit
        from preprocessing.errors import FundusSegError

        if isinstance(exc, FundusSegError):
            print(f"fundus-seg {args.command}: error: {exc}", file=sys.stderr)
            return int(getattr(exc, "exit_code", 2))  # e.g. 143 after SIGTERM, 3 for a refused publish
        raise


if __name__ == "__main__":
    sys.exit(main())
