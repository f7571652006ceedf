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
from morgan.shared.consul_stale import StaleRead, read_stale, staleness
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


def test_scopes_default_to_user_and_unknown_ones_are_refused(consul: ConsulClientFactory) -> None:
    store = ApiKeyStore(consul)
    record, key = store.create("gail", scopes=("service",))
    # A record written before keys had scopes is a user key: least privilege.
    raw = json.loads(consul.client().kv.get(KEYS_PREFIX + record.key_id)[1]["Value"])
    assert raw["scopes"] == ["service"]
    del raw["scopes"]
    consul.client().kv.put(KEYS_PREFIX + record.key_id, json.dumps(raw))
    assert ApiKeyStore(consul).verify(key).scopes == ["user"]
    with pytest.raises(ValueError, match="not known"):
        store.create("gail", scopes=("root",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not known"):
        store.create("gail", scopes=())


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


def test_a_key_is_checked_against_the_nearest_servers_copy_when_it_is_fresh(
    consul: ConsulClientFactory,
) -> None:
    store = ApiKeyStore(consul)
    record, key = store.create("erin")
    read = read_stale(consul.client(), KEYS_PREFIX + record.key_id)
    assert read.known_leader and read.last_contact_s == 0.0  # the only server leads
    assert read.entry is not None and json.loads(read.entry["Value"])["owner"] == "erin"
    assert read.fresh_within(store.cache_seconds)
    assert store.verify(key).owner == "erin"
    assert read_stale(consul.client(), KEYS_PREFIX + "ffffffffffff").entry is None


def test_how_stale_a_servers_copy_is_comes_from_its_headers() -> None:
    cut_off = {"X-Consul-LastContact": "45000", "X-Consul-KnownLeader": "false"}
    assert staleness(cut_off) == (45.0, False)
    assert staleness({"X-Consul-LastContact": "120", "X-Consul-KnownLeader": "true"}) == (
        0.12,
        True,
    )
    assert staleness({}) == (float("inf"), False)  # a server that does not say
    assert StaleRead(None, 0.12, True).fresh_within(30)
    assert not StaleRead(None, 31.0, True).fresh_within(30)
    assert not StaleRead(None, 0.0, False).fresh_within(30)  # no leader known


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
    _, key = store.create("erin", scopes=("service",))
    expired_rec, expired_key = store.create("old", expires_days=1, scopes=("service",))
    expired_rec.expires = datetime.now(UTC) - timedelta(seconds=1)
    store._put(expired_rec)
    revoked_rec, revoked_key = store.create("gone", scopes=("service",))
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
        # A model service takes service keys only: a user's or an admin's key is refused.
        for scope in ("user", "admin"):
            _, other = store.create("frank", scopes=(scope,))
            r = c.get("/api/me", headers={"X-API-Key": other})
            assert r.status_code == 403, scope
            assert r.json()["error"] == "forbidden"
            assert f"has scope {scope}; this service accepts only service keys" in r.text
        in_url = c.get("/api/me", params={"api_key": key})
        assert in_url.status_code == 400 and "not accepted in the URL" in in_url.text
    logs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    served = [r for r in logs if r.get("route") == "/api/me" and r.get("status") == 200]
    assert served and all(r["user_id"] == "erin" for r in served)


def test_keys_cli_create_list_revoke(consul: ConsulClientFactory) -> None:
    runner = CliRunner()
    owner = unique_name("user")
    r = runner.invoke(
        cli, ["keys", "create", "--owner", owner, "--expires-days", "7", "--scope", "admin",
              "--consul", consul.addr],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    key_id = key.split("_")[1]
    assert ApiKeyStore(consul).verify(key).owner == owner
    assert ApiKeyStore(consul).verify(key).scopes == ["admin"]
    r = runner.invoke(cli, ["keys", "list", "--consul", consul.addr])
    line = next(ln for ln in r.output.splitlines() if key_id in ln)
    assert owner in line and "admin" in line and "active" in line
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
    r = runner.invoke(cli, ["keys", "create", "--owner", "x", "--scope", "root",
                            "--consul", consul.addr])  # fmt: skip
    assert r.exit_code == 2 and "unknown scope root" in r.output


def test_websocket_key_in_a_header_or_subprotocol_never_in_the_url(
    consul: ConsulClientFactory,
) -> None:
    router = APIRouter()

    @router.websocket("/api/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.scope["state"]["api_key"].owner})
        await websocket.close()

    _, key = ApiKeyStore(consul).create("wsuser", scopes=("service",))
    settings = ServiceSettings(
        service_name=unique_name(), register_in_consul=False, consul_http_addr=consul.addr
    )
    with TestClient(create_app(settings, routers=[router])) as c:
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/api/ws") as s:
            s.receive_json()
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            c.websocket_connect(f"/api/ws?api_key={key}") as s,
        ):
            s.receive_json()
        assert refused.value.code == 1008 and "not accepted in the URL" in refused.value.reason
        with c.websocket_connect("/api/ws", subprotocols=["morgan", f"bearer.{key}"]) as s:
            assert s.receive_json() == {"user": "wsuser"}
        with c.websocket_connect("/api/ws", headers={"X-API-Key": key}) as s:
            assert s.receive_json() == {"user": "wsuser"}


class CountingStore(ApiKeyStore):
    """The real store, counting its Consul reads of key records."""

    reads = 0

    def _get_to_check(self, key_id: str) -> ApiKeyRecord | None:
        self.reads += 1
        return super()._get_to_check(key_id)


def test_a_bad_key_is_remembered_briefly_without_asking_consul_again(
    consul: ConsulClientFactory,
) -> None:
    clock = Clock()
    store = CountingStore(consul, clock=clock.monotonic)
    _, key = store.create("hal", scopes=("service",))
    wrong = key[:-4] + "abcd"
    unknown = "mk_" + "0" * 12 + "_" + "x" * 30
    for bad, reason in ((wrong, "wrong"), (unknown, "unknown")):
        for _ in range(3):
            with pytest.raises(AuthError) as err:
                store.verify(bad)
            assert err.value.reason == reason
    assert store.reads == 2, "each bad key was looked up once"
    clock.mono += 11  # past BAD_KEY_SECONDS: the next try asks Consul again
    with pytest.raises(AuthError):
        store.verify(wrong)
    assert store.reads == 3
    assert store.verify(key).owner == "hal"


def test_repeated_failed_key_checks_get_429_before_any_lookup(
    consul: ConsulClientFactory,
) -> None:
    router = APIRouter()

    @router.get("/api/me")
    async def me(rec: ApiKeyRecord = Depends(require_api_key)) -> dict[str, str]:
        return {"owner": rec.owner}

    store = CountingStore(consul, cache_seconds=0)
    _, key = store.create("ivy", scopes=("service",))
    settings = ServiceSettings(
        service_name=unique_name(), register_in_consul=False, consul_http_addr=consul.addr,
        auth_failures_per_minute=3,
    )  # fmt: skip
    with TestClient(create_app(settings, routers=[router], api_key_store=store)) as c:
        guesses = [f"mk_{i:012x}_{'g' * 30}" for i in range(5)]
        codes = [c.get("/api/me", headers={"X-API-Key": g}).status_code for g in guesses]
        assert codes == [401, 401, 401, 429, 429]
        assert store.reads == 3, "the throttled guesses reached Consul"
        blocked = c.get("/api/me", headers={"X-API-Key": key})
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60
        assert "failed more than 3 API key checks" in blocked.json()["detail"]
        assert store.reads == 3
        # Another client (behind no proxy, so another peer) is not held back by them.
        other = TestClient(c.app, client=("10.9.8.7", 5000))
        assert other.get("/api/me", headers={"X-API-Key": key}).json() == {"owner": "ivy"}


def test_a_key_read_that_fails_midway_is_asked_once_more(
    consul: ConsulClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's server stopped during the read (a rolling deploy): the check asks once
    more and the key is accepted. Two failures in a row still reach the caller."""
    import consul as consul_lib
    from morgan.shared import auth

    store = ApiKeyStore(consul)
    record, key = store.create("rolling")
    failures: list[str] = []

    def flaky(client: consul_lib.Consul, name: str) -> StaleRead:
        if len(failures) < failing:
            failures.append(name)
            raise consul_lib.ConsulException("500 rpc error making call: EOF")
        return read_stale(client, name)

    monkeypatch.setattr(auth, "read_stale", flaky)
    failing = 1
    assert store.verify(key).key_id == record.key_id
    assert failures == [KEYS_PREFIX + record.key_id]
    failures.clear()
    failing = 2
    with pytest.raises(consul_lib.ConsulException, match="EOF"):
        ApiKeyStore(consul).verify(key)
    assert len(failures) == 2
