"""InflightLimiter: at most so many turns at once; the next one is refused, not queued.

The bound is `max_inflight`, or what the llm instances core found can hold at once
(running plus waiting, their Consul meta `capacity`) when that is less: turns beyond
what the models can take would only wait and time out. Refusing at once (503 +
Retry-After) keeps latency bounded under overload; a queue would only make every caller
wait longer and time out later. Several cores share the model services, so a turn
admitted here can still find them busy: the model call then waits their Retry-After
within the stage's deadline (morgan.shared.http_client) before it gives up with 503.
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

    def bound(self, model_capacity: int | None) -> int:
        return self.limit if model_capacity is None else max(1, min(self.limit, model_capacity))

    @contextlib.contextmanager
    def slot(self, model_capacity: int | None = None) -> Iterator[None]:
        # No await between the check and the increment: on one event loop this is atomic.
        bound = self.bound(model_capacity)
        if self.inflight >= bound:
            self.rejected += 1
            TURNS_REJECTED_TOTAL.inc()
            if bound < self.limit:
                why = f"what the llm instances found can hold at once ({bound})"
                fix = "add llm instances or raise their max_concurrency/max_queue"
            else:
                why = f"its limit (max_inflight={self.limit})"
                fix = "add a core instance"
            raise OverloadedError(
                f"core is serving {self.inflight} turns, {why}; retry after"
                f" {self.retry_after_s}s or {fix}",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
