"""Server-side batching merges concurrent requests and hands every caller its own rows."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.predictor.helpers import config, expected, images, predict_request, stubs

pytestmark = pytest.mark.slow


def batch_sizes(server) -> tuple[float, float]:
    """(model calls, rows) recorded by the batch size histogram of optic-disc version 1."""
    labels = {"model": "optic-disc", "version": "1"}
    registry = server.metrics.registry
    return (registry.get_sample_value("predictor_batch_size_count", labels) or 0,
            registry.get_sample_value("predictor_batch_size_sum", labels) or 0)


def send_concurrently(server, values: list[float], rows: list[int]):
    predict, _ = stubs(server)
    futures = [predict.Predict.future(predict_request("optic-disc", images(v, n)), timeout=30)
               for v, n in zip(values, rows)]
    return [tf.make_ndarray(f.result().outputs["disc_probability"]) for f in futures]


def test_concurrent_requests_share_model_calls(tmp_path, publish, start_server):
    from serving.predictor.config import BatchingConfig

    publish(tmp_path / "optic-disc", 1)
    batching = BatchingConfig(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1)
    server = start_server(config(model_name="optic-disc", model_base_path=tmp_path / "optic-disc",
                                 batching=batching))
    assert server.wait_until_ready(30)
    values = [i / 10 for i in range(10)]
    rows = [1] * 9 + [2]

    outputs = send_concurrently(server, values, rows)

    for value, n, output in zip(values, rows, outputs):  # each caller gets exactly its own rows back
        assert output.shape == (n, 8, 8, 1)
        np.testing.assert_allclose(output, expected(value, 1), rtol=1e-6)
    calls, total_rows = batch_sizes(server)
    assert total_rows == sum(rows)
    assert 2 <= calls <= 4  # 11 rows in batches of at most 8, instead of 10 separate calls


def test_without_batching_every_request_is_its_own_call(tmp_path, publish, start_server):
    publish(tmp_path / "optic-disc", 1)
    server = start_server(config(model_name="optic-disc", model_base_path=tmp_path / "optic-disc"))
    assert server.wait_until_ready(30)

    send_concurrently(server, [0.1, 0.2, 0.3], [1, 1, 2])

    assert batch_sizes(server) == (3, 4)


def test_batcher_limits_batches_queues_and_shares_failures():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from serving.predictor.batching import Batcher
    from serving.predictor.config import BatchingConfig
    from serving.predictor.errors import Unavailable

    calls: list[int] = []

    def double(batch):
        calls.append(len(batch["x"]))
        return {"y": batch["x"] * 2}

    def boom(batch):
        raise ValueError("model failed")

    async def main() -> None:
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(BatchingConfig(max_batch_size=4, batch_timeout_micros=50_000), executor)
        results = await asyncio.gather(*(batcher.submit("k", double, {"x": np.array([i])}, 1) for i in range(6)))
        assert [int(r["y"][0]) for r in results] == [0, 2, 4, 6, 8, 10]
        assert calls == [4, 2]  # full batch at once, the rest after the timeout

        failing = [batcher.submit("f", boom, {"x": np.array([i])}, 1) for i in range(2)]
        assert all(isinstance(r, ValueError) for r in await asyncio.gather(*failing, return_exceptions=True))

        tight = Batcher(BatchingConfig(max_batch_size=4, batch_timeout_micros=50_000, max_enqueued_batches=1),
                        executor)
        queued = asyncio.ensure_future(tight.submit("a", double, {"x": np.array([1])}, 1))
        await asyncio.sleep(0)
        with pytest.raises(Unavailable):
            await tight.submit("b", double, {"x": np.array([1])}, 1)
        assert int((await queued)["y"][0]) == 2
        executor.shutdown()

    asyncio.run(main())


def test_without_a_timeout_an_idle_model_runs_at_once_and_a_busy_one_merges_what_arrives():
    """batch_timeout_micros 0: nothing waits for company; requests that arrive while every batch thread
    is busy fill one batch, which runs when a thread is free. A batch whose timeout passed while the
    threads were busy keeps filling too."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from serving.predictor.batching import Batcher
    from serving.predictor.config import BatchingConfig

    calls: list[int] = []
    release = threading.Event()

    def held(batch):
        calls.append(len(batch["x"]))
        if len(calls) == 1:
            release.wait(5)
        return {"y": batch["x"] + 1}

    async def main(timeout_micros: int) -> list[int]:
        calls.clear()
        release.clear()
        executor = ThreadPoolExecutor(2)
        batcher = Batcher(BatchingConfig(max_batch_size=8, batch_timeout_micros=timeout_micros,
                                         num_batch_threads=1), executor)
        first = asyncio.ensure_future(batcher.submit("k", held, {"x": np.array([0])}, 1))
        for _ in range(50):  # the first is running before the others arrive
            await asyncio.sleep(0.002)
            if calls:
                break
        rest = [asyncio.ensure_future(batcher.submit("k", held, {"x": np.array([i])}, 1)) for i in (1, 2, 3)]
        await asyncio.sleep(0.02)  # longer than any timeout here: the batch is due, the thread still busy
        release.set()
        results = await asyncio.gather(first, *rest)
        assert [int(r["y"][0]) for r in results] == [1, 2, 3, 4]
        executor.shutdown()
        return list(calls)

    assert asyncio.run(main(0)) == [1, 3]
    assert asyncio.run(main(1000)) == [1, 3]
