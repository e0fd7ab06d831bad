"""TF Serving's warm-up requests: `<version>/assets.extra/tf_serving_warmup_requests`.

TF Serving replays this file when it loads a version, before the version becomes AVAILABLE, so
that the first real request on a new version does not pay for the first call of each function
(graph optimisation, kernel creation: about 200 ms per signature for ours). The format is TF
Serving's: a TFRecord file of `PredictionLog` protos, each with a `predict_log.request`; at most
1000 records, each replayed once.

The training job writes one request per signature the transformer calls on a new version
(`model_card`, `serving_default`, and `segment` for a two-stage version), batch 1; the
one-machine predictor replays them (`serving.predictor.servable`), as TF Serving does in the
cluster. Both need TensorFlow and `tensorflow-serving-api` (the `tensorflow` extra).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit (servables/tensorflow/saved_model_warmup_util.cc)


def warmup_requests(card) -> list:
    """The PredictRequests a version with this `ModelCard` is warmed up with: one per signature the
    transformer calls, one example each (a single value, as TF pads it to the shape: a few bytes)."""
    from tensorflow_serving.apis import predict_pb2

    from fundus_seg.model_repository import (
        CARD_SIGNATURE,
        INPUT_KEY,
        SEGMENT_SIGNATURE,
        SERVING_SIGNATURE,
    )

    size = card.preprocess.size
    signatures = [(SERVING_SIGNATURE, size)]
    if card.segment is not None:
        signatures.append((SEGMENT_SIGNATURE, card.two_stage().crop.size))
    requests = []
    card_request = predict_pb2.PredictRequest()
    card_request.model_spec.signature_name = CARD_SIGNATURE
    requests.append(card_request)
    for signature, side in signatures:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        tensor = request.inputs[INPUT_KEY]
        for dim in (1, side, side, 3):
            tensor.tensor_shape.dim.add(size=dim)
        if card.input_dtype == "uint8":
            tensor.dtype = 4  # DT_UINT8
            tensor.int_val.append(128)
        else:
            tensor.dtype = 1  # DT_FLOAT
            tensor.float_val.append(0.5)
        requests.append(request)
    return requests


def write_warmup_requests(version_dir: str | Path, requests: list) -> Path:
    """Write `requests` (PredictRequests) as the version's warm-up file; returns its path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if len(requests) > MAX_RECORDS:
        raise ValueError(f"{len(requests)} warm-up requests; TF Serving replays at most {MAX_RECORDS}")
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir: str | Path) -> Iterator:
    """The PredictRequests of a version's warm-up file (none if it has none). Raises ValueError for a
    record that is not a PredictionLog with a predict_log, or past MAX_RECORDS records."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return
    for count, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator(), start=1):
        if count > MAX_RECORDS:
            raise ValueError(f"{WARMUP_FILE} has more than {MAX_RECORDS} records")
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if not log.HasField("predict_log"):
            raise ValueError(f"{WARMUP_FILE} record {count} is a {log.WhichOneof('log_type')} log; "
                             "only predict_log is replayed here")
        yield log.predict_log.request


def main(argv: list[str]) -> int:
    """`python -m serving.warmup VERSION_DIR...`: write the warm-up file of versions exported before it existed."""
    from fundus_seg.model_card import ModelCard
    from fundus_seg.model_repository import CARD_FILE

    for version in map(Path, argv):
        card = ModelCard.from_json((version / CARD_FILE).read_text())
        print(write_warmup_requests(version, warmup_requests(card)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
