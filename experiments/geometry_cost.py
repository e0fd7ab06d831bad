"""What measuring a disc mask costs, on the mask's bounding box (today) and on the whole image (before commit 4f0d713).

    .venv/bin/python experiments/geometry_cost.py

Times `preprocessing.geometry.disc_geometry` on drishtiGS_002's expert disc mask (1024 x 877), best of 5 x 50 calls,
against the whole-image version taken from git (`git show 4f0d713^:preprocessing/geometry.py`); docs/BENCHMARKS.md.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preprocessing.decode import decode_mask  # noqa: E402
from preprocessing.geometry import disc_geometry  # noqa: E402


def whole_image_version():
    source = subprocess.run(["git", "show", "4f0d713^:preprocessing/geometry.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "whole_image_geometry.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("whole_image_geometry", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.disc_geometry


def main() -> None:
    mask = decode_mask((ROOT.parent / "shared/data/drishti-gs1/masks/drishtiGS_002_disc.png").read_bytes())
    for name, measure in (("bounding box", disc_geometry), ("whole image", whole_image_version())):
        seconds = min(timeit.repeat(lambda: measure(mask), number=50, repeat=5)) / 50  # noqa: B023
        print(f"{name}: {seconds * 1000:.2f} ms per mask")


if __name__ == "__main__":
    main()
