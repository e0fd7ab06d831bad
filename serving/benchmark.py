"""End-to-end serving benchmark next to the in-process floor, in one run on one machine.

    fundus-seg benchmark [--image IMG] [--requests 200] [--concurrency 8] [--write docs/BENCHMARKS.md]
    python -m serving.benchmark ...  (the same)

It starts the one-machine service (predictor + transformer, as `fundus-seg serve` does) on free
ports and measures, on one DRISHTI image:

* the floor: decode + preprocess + model call in this process (the SavedModel loaded here), at
  batch 1 (latency) and batched (throughput), plus the post-processing the service adds;
* REST (KServe v1 JSON, base64) and gRPC (OIP v2, raw bytes) at concurrency 1: latency p50/p99;
* both at concurrency N: throughput (one image per request; the predictor batches across requests).

Targets: gRPC p50 <= 1.3x the floor's batch-1 p50; throughput at concurrency N >= 0.8x the floor's
batched throughput. The breakdown says where the time goes (the transformer's own timings per
stage, the hops, and the client's base64/JSON encoding).
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fundus_seg.paths import (
    BUNDLED_MODEL_REPO,
    DEFAULT_MODEL_NAME,
    REPO_ROOT,
    SHARED_DATA,
)

DEFAULT_IMAGE = SHARED_DATA / "drishti-gs1" / "images" / "drishtiGS_002.jpg"
GRPC_P50_TARGET = 1.3  # gRPC p50 / floor batch-1 p50 at most
THROUGHPUT_TARGET = 0.8  # service throughput / floor batched throughput at least


@dataclass
class BenchmarkConfig:
    image: Path = DEFAULT_IMAGE
    requests: int = 200
    concurrency: int = 8
    batch: int = 8
    warmup: int = 10
    model_repo: Path = BUNDLED_MODEL_REPO
    model_name: str = DEFAULT_MODEL_NAME
    enable_batching: bool = True


@dataclass
class Latency:
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_ms, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples_ms, 99))


@dataclass
class Floor:
    """The in-process numbers: the issue's floor (no post-processing) and the full pipeline."""

    batch1: Latency  # decode + preprocess + model call, one image
    full: Latency  # the same + post-processing (what the service does per image)
    stages_ms: dict[str, float]  # medians: decode_preprocess, predict, postprocess
    batched_ips: float  # decode + preprocess (thread pool) + one model call per batch
    full_batched_ips: float  # the same + post-processing in the pool
    model: str


@dataclass
class Report:
    config: BenchmarkConfig
    floor: Floor
    latency: dict[str, Latency] = field(default_factory=dict)  # "rest"/"grpc" at concurrency 1
    throughput_ips: dict[str, float] = field(default_factory=dict)  # at concurrency N
    server_stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    encode_ms: dict[str, float] = field(default_factory=dict)

    @property
    def grpc_ratio(self) -> float:
        return self.latency["grpc"].p50 / self.floor.batch1.p50

    @property
    def throughput_ratio(self) -> float:
        return max(self.throughput_ips.values()) / self.floor.batched_ips

    def table(self) -> str:
        c, b, floor = self.config.concurrency, self.config.batch, self.floor
        rows = [("in-process floor (decode + preprocess + model), batch 1", floor.batch1, 1000 / floor.batch1.p50,
                 "1.00x"),
                (f"in-process floor, batch {b}", None, floor.batched_ips, "1.00x of batched"),
                ("in-process + post-processing, batch 1", floor.full, 1000 / floor.full.p50,
                 f"{floor.full.p50 / floor.batch1.p50:.2f}x"),
                (f"in-process + post-processing, batch {b}", None, floor.full_batched_ips,
                 f"{floor.full_batched_ips / floor.batched_ips:.2f}x of batched")]
        for name, label in (("rest", "REST v1 (JSON, base64)"), ("grpc", "gRPC OIP v2 (raw bytes)")):
            latency = self.latency[name]
            rows.append((f"{label}, c=1", latency, 1000 / latency.p50, f"{latency.p50 / floor.batch1.p50:.2f}x"))
        for name, label in (("rest", "REST v1"), ("grpc", "gRPC OIP v2")):
            rows.append((f"{label}, c={c}", None, self.throughput_ips[name],
                         f"{self.throughput_ips[name] / floor.batched_ips:.2f}x of batched"))
        lines = ["| path | p50 ms | p99 ms | images/s | vs floor |", "| --- | ---: | ---: | ---: | --- |"]
        for name, latency, ips, ratio in rows:
            p50, p99 = (f"{latency.p50:.1f}", f"{latency.p99:.1f}") if latency else ("", "")
            lines.append(f"| {name} | {p50} | {p99} | {ips:.1f} | {ratio} |")
        return "\n".join(lines)

    def verdict(self) -> str:
        grpc_ok = self.grpc_ratio <= GRPC_P50_TARGET
        tput_ok = self.throughput_ratio >= THROUGHPUT_TARGET
        full = self.floor.full
        return (f"- gRPC p50 = {self.grpc_ratio:.2f}x the floor's batch-1 p50 (target <= {GRPC_P50_TARGET}x): "
                f"{'met' if grpc_ok else 'MISSED'}; {self.latency['grpc'].p50 / full.p50:.2f}x the in-process "
                f"pipeline with post-processing\n"
                f"- throughput at c={self.config.concurrency} = {self.throughput_ratio:.2f}x the floor's batched "
                f"throughput (target >= {THROUGHPUT_TARGET}x): {'met' if tput_ok else 'MISSED'}; "
                f"{max(self.throughput_ips.values()) / self.floor.full_batched_ips:.2f}x the in-process pipeline "
                f"with post-processing")

    def breakdown(self) -> str:
        lines = ["| where (median ms per image) | in-process | gRPC c=1 | REST c=1 |", "| --- | ---: | ---: | ---: |"]
        floor = self.floor.stages_ms
        grpc, rest = self.server_stages_ms.get("grpc", {}), self.server_stages_ms.get("rest", {})
        fmt = lambda x: "" if x is None else f"{x:.1f}"  # noqa: E731
        for key, label in (("decode_preprocess", "decode + preprocess"), ("predict", "model call (+ hop to predictor)"),
                           ("postprocess", "post-process + PNG")):
            lines.append(f"| {label} | {fmt(floor.get(key))} | {fmt(grpc.get(key))} | {fmt(rest.get(key))} |")
        lines.append(f"| transformer total | {fmt(self.floor.full.p50)} | {fmt(grpc.get('total'))} "
                     f"| {fmt(rest.get('total'))} |")
        hops = {name: self.latency[name].p50 - stages["total"]
                for name, stages in self.server_stages_ms.items() if "total" in stages}
        lines.append(f"| client + transformer hop (e2e p50 - transformer total) | | {fmt(hops.get('grpc'))} "
                     f"| {fmt(hops.get('rest'))} |")
        lines.append(f"| client request encoding (base64 + JSON / protobuf) | | {fmt(self.encode_ms.get('grpc'))} "
                     f"| {fmt(self.encode_ms.get('rest'))} |")
        return "\n".join(lines)

    def markdown(self, command: str) -> str:
        return f"""# Serving benchmark

Produced by `{command}` ({time.strftime('%Y-%m-%d')}); rerun it to refresh this file.

- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, no GPU; load from other
  processes during the run is not controlled, so compare the rows of one run, not runs of different days
- model: {self.floor.model}
- image: `{_relative(self.config.image)}`, one image per request; {self.config.requests} requests per row
  after {self.config.warmup} warm-up requests; the predictor's cross-request batching is
  {'on' if self.config.enable_batching else 'off'}
- floor: decode + preprocess + model call in the benchmark's own Python process (the SavedModel
  loaded there), as the issue defines it; batched = {self.config.batch} images prepared in a thread pool,
  one model call. For a two-stage version the "model call" is both stages with what lies between
  them: stage 1, the disc-centred crops, stage 2, and the second look (crops cut again and stage 2
  again for the images that need it). "+ post-processing" adds what the service also does per image:
  the probabilities back at full resolution, threshold, largest component, hole filling, the cup,
  measurements and confidence, geometry and the mask PNGs

## Results

{self.table()}

{self.verdict()}

## Where the time goes

{self.breakdown()}

The service's stages are the transformer's own `timings_ms` (medians over the c=1 requests);
"model call" there includes the gRPC hop to the predictor and its batching window.

{self.gap()}
"""

    def gap(self) -> str:
        """The gRPC c=1 gap to the floor, split into the parts the breakdown measures."""
        service, floor = self.server_stages_ms.get("grpc", {}), self.floor.stages_ms
        if "total" not in service:
            return ""
        parts = [
            ("post-processing at full resolution + PNG, which the floor does not do", service["postprocess"]),
            ("decode + preprocess running slower in the transformer than in-process (client, transformer and "
             "predictor share the CPU cores, with whatever else runs on the machine)",
             service["decode_preprocess"] - floor["decode_preprocess"]),
            ("the hop to the predictor (a 196 KB tensor out, 64 KB back) and its batching window",
             service["predict"] - floor["predict"]),
            ("client <-> transformer (HTTP/2, KServe's request handling, the response)",
             self.latency["grpc"].p50 - service["total"]),
        ]
        gap = self.latency["grpc"].p50 - self.floor.batch1.p50
        lines = [f"Of the {gap:.1f} ms between the gRPC p50 and the floor's p50:"]
        lines += [f"- {ms:.1f} ms: {what}" for what, ms in parts]
        rest = gap - sum(ms for _, ms in parts)
        lines.append(f"- {rest:.1f} ms: the rest (the transformer's own bookkeeping between stages)")
        return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT.parent))
    except ValueError:
        return str(path)


def latest_version_dir(model_repo: Path, model_name: str) -> Path:
    from fundus_seg.model_repository import local_version

    return local_version(Path(model_repo) / model_name)


@dataclass
class InProcess:
    """The transformer's work for one version, in this process: prepare an image, run the model part on a
    batch (both stages with the crops and the second look between them, for a two-stage version), finish."""

    prepare: Callable[[bytes], Any]
    model: Callable[[list, ThreadPoolExecutor | None], list]
    finish: Callable[[Any, Any], Any]
    pipeline: str


def in_process(version) -> InProcess:
    """The same steps the transformer runs for `version` (a `LoadedVersion`), with the version's own card."""
    from preprocessing.decode import decode_image
    from preprocessing.pipeline import prepare
    from preprocessing.two_stage import locate_input, read_location, refine, segment_input
    from serving.transformer.result import answer_single_stage, answer_two_stage

    card = version.card
    if version.segment is None:
        def model(prepared: list, pool=None) -> list:
            return list(version.predict(np.stack([p.input for p in prepared])))

        return InProcess(lambda data: prepare(data, card.preprocess), model,
                         lambda p, probability: answer_single_stage(probability, p.box, p.input, card.threshold),
                         "single-stage")
    config = card.two_stage()

    def prepare_two(data: bytes):
        rgb = decode_image(data)
        return rgb, locate_input(rgb, config)

    def model_two(states: list, pool: ThreadPoolExecutor | None = None) -> list:
        each = pool.map if pool is not None else map
        first = version.predict(np.stack([stage1.input for _, stage1 in states]))

        def cut(state, probability):
            rgb, stage1 = state
            located = read_location(probability, stage1.box, config.threshold)
            return [located, stage1.fov, *segment_input(rgb, located, config)]

        looks = list(each(cut, states, first))  # [located, fov, crop, square]
        second = version.segment(np.stack([look[2] for look in looks]))

        def look_again(state, look, probability):
            better = refine(probability, look[3], look[0], config)
            return None if better is None else (better, *segment_input(state[0], better, config))

        again = list(each(look_again, states, looks, second))
        probabilities = list(second)
        redo = [i for i, a in enumerate(again) if a is not None]
        if redo:
            for i, probability in zip(redo, version.segment(np.stack([again[i][1] for i in redo])), strict=True):
                probabilities[i] = probability
        return [(probabilities[i], again[i][2] if again[i] else look[3], look[0], again[i][0] if again[i] else look[0],
                 again[i] is not None, look[1]) for i, look in enumerate(looks)]

    def finish_two(state, out):
        probability, square, located, final, second_look, fov = out
        return answer_two_stage(probability, square, located, final, second_look, fov, config)

    return InProcess(prepare_two, model_two, finish_two, "two-stage")


def measure_floor(image: bytes, version_dir: Path, requests: int, batch: int, warmup: int) -> Floor:
    from fundus_seg.model_repository import load_version

    version = load_version(version_dir)  # the same work the transformer does: the version's own card
    steps = in_process(version)
    params = version.parameters
    describe = (f"`{_relative(version_dir)}` ({steps.pipeline}, {params / 1e6:.2f} M parameters)" if params
                else f"`{version_dir}` ({steps.pipeline})")

    stages: dict[str, list[float]] = {"decode_preprocess": [], "predict": [], "postprocess": []}
    for i in range(warmup + requests):
        times = [time.perf_counter()]
        prepared = steps.prepare(image)
        times.append(time.perf_counter())
        [out] = steps.model([prepared], None)
        times.append(time.perf_counter())
        steps.finish(prepared, out)
        times.append(time.perf_counter())
        if i >= warmup:
            for key, (a, b) in zip(stages, itertools.pairwise(times), strict=True):
                stages[key].append((b - a) * 1000)

    with ThreadPoolExecutor(batch) as pool:
        rounds = max(3, requests // batch)
        ips = []
        for post in (False, True):
            for i in range(1 + rounds):
                if i == 1:
                    started = time.perf_counter()
                prepared = list(pool.map(steps.prepare, [image] * batch))
                outs = steps.model(prepared, pool)
                if post:
                    list(pool.map(steps.finish, prepared, outs))
            ips.append(rounds * batch / (time.perf_counter() - started))
    floor = [a + b for a, b in zip(stages["decode_preprocess"], stages["predict"], strict=True)]
    full = [a + b for a, b in zip(floor, stages["postprocess"], strict=True)]
    return Floor(Latency(floor), Latency(full), {k: statistics.median(v) for k, v in stages.items()},
                 ips[0], ips[1], describe)


def measure_latency(segment: Callable[[], list], requests: int) -> tuple[Latency, dict[str, float]]:
    samples, timings = [], []
    for _ in range(requests):
        started = time.perf_counter()
        [result] = segment()
        samples.append((time.perf_counter() - started) * 1000)
        timings.append(result.timings_ms)
    stages = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    return Latency(samples), stages


def measure_throughput(segment: Callable[[], list], requests: int, concurrency: int) -> float:
    remaining = [requests]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            segment()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return requests / (time.perf_counter() - started)


def encode_costs(image: bytes, pb) -> dict[str, float]:
    """What the client pays to build one request: base64 + JSON (REST) vs one protobuf (gRPC)."""
    def rest() -> bytes:
        return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}]}).encode()

    def grpc() -> bytes:
        return pb.ModelInferRequest(model_name="m", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="image_bytes", datatype="BYTES", shape=[1],
            contents=pb.InferTensorContents(bytes_contents=[image]))]).SerializeToString()

    costs = {}
    for name, fn in (("rest", rest), ("grpc", grpc)):
        started = time.perf_counter()
        for _ in range(50):
            fn()
        costs[name] = (time.perf_counter() - started) * 1000 / 50
    return costs


def run(config: BenchmarkConfig, log: Callable[[str], None] = print) -> Report:
    from serving.client import GrpcClient, RestClient, oip_protos
    from serving.local_service import LocalService, LocalServiceConfig, LocalServiceError

    image = Path(config.image).read_bytes()
    version_dir = latest_version_dir(config.model_repo, config.model_name)
    with tempfile.TemporaryDirectory(prefix="fundus-bench-") as logs:
        stack_config = LocalServiceConfig(model_repo=config.model_repo, model_name=config.model_name, http_port=0,
                                   grpc_port=0, predictor_grpc_port=0, predictor_rest_port=0,
                                   enable_batching=config.enable_batching, log_dir=Path(logs))
        log(f"starting the service on {stack_config.url} and {stack_config.grpc_target} ...")
        with LocalService(stack_config) as stack:
            if not stack.wait_ready(180):
                raise LocalServiceError(f"no model version became ready in {config.model_repo}")
            log(f"measuring the in-process floor on {version_dir} ...")
            report = Report(config, measure_floor(image, version_dir, config.requests, config.batch, config.warmup))
            clients = {"rest": RestClient(stack_config.url, config.model_name),
                       "grpc": GrpcClient(stack_config.grpc_target, config.model_name)}
            for name, client in clients.items():
                segment = lambda client=client: client.segment([image])  # noqa: E731
                for _ in range(config.warmup):
                    segment()
                log(f"{name}: latency at concurrency 1 ...")
                report.latency[name], report.server_stages_ms[name] = measure_latency(segment, config.requests)
                log(f"{name}: throughput at concurrency {config.concurrency} ...")
                report.throughput_ips[name] = measure_throughput(segment, config.requests, config.concurrency)
            report.encode_ms = encode_costs(image, oip_protos()[0])
            for client in clients.values():
                client.close()
    return report


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m serving.benchmark", description=__doc__.splitlines()[0])
    defaults = BenchmarkConfig()
    parser.add_argument("--image", type=Path, default=defaults.image,
                        help="a fundus image (default: a DRISHTI-GS1 image)")
    parser.add_argument("--requests", type=int, default=defaults.requests, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="batch size of the in-process floor")
    parser.add_argument("--model-repo", type=Path, default=defaults.model_repo)
    parser.add_argument("--model-name", default=defaults.model_name)
    parser.add_argument("--no-batching", action="store_true", help="turn off the predictor's cross-request batching")
    parser.add_argument("--write", nargs="?", type=Path, const=REPO_ROOT / "docs" / "BENCHMARKS.md", default=None,
                        metavar="FILE", help="write the report as Markdown (default file: docs/BENCHMARKS.md)")
    return parser


def main(args: argparse.Namespace, command: str = "fundus-seg benchmark") -> int:
    config = BenchmarkConfig(image=args.image, requests=args.requests, concurrency=args.concurrency, batch=args.batch,
                             model_repo=args.model_repo, model_name=args.model_name,
                             enable_batching=not args.no_batching)
    report = run(config)
    print()
    print(report.table())
    print()
    print(report.verdict())
    print()
    print(report.breakdown())
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(report.markdown(command))
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    import sys

    parsed = build_parser().parse_args()
    sys.exit(main(parsed, "python -m serving.benchmark " + " ".join(sys.argv[1:])))
