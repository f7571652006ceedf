"""create_app without Consul: JSON errors, request ids, route-template metrics, JSON logs."""

from __future__ import annotations

import json

import pytest
from fastapi import APIRouter, HTTPException
from fastapi.testclient import TestClient
from morgan.shared.app import create_app
from morgan.shared.logging import get_request_id
from morgan.shared.settings import ServiceSettings
from prometheus_client import REGISTRY
from pydantic import BaseModel

from tests.shared.helpers import unique_name

pytestmark = pytest.mark.unit


class Item(BaseModel):
    x: int


def build(ready: bool = True, **overrides: object):  # type: ignore[no-untyped-def]
    router = APIRouter()

    @router.post("/items/{item_id}")
    async def put_item(item_id: int, item: Item) -> dict:
        return {"id": item_id, "x": item.x, "rid": get_request_id()}

    @router.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("database password is hunter2")

    @router.get("/teapot")
    async def teapot() -> dict:
        raise HTTPException(418, detail="no coffee here; use /items")

    async def ready_check() -> bool:
        return ready

    name = unique_name()
    settings = ServiceSettings(
        service_name=name,
        port=9,
        register_in_consul=False,
        auth_enabled=False,
        consul_http_addr="127.0.0.1:1",
        **overrides,
    )  # type: ignore[arg-type]
    return name, create_app(settings, routers=[router], ready_check=ready_check)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_validation_error_is_422_json_with_detail() -> None:
    _, app = build()
    with TestClient(app) as c:
        r = c.post("/items/1", json={"x": "abc"})
        assert r.status_code == 422
        body = r.json()
        assert body["error"].startswith("invalid request: body.x")
        assert body["detail"][0]["loc"] == ["body", "x"]
        r = c.post("/items/notanint", json={"x": 1})
        assert r.status_code == 422 and "path.item_id" in r.json()["error"]
        r = c.post("/items/1", content=b"{bad json", headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_unexpected_exception_is_500_without_leaking() -> None:
    _, app = build()
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert "hunter2" not in r.text and "Traceback" not in r.text
    assert r.json()["error"] == "internal error"
    assert r.headers["x-request-id"] in r.json()["detail"]


def test_http_exception_is_json() -> None:
    _, app = build()
    with TestClient(app) as c:
        r = c.get("/teapot")
    assert r.status_code == 418
    msg = "no coffee here; use /items"
    assert r.json() == {"error": msg, "detail": msg}


def test_request_id_is_echoed_or_generated() -> None:
    _, app = build()
    with TestClient(app) as c:
        r = c.post("/items/1", json={"x": 1}, headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert r.json()["rid"] == "abc-123"
        r = c.post("/items/1", json={"x": 1})
        assert len(r.headers["x-request-id"]) == 32
        assert r.json()["rid"] == r.headers["x-request-id"]
        # A hostile id (header injection, huge) is replaced.
        r = c.post("/items/1", json={"x": 1}, headers={"X-Request-ID": "a b<script>"})
        assert r.headers["x-request-id"] != "a b<script>"


def test_metrics_use_route_templates_never_raw_paths() -> None:
    name, app = build()
    with TestClient(app, raise_server_exceptions=False) as c:
        for i in range(3):
            c.post(f"/items/{i}", json={"x": i})
        c.get("/no/such/path/42")
        c.get("/boom")
        text = c.get("/metrics").text
    assert (
        sample(
            "morgan_http_requests_total",
            {"service": name, "route": "/items/{item_id}", "method": "POST", "status": "200"},
        )
        == 3
    )
    assert (
        sample(
            "morgan_http_requests_total",
            {"service": name, "route": "unmatched", "method": "GET", "status": "404"},
        )
        == 1
    )
    assert (
        sample(
            "morgan_http_requests_total",
            {"service": name, "route": "/boom", "method": "GET", "status": "500"},
        )
        == 1
    )
    assert (
        sample(
            "morgan_http_request_duration_seconds_count",
            {"service": name, "route": "/items/{item_id}", "method": "POST"},
        )
        == 3
    )
    assert sample("morgan_http_requests_in_flight", {"service": name}) == 0
    assert "/items/1" not in text and "/no/such/path/42" not in text


def test_ready_reflects_check_and_draining_answers_both_503() -> None:
    _, app = build(ready=False)
    with TestClient(app) as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/ready").status_code == 503
    _, app = build(ready=True)
    with TestClient(app) as c:
        assert c.get("/ready").status_code == 200
        app.state.draining = True
        assert c.get("/ready").json() == {"status": "draining"}
        # So that the gateway's health check (on /health) stops sending it requests.
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"


def test_logs_are_one_json_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    name, app = build()
    with TestClient(app, raise_server_exceptions=False) as c:
        c.post("/items/7", json={"x": 1}, headers={"X-Request-ID": "req-log-1"})
        c.get("/boom", headers={"X-Request-ID": "req-log-2"})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line parses
    for rec in records:
        assert {"time", "level", "service", "host", "request_id", "user_id", "message"} <= set(rec)
        assert rec["service"] == name
    access = [r for r in records if r.get("request_id") == "req-log-1"]
    assert access and access[0]["route"] == "/items/{item_id}" and access[0]["status"] == 200
    err = [r for r in records if r.get("request_id") == "req-log-2" and r["level"] == "ERROR"]
    assert err and "hunter2" in err[0]["exception"]  # the detail goes to logs, not to clients


def test_uvicorn_loggers_share_the_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    _, app = build()
    with TestClient(app):
        logging.getLogger("uvicorn.error").info("uvicorn says hi")
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert any(r["message"] == "uvicorn says hi" and r["logger"] == "uvicorn.error" for r in lines)
