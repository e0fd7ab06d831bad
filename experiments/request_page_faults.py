"""What one request's buffers cost in a process without TensorFlow (the transformer's): per hot-path step, the
median milliseconds and the page faults, with glibc's default malloc and with `serving.heap.keep_request_buffers`,
each in a fresh child process. The stage-2 map is not needed: the expert masks stand in for the answer's masks.

    .venv/bin/python experiments/request_page_faults.py [--image-id drishtiGS_002] [--repeats 100]

docs/BENCHMARKS.md, "Runs of 2026-12-07".
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME, SHARED_DATA

DRISHTI = SHARED_DATA / "drishti-gs1"


def child(image_id: str, repeats: int, kept: bool) -> dict[str, tuple[float, float]]:
    """{step: (median ms, page faults per call)}; TensorFlow is never imported here."""
    from serving.heap import keep_request_buffers

    if kept and not keep_request_buffers():
        raise SystemExit("malloc here is not glibc's: nothing to compare")
    from fundus_seg.model_repository import read_card
    from preprocessing.decode import decode_image, decode_mask
    from preprocessing.geometry import disc_geometry
    from preprocessing.measurements import measure
    from preprocessing.two_stage import Location, locate_input, segment_input
    from serving.transformer.result import mask_png

    config = read_card(BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME, 4).two_stage()
    data = (DRISHTI / "images" / f"{image_id}.jpg").read_bytes()
    disc = decode_mask((DRISHTI / "masks" / f"{image_id}_disc.png").read_bytes())
    cup = decode_mask((DRISHTI / "masks" / f"{image_id}_cup.png").read_bytes())
    geometry = disc_geometry(disc)
    location = Location(*geometry.centroid, 2 * geometry.equivalent_radius_px, peak=1.0, found=True)
    rgb = decode_image(data)
    steps = {
        "decode": lambda: decode_image(data),
        "stage 1's input": lambda: locate_input(rgb, config),
        "the disc-centred crop": lambda: segment_input(rgb, location, config),
        "measurements": lambda: measure(disc, cup, clean=False),
        "the two mask PNGs": lambda: (mask_png(disc), mask_png(cup)),
    }
    figures = {}
    for name, step in steps.items():
        step()
        samples, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            samples.append((time.perf_counter() - started) * 1000)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        figures[name] = (statistics.median(samples), faults / repeats)
    if "tensorflow" in sys.modules:
        raise SystemExit("TensorFlow was imported: this process no longer stands for the transformer's")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-id", default="drishtiGS_002")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.image_id, args.repeats, args.child == "kept")))
        return
    runs = {}
    for mode in ("default", "kept", "default", "kept"):  # twice each, alternating: the machine's speed drifts
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, "--image-id",
                              args.image_id, "--repeats", str(args.repeats)], check=True, capture_output=True,
                             text=True).stdout
        runs.setdefault(mode, []).append(json.loads(out.splitlines()[-1]))
    print(f"{args.image_id}, {args.repeats} calls per step, the median of two processes each:")
    print("| step | glibc's default: ms | page faults | keep_request_buffers: ms | page faults |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for step in runs["default"][0]:
        cells = []
        for mode in ("default", "kept"):
            ms = statistics.median(run[step][0] for run in runs[mode])
            faults = statistics.median(run[step][1] for run in runs[mode])
            cells += [f"{ms:.2f}", f"{faults:.0f}"]
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
