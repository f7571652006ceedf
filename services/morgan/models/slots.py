"""A limiter whose queue depth and running count are exported as metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from morgan.models import metrics
from morgan.models.errors import ClientGone, ServiceBusy
from morgan.models.limiter import ConcurrencyLimiter


class MeteredLimiter(ConcurrencyLimiter):
    def __init__(self, max_concurrency: int, max_queue: int, *, service: str) -> None:
        super().__init__(max_concurrency, max_queue, what=service)
        self.service = service
        metrics.QUEUE_DEPTH.labels(service).set_function(lambda: self.waiting)
        metrics.REQUESTS_RUNNING.labels(service).set_function(lambda: self.running)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with super().slot():
                yield
        except ServiceBusy:
            metrics.REQUESTS_REJECTED_TOTAL.labels(self.service).inc()
            raise
        except ClientGone:
            metrics.REQUESTS_ABANDONED_TOTAL.labels(self.service).inc()
            raise
