"""API keys in real Consul KV: lifecycle, 401s, cache window, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter, Depends, WebSocket
from fastapi.testclient import TestClient
from morgan.cli.main import app as cli
from morgan.shared.app import create_app
from morgan.shared.auth import KEYS_PREFIX, ApiKeyRecord, ApiKeyStore, AuthError, require_api_key
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.settings import ServiceSettings
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from tests.shared.helpers import unique_name

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.mono = 0.0
        self.wall = datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall


def test_key_is_stored_hashed_and_verifies(consul: ConsulClientFactory) -> None:
    store = ApiKeyStore(consul)
    record, key = store.create("alice", expires_days=30)
    assert key.startswith(f"mk_{record.key_id}_")
    raw = consul.client().kv.get(KEYS_PREFIX + record.key_id)[1]["Value"].decode()
    assert key.split("_", 2)[2] not in raw and key not in raw
    stored = json.loads(raw)
    assert stored["owner"] == "alice" and stored["algorithm"] == "scrypt"
    assert stored["salt"] and stored["hash"] and stored["revoked"] is False
    assert store.verify(key).owner == "alice"
    other, _ = store.create("bob")
    assert other.salt != record.salt  # per-key salt
    assert {r.key_id for r in store.list()} >= {record.key_id, other.key_id}


def test_wrong_malformed_unknown_expired_revoked(consul: ConsulClientFactory) -> None:
    clock = Clock()
    store = ApiKeyStore(consul, clock=clock.monotonic, now=clock.now)
    record, key = store.create("carol", expires_days=1)
    with pytest.raises(AuthError) as e:
        store.verify(key[:-3] + "xyz")
    assert e.value.reason == "wrong"
    with pytest.raises(AuthError) as e:
        store.verify("hello")
    assert e.value.reason == "malformed"
    with pytest.raises(AuthError) as e:
        store.verify("mk_000000000000_" + "a" * 43)
    assert e.value.reason == "unknown"
    clock.wall += timedelta(days=2)
    with pytest.raises(AuthError, match="expired") as e:
        store.verify(key)
    clock.wall -= timedelta(days=2)
    store.revoke(record.key_id)
    with pytest.raises(AuthError) as e:
        store.verify(key)
    assert e.value.reason == "revoked"
    with pytest.raises(KeyError, match="morgan keys list"):
        store.revoke("ffffffffffff")
    with pytest.raises(ValueError, match="owner"):
        store.create("  ")


def test_revocation_elsewhere_takes_effect_within_the_cache_window(
    consul: ConsulClientFactory,
) -> None:
    clock = Clock()
    service_store = ApiKeyStore(consul, cache_seconds=30, clock=clock.monotonic)
    admin_store = ApiKeyStore(consul)
    record, key = admin_store.create("dave")
    assert service_store.verify(key).owner == "dave"
    admin_store.revoke(record.key_id)
    clock.mono += 10
    assert service_store.verify(key).owner == "dave"  # still cached (documented window)
    clock.mono += 25
    with pytest.raises(AuthError, match="revoked"):
        service_store.verify(key)


def make_app(consul: ConsulClientFactory):  # type: ignore[no-untyped-def]
    router = APIRouter()

    @router.get("/api/me")
    async def me(rec: ApiKeyRecord = Depends(require_api_key)) -> dict:
        return {"owner": rec.owner}

    @router.get("/open")
    async def open_route() -> dict:
        return {"ok": True}

    settings = ServiceSettings(
        service_name=unique_name(), register_in_consul=False, consul_http_addr=consul.addr
    )
    return create_app(settings, routers=[router])


def test_app_401s_and_public_paths(
    consul: ConsulClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ApiKeyStore(consul)
    _, key = store.create("erin")
    expired_rec, expired_key = store.create("old", expires_days=1)
    expired_rec.expires = datetime.now(UTC) - timedelta(seconds=1)
    store._put(expired_rec)
    revoked_rec, revoked_key = store.create("gone")
    store.revoke(revoked_rec.key_id)
    with TestClient(make_app(consul)) as c:
        assert c.get("/api/me", headers={"X-API-Key": key}).json() == {"owner": "erin"}
        assert c.get("/api/me", headers={"Authorization": f"Bearer {key}"}).json() == {
            "owner": "erin"
        }
        cases = {
            "missing": {},
            "malformed": {"X-API-Key": "nope"},
            "wrong": {"X-API-Key": key[:-4] + "abcd"},
            "expired": {"X-API-Key": expired_key},
            "revoked": {"Authorization": f"Bearer {revoked_key}"},
            "bad scheme": {"Authorization": f"Basic {key}"},
        }
        for what, headers in cases.items():
            r = c.get("/api/me", headers=headers)
            assert r.status_code == 401, what
            body = r.json()
            assert body["error"] == "unauthorized" and body["detail"], what
            assert key not in r.text
        for path in ("/health", "/ready", "/metrics", "/open"):
            assert c.get(path).status_code == 200, path
    logs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    served = [r for r in logs if r.get("route") == "/api/me" and r.get("status") == 200]
    assert served and all(r["user_id"] == "erin" for r in served)


def test_keys_cli_create_list_revoke(consul: ConsulClientFactory) -> None:
    runner = CliRunner()
    owner = unique_name("user")
    r = runner.invoke(
        cli, ["keys", "create", "--owner", owner, "--expires-days", "7", "--consul", consul.addr]
    )
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    key_id = key.split("_")[1]
    assert ApiKeyStore(consul).verify(key).owner == owner
    r = runner.invoke(cli, ["keys", "list", "--consul", consul.addr])
    assert key_id in r.output and owner in r.output and "active" in r.output
    assert key not in r.output
    r = runner.invoke(cli, ["keys", "revoke", key_id, "--consul", consul.addr])
    assert r.exit_code == 0 and "revoked" in r.output
    r = runner.invoke(cli, ["keys", "list", "--consul", consul.addr])
    line = next(ln for ln in r.output.splitlines() if key_id in ln)
    assert line.endswith("revoked")
    r = runner.invoke(cli, ["keys", "revoke", "000000000000", "--consul", consul.addr])
    assert r.exit_code == 2 and "no API key" in r.output
    r = runner.invoke(
        cli, ["keys", "create", "--owner", "x", "--expires-days", "-1", "--consul", consul.addr]
    )
    assert r.exit_code == 2 and "positive" in r.output


def test_websocket_needs_a_key_in_header_or_query(consul: ConsulClientFactory) -> None:
    router = APIRouter()

    @router.websocket("/api/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.scope["state"]["api_key"].owner})
        await websocket.close()

    _, key = ApiKeyStore(consul).create("wsuser")
    settings = ServiceSettings(
        service_name=unique_name(), register_in_consul=False, consul_http_addr=consul.addr
    )
    with TestClient(create_app(settings, routers=[router])) as c:
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/api/ws") as s:
            s.receive_json()
        with c.websocket_connect(f"/api/ws?api_key={key}") as s:
            assert s.receive_json() == {"user": "wsuser"}
        with c.websocket_connect("/api/ws", headers={"X-API-Key": key}) as s:
            assert s.receive_json() == {"user": "wsuser"}
