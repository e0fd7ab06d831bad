"""Transformer configuration: one dataclass, filled from the command line or by tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fundus_seg.errors import FundusSegError
from fundus_seg.units import MiB
from preprocessing.decode import DecodeLimits
from preprocessing.transform import PreprocessConfig


class TransformerConfigError(FundusSegError, ValueError):
    """Flags the transformer cannot run with."""


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP connection may cost the transformer before its request reaches the app."""

    max_header_bytes: int = 64 * 1024  # request line + all headers; larger -> 431
    header_timeout_s: float = 10.0  # from a request's first byte to its last header; then 408
    body_timeout_s: float = 120.0  # for the whole body; no pause in it may exceed header_timeout_s
    max_connections: int = 512  # open connections; the next one gets 503 and is closed
    keep_alive_s: int = 15  # idle keep-alive connections are closed after this

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "header_timeout_s", "body_timeout_s", "max_connections", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise TransformerConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class TransformerConfig:
    """What the transformer needs besides KServe's own flags (ports, workers).

    `predictor_host` is host:port of the predictor's gRPC port (`predictor_api="grpc"`, TF
    Serving's PredictionService) or of its REST port (`"rest"`, TF Serving's /v1 API).
    `rollout_file` is the one-machine canary contract (`<repo>/rollout.json`); None sends no
    version, so the predictor answers with its latest (or, in the cluster, KServe splits traffic).
    """

    model_name: str = "optic-disc"
    predictor_host: str = "127.0.0.1:8500"
    predictor_api: Literal["grpc", "rest"] = "grpc"
    predictor_timeout_s: float = 30.0
    rollout_file: Path | None = None
    max_request_bytes: int = 64 * MiB
    max_images: int = 16
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    threshold: float = 0.5
    workers: int = 4
    ready_cache_s: float = 1.0
    http: HttpLimits = field(default_factory=HttpLimits)
    max_inflight_bytes: int = 80 * MiB  # request bodies held at once, all connections together
    pixel_budget: int = 48_000_000  # full-size pixels decoded or post-processed at once: the largest image + 8 M
    retained_pixels: int = 40_000_000  # two-stage: decoded images kept (3 B/px) from stage 1 until their crops are cut
    budget_wait_s: float = 20.0  # longest wait for either budget before a 503
    max_concurrent_rpcs: int = 64  # gRPC calls in progress; more get RESOURCE_EXHAUSTED
    drain_s: float = 20.0  # on SIGTERM: how long in-flight requests may take to finish

    def __post_init__(self) -> None:
        if self.predictor_api not in ("grpc", "rest"):
            raise TransformerConfigError(f"predictor_api must be grpc or rest, got {self.predictor_api!r}")
        if ":" not in self.predictor_host.removeprefix("http://"):
            raise TransformerConfigError(f"predictor_host must be host:port, got {self.predictor_host!r}")
        for name in ("max_request_bytes", "max_images", "workers", "max_concurrent_rpcs", "retained_pixels"):
            if getattr(self, name) < 1:
                raise TransformerConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise TransformerConfigError(f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                                         f"max_request_bytes ({self.max_request_bytes})")
        if self.pixel_budget < self.decode_limits.max_pixels:
            raise TransformerConfigError(f"pixel_budget ({self.pixel_budget}) must be at least the largest "
                                         f"image allowed ({self.decode_limits.max_pixels} pixels)")
        if not 0.0 < self.threshold < 1.0:
            raise TransformerConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.rollout_file is not None:
            self.rollout_file = Path(self.rollout_file)
