"""Errors a turn can end with; each carries the HTTP status and a message naming the fix."""

from __future__ import annotations


class TurnError(Exception):
    status_code = 500
    error = "turn failed"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInputError(TurnError):
    status_code = 422
    error = "invalid input"


class ForbiddenError(TurnError):
    status_code = 403
    error = "forbidden"


class PayloadTooLargeError(TurnError):
    status_code = 413
    error = "payload too large"


class UnsupportedMediaError(TurnError):
    status_code = 415
    error = "unsupported media type"


class NotFoundError(TurnError):
    status_code = 404
    error = "not found"


class OverloadedError(TurnError):
    status_code = 503
    error = "overloaded"


class ModelsBusyError(TurnError):
    """Every instance of a model service stayed busy for as long as the turn could wait."""

    status_code = 503
    error = "overloaded"


class StageUnavailableError(TurnError):
    """A model service could not be reached (none healthy in Consul, all instances failed)."""

    status_code = 503
    error = "service unavailable"


class StageTimeoutError(TurnError):
    status_code = 504
    error = "stage timed out"


class StageFailedError(TurnError):
    """A model service answered with an error we cannot turn into a reply: a broken
    upstream, never a busy one (that is ModelsBusyError)."""

    status_code = 502
    error = "upstream error"


class StorageUnavailableError(TurnError):
    status_code = 503
    error = "storage unavailable"
