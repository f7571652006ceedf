"""HTTPS with client-certificate verification between services (certificates made here)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from morgan.shared.app import create_app
from morgan.shared.discovery import ConsulServiceDiscovery, ServiceEndpoint, _CacheEntry
from morgan.shared.http_client import MorganHTTPClient, UpstreamError
from morgan.shared.registry import ConsulRegistry
from morgan.shared.server import server_config
from morgan.shared.settings import ServiceSettings

from tests.harness.ports import LOOPBACK, free_port
from tests.shared.helpers import UvicornThread, unique_name

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )


def make_cert(d: Path, ca: str, name: str) -> None:
    (d / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


def tls_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    for n in ("server", "client"):
        make_cert(d, "ca", n)
    make_cert(d, "rogue-ca", "rogue")
    return d


def test_mtls_server_requires_a_client_certificate_from_the_ca(pki: Path) -> None:
    router = APIRouter()

    @router.get("/api/ping")
    async def ping() -> dict:
        return {"pong": True}

    port = free_port()
    name = unique_name()
    settings = ServiceSettings(
        service_name=name,
        host=LOOPBACK,
        bind_host=LOOPBACK,
        port=port,
        register_in_consul=False,
        auth_enabled=False,
        consul_http_addr="127.0.0.1:1",
        tls_ca=pki / "ca.pem",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
    )
    app = create_app(settings, routers=[router])
    with UvicornThread(app, uvicorn_config=server_config(app, settings)):
        url = f"https://{LOOPBACK}:{port}/api/ping"
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.get(url, verify=tls_context(pki), timeout=5)
        with pytest.raises(httpx.HTTPError):  # certificate from another CA
            httpx.get(url, verify=tls_context(pki, "rogue"), timeout=5)
        r = httpx.get(url, verify=tls_context(pki, "client"), timeout=5)
        assert r.json() == {"pong": True}

    # The fabric's client: instances advertised as https get TLS with the client certificate.
    registry = ConsulRegistry.from_settings(settings)
    assert registry.meta["scheme"] == "https"
    assert registry.check_definition()["http"].startswith("https://")


async def test_morgan_client_speaks_mtls(pki: Path) -> None:
    router = APIRouter()

    @router.get("/api/ping")
    async def ping() -> dict:
        return {"pong": True}

    port = free_port()
    name = unique_name()
    settings = ServiceSettings(
        service_name=name,
        host=LOOPBACK,
        bind_host=LOOPBACK,
        port=port,
        register_in_consul=False,
        auth_enabled=False,
        consul_http_addr="127.0.0.1:1",
        tls_ca=pki / "ca.pem",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
    )
    app = create_app(settings, routers=[router])
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    ep = ServiceEndpoint(name, f"{name}-1", LOOPBACK, port, meta={"scheme": "https"})
    d._cache[name] = _CacheEntry([ep], d.clock(), None)
    with UvicornThread(app, uvicorn_config=server_config(app, settings)):
        async with MorganHTTPClient(
            d, ca_cert=pki / "ca.pem", client_cert=(pki / "client.pem", pki / "client.key")
        ) as c:
            r = await c.request(name, "GET", "/api/ping")
            assert r.status_code == 200 and r.json() == {"pong": True}
        async with MorganHTTPClient(d, ca_cert=pki / "ca.pem", max_attempts=1) as c:
            with pytest.raises((UpstreamError, httpx.HTTPError)):
                await c.request(name, "GET", "/api/ping")
