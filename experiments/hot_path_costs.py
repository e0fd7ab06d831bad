"""What each CPU step of the two-stage hot path costs on one photo, in this process, one step at a time: the
transformer's own work around the model calls (the floor's too), so docs/BENCHMARKS.md can say where the
milliseconds outside the model go. The JPEG decode is timed on both of its paths (OpenCV's, taken for ordinary
JPEGs, and Pillow's, taken for the rest), alternating, so a machine whose speed drifts slows both alike. With
the servers' malloc settings (`serving.heap`); experiments/request_page_faults.py measures what they save.

    .venv/bin/python experiments/hot_path_costs.py [--image shared/.../drishtiGS_002.jpg] [--version-dir models/optic-disc/4]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fundus_seg.model_repository import load_version
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME, SHARED_DATA
from preprocessing import decode
from preprocessing.confidence import field_of_view
from preprocessing.measurements import measure
from preprocessing.two_stage import finish, locate_input, masks_from, read_location, refine, segment_input
from serving.heap import keep_request_buffers
from serving.transformer.result import TWO_STAGE, answer_two_stage, geometry, mask_png, render


def median_ms(step: Callable[[], object], repeats: int) -> float:
    step()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SHARED_DATA / "drishti-gs1" / "images" / "drishtiGS_002.jpg")
    parser.add_argument("--version-dir", type=Path, default=BUNDLED_MODEL_REPO / DEFAULT_MODEL_NAME / "4")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    keep_request_buffers()  # as the transformer and the benchmark's floor run (serving.heap)

    data = args.image.read_bytes()
    version = load_version(args.version_dir)
    config = version.card.two_stage()
    opencv_path = decode._opencv_jpeg
    pillow_only = lambda data, image: None  # noqa: E731 - the fast path declined: Pillow's decode
    paths: dict[str, list[float]] = {"opencv": [], "pillow": []}
    for _ in range(5):
        for name, fast in (("opencv", opencv_path), ("pillow", pillow_only)):
            decode._opencv_jpeg = fast
            paths[name].append(median_ms(lambda: decode.decode_image(data), args.repeats // 5))
    decode._opencv_jpeg = opencv_path

    rgb = decode.decode_image(data)
    stage1 = locate_input(rgb, config)
    located = read_location(np.asarray(version.predict(stage1.input[None]))[0], stage1.box, config.threshold)
    crop, square = segment_input(rgb, located, config)
    probability = np.asarray(version.segment(crop[None]))[0]
    disc, cup = masks_from(probability, square, config)
    answer = finish(probability, square, located, located, False, stage1.fov, config)
    steps: dict[str, Callable[[], object]] = {
        "stage 1's input (10% crop, resize, CLAHE)": lambda: locate_input(rgb, config),
        "of which the field of view": lambda: field_of_view(rgb),
        "the disc-centred crop (stage 2's input)": lambda: segment_input(rgb, located, config),
        "the second look's decision": lambda: refine(probability, square, located, config),
        "post-processing: masks on the original grid": lambda: masks_from(probability, square, config),
        "post-processing: measurements (rim by sector)": lambda: measure(disc, cup, None, clean=False),
        "post-processing: the whole answer (masks, measurements, confidence)": lambda: finish(
            probability, square, located, located, False, stage1.fov, config),
        "the two mask PNGs and geometries": lambda: render(answer, TWO_STAGE),
        "one mask PNG": lambda: mask_png(answer.disc),
        "one geometry": lambda: geometry(answer.disc),
        "all of post-processing (what the transformer runs)": lambda: answer_two_stage(
            probability, square, located, located, False, stage1.fov, config),
    }
    height, width = rgb.shape[:2]
    print(f"{args.image.name} ({width} x {height}), {args.repeats} repeats per step, medians:")
    print(f"  decode, OpenCV's path: {statistics.median(paths['opencv']):.2f} ms; Pillow's path: "
          f"{statistics.median(paths['pillow']):.2f} ms")
    for name, step in steps.items():
        print(f"  {name}: {median_ms(step, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
