"""JSON logs: one object per line with time, level, service, host, request_id, user_id, message.

`request_id` and `user_id` come from context variables set per request by the app factory,
so every log line written while serving a request carries them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "morgan_request_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "morgan_user_id", default=None
)

REQUEST_ID_HEADER = "X-Request-ID"

# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}


# An API key anywhere in a line (a client that put it in a URL, a library that logs a
# request line): only its id survives, which is enough to find it in `morgan keys list`.
_KEY_IN_TEXT = re.compile(r"mk_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}")
_KEY_PARAM = re.compile(r"(api_key=)(?!mk_)[^&\s\"']+")


def redact_keys(text: str) -> str:
    """`text` with every API key's secret replaced (mk_<id>_[redacted])."""
    return _KEY_PARAM.sub(r"\1[redacted]", _KEY_IN_TEXT.sub(r"mk_\1_[redacted]", text))


def get_request_id() -> str | None:
    return request_id_var.get()


def get_user_id() -> str | None:
    return user_id_var.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def __init__(self, service: str, host: str) -> None:
        super().__init__()
        self.service = service
        self.host = host

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "service": self.service,
            "host": self.host,
            "request_id": request_id_var.get(),
            "user_id": user_id_var.get(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return redact_keys(json.dumps(entry, default=str, ensure_ascii=False))


_HANDLER_MARK = "_morgan_json_handler"


def setup_logging(
    service: str, host: str, level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger and uvicorn's loggers to one JSON handler on `stream` (stdout)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service, host))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "fastapi"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # The app's own access log (morgan.access) has the route template and duration.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    return handler
