"""Loading a service's typed settings: environment > Consul KV > local YAML > defaults.

Consul KV layout (values are JSON):
    morgan/config/global/<field>      applies to every service (unknown fields ignored)
    morgan/config/<service>/<field>   applies to one service (unknown fields are errors)
A nested field is a deeper key: `morgan/config/llm/sampling/temperature`.

Environment: `MORGAN_<SERVICE>_<FIELD>` (e.g. MORGAN_LLM_PORT=8001; JSON for lists and
objects), plus the standard CONSUL_HTTP_ADDR and MORGAN_ADVERTISE_HOST.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import consul as consul_api
import yaml
from pydantic import ValidationError

from morgan.shared.consul_client import (
    CONSUL_UNREACHABLE_ERRORS,
    ConsulClientFactory,
    until_answered,
)
from morgan.shared.metrics import CONFIG_REJECTED_TOTAL
from morgan.shared.secret_files import FILE_SUFFIX, SecretFileError, secret_from_env
from morgan.shared.settings import ServiceSettings, is_env_only

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

KV_ROOT = "morgan/config/"
GLOBAL_SCOPE = "global"
# Environment variables with a meaning outside Morgan that map onto shared fields.
ENV_ALIASES = {"consul_http_addr": "CONSUL_HTTP_ADDR", "host": "MORGAN_ADVERTISE_HOST"}


class ConfigError(ValueError):
    """Configuration cannot be loaded; the message names the source and the fix."""


def kv_prefix(scope: str) -> str:
    return f"{KV_ROOT}{scope}/"


def env_prefix(service: str) -> str:
    return "MORGAN_" + service.upper().replace("-", "_") + "_"


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for p in parts[:-1]:
        nxt = target.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            target[p] = nxt
        target = nxt
    target[parts[-1]] = value


def kv_entries_to_layers(
    service: str, entries: list[dict[str, Any]] | None
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Split raw KV entries into (global layer, service layer, errors for non-JSON values)."""
    glob: dict[str, Any] = {}
    svc: dict[str, Any] = {}
    errors: list[str] = []
    for e in entries or []:
        key: str = e["Key"]
        for scope, layer in ((GLOBAL_SCOPE, glob), (service, svc)):
            prefix = kv_prefix(scope)
            if not key.startswith(prefix) or key.endswith("/"):
                continue
            raw = e.get("Value")
            text = raw.decode() if isinstance(raw, bytes | bytearray) else (raw or "")
            try:
                value = json.loads(text)
            except ValueError:
                errors.append(
                    f"{key}: value {text[:60]!r} is not JSON; write strings quoted, "
                    f"e.g. consul kv put {key} '\"{text[:20]}\"'"
                )
                continue
            _set_path(layer, key[len(prefix) :].split("/"), value)
    return glob, svc, errors


class ConfigWatch:
    """Handle of a running `ConsulConfigLoader.watch`; `stop()` ends it."""

    def __init__(self, thread: threading.Thread, stop_event: threading.Event) -> None:
        self._thread = thread
        self._stop = stop_event

    def stop(self, timeout: float = 0.0) -> None:
        self._stop.set()
        if timeout:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()


class ConsulConfigLoader(Generic[S]):
    """Builds `settings_cls` for `service` from env, Consul KV, YAML and defaults."""

    def __init__(
        self,
        settings_cls: type[S],
        service: str,
        consul: ConsulClientFactory | None = None,
        yaml_path: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        watch_wait_seconds: float = 10.0,
    ) -> None:
        self.settings_cls = settings_cls
        self.service = service
        self._environ = environ
        self.consul = consul or ConsulClientFactory.from_env(self.environ.get("CONSUL_HTTP_ADDR"))
        self.yaml_path = Path(yaml_path) if yaml_path else None
        self.watch_wait_seconds = watch_wait_seconds
        self.current: S | None = None
        self._kv_index: str | None = None

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    # -- layers ------------------------------------------------------------------------------

    def defaults_layer(self) -> dict[str, Any]:
        field = self.settings_cls.model_fields["service_name"]
        if field.default == ServiceSettings.model_fields["service_name"].default:
            return {"service_name": f"morgan-{self.service}"}
        return {}

    def yaml_layer(self) -> dict[str, Any]:
        if self.yaml_path is None:
            return {}
        if not self.yaml_path.exists():
            log.warning("config file %s not found; using defaults below Consul KV", self.yaml_path)
            return {}
        try:
            data = yaml.safe_load(self.yaml_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.yaml_path}: not valid YAML ({exc}); fix the file") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.yaml_path}: expected a mapping of setting names to values, "
                f"got {type(data).__name__}"
            )
        return data

    def env_layer(self) -> dict[str, Any]:
        prefix = env_prefix(self.service)
        fields = self.settings_cls.model_fields
        out: dict[str, Any] = {}
        env = self.environ
        for name in fields:
            alias = ENV_ALIASES.get(name)
            if alias and env.get(alias):
                out[name] = env[alias]
        for key, raw in env.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in fields and name.endswith(FILE_SUFFIX.lower()):
                # MORGAN_<SERVICE>_<SETTING>_FILE: the setting's value is in that file.
                name = name[: -len(FILE_SUFFIX)]
                if name in fields:
                    out[name] = self._from_file(env, key.removesuffix(FILE_SUFFIX))
                continue
            if name not in fields:
                continue
            value: Any = raw
            if raw[:1] in "[{":
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(f"{key}: not valid JSON ({exc})") from exc
            out[name] = value
        return out

    @staticmethod
    def _from_file(env: Mapping[str, str], variable: str) -> str:
        try:
            value = secret_from_env(env, variable)
        except SecretFileError as exc:
            raise ConfigError(str(exc)) from exc
        return value or ""

    def fetch_kv(self) -> tuple[str | None, list[dict[str, Any]] | None]:
        """Raw entries under morgan/config/ (raises when Consul is unreachable)."""
        client = self.consul.client()
        index, entries = client.kv.get(KV_ROOT, recurse=True)
        return index, entries

    def kv_layers(self, entries: list[dict[str, Any]] | None) -> tuple[dict[str, Any], list[str]]:
        """The KV layer of this service from raw entries (its own keys over the global keys
        it has a field for), and the errors of values that are not JSON."""
        glob, svc, errors = kv_entries_to_layers(self.service, entries)
        known = self.settings_cls.model_fields
        glob = {k: v for k, v in glob.items() if k in known}
        merged = deep_merge(glob, svc)
        for name in sorted(n for n in merged if is_env_only(self.settings_cls, n)):
            # Ignored, not an error: one such key must not hold back every other change.
            del merged[name]
            self._reject(
                f"{name} is set in Consul KV and ignored: it is a security setting only the "
                f"environment may set ({env_prefix(self.service)}{name.upper()}); delete the "
                "KV key"
            )
        return merged, errors

    def build(self, kv: Mapping[str, Any]) -> S:
        merged = deep_merge(self.defaults_layer(), self.yaml_layer())
        merged = deep_merge(merged, kv)
        merged = deep_merge(merged, self.env_layer())
        return self.settings_cls.model_validate(merged)

    def _reject(self, reason: str) -> None:
        CONFIG_REJECTED_TOTAL.labels(self.service).inc()
        log.error("rejected configuration from Consul KV for %s: %s", self.service, reason)

    # -- public API --------------------------------------------------------------------------

    def load(self) -> S:
        """Settings now. Consul down → YAML and defaults with a warning; invalid KV keys are
        left out (logged, counted in morgan_config_rejected_total)."""
        kv: dict[str, Any] = {}
        try:
            self._kv_index, entries = self.fetch_kv()
        except CONSUL_UNREACHABLE_ERRORS as exc:
            log.warning(
                "Consul at %s unreachable (%s); %s starts from environment, %s and defaults",
                self.consul.addr,
                exc,
                self.service,
                self.yaml_path or "no YAML file",
            )
            entries = None
        except consul_api.ConsulException as exc:
            log.warning(
                "Consul at %s refused the config read (%s); check CONSUL_HTTP_TOKEN. %s starts "
                "from environment, YAML and defaults",
                self.consul.addr,
                exc,
                self.service,
            )
            entries = None
        if entries is not None:
            kv, errors = self.kv_layers(entries)
            for err in errors:
                self._reject(err)
        try:
            settings = self.build(kv)
        except ValidationError as exc:
            if not kv:
                raise ConfigError(f"invalid configuration for {self.service}: {exc}") from exc
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            self._reject(f"{', '.join(sorted(bad)) or 'KV'}: {exc}")
            kv = {k: v for k, v in kv.items() if k not in bad}
            try:
                settings = self.build(kv)
            except ValidationError as exc2:
                raise ConfigError(f"invalid configuration for {self.service}: {exc2}") from exc2
        self.current = settings
        return settings

    def reload_from_entries(self, entries: list[dict[str, Any]] | None) -> S | None:
        """Apply KV entries: returns new settings if valid and changed, else None."""
        kv, errors = self.kv_layers(entries)
        if errors:
            for err in errors:
                self._reject(err)
            return None
        try:
            new = self.build(kv)
        except (ValidationError, ConfigError) as exc:
            self._reject(str(exc))
            return None
        if new == self.current:
            return None
        self.current = new
        return new

    def watch(
        self,
        callback: Callable[[S], Any],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> ConfigWatch:
        """Call `callback(new_settings)` whenever a valid KV change alters the settings.

        Runs a blocking query in a daemon thread. An async callback runs on `loop` (default:
        the running loop when `watch` is called)."""
        if self.current is None:
            self.load()
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        stop = threading.Event()
        t = threading.Thread(
            target=self._watch_loop,
            args=(callback, loop, stop),
            name=f"config-watch-{self.service}",
            daemon=True,
        )
        t.start()
        return ConfigWatch(t, stop)

    def _watch_loop(
        self,
        callback: Callable[[S], Any],
        loop: asyncio.AbstractEventLoop | None,
        stop: threading.Event,
    ) -> None:
        client = self.consul.client()
        wait = f"{max(1, int(self.watch_wait_seconds))}s"
        index = self._kv_index
        while not stop.is_set():
            answer = until_answered(
                functools.partial(client.kv.get, KV_ROOT, recurse=True, index=index, wait=wait),
                stop,
                f"config watch of {self.service}",
            )
            if answer is None:
                return
            new_index, entries = answer
            if stop.is_set():
                return
            if new_index == index:
                continue
            index = new_index
            new = self.reload_from_entries(entries)
            if new is None:
                continue
            log.info("configuration of %s changed in Consul KV; applied", self.service)
            try:
                result = callback(new)
                if inspect.isawaitable(result):
                    if loop is None:
                        raise ConfigError("async config callback needs a running event loop")
                    asyncio.run_coroutine_threadsafe(_await(result), loop)
            except Exception:
                log.exception("config callback for %s failed", self.service)


async def _await(awaitable: Any) -> Any:
    return await awaitable
