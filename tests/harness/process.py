"""Run one server process in its own process group, log to a file, always clean up.

Each server runs in a new session (its own process group), so stop() can
signal the server and every child it forked. Processes still alive when the
interpreter exits are killed by an atexit hook; on Linux a process started
from the main thread also gets PR_SET_PDEATHSIG, so even a SIGKILLed pytest
leaves no server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (after any setuid), so the
    # setting survives the exec of the server binary.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(log {path} unreadable: {error})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


class ManagedProcess:
    """A long-running server process whose stdout and stderr go to log_path."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def pgid(self) -> int | None:
        # start_new_session makes the server the leader of its own group.
        return self.pid

    def exit_code(self) -> int | None:
        """The exit status if the process has ended, None while it runs."""
        return self._popen.poll() if self._popen else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        in_main_thread = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== harness: starting {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
                preexec_fn=_die_with_parent if in_main_thread else None,
            )
        with _live_lock:
            _live.add(self)

    def stop(self, timeout: float | None = None) -> None:
        """Signal the process group, wait, then SIGKILL whatever is left."""
        if self._popen is None:
            return
        grace = self.stop_timeout if timeout is None else timeout
        pgid = self._popen.pid
        if self._popen.poll() is None:
            self._signal_group(pgid, self.stop_signal)
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(pgid, signal.SIGKILL)
                self._popen.wait(timeout=10)
        # Children that outlived their leader (e.g. postgres backends) go too.
        self._signal_group(pgid, signal.SIGKILL)
        self._wait_group_gone(pgid)
        with _live_lock:
            _live.discard(self)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def stop_all() -> None:
    """Stop every process still running; registered with atexit."""
    with _live_lock:
        remaining = list(_live)
    for process in remaining:
        with contextlib.suppress(Exception):
            process.stop(timeout=5)


atexit.register(stop_all)
