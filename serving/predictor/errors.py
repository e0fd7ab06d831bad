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


class PredictorError(Exception):
    """A request that cannot be served; `code` says why in gRPC's vocabulary."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @classmethod
    def from_tensorflow(cls, exc: Exception) -> "PredictorError":
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
