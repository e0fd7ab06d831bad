"""`fundus-seg benchmark`'s figures from synthetic timings: percentiles, ratios against the floor, the
tables, the verdict, the gap breakdown and what `main` prints and writes (no service is started)."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from serving import benchmark
from serving.benchmark import BenchmarkConfig, Floor, Latency, Report


def test_percentiles_interpolate_between_samples():
    latency = Latency([float(ms) for ms in range(100, 0, -1)])  # 1..100 ms, in any order
    assert latency.p50 == pytest.approx(50.5) and latency.p99 == pytest.approx(99.01)
    one_slow = Latency([20.0] * 99 + [40.0])
    assert one_slow.p50 == 20.0 and one_slow.p99 == pytest.approx(20.2)


def report(grpc_ms: float = 26.0, grpc_ips: float = 80.0) -> Report:
    floor = Floor(batch1=Latency([20.0] * 99 + [40.0]), full=Latency([30.0] * 100),
                  stages_ms={"decode_preprocess": 12.0, "predict": 8.0, "postprocess": 10.0},
                  batched_ips=100.0, full_batched_ips=50.0, model="`models/optic-disc/1` (0.93 M parameters)")
    return Report(BenchmarkConfig(requests=100, concurrency=4, batch=8, warmup=2), floor,
                  latency={"rest": Latency([40.0] * 100), "grpc": Latency([grpc_ms] * 100)},
                  throughput_ips={"rest": 70.0, "grpc": grpc_ips},
                  server_stages_ms={"grpc": {"decode_preprocess": 13.0, "predict": 9.5, "postprocess": 2.0, "total": 25.0},
                                    "rest": {"decode_preprocess": 14.0, "predict": 10.0, "postprocess": 2.0, "total": 27.0}},
                  encode_ms={"rest": 3.0, "grpc": 0.5})


def test_results_table_rows_and_ratios_against_the_floor():
    assert report().table().splitlines() == [
        "| path | p50 ms | p99 ms | images/s | vs floor |",
        "| --- | ---: | ---: | ---: | --- |",
        "| in-process floor (decode + preprocess + model), batch 1 | 20.0 | 20.2 | 50.0 | 1.00x |",
        "| in-process floor, batch 8 |  |  | 100.0 | 1.00x of batched |",
        "| in-process + post-processing, batch 1 | 30.0 | 30.0 | 33.3 | 1.50x |",
        "| in-process + post-processing, batch 8 |  |  | 50.0 | 0.50x of batched |",
        "| REST v1 (JSON, base64), c=1 | 40.0 | 40.0 | 25.0 | 2.00x |",
        "| gRPC OIP v2 (raw bytes), c=1 | 26.0 | 26.0 | 38.5 | 1.30x |",
        "| REST v1, c=4 |  |  | 70.0 | 0.70x of batched |",
        "| gRPC OIP v2, c=4 |  |  | 80.0 | 0.80x of batched |",
    ]


def test_verdict_meets_the_targets_at_their_bounds_and_misses_past_them():
    met = report()  # gRPC p50 exactly 1.3x the floor, throughput exactly 0.8x: both targets met
    assert met.grpc_ratio == pytest.approx(1.3) and met.throughput_ratio == pytest.approx(0.8)
    assert met.verdict().splitlines() == [
        "- gRPC p50 = 1.30x the floor's batch-1 p50 (target <= 1.3x): met; 0.87x the in-process pipeline "
        "with post-processing",
        "- throughput at c=4 = 0.80x the floor's batched throughput (target >= 0.8x): met; 1.60x the "
        "in-process pipeline with post-processing",
    ]
    missed = report(grpc_ms=27.0, grpc_ips=75.0)  # the best protocol's throughput counts: 75 of 100
    assert missed.throughput_ratio == pytest.approx(0.75)
    assert [line.split(": ", 1)[1].split(";")[0] for line in missed.verdict().splitlines()] == ["MISSED", "MISSED"]
    assert "1.35x the floor's batch-1 p50" in missed.verdict()


def test_breakdown_and_gap_account_for_the_grpc_latency():
    assert report().breakdown().splitlines()[2:] == [
        "| decode + preprocess | 12.0 | 13.0 | 14.0 |",
        "| model call (+ hop to predictor) | 8.0 | 9.5 | 10.0 |",
        "| post-process + PNG | 10.0 | 2.0 | 2.0 |",
        "| transformer total | 30.0 | 25.0 | 27.0 |",
        "| client + transformer hop (e2e p50 - transformer total) | | 1.0 | 13.0 |",
        "| client request encoding (base64 + JSON / protobuf) | | 0.5 | 3.0 |",
    ]
    lines = report().gap().splitlines()
    assert lines[0] == "Of the 6.0 ms between the gRPC p50 and the floor's p50:"
    parts = [float(line.split(" ms:")[0].removeprefix("- ")) for line in lines[1:]]
    assert parts == [2.0, 1.0, 1.5, 1.0, 0.5]  # post-processing, decode, hop to predictor, client hop, the rest
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

    latency, stages = benchmark.measure_latency(segment, 3)
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


def test_main_prints_the_tables_and_writes_the_markdown(monkeypatch, tmp_path, capsys):
    asked = []
    monkeypatch.setattr(benchmark, "run", lambda config: asked.append(config) or report())
    target = tmp_path / "docs" / "BENCHMARKS.md"
    args = benchmark.build_parser().parse_args(["--requests", "100", "--concurrency", "4", "--batch", "8",
                                                "--no-batching", "--write", str(target)])
    assert benchmark.main(args, "fundus-seg benchmark --requests 100") == 0
    [config] = asked
    assert (config.requests, config.concurrency, config.batch, config.enable_batching) == (100, 4, 8, False)
    out = capsys.readouterr().out
    for part in (report().table(), report().verdict(), report().breakdown(), f"wrote {target}"):
        assert part in out
    written = target.read_text()
    assert written.startswith("# Serving benchmark\n\nProduced by `fundus-seg benchmark --requests 100` (")
    for part in (report().table(), report().verdict(), report().breakdown(), report().gap(),
                 "model: `models/optic-disc/1` (0.93 M parameters)", "100 requests per row\n  after 2 warm-up"):
        assert part in written, part


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
