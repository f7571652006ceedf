"""Waiting for a running stack to reach a state: one bounded, logged poll for every wait."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a probe whose state is not reached yet; the message says what it saw."""


class PollTimeout(Exception):
    """The state was not reached in time; the message ends with what the last try saw."""

    def __init__(self, what: str, timeout: float, last: str) -> None:
        super().__init__(f"{what}: not within {timeout:.0f} s (last try: {last})")
        self.last = last


def poll(
    probe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
    errors: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `probe` every `interval` s until it returns, for at most `timeout` s.

    The probe raises `NotYet` (or one of `errors`, e.g. a refused connection) while the state
    is not reached; every such try is logged. Raises `PollTimeout` naming the last one.
    """
    retried: tuple[type[BaseException], ...] = (NotYet, *errors)
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_exception_type(retried),
        before_sleep=lambda state: log.info(
            "%s: try %d: %s", what, state.attempt_number, _seen(state)
        ),
        reraise=True,
    )
    try:
        return retrying(probe)
    except retried as exc:
        raise PollTimeout(what, timeout, str(exc) or type(exc).__name__) from exc


def _seen(state: tenacity.RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    return str(exc) or type(exc).__name__
