"""Processes and in-process servers for core's tests: model-service instances and core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul as consul_lib
import httpx
import uvicorn
from morgan.core.app import build_app
from morgan.core.config import CoreSettings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import server_config

from tests.harness.ports import free_port
from tests.harness.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


def passing_ports(consul_addr: str, name: str) -> set[int]:
    host, port = consul_addr.rsplit(":", 1)
    client = consul_lib.Consul(host=host, port=int(port))
    _, entries = client.health.service(name, passing=True)
    return {int(e["Service"]["Port"]) for e in entries or []}


def wait_passing(consul_addr: str, name: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port in passing_ports(consul_addr, name):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} on port {port} never became passing in Consul at {consul_addr}")


class ModelInstance:
    """One model-service process (``argv`` ending in its port), registered in Consul."""

    def __init__(self, name: str, argv: list[str], port: int, consul_addr: str, log: Path,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.port = port
        self.consul_addr = consul_addr
        self.process = ManagedProcess(
            f"{name}-{port}", argv, log, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'services'}",
                 "CONSUL_HTTP_ADDR": consul_addr, "HF_HUB_OFFLINE": "1", **(env or {})},
            stop_timeout=5.0,
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> ModelInstance:
        """Start, then wait until this process answers /health and Consul lists it as
        passing. The order matters after `kill`: until the new process registers, Consul
        may still list the killed one's registration (same id) as passing."""
        self.process.start()
        try:
            self._wait_serving(timeout)
            wait_passing(self.consul_addr, self.name, self.port, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.process.log_tail()}") from exc
        return self

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} on port {self.port} never answered /health")

    def kill(self) -> None:
        """SIGKILL: no deregistration, Consul still lists it until its check fails."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.process.stop(timeout=1)

    def stop(self) -> None:
        self.process.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def echo_instance(
    name: str, consul_addr: str, log_dir: Path, *, delay_s: float = 0.0, fail_tts: bool = False,
    word_delay_s: float = 0.0, speech_ms_per_char: int = 10,
) -> ModelInstance:  # fmt: skip
    port = free_port()
    argv = [sys.executable, "-m", "tests.core.upstream_app", "--name", name,
            "--port", str(port), "--consul", consul_addr, "--delay", str(delay_s),
            "--word-delay", str(word_delay_s),
            "--speech-ms-per-char", str(speech_ms_per_char)]  # fmt: skip
    if fail_tts:
        argv.append("--fail-tts")
    env = {"MORGAN_ADVERTISE_HOST": "127.0.0.1"}
    return ModelInstance(name, argv, port, consul_addr, log_dir / f"{name}-{port}.log", env)


def vad_instance(name: str, consul_addr: str, log_dir: Path) -> ModelInstance:
    """A real morgan-vad (Silero's bundled model) under a test name, without API keys."""
    port = free_port()
    settings = {"SERVICE_NAME": name, "PORT": str(port), "BIND_HOST": "127.0.0.1",
                "AUTH_ENABLED": "false", "SHUTDOWN_DRAIN_SECONDS": "1",
                "SHUTDOWN_DELAY_SECONDS": "0"}  # fmt: skip
    env = {"MORGAN_ADVERTISE_HOST": "127.0.0.1"}
    env.update({f"MORGAN_VAD_{key}": value for key, value in settings.items()})
    argv = [sys.executable, "-m", "morgan.vad"]
    return ModelInstance(name, argv, port, consul_addr, log_dir / f"{name}-{port}.log", env)


@contextlib.contextmanager
def started(instances: dict[str, ModelInstance]) -> Iterator[dict[str, ModelInstance]]:
    """The instances started one by one (each passing in Consul), stopped at the end."""
    try:
        for instance in instances.values():
            instance.start()
        yield instances
    finally:
        for instance in instances.values():
            instance.stop()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handling alone
        yield


class CoreServer:
    """core served over real HTTP from this test process (same event loop as the test);
    with `config_loader` it follows Consul KV like a deployed core."""

    def __init__(
        self, settings: CoreSettings, config_loader: ConsulConfigLoader[CoreSettings] | None = None
    ) -> None:
        self.settings = settings
        self.config_loader = config_loader
        self.app: Any = None
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/ws/stream"

    async def start(self, timeout: float = 60.0) -> CoreServer:
        self.app = build_app(self.settings, config_loader=self.config_loader)
        config = server_config(self.app, self.settings)
        config.ws = "websockets-sansio"
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self._task.done():
                    self._task.result()  # raises the start-up error
                    raise RuntimeError("core exited during start-up")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/ready")).status_code == 200:
                        return self
                await asyncio.sleep(0.1)
        raise TimeoutError("core did not become ready")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None

    @property
    def orchestrator(self) -> Any:
        return self.app.state.orchestrator

    @contextlib.contextmanager
    def settings_changed(self, **changes: Any) -> Iterator[None]:
        """Run the block with these settings changed, as a KV change would change them."""
        before = self.app.state.settings
        self.app.state.settings = before.model_copy(update=changes)
        try:
            yield
        finally:
            self.app.state.settings = before


def core_settings(consul_addr: str, dsn: str, qdrant_path: Path, **overrides: Any) -> CoreSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "bind_host": "127.0.0.1", "port": free_port(),
        "consul_http_addr": consul_addr, "postgres_dsn": dsn, "qdrant_path": qdrant_path,
        "shutdown_drain_seconds": 1, "discovery_cache_seconds": 1.0,
        "consul_check_interval": "1s", "llm_timeout_seconds": 20.0,
        # Every test here is one client (loopback): the rate limit tests turn the budgets on.
        "rate_limit_per_minute": 0, "audio_rate_limit_per_minute": 0,
    }  # fmt: skip
    values.update(overrides)
    return CoreSettings(**values)
