"""Predictor configuration: dataclasses mirroring tensorflow_model_server's flags and config files.

The model config file is TF Serving's own text-proto `ModelServerConfig`, parsed with its protos,
so one file drives both the real TF Serving in the cluster and this predictor on one machine.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fundus_seg.errors import FundusSegError
from fundus_seg.model_repository import SERVING_SIGNATURE as DEFAULT_SIGNATURE
from fundus_seg.units import KiB, MiB


class ConfigError(FundusSegError, ValueError):
    """The predictor's flags or one of its config files cannot be used."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions found on disk to serve (TF Serving's ServableVersionPolicy)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, on_disk: Iterable[int]) -> set[int]:
        found = sorted(set(on_disk))
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(found) & set(self.versions)
        return set(found[-self.num_versions:]) if found else set()


@dataclass
class ModelConfig:
    """One served model: where its versions live, which to serve, and which labels point where."""

    name: str
    base_path: Path
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchingConfig:
    """Server-side batching (TF Serving's BatchingParameters); `None` in PredictorConfig means off."""

    max_batch_size: int = 16
    batch_timeout_micros: int = 0  # run as soon as a thread is free; merge what arrives while none is
    num_batch_threads: int = 2
    max_enqueued_batches: int = 100

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"batching {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ConfigError("batching batch_timeout_micros must be >= 0")

    @classmethod
    def from_file(cls, path: str | Path) -> BatchingConfig:
        """Read TF Serving's --batching_parameters_file (`max_batch_size { value: 32 }` ...)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read batching parameters file {path}: {exc}") from exc
        text = re.sub(r"#.*", "", text)
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, int] = {}
        for name, plain, wrapped in re.findall(
                r"(\w+)\s*(?::\s*([^\s{}]+)|\{\s*value\s*:\s*([^\s}]+)\s*\})", text):
            if name in known:  # others (allowed_batch_sizes, pad_variable_length_inputs, ...) are ignored
                try:
                    values[name] = int(plain or wrapped)
                except ValueError as exc:
                    raise ConfigError(f"{path}: {name} must be an integer") from exc
        return cls(**values)


@dataclass(frozen=True)
class ServerLimits:
    """What one client may cost the predictor, so hostile traffic gets an error instead of a stall or OOM.

    gRPC values become grpc.aio server options; REST values go to aiohttp's request handler
    (request line, header and keep-alive limits) or are enforced by the REST handler itself.
    `rest_keepalive_timeout_s` also cuts off a connection whose request headers never complete:
    aiohttp's keep-alive timer runs from the connection's start until a whole request has arrived.
    """

    grpc_max_metadata_bytes: int = 16 * KiB  # request headers of one call; larger -> RESOURCE_EXHAUSTED
    grpc_max_concurrent_streams: int = 100  # calls in progress on one HTTP/2 connection
    grpc_max_concurrent_rpcs: int = 64  # calls in progress on the server; more -> RESOURCE_EXHAUSTED
    grpc_keepalive_time_s: float = 60.0  # ping a connection after this long without traffic ...
    grpc_keepalive_timeout_s: float = 20.0  # ... and close it when the ping is not answered in time
    grpc_max_connection_idle_s: float = 300.0  # close connections without calls after this (GOAWAY)
    rest_max_line_bytes: int = 8190  # request line (method, URL, version); larger -> 400
    rest_max_field_bytes: int = 8190  # one header; larger -> 400
    rest_max_headers: int = 128  # header count; more -> 400
    rest_keepalive_timeout_s: float = 30.0  # idle connections, and unfinished request headers
    rest_body_timeout_s: float = 60.0  # the whole request body must arrive within this; else 408
    rest_max_concurrent_requests: int = 64  # :predict calls in progress; more -> 429
    rest_max_json_values: int = 2 * 1024 * 1024  # 2 Mi JSON values (numbers, strings, arrays ...) in one body; more -> 413

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class TensorContract:
    """One input or output a served signature must have; dtype (TensorFlow name) and shape are optional.

    Shape dimensions are sizes or -1 (any size, e.g. the batch). Written on the command line as
    ``KEY[:DTYPE[:D0,D1,...]]``, e.g. ``images:float32:-1,128,128,3``; DTYPE may name alternatives,
    ``uint8|float32`` (the project's `images`: uint8 since versions carry it, float32 before).
    """

    key: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes the tensor may have; () for any."""
        return tuple(self.dtype.split("|")) if self.dtype else ()

    @classmethod
    def parse(cls, text: str) -> TensorContract:
        key, _, rest = text.partition(":")
        dtype, _, shape = rest.partition(":")
        if not key:
            raise ConfigError(f"tensor contract {text!r}: expected KEY[:DTYPE[:D0,D1,...]]")
        try:
            dims = tuple(int(d) for d in shape.split(",")) if shape else None
        except ValueError:
            raise ConfigError(f"tensor contract {text!r}: shape must be comma-separated integers") from None
        if dims is not None and any(d < -1 for d in dims):
            raise ConfigError(f"tensor contract {text!r}: dimensions are sizes or -1")
        return cls(key, dtype or None, dims)


@dataclass(frozen=True)
class SignatureContract:
    """The signature every served version must have before it may become AVAILABLE.

    With `inputs` given, the signature's inputs must be exactly those keys (clients send exactly
    those); `outputs` must be present (others may be too). A version that does not satisfy the
    contract ends in state END with the reason, and the version it would replace keeps serving.
    """

    name: str = DEFAULT_SIGNATURE
    inputs: tuple[TensorContract, ...] = ()
    outputs: tuple[TensorContract, ...] = ()


@dataclass
class PredictorConfig:
    """Everything `python -m serving.predictor` accepts; field names follow TF Serving's flags.

    `model_base_path` (one model, policy "latest") or `model_config_file` must be set. Given both,
    the config file governs as soon as it exists and the base path serves until then: a local
    canary rollout can write `models.config` into a repository that is already being served.
    Port 0 binds a free port; the bound ports are logged and exposed by PredictorServer.
    `required_signature` applies to every served model; None serves any loadable SavedModel.
    `max_request_bytes` also bounds what a request's inputs may decode to, all inputs together.
    """

    model_name: str = "default"
    model_base_path: Path | None = None
    model_config_file: Path | None = None
    host: str = "0.0.0.0"
    grpc_port: int = 8500
    rest_api_port: int = 8501
    file_system_poll_wait_seconds: float = 1.0
    # None: re-read the config file on every file system poll; <= 0: read it once at start.
    model_config_file_poll_wait_seconds: float | None = None
    batching: BatchingConfig | None = None
    max_request_bytes: int = 64 * MiB
    model_threads: int = 4
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    shutdown_grace_seconds: float = 5.0
    limits: ServerLimits = field(default_factory=ServerLimits)
    required_signature: SignatureContract | None = field(default_factory=SignatureContract)

    def __post_init__(self) -> None:
        if self.model_base_path is None and self.model_config_file is None:
            raise ConfigError("give --model_base_path or --model_config_file")
        if self.model_base_path is not None:
            self.model_base_path = Path(self.model_base_path)
        if self.model_config_file is not None:
            self.model_config_file = Path(self.model_config_file)
        for name in ("grpc_port", "rest_api_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be in 0..65535, got {getattr(self, name)}")
        if self.max_request_bytes < 1 or self.model_threads < 1:
            raise ConfigError("max_request_bytes and model_threads must be positive")

    @property
    def config_poll_seconds(self) -> float:
        if self.model_config_file_poll_wait_seconds is None:
            return self.file_system_poll_wait_seconds
        return self.model_config_file_poll_wait_seconds

    def read_models(self) -> list[ModelConfig]:
        """The models to serve now: the single flag-given model, or the config file's current content."""
        if self.model_config_file is not None and (self.model_base_path is None or self.model_config_file.exists()):
            return read_model_config_file(self.model_config_file)
        return [ModelConfig(self.model_name, Path(self.model_base_path))]


def read_model_config_file(path: str | Path) -> list[ModelConfig]:
    """Parse TF Serving's text-proto ModelServerConfig with its own protos."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        message = text_format.Parse(Path(path).read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(f"cannot use model config file {path}: {exc}") from exc
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: only model_config_list is supported")
    models: list[ModelConfig] = []
    for entry in message.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"{path}: every config needs name and base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {entry.name}: unsupported model_platform {entry.model_platform!r}")
        if any(m.name == entry.name for m in models):
            raise ConfigError(f"{path}: model {entry.name} is configured twice")
        models.append(ModelConfig(
            name=entry.name,
            base_path=Path(entry.base_path),
            version_policy=_policy_from_proto(entry.model_version_policy),
            version_labels=dict(entry.version_labels),
        ))
    return models


def _policy_from_proto(policy) -> VersionPolicy:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    return VersionPolicy("latest", num_versions=max(1, policy.latest.num_versions))
