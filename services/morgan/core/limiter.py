"""InflightLimiter: at most ``limit`` turns at once; the next one is refused, not queued.

Refusing at once (503 + Retry-After) keeps latency bounded under overload; a queue
would only make every caller wait longer and time out later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from morgan.core.exceptions import OverloadedError
from morgan.core.metrics import TURNS_REJECTED_TOTAL


class InflightLimiter:
    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.rejected = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        # No await between the check and the increment: on one event loop this is atomic.
        if self.inflight >= self.limit:
            self.rejected += 1
            TURNS_REJECTED_TOTAL.inc()
            raise OverloadedError(
                f"core is serving {self.inflight} turns, its limit (max_inflight="
                f"{self.limit}); retry after {self.retry_after_s}s or add a core instance",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
