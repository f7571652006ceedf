"""Errors a model service answers with: a status code and a message naming cause and fix."""

from __future__ import annotations


class ModelRequestError(Exception):
    """A request the service refuses; rendered as JSON with ``status`` (see ``body``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "invalid_request",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        # Same shape as every Morgan error ({"error": str, "detail": ...}); the detail carries
        # the fields OpenAI clients look for (message, type, param, code).
        return {
            "error": self.message,
            "detail": {
                "message": self.message,
                "type": "invalid_request_error" if self.status < 500 else "server_error",
                "param": self.param,
                "code": self.code,
            },
        }


class ServiceBusy(ModelRequestError):
    """Every slot and the wait queue are full."""

    def __init__(self, retry_after_seconds: int, what: str) -> None:
        super().__init__(
            503,
            f"{what} is busy: all workers and the wait queue are full; "
            f"retry after {retry_after_seconds} s or raise max_concurrency/max_queue",
            code="overloaded",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class ClientGone(ModelRequestError):
    """The client closed its connection before the answer: the request is dropped unrun,
    or its generation stopped at the next token (``started``).

    Status 499 (a client closed request): nobody reads the answer, but the access log
    and the request metrics show why the request ended."""

    def __init__(self, what: str, *, started: bool = False) -> None:
        done = (
            f"while {what} worked on the request; it was stopped unfinished"
            if started
            else f"before {what} could start the request; it was dropped without running"
        )
        super().__init__(
            499,
            f"the client closed its connection {done} (the caller gave up: see its timeout)",
            code="client_closed_request",
        )


class ModelNotReady(ModelRequestError):
    def __init__(self, what: str, reason: str) -> None:
        super().__init__(
            503,
            f"{what} model is not loaded ({reason}); check the service log and the model "
            "directory, then retry",
            code="model_not_ready",
            headers={"Retry-After": "5"},
        )
