"""Poll a server's real readiness signal until it answers or the time is up."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.harness.errors import ServerStartError
from tests.harness.process import ManagedProcess


def wait_until_ready(
    process: ManagedProcess,
    is_ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Call is_ready() until it returns True.

    Raises ServerStartError with the server's log tail if the process exits
    first or the timeout passes. Exceptions from is_ready() mean "not yet".
    """
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while True:
        code = process.exit_code()
        if code is not None:
            raise ServerStartError(
                f"{process.name} exited with status {code} before {what}; "
                f"fix the cause shown in its log {process.log_path}:\n{process.log_tail()}"
            )
        try:
            if is_ready():
                return
            last_problem = "not ready yet"
        except Exception as error:
            last_problem = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            process.stop(timeout=5)
            raise ServerStartError(
                f"{process.name} did not reach '{what}' within {timeout:.0f}s "
                f"(last check: {last_problem}); it was stopped. "
                f"Its log {process.log_path} ends with:\n{process.log_tail()}"
            )
        time.sleep(interval)
