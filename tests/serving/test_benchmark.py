"""`fundus-seg benchmark`'s figures from synthetic timings: percentiles, ratios against the floor, the
tables, the verdict, the gap breakdown and what `main` prints and writes (no service is started)."""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from serving import benchmark
from serving.benchmark import BenchmarkConfig, Floor, Latency, Report, Swap


def test_percentiles_interpolate_between_samples():
    latency = Latency([float(ms) for ms in range(100, 0, -1)])  # 1..100 ms, in any order
    assert latency.p50 == pytest.approx(50.5) and latency.p99 == pytest.approx(99.01)
    one_slow = Latency([20.0] * 99 + [40.0])
    assert one_slow.p50 == 20.0 and one_slow.p99 == pytest.approx(20.2)


def report(grpc_ms: float = 36.0, grpc_ips: float = 45.0, swap_p99: float = 80.0) -> Report:
    floor = Floor(latency=Latency([30.0] * 99 + [50.0]), model=Latency([15.0] * 100),
                  stages_ms={"decode_preprocess": 6.0, "predict": 16.0, "postprocess": 8.0},
                  batched_ips=50.0, model_description="`models/optic-disc/2` (two-stage, 0.93 M parameters)")
    swap = Swap(steady=Latency([38.0] * 99 + [40.0]), during=Latency([38.0] * 98 + [swap_p99] * 2),
                versions=(2, 3), seconds=1.5)
    return Report(BenchmarkConfig(requests=100, concurrency=4, batch=8, warmup=2), floor,
                  latency={"rest": Latency([39.0] * 100), "grpc": Latency([grpc_ms] * 100)},
                  throughput_ips={"rest": 46.0, "grpc": grpc_ips},
                  server_stages_ms={"grpc": {"decode_preprocess": 7.0, "predict": 18.0, "postprocess": 9.0, "total": 34.5},
                                    "rest": {"decode_preprocess": 7.5, "predict": 18.5, "postprocess": 9.0, "total": 36.0}},
                  encode_ms={"rest": 3.0, "grpc": 0.5}, swap=swap)


def test_results_table_rows_and_ratios_against_the_floor():
    assert report().table().splitlines() == [
        "| path | p50 ms | p99 ms | images/s | vs floor |",
        "| --- | ---: | ---: | ---: | --- |",
        "| in-process floor (the whole work), batch 1 | 30.0 | 30.2 | 33.3 | 1.00x |",
        "|   of which the model calls alone | 15.0 | 15.0 |  | 0.50x |",
        "| in-process floor, batch 8 in a thread pool |  |  | 50.0 | 1.00x of batched |",
        "| gRPC OIP v2 (raw bytes), c=1 | 36.0 | 36.0 | 27.8 | 1.20x |",
        "| REST v1 (JSON, base64), c=1 | 39.0 | 39.0 | 25.6 | 1.30x |",
        "| gRPC OIP v2, c=4 |  |  | 45.0 | 0.90x of batched |",
        "| REST v1, c=4 |  |  | 46.0 | 0.92x of batched |",
        "| gRPC c=1, steady (before the swap) | 38.0 | 38.0 |  |  |",
        "| gRPC c=1, during the swap 2 -> 3 (1.5 s to the first answer) | 38.0 | 80.0 |  | p99 2.10x steady |",
    ]


def test_the_json_figures_are_the_issues_keys():
    figures = json.loads(report().json())
    assert {k: figures[k] for k in ("model_p50_ms", "floor_p50_ms", "grpc_p50_ms", "rest_p50_ms",
                                    "floor_batched_ips", "grpc_c8_ips", "rest_c8_ips")} == {
        "model_p50_ms": 15.0, "floor_p50_ms": 30.0, "grpc_p50_ms": 36.0, "rest_p50_ms": 39.0,
        "floor_batched_ips": 50.0, "grpc_c8_ips": 45.0, "rest_c8_ips": 46.0}
    assert figures["swap_p99_ms"] == pytest.approx(80.0) and figures["steady_p99_ms"] == pytest.approx(38.02)
    assert figures["targets"]["grpc_c4 / floor_batched"] == {"ratio": 0.9, "target": ">= 0.9", "met": True}
    unswapped = report()
    unswapped.swap = None
    assert json.loads(unswapped.json())["swap_p99_ms"] is None
    assert json.loads(unswapped.json())["targets"]["swap_p99 / steady_p99"]["met"] is False  # not measured


def test_verdict_meets_the_targets_at_their_bounds_and_misses_past_them():
    met = report(swap_p99=76.04)  # every ratio exactly at its bound
    assert [line.rsplit(": ", 1)[1] for line in met.verdict().splitlines()] == ["met"] * 6
    assert met.verdict().splitlines()[0] == "- grpc_p50 / floor_p50 = 1.20 (target <= 1.2): met"
    missed = report(grpc_ms=36.5, grpc_ips=44.0, swap_p99=80.0)
    assert [line.rsplit(": ", 1)[1] for line in missed.verdict().splitlines()] == \
        ["MISSED", "met", "MISSED", "met", "MISSED", "met"]


def test_breakdown_and_gap_account_for_the_grpc_latency():
    assert report().breakdown().splitlines()[2:] == [
        "| decode + stage-1 preprocessing | 6.0 | 7.0 | 7.5 |",
        "| model calls + crops (+ hops to the predictor) | 16.0 | 18.0 | 18.5 |",
        "| post-processing + PNGs | 8.0 | 9.0 | 9.0 |",
        "| of which the model calls alone | 15.0 | | |",
        "| transformer total | 30.0 | 34.5 | 36.0 |",
        "| client + transformer hop (e2e p50 - transformer total) | | 1.5 | 3.0 |",
        "| client request encoding (base64 + JSON / protobuf) | | 0.5 | 3.0 |",
    ]
    lines = report().gap().splitlines()
    assert lines[0] == "Of the 6.0 ms between the gRPC p50 and the floor's p50:"
    parts = [float(line.split(" ms:")[0].removeprefix("- ")) for line in lines[1:]]
    assert parts == [1.0, 2.0, 1.0, 1.5, 0.5]  # decode, hops to the predictor, post-processing, client hop, rest
    assert sum(parts) == pytest.approx(6.0)
    no_grpc = report()
    no_grpc.server_stages_ms = {}
    assert no_grpc.gap() == ""


class Clock:
    """A perf_counter that moves only when a fake request says it took time."""

    def __init__(self) -> None:
        self.now, self.lock = 100.0, threading.Lock()

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(benchmark, "time", SimpleNamespace(perf_counter=clock.perf_counter, strftime=time.strftime))
    return clock


def test_latency_samples_and_server_stage_medians(clock):
    durations = iter([0.010, 0.030, 0.020])
    totals = iter([8.0, 20.0, 12.0])

    def segment():
        clock.advance(next(durations))
        return [SimpleNamespace(timings_ms={"total": next(totals), "predict": 5.0})]

    samples, timings = benchmark.latency_samples(segment, 3)
    latency, stages = Latency(samples), benchmark.stage_medians(timings)
    assert latency.samples_ms == pytest.approx([10.0, 30.0, 20.0]) and latency.p50 == pytest.approx(20.0)
    assert stages == {"total": 12.0, "predict": 5.0}


def test_throughput_sends_exactly_the_requests_asked_for_over_the_workers(clock):
    calls, threads = [], set()

    def segment():
        clock.advance(0.01)
        calls.append(1)
        threads.add(threading.get_ident())
        time.sleep(0.001)  # let the other workers take their turn
        return []

    assert benchmark.measure_throughput(segment, 40, concurrency=4) == pytest.approx(100.0)  # 40 in 0.4 s
    assert len(calls) == 40 and 1 < len(threads) <= 4


def test_swap_counts_from_the_publish_until_the_new_version_answered_tail_requests(clock):
    answers = iter([2] * 5 + [2, 2, 3, 3, 3, 3])
    slow = iter([0.01] * 5 + [0.05, 0.2, 0.03, 0.01, 0.01, 0.01])
    published = []

    def segment():
        clock.advance(next(slow))
        return [SimpleNamespace(model_version=next(answers))]

    swap = benchmark.measure_swap(segment, lambda: published.append(clock.now) or 3, requests=5, tail=4)
    assert swap.versions == (2, 3) and len(published) == 1
    assert swap.steady.samples_ms == pytest.approx([10.0] * 5)
    assert swap.during.samples_ms == pytest.approx([50.0, 200.0, 30.0, 10.0, 10.0, 10.0])
    assert swap.seconds == pytest.approx(0.28)  # publish -> the end of the first answer from version 3


def test_interleave_measures_every_row_in_turn_with_the_order_rotating(clock):
    """Each round gives every row its share of the requests, latency rows before throughput rows, so a
    machine that slows down halfway slows the floor and the service alike."""
    log = []

    class Floor:
        def latency(self, n):
            log.append(("floor", 1, n))
            clock.advance(0.02 * n)

        def batched(self, n):
            log.append(("floor", 8, n))
            clock.advance(0.01 * n)

        def result(self):
            return "the floor's figures"

    def service(name, seconds):
        def segment():
            if not log or log[-1][0] != name:
                log.append((name,))
            clock.advance(seconds)
            return [SimpleNamespace(timings_ms={"total": seconds * 1000})]
        return segment

    segments = {"grpc": service("grpc", 0.025), "rest": service("rest", 0.030)}
    floor, latency, stages, ips = benchmark.interleave(Floor(), segments, requests=10, rounds=3, concurrency=2,
                                                       log=lambda line: None)
    assert floor == "the floor's figures"
    assert [row for row in log if row[0] == "floor" and row[1] == 1] == [("floor", 1, 4), ("floor", 1, 3),
                                                                          ("floor", 1, 3)]
    rows = [row[0] for row in log]
    assert rows == ["floor", "grpc", "rest", "floor", "grpc", "rest",  # round 1: latency, then throughput
                    "grpc", "rest", "floor", "grpc", "rest", "floor",  # round 2 starts one row later
                    "rest", "floor", "grpc", "rest", "floor", "grpc"]
    assert {name: len(l.samples_ms) for name, l in latency.items()} == {"grpc": 10, "rest": 10}
    assert latency["grpc"].p50 == pytest.approx(25.0) and stages["rest"] == {"total": pytest.approx(30.0)}
    # 20 requests per service row in all (10 at concurrency 1, 10 at 2); the fake clock is shared, so
    # throughput is the requests over the wall time the row took
    assert ips["grpc"] == pytest.approx(40.0) and ips["rest"] == pytest.approx(1 / 0.030)
    assert sum(row[2] for row in log if row[1:2] == (8,)) == 10


def test_main_prints_the_tables_and_writes_the_markdown(monkeypatch, tmp_path, capsys):
    asked = []
    monkeypatch.setattr(benchmark, "run", lambda config, log=print: asked.append(config) or report())
    target = tmp_path / "docs" / "BENCHMARKS.md"
    args = benchmark.build_parser().parse_args(["--requests", "100", "--concurrency", "4", "--batch", "8",
                                                "--no-batching", "--rounds", "4", "--write", str(target)])
    assert benchmark.main(args, "fundus-seg benchmark --requests 100") == 0
    [config] = asked
    assert (config.requests, config.concurrency, config.batch, config.enable_batching, config.rounds) == (
        100, 4, 8, False, 4)
    out = capsys.readouterr().out
    for part in (report().table(), report().verdict(), report().breakdown(), f"wrote {target}"):
        assert part in out
    written = target.read_text()
    assert written.startswith("# Serving benchmark\n\nProduced by `fundus-seg benchmark --requests 100` (")
    for part in (report().table(), report().verdict(), report().breakdown(), report().gap(),
                 "model: `models/optic-disc/2` (two-stage, 0.93 M parameters)", "100 requests per row\n  after 2 warm-up"):
        assert part in written, part


def test_json_prints_only_the_json_on_stdout(monkeypatch, capsys):
    def run(config, log=print):
        log("starting ...")
        return report()

    monkeypatch.setattr(benchmark, "run", run)
    assert benchmark.main(benchmark.build_parser().parse_args(["--json"])) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads(report().json()) and "starting" in captured.err


def test_the_in_process_floor_runs_the_whole_two_stage_pipeline(two_stage_version, drishti):
    """The floor's steps for a two-stage version answer what the shared pipeline answers: both stages, the
    crops, the second look, the cup, measurements and confidence; batched in a pool as one by one."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from fundus_seg.model_repository import load_version
    from preprocessing.decode import decode_image
    from preprocessing.two_stage import segment_image

    version = load_version(two_stage_version)
    steps = benchmark.in_process(version)
    data = [drishti[0][0].read_bytes(), drishti[1][0].read_bytes()]
    states = [steps.prepare(d) for d in data]
    alone = [steps.finish(s, steps.model([s], None)[0]) for s in states]
    with ThreadPoolExecutor(2) as pool:
        batched = list(pool.map(steps.finish, states, steps.model(states, pool)))
    assert steps.pipeline == "two-stage"
    for d, one, many in zip(data, alone, batched, strict=True):
        expected = segment_image(decode_image(d), version.predict, version.segment, version.card.two_stage())
        mask = cv2.imdecode(np.frombuffer(one.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE) > 0
        cup = cv2.imdecode(np.frombuffer(one.cup_png, np.uint8), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(mask, expected.disc) and np.array_equal(cup, expected.cup)
        assert one.confidence == expected.confidence.to_dict() and one.pipeline == "two-stage"
        assert one.measurements == (expected.measurements.to_dict() if expected.measurements else None)
        assert many.disc == one.disc and many.cup == one.cup and many.confidence == one.confidence


def test_the_floor_takes_as_many_looks_as_the_card_allows():
    """With a stage 1 that sizes the crop far inside the disc, the floor walks it out to the whole disc as the
    shared pipeline does when the card allows 3 looks (and stops short of it, as the pipeline does, with 1)."""
    import cv2
    import numpy as np

    from fundus_seg.model_card import ModelCard, SegmentCard
    from preprocessing.metrics import dice
    from preprocessing.two_stage import segment_image
    from tests.preprocessing.test_two_stage import fundus_with_cup, locate, segment
    from training_job.config import UNetConfig

    def speck(batch):  # stage 1 finds only a pixel at each disc's centre
        out = np.zeros(batch.shape[:-1] + (1,), np.float32)
        for i, found in enumerate(locate(batch)):
            ys, xs = np.nonzero(found[..., 0])
            out[i, int(ys.mean()), int(xs.mean())] = 1.0
        return out

    (big, big_disc, _), (small, small_disc, _) = fundus_with_cup(radius=60, cup_radius=25), fundus_with_cup()
    data = [cv2.imencode(".png", image[..., ::-1])[1].tobytes() for image in (big, small)]
    big_dice = {}
    for looks in (3, 1):
        card = ModelCard("optic-disc", UNetConfig(), segment=SegmentCard(UNetConfig(), second_looks=looks))
        steps = benchmark.in_process(SimpleNamespace(card=card, predict=speck, segment=segment))
        states = [steps.prepare(d) for d in data]
        answers = [steps.finish(s, out) for s, out in zip(states, steps.model(states, None), strict=True)]
        for image, truth, answer in zip((big, small), (big_disc, small_disc), answers, strict=True):
            expected = segment_image(image, speck, segment, card.two_stage())
            mask = cv2.imdecode(np.frombuffer(answer.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE) > 0
            assert np.array_equal(mask, expected.disc) and answer.confidence == expected.confidence.to_dict()
            if image is big:
                big_dice[looks] = dice(mask, truth)
    assert big_dice[3] > 0.95 > 0.8 > big_dice[1]


def test_the_floor_takes_the_locators_own_looks_as_the_shared_pipeline_does():
    """A card with `locator_looks`: the floor runs stage 1 again on the square around each located disc and answers
    the very masks the shared pipeline does (the locator a stand-in that oversizes small discs)."""
    import cv2
    import numpy as np

    from fundus_seg.model_card import ModelCard, SegmentCard
    from preprocessing.two_stage import segment_image
    from tests.preprocessing.test_two_stage import fundus_with_cup, locate, segment
    from training_job.config import UNetConfig

    calls = []

    def disc_filled_locator(batch):
        calls.append(len(batch))
        return np.stack([cv2.dilate(view[..., 0], np.ones((13, 13), np.uint8))[..., None] if view.mean() < 0.2
                         else view for view in locate(batch)])

    images = [fundus_with_cup()[0], fundus_with_cup(radius=60, cup_radius=25)[0]]
    data = [cv2.imencode(".png", image[..., ::-1])[1].tobytes() for image in images]
    card = ModelCard("optic-disc", UNetConfig(), segment=SegmentCard(UNetConfig(), locator_looks=2, locator_view=1.5))
    steps = benchmark.in_process(SimpleNamespace(card=card, predict=disc_filled_locator, segment=segment))
    states = [steps.prepare(d) for d in data]
    answers = [steps.finish(s, out) for s, out in zip(states, steps.model(states, None), strict=True)]
    assert calls == [2, 2, 2]  # stage 1 on both images, then two looks, each one batch
    for image, answer in zip(images, answers, strict=True):
        expected = segment_image(image, disc_filled_locator, segment, card.two_stage())
        mask = cv2.imdecode(np.frombuffer(answer.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(mask, expected.disc) and answer.confidence == expected.confidence.to_dict()


def test_the_floor_bench_accumulates_its_rows_across_rounds(two_stage_version, drishti):
    """What `interleave` drives: latency and batched rounds add up, warm-up rounds are not counted."""
    bench = benchmark.FloorBench(drishti[0][0].read_bytes(), two_stage_version, batch=2)
    try:
        bench.latency(1, record=False)
        bench.latency(2)
        bench.latency(1)
        bench.batched(2, record=False)
        bench.batched(3)  # two rounds of 2
        floor = bench.result()
    finally:
        bench.close()
    assert len(floor.latency.samples_ms) == 3 and len(floor.model.samples_ms) == 3
    assert bench.batched_images == 4 and floor.batched_ips > 0
    assert 0 < floor.model.p50 < floor.latency.p50
    assert set(floor.stages_ms) == {"decode_preprocess", "predict", "postprocess"}
    assert "two-stage" in floor.model_description
