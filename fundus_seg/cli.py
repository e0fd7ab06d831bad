"""`fundus-seg` console script: each component registers its own subcommands.

Components own their commands (`<component>/cli.py` exposes `register(subparsers)`),
so this file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMPONENT_CLIS = ("training_job.cli", "serving.cli", "fundus_seg.data_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fundus-seg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a component not built yet
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
