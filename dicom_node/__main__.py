"""`python -m dicom_node ...`: the same as `fundus-seg dicom-node ...` (the container's entrypoint)."""
from __future__ import annotations

import argparse
import sys

from dicom_node.cli import add_arguments, run_node
from fundus_seg.errors import FundusSegError, exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_node(args)
    except FundusSegError as exc:
        print(f"dicom-node: error: {exc}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
