"""The gateway's dynamic config loaded into a real Traefik: routers, middlewares, TLS."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.configs import gateway
from infra.model import TLS_DIR
from infra.placement import Plan

pytestmark = pytest.mark.integration

CHECK_HOST = "infra-check.morgan.test"


def _for_test_traefik(
    document: dict[str, Any], tmp_path: Path, *backends: str, sticky: bool = True
) -> dict[str, Any]:
    """Point the config at what the test Traefik has: its `web` entrypoint, a file-provider
    backend instead of the Consul catalog, and files under tmp_path instead of /etc, /run."""
    users = tmp_path / "dashboard-users"
    # htpasswd line for admin:secret (SHA), as Traefik's basicAuth reads it.
    users.write_text("admin:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")
    http = document["http"]
    http["middlewares"]["dashboard-auth"]["basicAuth"]["usersFile"] = str(users)
    for router in http["routers"].values():
        router["entryPoints"] = ["web"]
        if "Host(" not in router["rule"]:
            # Only requests for CHECK_HOST reach these routers: the Traefik is shared.
            router["rule"] = f"Host(`{CHECK_HOST}`) && ({router['rule']})"
        if router["service"] == gateway.CORE_SERVICE:
            router["service"] = "morgan-core-check"
    balancer: dict[str, Any] = {"servers": [{"url": b} for b in backends]}
    if sticky:
        balancer["sticky"] = {"cookie": {"name": gateway.STICKY_COOKIE, "secure": True}}
    http["services"] = {"morgan-core-check": {"loadBalancer": balancer}}
    text = str(document)
    assert "consulcatalog" not in text
    return document


def _cert(tmp_path: Path) -> Path:
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=morgan.home.arpa",
            "-keyout",
            str(tls / "key.pem"),
            "-out",
            str(tls / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    (tls / "ca.pem").write_text((tls / "cert.pem").read_text())
    return tls


def _wait_for(url: str, predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=5)
        if response.status_code == 200:
            last = response.json()
            if predicate(last):
                return last
        time.sleep(0.2)
    raise AssertionError(f"{url}: condition not met; last answer {last}")


def _wait_routed(url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> None:
    """Routers show in the API a moment before the entrypoint serves them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url, headers=headers, timeout=5).status_code != 404:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} is still not routed after {timeout}s")


def test_dynamic_config_loads_with_rate_limits_and_auth(
    homelab_plan: Plan, traefik_server: Any, tmp_path: Path
) -> None:
    tls = _cert(tmp_path)
    document = gateway.dynamic_config(homelab_plan)
    text = gateway.to_yaml(document).replace(TLS_DIR, str(tls))
    import yaml

    document = _for_test_traefik(yaml.safe_load(text), tmp_path, "http://127.0.0.1:9")
    assert document["tls"]["certificates"]  # the certificate store loads from real files
    for router in document["http"]["routers"].values():
        router.pop("tls", None)  # plain HTTP on the test entrypoint
    traefik_server.write_dynamic_config("morgan-infra-check", document)
    try:
        routers = _wait_for(
            f"{traefik_server.api_url}/api/http/routers",
            lambda rs: (
                {"morgan-api@file", "morgan-audio@file", "traefik-dashboard@file"}
                <= {r["name"] for r in rs}
            ),
        )
        for router in routers:
            if router["name"].startswith(("morgan-", "traefik-dashboard")):
                assert router["status"] == "enabled", router
        middlewares = {
            m["name"]: m
            for m in httpx.get(f"{traefik_server.api_url}/api/http/middlewares", timeout=5).json()
        }
        api = middlewares["api-rate-limit@file"]
        assert api["status"] == "enabled"
        assert api["rateLimit"]["average"] == 100 and api["rateLimit"]["period"] in ("1m", "1m0s")
        assert middlewares["audio-rate-limit@file"]["rateLimit"]["average"] == 10
        assert middlewares["dashboard-auth@file"]["status"] == "enabled"

        # The dashboard answers 401 without credentials and passes with them.
        host = {"Host": f"traefik.{homelab_plan.config.domain}"}
        _wait_routed(f"{traefik_server.url}/dashboard/", host)
        denied = httpx.get(f"{traefik_server.url}/dashboard/", headers=host, timeout=5)
        assert denied.status_code == 401
        allowed = httpx.get(
            f"{traefik_server.url}/dashboard/", headers=host, auth=("admin", "secret"), timeout=5
        )
        assert allowed.status_code != 401
    finally:
        traefik_server.remove_dynamic_config("morgan-infra-check")


def test_audio_rate_limit_applies_per_client(
    homelab_plan: Plan, traefik_server: Any, tmp_path: Path
) -> None:
    """Eleven audio requests in a burst: the eleventh is refused with 429."""
    document = _for_test_traefik(
        gateway.dynamic_config(homelab_plan) | {}, tmp_path, "http://127.0.0.1:9"
    )
    document.pop("tls", None)
    for router in document["http"]["routers"].values():
        router.pop("tls", None)  # plain HTTP on the test entrypoint
    traefik_server.write_dynamic_config("morgan-infra-rate", document)
    try:
        _wait_for(
            f"{traefik_server.api_url}/api/http/routers",
            lambda rs: any(r["name"] == "morgan-audio@file" for r in rs),
        )
        host = {"Host": CHECK_HOST}
        _wait_routed(f"{traefik_server.url}/health", host)
        # All at once: each refused try at the closed backend is retried (retry-elsewhere),
        # so one after another they would outlast the 6 s the bucket takes to refill a token.
        with ThreadPoolExecutor(max_workers=11) as pool:
            codes = list(pool.map(
                lambda _: httpx.post(f"{traefik_server.url}/api/audio", headers=host,
                                     timeout=10).status_code,
                range(11),
            ))  # fmt: skip
        # The backend is a closed port (502); the limiter answers 429 once the burst is used.
        assert sorted(codes) == [429] + [502] * 10, codes
    finally:
        traefik_server.remove_dynamic_config("morgan-infra-rate")


@pytest.mark.unit
def test_static_config_uses_consul_catalog_and_redirects(homelab_plan: Plan) -> None:
    static = gateway.static_config(homelab_plan)
    catalog = static["providers"]["consulCatalog"]
    assert catalog["exposedByDefault"] is False
    # Only services Morgan registered with its gateway tag are routed (core carries it).
    assert catalog["constraints"] == f"Tag(`{gateway.GATEWAY_TAG}`)"
    assert gateway.GATEWAY_TAG in gateway.core_consul_tags(homelab_plan)
    assert catalog["endpoint"]["scheme"] == "https"
    redirect = static["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]
    assert redirect == {"to": "websecure", "scheme": "https", "permanent": True}
    assert "insecure" not in static["api"]


@pytest.mark.unit
def test_core_registers_sticky_cookie_tags(homelab_plan: Plan) -> None:
    tags = gateway.core_consul_tags(homelab_plan)
    assert "traefik.enable=true" in tags
    assert any("sticky.cookie.name=" in t for t in tags)


class _Backend:
    """A core stand-in on a loopback port: it reads each request, then either answers 200
    naming its port or dies mid-request (the connection reset once the request is in)."""

    def __init__(self, *, dies: bool) -> None:
        self.dies = dies
        self.hits = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.hits += 1
                if self.dies:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                body = f'{{"port": {self.port}}}'.encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))  # fmt: skip

    def close(self) -> None:
        self.sock.close()


def test_a_keyed_turn_whose_core_dies_mid_request_is_answered_by_another(
    homelab_plan: Plan, traefik_server: Any, tmp_path: Path
) -> None:
    """Of two cores one dies with every request in (reset after reading it): a turn with an
    Idempotency-Key is sent again to the other and answered; one without is not repeated
    (it might have been stored) and gets the 502."""
    dying, alive = _Backend(dies=True), _Backend(dies=False)
    urls = [f"http://127.0.0.1:{dying.port}", f"http://127.0.0.1:{alive.port}"]
    document = _for_test_traefik(
        gateway.dynamic_config(homelab_plan), tmp_path, *urls, sticky=False
    )
    document.pop("tls", None)
    for router in document["http"]["routers"].values():
        router.pop("tls", None)
    traefik_server.write_dynamic_config("morgan-infra-keyed", document)
    try:
        _wait_for(
            f"{traefik_server.api_url}/api/http/routers",
            lambda rs: (
                {"morgan-api-keyed@file", "morgan-audio-keyed@file"}
                <= {r["name"] for r in rs if r["status"] == "enabled"}
            ),
        )
        # The shared Traefik may still hold an earlier test's file under the same names.
        _wait_for(
            f"{traefik_server.api_url}/api/http/services/morgan-core-check@file",
            lambda svc: {s["url"] for s in svc["loadBalancer"]["servers"]} == set(urls),
        )
        host = {"Host": CHECK_HOST}
        url = f"{traefik_server.url}/api/text"
        turn = {"text": "hi", "user_id": "u"}
        keys = [{**host, "Idempotency-Key": f"k{i}"} for i in range(6)]
        keyed = [httpx.post(url, json=turn, headers=h, timeout=10) for h in keys]
        assert [r.status_code for r in keyed] == [200] * 6, [r.text for r in keyed]
        assert {r.json()["port"] for r in keyed} == {alive.port}
        assert dying.hits >= 3, "the balancer never sent a keyed turn to the dying core"

        dying.hits = 0
        plain = [httpx.post(url, json=turn, headers=host, timeout=10) for _ in range(6)]
        codes = [r.status_code for r in plain]
        assert codes.count(502) == dying.hits and dying.hits >= 2, (codes, dying.hits)
        assert codes.count(200) == 6 - dying.hits
    finally:
        traefik_server.remove_dynamic_config("morgan-infra-keyed")
        dying.close()
        alive.close()
