"""`fundus-seg` console script: each component registers its own subcommands.

Components own their commands (`<component>/cli.py` exposes `register(subparsers)`),
so this file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from fundus_seg.errors import FundusSegError, exit_code

COMPONENT_CLIS = ("training_job.cli", "serving.cli", "fundus_seg.data_cli", "dicom_node.cli")
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
    except KeyboardInterrupt as exc:
        return exit_code(exc)
    except FundusSegError as exc:  # user-facing errors: one clear line, the exit code they carry
        print(f"fundus-seg {args.command}: error: {exc}", file=sys.stderr)
        return exit_code(exc)  # fundus_seg.errors: 2 settings, 3 refused publish, 143 SIGTERM


if __name__ == "__main__":
    sys.exit(main())
