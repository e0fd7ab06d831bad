"""TF Serving's warm-up requests (assets.extra/tf_serving_warmup_requests): written by the export,
replayed by the predictor before a version becomes AVAILABLE, so a new version's first request is
not slow; a version whose warm-up fails is never served."""
from __future__ import annotations

import shutil
import statistics
import time

import numpy as np
import pytest

from fundus_seg.model_repository import CARD_SIGNATURE, SEGMENT_SIGNATURE, SERVING_SIGNATURE
from serving.predictor.servable import CannotServe, Servable
from serving.warmup import WARMUP_FILE, read_warmup_requests, write_warmup_requests
from tests.serving.helpers import build_two_stage_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    return build_two_stage_version(tmp_path_factory.mktemp("warmup") / "1")


def test_the_export_writes_one_request_per_signature_in_tf_servings_format(version):
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(version / WARMUP_FILE)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == \
        [CARD_SIGNATURE, SERVING_SIGNATURE, SEGMENT_SIGNATURE]
    assert (version / WARMUP_FILE).stat().st_size < 1024  # one value each, padded by TF to the shape
    assert [log.predict_log.request.inputs["images"].dtype for log in logs[1:]] == [types_pb2.DT_UINT8] * 2


def test_load_replays_them_and_the_first_call_is_not_slow(version):
    servable = Servable.load(version)
    assert servable.replay_warmup_requests() == 3
    crops = np.full((1, 128, 128, 3), 128, np.uint8)  # a version published today takes the equalised bytes
    times = []
    for _ in range(6):
        started = time.perf_counter()
        servable.signature(SEGMENT_SIGNATURE).run({"images": crops})
        times.append(time.perf_counter() - started)
    assert times[0] <= 3 * statistics.median(times[1:]) + 0.01, times  # without warm-up: about 8x


@pytest.mark.parametrize("broken, reason", [
    (lambda request: setattr(request.model_spec, "signature_name", "classify"), "classify"),
    (lambda request: request.inputs["images"].tensor_shape.dim[1].__setattr__("size", 64), "shape"),
])
def test_a_failing_warmup_request_keeps_the_version_from_serving(tmp_path, version, broken, reason):
    copy = shutil.copytree(version, tmp_path / "1")
    requests = list(read_warmup_requests(copy))
    broken(requests[1])
    write_warmup_requests(copy, requests)
    with pytest.raises(CannotServe, match=reason):
        Servable.load(copy)


def test_a_corrupt_warmup_file_keeps_the_version_from_serving(tmp_path, version):
    copy = shutil.copytree(version, tmp_path / "1")
    (copy / WARMUP_FILE).write_bytes((copy / WARMUP_FILE).read_bytes()[:-7])
    with pytest.raises(CannotServe, match="tf_serving_warmup_requests"):
        Servable.load(copy)
