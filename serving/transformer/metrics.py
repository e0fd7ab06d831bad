"""Prometheus metrics of the transformer, in the default registry so KServe's /metrics serves them
next to its own (request_preprocess_seconds, request_predict_seconds, ...)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)

REQUESTS = Counter("fundus_transformer_requests_total", "Segmentation requests by protocol and outcome",
                   ["protocol", "outcome"])
LATENCY = Histogram("fundus_transformer_request_seconds", "Segmentation request latency inside the transformer",
                    ["protocol"], buckets=LATENCY_BUCKETS)
STAGES = Histogram("fundus_transformer_stage_seconds", "Time per request stage (decode_preprocess, predict, "
                   "postprocess)", ["stage"], buckets=LATENCY_BUCKETS)
IMAGES = Counter("fundus_transformer_images_total", "Images segmented, by the model version that answered",
                 ["model", "version"])
MODEL_VERSION = Gauge("fundus_transformer_model_version", "Latest model version the predictor reports "
                      "AVAILABLE (0: none)", ["model"])
READY = Gauge("fundus_transformer_ready", "1 when the predictor has a model version AVAILABLE", ["model"])
