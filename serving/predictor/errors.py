"""Errors carrying a canonical status code, so gRPC and REST report them like TF Serving does."""
from __future__ import annotations

import grpc

# TF Serving's REST handler maps canonical codes to HTTP statuses this way.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Error messages echo request parts (names, labels, keys); a client's gRPC metadata limit is
# 8 KiB and a percent-encoded byte takes 3, so messages are clipped to this many UTF-8 bytes.
MAX_MESSAGE_BYTES = 1000


def clip(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (marked with "..."), never a broken character."""
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit - 3].decode("utf-8", "ignore") + "..."


class PredictorError(Exception):
    """A request that cannot be served; `code` says why in gRPC's vocabulary."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @classmethod
    def from_tensorflow(cls, exc: Exception) -> PredictorError:
        """Keep the canonical code of a TensorFlow runtime error (e.g. a bad shape is INVALID_ARGUMENT)."""
        number = getattr(exc, "error_code", None)
        code = next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.INTERNAL)
        message = getattr(exc, "message", None) or str(exc)
        return cls(message.strip().splitlines()[0] if message.strip() else type(exc).__name__, code)

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)


class InvalidArgument(PredictorError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PredictorError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(PredictorError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(PredictorError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(PredictorError):
    code = grpc.StatusCode.UNIMPLEMENTED


class ResourceExhausted(PredictorError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RequestTooLarge(ResourceExhausted):
    """Past a size limit: RESOURCE_EXHAUSTED like gRPC's own message limit, HTTP 413 like aiohttp's."""

    @property
    def http_status(self) -> int:
        return 413


class DataLoss(PredictorError):
    """The model's fault, not the client's (e.g. NaN outputs): gRPC DATA_LOSS, HTTP 500."""

    code = grpc.StatusCode.DATA_LOSS
