"""End-to-end serving benchmark next to the in-process floor, in one run on one machine.

    fundus-seg benchmark [--image IMG] [--requests 200] [--concurrency 8] [--write docs/BENCHMARKS.md] [--json]
    python -m serving.benchmark ...  (the same)

It serves a copy of the latest version with the one-machine service (predictor + transformer, as
`fundus-seg serve` does) on free ports and measures, on one DRISHTI image:

* the floor: the service's whole work in this process (decode, both stages' preprocessing and
  model calls, post-processing at full resolution, measurements, the mask PNGs; the SavedModel
  loaded here), at batch 1 (latency, and the model calls' own share of it) and batched in a
  thread pool (throughput);
* REST (KServe v1 JSON, base64) and gRPC (OIP v2, raw bytes) at concurrency 1: latency p50/p99;
* both at concurrency N: throughput (one image per request; the predictor batches across requests);
* the rows above in turn, `requests / rounds` requests at a time (the order rotating), so a machine
  whose speed drifts during the run slows the floor and the service alike;
* a hot swap: gRPC requests at concurrency 1 while a new version is published and loaded, p99 of
  those against the steady p99 just before.

Targets (issue #11): gRPC p50 <= 1.2x and REST p50 <= 1.3x the floor's p50; throughput at concurrency
N >= 0.9x the floor's batched throughput over both; p99 during a swap <= 2x the steady p99; the
floor's p50 <= 2x its model calls' p50. The breakdown says where the time goes.
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import shutil
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
TARGETS = {  # figure ratio: (numerator, denominator, "<=" or ">=", bound)
    "grpc_p50 / floor_p50": ("grpc_p50_ms", "floor_p50_ms", "<=", 1.2),
    "rest_p50 / floor_p50": ("rest_p50_ms", "floor_p50_ms", "<=", 1.3),
    "grpc_c{c} / floor_batched": ("grpc_c8_ips", "floor_batched_ips", ">=", 0.9),
    "rest_c{c} / floor_batched": ("rest_c8_ips", "floor_batched_ips", ">=", 0.9),
    "swap_p99 / steady_p99": ("swap_p99_ms", "steady_p99_ms", "<=", 2.0),
    "floor_p50 / model_p50": ("floor_p50_ms", "model_p50_ms", "<=", 2.0),
}


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
    swap_tail: int = 50  # requests answered by the new version that still count as "during the swap"
    rounds: int = 5  # the floor and the service measured in turn, `requests / rounds` at a time


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
    """The in-process numbers: the service's whole work for one image, in this process."""

    latency: Latency  # batch 1: decode, preprocessing, model calls, post-processing, PNGs
    model: Latency  # the model calls alone (both stages, the second look), per batch-1 image
    stages_ms: dict[str, float]  # medians: decode_preprocess, predict (model part with the crops), postprocess
    batched_ips: float  # the same work, `batch` images at a time in a thread pool, model calls batched
    model_description: str


@dataclass
class Swap:
    steady: Latency  # just before the new version is published
    during: Latency  # from the publish until `swap_tail` requests were answered by the new version
    versions: tuple[int, int]  # old -> new
    seconds: float  # from the publish to the new version's first answer


@dataclass
class Report:
    config: BenchmarkConfig
    floor: Floor
    latency: dict[str, Latency] = field(default_factory=dict)  # "rest"/"grpc" at concurrency 1
    throughput_ips: dict[str, float] = field(default_factory=dict)  # at concurrency N
    server_stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    encode_ms: dict[str, float] = field(default_factory=dict)
    swap: Swap | None = None

    def figures(self) -> dict[str, float | None]:
        """`fundus-seg benchmark --json`: the issue's figures, in ms and images/s."""
        swap = self.swap
        return {"model_p50_ms": self.floor.model.p50, "floor_p50_ms": self.floor.latency.p50,
                "grpc_p50_ms": self.latency["grpc"].p50, "rest_p50_ms": self.latency["rest"].p50,
                "floor_batched_ips": self.floor.batched_ips,
                "grpc_c8_ips": self.throughput_ips["grpc"], "rest_c8_ips": self.throughput_ips["rest"],
                "swap_p99_ms": swap.during.p99 if swap else None, "steady_p99_ms": swap.steady.p99 if swap else None}

    def targets(self) -> list[tuple[str, float | None, str, float, bool]]:
        """(name, ratio, comparison, bound, met) for every target; a ratio not measured is not met."""
        figures, rows = self.figures(), []
        for name, (top, bottom, compare, bound) in TARGETS.items():
            ratio = figures[top] / figures[bottom] if figures[top] is not None and figures[bottom] else None
            met = ratio is not None and (ratio <= bound if compare == "<=" else ratio >= bound)
            rows.append((name.format(c=self.config.concurrency), ratio, compare, bound, met))
        return rows

    def json(self) -> str:
        targets = {name: {"ratio": None if ratio is None else round(ratio, 3), "target": f"{compare} {bound}",
                          "met": met} for name, ratio, compare, bound, met in self.targets()}
        figures = {k: None if v is None else round(v, 2) for k, v in self.figures().items()}
        return json.dumps({**figures, "concurrency": self.config.concurrency, "targets": targets}, indent=2)

    def table(self) -> str:
        c, b, floor = self.config.concurrency, self.config.batch, self.floor
        rows = [("in-process floor (the whole work), batch 1", floor.latency, 1000 / floor.latency.p50, "1.00x"),
                ("  of which the model calls alone", floor.model, None,
                 f"{floor.model.p50 / floor.latency.p50:.2f}x"),
                (f"in-process floor, batch {b} in a thread pool", None, floor.batched_ips, "1.00x of batched")]
        for name, label in (("grpc", "gRPC OIP v2 (raw bytes)"), ("rest", "REST v1 (JSON, base64)")):
            latency = self.latency[name]
            rows.append((f"{label}, c=1", latency, 1000 / latency.p50, f"{latency.p50 / floor.latency.p50:.2f}x"))
        for name, label in (("grpc", "gRPC OIP v2"), ("rest", "REST v1")):
            rows.append((f"{label}, c={c}", None, self.throughput_ips[name],
                         f"{self.throughput_ips[name] / floor.batched_ips:.2f}x of batched"))
        if self.swap is not None:
            old, new = self.swap.versions
            rows.append(("gRPC c=1, steady (before the swap)", self.swap.steady, None, ""))
            rows.append((f"gRPC c=1, during the swap {old} -> {new} ({self.swap.seconds:.1f} s to the first answer)",
                         self.swap.during, None, f"p99 {self.swap.during.p99 / self.swap.steady.p99:.2f}x steady"))
        lines = ["| path | p50 ms | p99 ms | images/s | vs floor |", "| --- | ---: | ---: | ---: | --- |"]
        for name, latency, ips, ratio in rows:
            p50, p99 = (f"{latency.p50:.1f}", f"{latency.p99:.1f}") if latency else ("", "")
            lines.append(f"| {name} | {p50} | {p99} | {'' if ips is None else f'{ips:.1f}'} | {ratio} |")
        return "\n".join(lines)

    def verdict(self) -> str:
        return "\n".join(f"- {name} = {'not measured' if ratio is None else f'{ratio:.2f}'} (target {compare} "
                         f"{bound}): {'met' if met else 'MISSED'}"
                         for name, ratio, compare, bound, met in self.targets())

    def breakdown(self) -> str:
        lines = ["| where (median ms per image) | in-process | gRPC c=1 | REST c=1 |", "| --- | ---: | ---: | ---: |"]
        floor = self.floor.stages_ms
        grpc, rest = self.server_stages_ms.get("grpc", {}), self.server_stages_ms.get("rest", {})
        fmt = lambda x: "" if x is None else f"{x:.1f}"  # noqa: E731
        for key, label in (("decode_preprocess", "decode + stage-1 preprocessing"),
                           ("predict", "model calls + crops (+ hops to the predictor)"),
                           ("postprocess", "post-processing + PNGs")):
            lines.append(f"| {label} | {fmt(floor.get(key))} | {fmt(grpc.get(key))} | {fmt(rest.get(key))} |")
        lines.append(f"| of which the model calls alone | {fmt(self.floor.model.p50)} | | |")
        lines.append(f"| transformer total | {fmt(self.floor.latency.p50)} | {fmt(grpc.get('total'))} "
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
- model: {self.floor.model_description}
- image: `{_relative(self.config.image)}`, one image per request; {self.config.requests} requests per row
  after {self.config.warmup} warm-up requests, the floor's and the service's rows measured in turn in
  {self.config.rounds} rounds (the order rotating); the predictor's cross-request batching is
  {'on' if self.config.enable_batching else 'off'}
- floor: the service's whole work in the benchmark's own Python process (the SavedModel loaded
  there): decode, stage 1's preprocessing and model call, the disc-centred crops, stage 2, the
  second look (crops cut again and stage 2 again for the images that need it), post-processing at
  full resolution (threshold, largest component, hole filling, the cup, measurements, confidence,
  geometry) and the mask PNGs, with the servers' malloc settings (`serving.heap`). Batched =
  {self.config.batch} images at a time in a thread pool with the model calls batched. "The model calls
  alone" is the time inside the SavedModel's functions
- hot swap: the service serves a copy of the version; a second copy is published as the next
  version while gRPC requests run at concurrency 1; "during" is every request from the publish
  until {self.config.swap_tail} requests were answered by the new version

## Results

{self.table()}

{self.verdict()}

## Where the time goes

{self.breakdown()}

The service's stages are the transformer's own `timings_ms` (medians over the c=1 requests);
"model calls" there include the gRPC hops to the predictor and its batching window.

{self.gap()}
"""

    def gap(self) -> str:
        """The gRPC c=1 gap to the floor, split into the parts the breakdown measures."""
        service, floor = self.server_stages_ms.get("grpc", {}), self.floor.stages_ms
        if "total" not in service:
            return ""
        parts = [
            ("decode + preprocessing running slower in the transformer than in-process (client, transformer and "
             "predictor share the CPU cores, with whatever else runs on the machine)",
             service["decode_preprocess"] - floor["decode_preprocess"]),
            ("the hops to the predictor (stage 1, stage 2, a second look when needed) and its batching window",
             service["predict"] - floor["predict"]),
            ("post-processing running slower in the transformer than in-process",
             service["postprocess"] - floor["postprocess"]),
            ("client <-> transformer (HTTP/2, KServe's request handling, the response)",
             self.latency["grpc"].p50 - service["total"]),
        ]
        gap = self.latency["grpc"].p50 - self.floor.latency.p50
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
    from preprocessing.two_stage import locate_again, locate_input, read_location, refine, segment_input
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

        located = locate_again([rgb for rgb, _ in states],
                               [read_location(probability, stage1.box, config.threshold)
                                for (_, stage1), probability in zip(states, first, strict=True)],
                               version.predict, config, each)

        def cut(state, location):
            rgb, stage1 = state
            return [location, stage1.fov, *segment_input(rgb, location, config)]

        looks = list(each(cut, states, located))  # [located, fov, crop, square]
        probabilities = list(version.segment(np.stack([look[2] for look in looks])))
        finals = [look[0] for look in looks]
        squares = [look[3] for look in looks]
        again = [False] * len(looks)

        def look_again(i):
            better = refine(probabilities[i], squares[i], finals[i], config)
            return None if better is None else (better, *segment_input(states[i][0], better, config))

        pending = list(range(len(looks)))
        for _ in range(config.second_looks):
            cuts = dict(zip(pending, each(look_again, pending), strict=True))
            pending = [i for i, cut in cuts.items() if cut is not None]
            if not pending:
                break
            for i in pending:
                finals[i], _, squares[i] = cuts[i]
                again[i] = True
            for i, probability in zip(pending, version.segment(np.stack([cuts[i][1] for i in pending])), strict=True):
                probabilities[i] = probability
        return [(probabilities[i], squares[i], look[0], finals[i], again[i], look[1]) for i, look in enumerate(looks)]

    def finish_two(state, out):
        probability, square, located, final, second_look, fov = out
        return answer_two_stage(probability, square, located, final, second_look, fov, config)

    return InProcess(prepare_two, model_two, finish_two, "two-stage")


class TimedVersion:
    """A `LoadedVersion` whose model calls add up their own time (`ms`): the floor's "model calls alone"."""

    def __init__(self, version) -> None:
        self.card, self.parameters, self.ms = version.card, version.parameters, 0.0
        self.predict = self._timed(version.predict)
        self.segment = None if version.segment is None else self._timed(version.segment)

    def _timed(self, function):
        def call(images):
            started = time.perf_counter()
            try:
                return function(images)
            finally:
                self.ms += (time.perf_counter() - started) * 1000

        return call


class FloorBench:
    """The floor's work in this process, a few requests at a time, so `run` can interleave it with the
    service's rows: a machine whose speed drifts during the run (other tenants, frequency) then slows
    the floor and the service alike, and the ratios compare like with like."""

    def __init__(self, image: bytes, version_dir: Path, batch: int) -> None:
        from fundus_seg.model_repository import load_version

        self.image, self.batch = image, batch
        self.version = TimedVersion(load_version(version_dir))  # the same work the transformer does: the card
        self.steps = in_process(self.version)
        params = self.version.parameters
        self.describe = (f"`{_relative(version_dir)}` ({self.steps.pipeline}, {params / 1e6:.2f} M parameters)"
                         if params else f"`{version_dir}` ({self.steps.pipeline})")
        self.stages: dict[str, list[float]] = {"decode_preprocess": [], "predict": [], "postprocess": []}
        self.model_ms: list[float] = []
        self.batched_images, self.batched_seconds = 0, 0.0
        self.pool = ThreadPoolExecutor(batch)

    def latency(self, requests: int, record: bool = True) -> None:
        """`requests` images one after another (batch 1), each timed by stage."""
        for _ in range(requests):
            self.version.ms = 0.0
            times = [time.perf_counter()]
            prepared = self.steps.prepare(self.image)
            times.append(time.perf_counter())
            [out] = self.steps.model([prepared], None)
            times.append(time.perf_counter())
            self.steps.finish(prepared, out)
            times.append(time.perf_counter())
            if record:
                self.model_ms.append(self.version.ms)
                for key, (a, b) in zip(self.stages, itertools.pairwise(times), strict=True):
                    self.stages[key].append((b - a) * 1000)

    def batched(self, images: int, record: bool = True) -> None:
        """At least `images` images, `batch` at a time: preprocessing and post-processing in the thread
        pool, the model calls batched."""
        rounds = max(1, -(-images // self.batch))
        started = time.perf_counter()
        for _ in range(rounds):
            prepared = list(self.pool.map(self.steps.prepare, [self.image] * self.batch))
            list(self.pool.map(self.steps.finish, prepared, self.steps.model(prepared, self.pool)))
        if record:
            self.batched_seconds += time.perf_counter() - started
            self.batched_images += rounds * self.batch

    def result(self) -> Floor:
        whole = [sum(parts) for parts in zip(*self.stages.values(), strict=True)]
        return Floor(Latency(whole), Latency(self.model_ms),
                     {k: statistics.median(v) for k, v in self.stages.items()},
                     self.batched_images / self.batched_seconds, self.describe)

    def close(self) -> None:
        self.pool.shutdown()


def measure_swap(segment: Callable[[], list], publish: Callable[[], int], requests: int, tail: int,
                 timeout_s: float = 120.0) -> Swap:
    """Requests one after another: `requests` steady ones, then `publish` a new version and go on until
    `tail` requests were answered by it; the latencies from the publish on are "during"."""
    def one() -> tuple[float, int | None]:
        started = time.perf_counter()
        [result] = segment()
        return (time.perf_counter() - started) * 1000, result.model_version

    steady = [one() for _ in range(requests)]
    old = steady[-1][1]
    published_at = time.perf_counter()
    new = publish()
    during, first_new, answered = [], None, 0
    while answered < tail:
        ms, version = one()
        during.append(ms)
        if version == new:
            first_new = first_new or time.perf_counter()
            answered += 1
        if time.perf_counter() - published_at > timeout_s:
            raise TimeoutError(f"version {new} did not answer within {timeout_s:.0f} s of its publish")
    return Swap(Latency([ms for ms, _ in steady]), Latency(during), (old, new), first_new - published_at)


def latency_samples(segment: Callable[[], list], requests: int) -> tuple[list[float], list[dict[str, float]]]:
    """`requests` requests one after another: each one's latency in ms and the transformer's `timings_ms`."""
    samples, timings = [], []
    for _ in range(requests):
        started = time.perf_counter()
        [result] = segment()
        samples.append((time.perf_counter() - started) * 1000)
        timings.append(result.timings_ms)
    return samples, timings


def stage_medians(timings: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(t[k] for t in timings) for k in timings[0]}


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


def interleave(floor: FloorBench, segments: dict[str, Callable[[], list]], requests: int, rounds: int,
               concurrency: int, log: Callable[[str], None] = print):
    """Every row in turn, `requests / rounds` requests at a time: the floor and each of `segments` at
    concurrency 1, then the floor batched and each segment at `concurrency`; the order rotates from round
    to round. Returns Report's (floor, latency, server_stages_ms, throughput_ips)."""
    rounds = max(1, min(rounds, requests))
    share = [requests // rounds + (r < requests % rounds) for r in range(rounds)]
    samples: dict[str, list[float]] = {name: [] for name in segments}
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in segments}
    busy = {name: [0, 0.0] for name in segments}  # images, seconds at `concurrency`
    names = ["floor", *segments]
    for r, n in enumerate(share):
        log(f"round {r + 1}/{rounds}: {n} requests per row at concurrency 1, then at {concurrency} ...")
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name == "floor":
                floor.latency(n)
            else:
                got, stages = latency_samples(segments[name], n)
                samples[name] += got
                timings[name] += stages
        for name in order:
            if name == "floor":
                floor.batched(n)
            else:
                started = time.perf_counter()
                measure_throughput(segments[name], n, concurrency)
                busy[name][0] += n
                busy[name][1] += time.perf_counter() - started
    return (floor.result(), {name: Latency(samples[name]) for name in segments},
            {name: stage_medians(timings[name]) for name in segments},
            {name: images / seconds for name, (images, seconds) in busy.items()})


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


def serving_copy(version_dir: Path, repo: Path, model_name: str) -> Path:
    """A model repository in `repo` with a copy of `version_dir`, so the swap can publish the next
    version without touching the real one. A version exported before warm-up files gets one, as
    the training job writes it now."""
    from serving.warmup import WARMUP_FILE, warmup_requests, write_warmup_requests

    copy = repo / model_name / version_dir.name
    shutil.copytree(version_dir, copy, ignore=shutil.ignore_patterns(".*"))
    if not (copy / WARMUP_FILE).is_file():
        from fundus_seg.model_repository import load_version

        write_warmup_requests(copy, warmup_requests(load_version(copy).card))
    return copy


def run(config: BenchmarkConfig, log: Callable[[str], None] = print) -> Report:
    from fundus_seg.model_repository import publish_version
    from serving.client import GrpcClient, RestClient, oip_protos
    from serving.local_service import LocalService, LocalServiceConfig, LocalServiceError

    image = Path(config.image).read_bytes()
    version_dir = latest_version_dir(config.model_repo, config.model_name)
    with tempfile.TemporaryDirectory(prefix="fundus-bench-") as scratch:
        repo = Path(scratch) / "models"
        served = serving_copy(version_dir, repo, config.model_name)
        stack_config = LocalServiceConfig(model_repo=repo, model_name=config.model_name, http_port=0,
                                          grpc_port=0, predictor_grpc_port=0, predictor_rest_port=0,
                                          enable_batching=config.enable_batching, log_dir=Path(scratch) / "logs")
        log(f"starting the service on {stack_config.url} and {stack_config.grpc_target} ...")
        with LocalService(stack_config) as stack:
            if not stack.wait_ready(180):
                raise LocalServiceError(f"no model version became ready in {repo}")
            log(f"loading {version_dir} in this process for the floor ...")
            floor = FloorBench(image, version_dir, config.batch)
            clients = {"grpc": GrpcClient(stack_config.grpc_target, config.model_name),
                       "rest": RestClient(stack_config.url, config.model_name)}
            segments = {name: (lambda client=client: client.segment([image])) for name, client in clients.items()}
            floor.latency(config.warmup, record=False)
            floor.batched(config.batch, record=False)
            for segment in segments.values():
                for _ in range(config.warmup):
                    segment()
            floor_figures, latency, stages, ips = interleave(floor, segments, config.requests, config.rounds,
                                                             config.concurrency, log)
            floor.close()
            report = Report(config, floor_figures, latency=latency, throughput_ips=ips, server_stages_ms=stages)
            log("grpc: a hot swap at concurrency 1 ...")
            report.swap = measure_swap(lambda: clients["grpc"].segment([image]),
                                       lambda: publish_version(served, repo, config.model_name),
                                       config.requests, config.swap_tail)
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
    parser.add_argument("--rounds", type=int, default=defaults.rounds,
                        help="measure the floor and the service in turn, in this many rounds")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="batch size of the in-process floor")
    parser.add_argument("--model-repo", type=Path, default=defaults.model_repo)
    parser.add_argument("--model-name", default=defaults.model_name)
    parser.add_argument("--no-batching", action="store_true", help="turn off the predictor's cross-request batching")
    parser.add_argument("--write", nargs="?", type=Path, const=REPO_ROOT / "docs" / "BENCHMARKS.md", default=None,
                        metavar="FILE", help="write the report as Markdown (default file: docs/BENCHMARKS.md)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures and targets as one JSON object (progress goes to stderr)")
    return parser


def main(args: argparse.Namespace, command: str = "fundus-seg benchmark") -> int:
    import sys

    from serving.heap import keep_request_buffers

    keep_request_buffers()  # the floor does the servers' work with the servers' malloc settings
    config = BenchmarkConfig(image=args.image, requests=args.requests, concurrency=args.concurrency, batch=args.batch,
                             model_repo=args.model_repo, model_name=args.model_name,
                             enable_batching=not args.no_batching, rounds=args.rounds)
    if args.json:
        report = run(config, log=lambda line: print(line, file=sys.stderr))
        print(report.json())
    else:
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
        print(f"\nwrote {args.write}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    import sys

    parsed = build_parser().parse_args()
    sys.exit(main(parsed, "python -m serving.benchmark " + " ".join(sys.argv[1:])))
