"""One-machine predictor that speaks TensorFlow Serving's protocol.

In the cluster, KServe runs the real TF Serving behind our transformer; on one machine (and in
tests) this package stands in for it, so the transformer talks to both with the same client code.

Start it like tensorflow_model_server::

    python -m serving.predictor --port 8500 --rest_api_port 8501 \\
        --model_name optic-disc --model_base_path models/optic-disc
    python -m serving.predictor --model_config_file models.config --enable_batching

or from Python: ``PredictorServer(PredictorConfig(...))`` (see ``serving.predictor.server``).
Ready when GET /readyz answers 200 (or grpc.health.v1 Check says SERVING); the log lines
"Running gRPC ModelServer at HOST:PORT ..." and "Exporting HTTP/REST API at:HOST:PORT ..." say the
ports are bound.

What matches TF Serving
- gRPC tensorflow.serving.PredictionService/Predict and GetModelMetadata, ModelService/
  GetModelStatus, with TF Serving's protos, ModelSpec handling (name, version or version_label,
  signature_name, output_filter; the response echoes name, version and signature) and status codes.
- REST /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata] and ...:predict, row ("instances")
  and columnar ("inputs") formats, {"b64": ...} strings, {"error": ...} with TF Serving's statuses.
- Model repository <base_path>/<version>/saved_model.pb; version policies latest/all/specific and
  version labels from a ModelServerConfig text file; background loading; a version serves only
  after loading and a warm-up predict; replaced versions unload after their in-flight requests.
- --enable_batching with max_batch_size, batch_timeout_micros, num_batch_threads,
  max_enqueued_batches (flags or a BatchingParameters file).
- Prometheus metrics at /monitoring/prometheus/metrics (our own metric names: predictor_*).

Gaps and differences
- Only TensorFlow SavedModels (model_platform "tensorflow") on local paths: no s3://, gs://, hdfs://.
- Classify, Regress, MultiInference, REST :classify/:regress and ModelService/
  HandleReloadConfigRequest answer UNIMPLEMENTED (501); edit the config file instead.
- The config file is re-read on every file-system poll by default (TF Serving: only with
  --model_config_file_poll_wait_seconds > 0); a broken edit is logged and the last good config kept.
- Labels: TF Serving rejects a label pointing at a version that is not loaded; here the target is
  loaded (even outside the version policy) and the label moves once it is AVAILABLE, the previous
  target staying loaded while it is labelled.
- A version that fails to load is reported (state END, error) and retried when any of its files
  change (top level and variables/: a `cp -r` still copying); TF Serving retries
  --max_num_load_retries times. The "latest" policy then serves the newest version that loads.
- A version must have the required signature (--required_signature, default serving_default;
  --required_input/--required_output pin keys, dtypes and shapes) and pass warm-up (one
  zero-input predict on that signature, finite outputs) before it serves; TF Serving serves any
  SavedModel. assets.extra/tf_serving_warmup_requests is not read.
- Float outputs holding NaN/Infinity are refused: gRPC DATA_LOSS, REST 500 (TF Serving returns them).
- Hostile input is refused before it costs memory: TensorProto shapes are checked against their
  payload (TF's padding of short value lists only while the inputs decode to at most
  --max_request_bytes), JSON must be strict and hold at most --rest_max_json_values values,
  model names and labels are at most 1024 characters, versions must fit in int64, error
  messages are clipped to 1000 bytes. Server limits (--grpc_max_concurrent_rpcs,
  --rest_body_timeout_s, ...: see ServerLimits) bound what one client can hold.
- Batching: requests merge only when their non-batch shapes match; no padding
  (pad_variable_length_inputs), no allowed_batch_sizes, and a request larger than max_batch_size
  runs as its own batch instead of being split or rejected.
- REST is on by default (port 8501; TF Serving: off unless --rest_api_port); port 0 picks a free port;
  --host chooses the bind address; requests are capped at --max_request_bytes (64 MiB: HTTP 413,
  gRPC RESOURCE_EXHAUSTED; TF Serving's gRPC limit is unlimited).
- Not supported: TLS (--ssl_config_file), request logging, --monitoring_config_file,
  --platform_config_file, custom metadata fields other than signature_def, TFLite.
- Extras TF Serving lacks: /healthz (503 once the process cannot serve: repository polling or a
  worker pool died), /readyz, grpc.health.v1.Health/Check.
"""
from serving.predictor.config import (
    BatchingConfig,
    ConfigError,
    ModelConfig,
    PredictorConfig,
    VersionPolicy,
)

__all__ = ["BatchingConfig", "ConfigError", "ModelConfig", "PredictorConfig", "PredictorServer", "VersionPolicy"]


def __getattr__(name: str):
    if name == "PredictorServer":  # imported lazily: it pulls in TensorFlow
        from serving.predictor.server import PredictorServer

        return PredictorServer
    raise AttributeError(name)
