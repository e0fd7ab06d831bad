"""`python -m training_job`: the container entrypoint of the retraining Job; the flags of `fundus-seg train`.

Exit status: 0 when the version is published (or this run id already was), 2 with one
`training_job: error: ...` line for a problem the user can fix (data, manifest, base version,
accelerator, storage, settings that cannot train such as `--epochs 0`), 3 when the run trained
but is not published because it regresses against the latest version (`--force` publishes
anyway), 143 after SIGTERM (the Job's next pod resumes from the checkpoint).
"""
from __future__ import annotations

import argparse
import sys

from fundus_seg.errors import FundusSegError, exit_code
from training_job.cli import add_train_flags, cmd_train

PROG = "python -m training_job"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up lines")
    add_train_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fundus_seg.quiet_tensorflow import load_tensorflow

    load_tensorflow(args.verbose)
    try:
        return cmd_train(args)
    except KeyboardInterrupt as exc:
        return exit_code(exc)
    except FundusSegError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
