"""ConsulKv's dynamic provider against a real Consul: create, update, read, delete."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime._serialization import _serialize

from infra.components import consul_kv
from infra.components.consul_kv import ConsulKvProvider
from infra.config import SERVICE_NAMES
from infra.kv import kv_entries, settings_model
from infra.placement import Plan
from tests.harness.ports import free_ports
from tests.harness.servers import ConsulServer

ROOT = Path(__file__).resolve().parents[2]
# Not a real certificate: over http the provider only has to write and remove the file.
FAKE_CA_PEM = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"


def _kv(consul: Any, key: str) -> str | None:
    response = httpx.get(f"{consul.url}/v1/kv/{key}", timeout=5)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return base64.b64decode(response.json()[0]["Value"]).decode()


def _kv_tree(consul: Any, prefix: str) -> dict[str, str]:
    """Every key under prefix and its value, in one request."""
    response = httpx.get(f"{consul.url}/v1/kv/{prefix}", params={"recurse": "true"}, timeout=5)
    if response.status_code == 404:
        return {}
    response.raise_for_status()
    return {
        item["Key"]: base64.b64decode(item["Value"] or b"").decode() for item in response.json()
    }


def _prefix_of(entries: dict[str, str]) -> str:
    return next(iter(entries)).split("/", 1)[0] + "/"


def _props(consul: Any, entries: dict[str, str]) -> dict[str, Any]:
    return {
        "address": consul.addr,
        "scheme": "http",
        "token": "",
        "ca_pem": "",
        "entries": entries,
        "prefix": "test",
    }


@pytest.fixture()
def entries(homelab_plan: Plan) -> dict[str, str]:
    # A private prefix: other tests of the session read morgan/config/ on the same Consul.
    prefix = f"infra-test-{uuid.uuid4().hex[:8]}/"
    return {prefix + k: v for k, v in kv_entries(homelab_plan).items()}


@pytest.mark.integration
def test_create_update_read_delete(consul_server: Any, entries: dict[str, str]) -> None:
    provider = ConsulKvProvider()
    created = provider.create(_props(consul_server, entries))
    assert created.id
    some_key = next(k for k in entries if k.endswith("core/llm_service"))
    assert _kv(consul_server, some_key) == '"morgan-llm"'
    assert _kv_tree(consul_server, _prefix_of(entries)) == entries

    changed = dict(entries)
    dropped = next(k for k in entries if k.endswith("core/system_prompt"))
    del changed[dropped]
    changed[some_key] = '"morgan-llm-canary"'
    diff = provider.diff(created.id, _props(consul_server, entries), _props(consul_server, changed))
    assert diff.changes
    provider.update(created.id, _props(consul_server, entries), _props(consul_server, changed))
    assert _kv(consul_server, some_key) == '"morgan-llm-canary"'
    assert _kv(consul_server, dropped) is None

    read = provider.read(created.id, _props(consul_server, changed))
    assert read.outs is not None and read.outs["entries"] == changed

    provider.delete(created.id, _props(consul_server, changed))
    assert _kv_tree(consul_server, _prefix_of(entries)) == {}


@pytest.mark.integration
def test_no_change_means_no_diff(consul_server: Any, entries: dict[str, str]) -> None:
    diff = ConsulKvProvider().diff(
        "x", _props(consul_server, entries), _props(consul_server, entries)
    )
    assert not diff.changes


def _props_at(address: str, entries: dict[str, str]) -> dict[str, Any]:
    return {
        "address": address,
        "scheme": "http",
        "token": "",
        "ca_pem": "",
        "entries": entries,
        "prefix": "test",
    }


@pytest.mark.integration
def test_no_leader_fails_with_the_cause_and_the_fix(
    entries: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    provider = ConsulKvProvider(leader_wait_s=2.0, leader_retry_max_s=0.5)
    caplog.set_level(logging.WARNING, logger=consul_kv.__name__)
    started = time.monotonic()
    with pytest.raises(RuntimeError) as raised:
        provider.create(_props_at(address, entries))
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert f"Consul at {address} has no leader" in message
    assert "consul operator raft list-peers" in message
    assert "servers' addresses" in message
    assert "ConnectionError" in message
    assert 2.0 <= elapsed < 8.0
    retries = [r for r in caplog.records if r.name == consul_kv.__name__]
    assert len(retries) >= 2
    assert all("Retrying" in r.getMessage() for r in retries)
    tries = int(message.split(" tries in ")[0].rsplit(" ", 1)[1])
    assert tries == len(retries) + 1


@pytest.mark.integration
def test_writes_wait_for_a_consul_that_starts_late(
    tmp_path: Path, entries: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=consul_kv.__name__)
    server = ConsulServer(tmp_path / "consul")
    failures: list[BaseException] = []

    def start_later() -> None:
        time.sleep(1.5)
        try:
            server.start()
        except BaseException as error:
            failures.append(error)

    starter = threading.Thread(target=start_later, daemon=True)
    provider = ConsulKvProvider(leader_wait_s=45.0, leader_retry_max_s=1.0)
    try:
        starter.start()
        started = time.monotonic()
        created = provider.create(_props_at(server.addr, entries))
        elapsed = time.monotonic() - started
        starter.join(timeout=60)
        assert not failures
        assert created.id == "kv-test"
        assert elapsed >= 1.5
        assert any(r.name == consul_kv.__name__ for r in caplog.records)
        assert _kv_tree(server, _prefix_of(entries)) == entries
    finally:
        starter.join(timeout=60)
        server.close()


@pytest.mark.unit
def test_client_removes_its_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: dict[str, str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    props = {**_props_at("127.0.0.1:8500", entries), "ca_pem": FAKE_CA_PEM}
    with consul_kv._client(props) as client:
        path = Path(client.http.verify)
        assert path.parent == tmp_path
        assert path.read_text() == FAKE_CA_PEM
        assert path.stat().st_mode & 0o077 == 0
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(ValueError, match="boom"), consul_kv._client(props) as client:
        assert Path(client.http.verify).exists()
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []

    with consul_kv._client({**props, "ca_pem": ""}) as client:
        assert client.http.verify is True
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_no_ca_file_left_after_create_update_delete(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    consul_server: Any,
    entries: dict[str, str],
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    provider = ConsulKvProvider()
    props = {**_props(consul_server, entries), "ca_pem": FAKE_CA_PEM}
    provider.create(props)
    assert list(tmp_path.iterdir()) == []
    changed = {**props, "entries": dict(list(entries.items())[1:])}
    provider.update("kv-test", props, changed)
    assert list(tmp_path.iterdir()) == []
    read = provider.read("kv-test", changed)
    assert read.outs is not None and read.outs["entries"] == changed["entries"]
    assert list(tmp_path.iterdir()) == []
    provider.delete("kv-test", changed)
    assert list(tmp_path.iterdir()) == []
    assert _kv_tree(consul_server, _prefix_of(entries)) == {}


class _ProviderProcess:
    """A fresh interpreter that loads the provider as pulumi-dynamic-provider does."""

    def __init__(self, payload: str, tmpdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        env.pop("PYTHONPATH", None)
        env["TMPDIR"] = str(tmpdir)
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "tests.infra.dynamic_provider_child"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.hello = self._send(payload)

    def _send(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            _, stderr = self.process.communicate(timeout=10)
            raise AssertionError(f"the provider process died:\n{stderr}")
        message: dict[str, Any] = json.loads(answer)
        return message

    def call(self, **request: Any) -> dict[str, Any]:
        answer = self._send(json.dumps(request))
        assert answer["ok"], answer["traceback"]
        result: dict[str, Any] = answer["result"]
        return result

    def close(self) -> str:
        _, stderr = self.process.communicate(timeout=30)
        return stderr


@pytest.fixture()
def serialized_provider() -> str:
    payload, contains_secrets = _serialize(True, serialize_provider, ConsulKvProvider())
    assert not contains_secrets
    return payload


@pytest.fixture()
def provider_process(serialized_provider: str, tmp_path: Path) -> Iterator[_ProviderProcess]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    child = _ProviderProcess(serialized_provider, tmpdir)
    try:
        yield child
    finally:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(timeout=10)


@pytest.mark.integration
def test_serialized_provider_runs_in_a_fresh_interpreter(
    consul_server: Any,
    entries: dict[str, str],
    provider_process: _ProviderProcess,
    tmp_path: Path,
) -> None:
    hello = provider_process.hello
    assert hello["infra_before_load"] == []
    assert hello["loaded"] == "infra.components.consul_kv.ConsulKvProvider"
    assert hello["attributes"] == {
        "leader_retry_max_s": repr(consul_kv.LEADER_RETRY_MAX_S),
        "leader_wait_s": repr(consul_kv.LEADER_WAIT_S),
    }
    tmpdir = tmp_path / "tmp"
    assert Path(hello["tempdir"]) == tmpdir

    props = {**_props(consul_server, entries), "ca_pem": FAKE_CA_PEM}
    created = provider_process.call(op="create", props=props)
    assert created == {"id": "kv-test", "outs": props}
    prefix = _prefix_of(entries)
    assert _kv_tree(consul_server, prefix) == entries
    assert list(tmpdir.iterdir()) == []

    some_key = next(k for k in entries if k.endswith("core/llm_service"))
    dropped = next(k for k in entries if k.endswith("core/system_prompt"))
    changed_entries = {k: v for k, v in entries.items() if k != dropped}
    changed_entries[some_key] = '"morgan-llm-canary"'
    news = {**props, "entries": changed_entries}
    updated = provider_process.call(op="update", id="kv-test", olds=props, news=news)
    assert updated == {"outs": news}
    held = _kv_tree(consul_server, prefix)
    assert held[some_key] == '"morgan-llm-canary"'
    assert dropped not in held
    assert held == changed_entries
    assert list(tmpdir.iterdir()) == []

    read = provider_process.call(op="read", id="kv-test", props=news)
    assert read["outs"]["entries"] == changed_entries

    assert provider_process.call(op="delete", id="kv-test", props=news) == {}
    assert _kv_tree(consul_server, prefix) == {}
    assert list(tmpdir.iterdir()) == []

    stderr = provider_process.close()
    assert provider_process.process.returncode == 0, stderr
    assert list(tmpdir.iterdir()) == []


@pytest.mark.unit
def test_every_entry_is_accepted_by_its_services_settings_model(homelab_plan: Plan) -> None:
    entries = kv_entries(homelab_plan)
    for service in SERVICE_NAMES:
        model = settings_model(service)
        values = {
            k.rsplit("/", 1)[1]: json.loads(v)
            for k, v in entries.items()
            if k.startswith(f"morgan/config/{service}/")
        }
        if model is None:
            assert values == dict(homelab_plan.config.services.get(service).settings)
            continue
        parsed = model.model_validate(values)
        for key, value in homelab_plan.config.services.get(service).settings.items():
            assert getattr(parsed, key) == value
