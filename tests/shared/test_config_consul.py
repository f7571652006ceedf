"""ConsulConfigLoader, `morgan config set` and `migrate` against a real Consul agent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from morgan.cli.main import app as cli
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.settings import ServiceSettings
from prometheus_client import REGISTRY
from pydantic import Field
from typer.testing import CliRunner

from tests.shared.helpers import eventually, unique_name

pytestmark = pytest.mark.integration


class KVSettings(ServiceSettings):
    """Settings of a service used by these tests."""

    model: str = Field("default-model", description="Model.")
    temperature: float = Field(0.7, ge=0, le=2, description="Temperature.")
    kvtest_shared_flag: bool = Field(False, description="Only this class has it.")


def put(consul: ConsulClientFactory, key: str, value: object, raw: bool = False) -> None:
    consul.client().kv.put(key, value if raw else json.dumps(value))


def rejected(service: str) -> float:
    return REGISTRY.get_sample_value("morgan_config_rejected_total", {"service": service}) or 0.0


def test_precedence_env_over_kv_over_yaml_over_defaults(
    consul: ConsulClientFactory,
    tmp_path: Path,
) -> None:
    svc = unique_name("kv")
    yml = tmp_path / "svc.yaml"
    yml.write_text("model: yaml-model\ntemperature: 0.1\nport: 8100\nlog_level: WARNING\n")
    put(consul, f"morgan/config/{svc}/temperature", 0.5)
    put(consul, f"morgan/config/{svc}/port", 8200)
    put(consul, "morgan/config/global/kvtest_shared_flag", True)
    env = {f"MORGAN_{svc.upper().replace('-', '_')}_PORT": "8300"}
    s = ConsulConfigLoader(KVSettings, svc, consul, yaml_path=yml, environ=env).load()
    assert s.port == 8300  # env beats KV and YAML
    assert s.temperature == 0.5  # KV beats YAML
    assert s.model == "yaml-model"  # YAML beats default
    assert s.log_level == "WARNING"
    assert s.kvtest_shared_flag is True  # global KV
    assert s.version  # default
    consul.client().kv.delete("morgan/config/global/kvtest_shared_flag")


def test_invalid_kv_key_at_start_is_left_out_and_counted(consul: ConsulClientFactory) -> None:
    svc = unique_name("kv")
    put(consul, f"morgan/config/{svc}/temperature", 9.0)  # out of range
    put(consul, f"morgan/config/{svc}/model", "kv-model")
    before = rejected(svc)
    s = ConsulConfigLoader(KVSettings, svc, consul, environ={}).load()
    assert s.temperature == 0.7 and s.model == "kv-model"
    assert rejected(svc) == before + 1


def test_watch_applies_changes_live_and_rejects_invalid_ones(
    consul: ConsulClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = unique_name("kv")
    loader = ConsulConfigLoader(KVSettings, svc, consul, environ={}, watch_wait_seconds=5)
    assert loader.load().model == "default-model"
    seen: list[KVSettings] = []
    changed = threading.Event()

    def on_change(s: KVSettings) -> None:
        seen.append(s)
        changed.set()

    handle = loader.watch(on_change)
    try:
        time.sleep(0.3)  # let the blocking query start
        put(consul, f"morgan/config/{svc}/model", "live-model")
        start = time.monotonic()
        assert changed.wait(5), "KV change did not reach the callback"
        assert time.monotonic() - start < 2.0
        assert seen[-1].model == "live-model"
        changed.clear()

        before = rejected(svc)
        put(consul, f"morgan/config/{svc}/temperature", "hot")  # wrong type
        eventually(lambda: rejected(svc) == before + 1, timeout=5, what="a rejection")
        put(consul, f"morgan/config/{svc}/model", "not json {", raw=True)
        eventually(lambda: rejected(svc) == before + 2, timeout=5, what="a JSON rejection")
        assert not changed.is_set()
        assert loader.current is not None and loader.current.model == "live-model"
        assert any("rejected configuration" in r.getMessage() for r in caplog.records)

        consul.client().kv.delete(f"morgan/config/{svc}/temperature")
        put(consul, f"morgan/config/{svc}/model", "fixed-model")
        assert changed.wait(5)
        assert seen[-1].model == "fixed-model"
    finally:
        handle.stop()


def test_migrate_dry_run_apply_and_prune(consul: ConsulClientFactory, tmp_path: Path) -> None:
    svc = unique_name("mig")
    (tmp_path / f"{svc}.yaml").write_text("model: m1\ntemperature: 0.3\n")
    put(consul, f"morgan/config/{svc}/stale_key", 1)
    put(consul, f"morgan/config/{svc}/temperature", 0.9)
    runner = CliRunner()
    args = ["config", "migrate", "--from", str(tmp_path), "--consul", consul.addr]
    r = runner.invoke(cli, [*args, "--dry-run", "--prune"])
    assert r.exit_code == 0, r.output
    assert f'+ morgan/config/{svc}/model = "m1"' in r.output
    assert f"~ morgan/config/{svc}/temperature: 0.9 -> 0.3" in r.output
    assert f"- morgan/config/{svc}/stale_key" in r.output
    kv = consul.client().kv
    assert kv.get(f"morgan/config/{svc}/model")[1] is None  # dry run changed nothing
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert json.loads(kv.get(f"morgan/config/{svc}/model")[1]["Value"]) == "m1"
    assert kv.get(f"morgan/config/{svc}/stale_key")[1] is not None  # no --prune
    r = runner.invoke(cli, [*args, "--prune"])
    assert r.exit_code == 0, r.output
    assert kv.get(f"morgan/config/{svc}/stale_key")[1] is None
    s = ConsulConfigLoader(KVSettings, svc, consul, environ={}).load()
    assert (s.model, s.temperature) == ("m1", 0.3)


def test_migrate_refuses_invalid_files(consul: ConsulClientFactory, tmp_path: Path) -> None:
    (tmp_path / "core.yaml").write_text("port: not-a-port\n")
    (tmp_path / "global.yaml").write_text("no_such_setting_anywhere: 1\n")
    r = CliRunner().invoke(
        cli, ["config", "migrate", "--from", str(tmp_path), "--consul", consul.addr]
    )
    assert r.exit_code == 2
    assert "refusing to upload invalid configuration" in r.output
    assert "no_such_setting_anywhere" in r.output
    r = CliRunner().invoke(
        cli, ["config", "migrate", "--from", str(tmp_path / "missing"), "--consul", consul.addr]
    )
    assert r.exit_code == 2 and "is not a directory" in r.output


def test_create_app_follows_kv_changes_live(consul: ConsulClientFactory) -> None:
    from fastapi.testclient import TestClient
    from morgan.shared.app import create_app

    svc = unique_name("kv")
    put(consul, f"morgan/config/{svc}/register_in_consul", False)
    put(consul, f"morgan/config/{svc}/consul_http_addr", consul.addr)
    loader = ConsulConfigLoader(KVSettings, svc, consul, environ={}, watch_wait_seconds=5)
    settings = loader.load()
    assert settings.register_in_consul is False
    app = create_app(settings, config_loader=loader)
    with TestClient(app):
        time.sleep(0.3)
        put(consul, f"morgan/config/{svc}/model", "hot-swapped")
        eventually(
            lambda: app.state.settings.model == "hot-swapped",
            timeout=5,
            what="app.state.settings to follow KV",
        )
        put(consul, f"morgan/config/{svc}/port", "not-a-port")
        time.sleep(1)
        assert app.state.settings.port == settings.port


@pytest.fixture
def restore_keys(consul: ConsulClientFactory) -> Iterator[Callable[[str], str]]:
    """`remember(key)`: the key's value now is put back (or the key deleted) after the test."""
    kv = consul.client().kv
    saved: dict[str, bytes | None] = {}

    def remember(key: str) -> str:
        if key not in saved:
            entry = kv.get(key)[1]
            saved[key] = entry["Value"] if entry else None
        return key

    yield remember
    for key, value in saved.items():
        if value is None:
            kv.delete(key)
        else:
            kv.put(key, value)


def test_config_set_says_live_or_restart_per_setting(
    consul: ConsulClientFactory,
    restore_keys: Callable[[str], str],
) -> None:
    kv = consul.client().kv
    prompt = restore_keys("morgan/config/core/system_prompt")
    port = restore_keys("morgan/config/core/port")
    run = CliRunner().invoke
    base = ["config", "set", "--consul", consul.addr]

    r = run(cli, [*base, "core", "system_prompt", "You are a pirate."])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f'{prompt} = "You are a pirate.": picked up live by core'
    assert json.loads(kv.get(prompt)[1]["Value"]) == "You are a pirate."

    r = run(cli, [*base, "core", "port", "8100"])
    assert r.exit_code == 0, r.output
    assert "needs a restart of core" in r.output and "picked up live" not in r.output
    assert json.loads(kv.get(port)[1]["Value"]) == 8100

    restore_keys("morgan/config/llm/max_tokens_limit")
    restore_keys("morgan/config/stt/model")
    r = run(cli, [*base, "llm", "max_tokens_limit", "1024"])
    assert r.exit_code == 0 and "picked up live by llm" in r.output, r.output
    r = run(cli, [*base, "stt", "model", "small"])
    assert r.exit_code == 0 and "needs a restart of stt (model" in r.output, r.output


def test_config_set_global_names_every_service_and_the_keys_that_win(
    consul: ConsulClientFactory,
    restore_keys: Callable[[str], str],
) -> None:
    restore_keys("morgan/config/global/log_level")
    restore_keys("morgan/config/global/bind_host")
    own = restore_keys("morgan/config/tts/log_level")
    put(consul, own, "ERROR")
    base = ["config", "set", "--consul", consul.addr, "global"]
    r = CliRunner().invoke(cli, [*base, "log_level", "DEBUG"])
    assert r.exit_code == 0, r.output
    assert "picked up live by core, llm, stt, tts" in r.output
    assert f"{own} is set too and wins for tts" in r.output
    r = CliRunner().invoke(cli, [*base, "bind_host", "127.0.0.1"])
    assert r.exit_code == 0 and "needs a restart of core, llm, stt, tts" in r.output, r.output


def test_config_set_refuses_what_the_service_would_reject_and_writes_nothing(
    consul: ConsulClientFactory,
    restore_keys: Callable[[str], str],
) -> None:
    kv = consul.client().kv
    key = restore_keys("morgan/config/core/llm_max_tokens")
    kv.delete(key)
    base = ["config", "set", "--consul", consul.addr]
    r = CliRunner().invoke(cli, [*base, "core", "llm_max_tokens", "99999"])
    assert r.exit_code == 2
    assert "core would reject" in r.output and "Nothing was written" in r.output
    assert kv.get(key)[1] is None
    r = CliRunner().invoke(cli, [*base, "core", "llm_max_token", "5"])
    assert r.exit_code == 2 and "did you mean llm_max_tokens" in r.output
    r = CliRunner().invoke(cli, [*base, "nosuch", "port", "1"])
    assert r.exit_code == 2 and "unknown service 'nosuch'" in r.output
    r = CliRunner().invoke(cli, [*base, "core", "postgres_dsn", "postgresql://u:p@h/db"])
    assert r.exit_code == 2 and "MORGAN_CORE_POSTGRES_DSN" in r.output
    assert kv.get("morgan/config/core/postgres_dsn")[1] is None


def test_migrate_names_the_services_that_need_a_restart(
    consul: ConsulClientFactory,
    tmp_path: Path,
    restore_keys: Callable[[str], str],
) -> None:
    restore_keys("morgan/config/core/context_turns")
    restore_keys("morgan/config/core/postgres_pool_max")
    (tmp_path / "core.yaml").write_text("context_turns: 7\npostgres_pool_max: 9\n")
    r = CliRunner().invoke(cli, ["config", "migrate", "--from", str(tmp_path), "--consul",
                                 consul.addr])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "needs a restart of core (postgres_pool_max)" in r.output
    assert "the other changes are picked up live" in r.output


def test_security_settings_in_kv_are_ignored_and_refused_by_config_set(
    consul: ConsulClientFactory,
    restore_keys: Callable[[str], str],
) -> None:
    """Whoever can write KV must not switch off API keys, TLS or stretch the key cache."""
    svc = unique_name("kv")
    put(consul, f"morgan/config/{svc}/auth_enabled", False)
    put(consul, f"morgan/config/{svc}/api_key_cache_seconds", 86400)
    put(consul, f"morgan/config/{svc}/temperature", 0.3)
    before = rejected(svc)
    s = ConsulConfigLoader(KVSettings, svc, consul, environ={}).load()
    assert s.auth_enabled is True and s.api_key_cache_seconds == 30.0
    assert s.temperature == 0.3, "the other KV keys still apply"
    assert rejected(svc) == before + 2
    env = {f"MORGAN_{svc.upper().replace('-', '_')}_AUTH_ENABLED": "false"}
    assert ConsulConfigLoader(KVSettings, svc, consul, environ=env).load().auth_enabled is False
    consul.client().kv.delete(f"morgan/config/{svc}/", recurse=True)

    key = restore_keys("morgan/config/global/auth_enabled")
    consul.client().kv.delete(key)
    r = CliRunner().invoke(
        cli, ["config", "set", "--consul", consul.addr, "global", "auth_enabled", "false"]
    )
    assert r.exit_code == 2 and "only the environment may set" in r.output, r.output
    assert consul.client().kv.get(key)[1] is None
    with pytest.raises(ValueError, match="less than or equal to 300"):
        KVSettings(api_key_cache_seconds=3600)
