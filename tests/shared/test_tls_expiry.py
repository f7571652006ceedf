"""When a service's certificate and its CA end: read from the files a service is given
(certificates made here with openssl, with different lifetimes), and exposed on /metrics
of a running service for the MorganCertificateExpiring alert."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from morgan.shared.app import create_app
from morgan.shared.metrics import TLS_CERTIFICATE_EXPIRY
from morgan.shared.server import server_config
from morgan.shared.settings import ServiceSettings
from morgan.shared.tls_expiry import ca_not_after, certificate_not_after, record_expiry

from tests.harness.ports import LOOPBACK, free_port
from tests.shared.helpers import UvicornThread, unique_name

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key_args(name: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-subj", f"/CN={name}"]  # fmt: skip


def _enddate(path: Path) -> float:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return float(ssl.cert_time_to_seconds(out.stdout.strip().removeprefix("notAfter=")))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA for 30 days, a certificate from it for 10 days, one from another CA."""
    d = tmp_path_factory.mktemp("pki-expiry")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *_key_args(ca), "-out", f"{ca}.pem", "-days", "30", cwd=d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name, ca in (("server", "ca"), ("stray", "other-ca")):
        _openssl("req", *_key_args(name), "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                 f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "10",
                 "-extfile", "ext", cwd=d)  # fmt: skip
    return d


def test_the_certificate_and_the_ca_end_as_openssl_says(pki: Path) -> None:
    cert = certificate_not_after(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    assert cert == _enddate(pki / "server.pem")
    assert ca_not_after(pki / "ca.pem") == _enddate(pki / "ca.pem")
    assert ca_not_after(pki / "ca.pem") - cert > 19 * 86400  # 30 days against 10


def test_a_certificate_the_ca_did_not_sign_is_not_read(pki: Path) -> None:
    with pytest.raises(ssl.SSLError):
        certificate_not_after(pki / "stray.pem", pki / "stray.key", pki / "ca.pem")


def test_a_failure_is_logged_and_leaves_no_series(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique_name()
    record_expiry(name, pki / "stray.pem", pki / "stray.key", pki / "ca.pem")
    assert "could not read when the TLS certificate" in caplog.text
    samples = [s for m in TLS_CERTIFICATE_EXPIRY.collect() for s in m.samples]
    assert not [s for s in samples if s.labels["service"] == name]


def test_a_running_service_exposes_both_ends(pki: Path) -> None:
    port, name = free_port(), unique_name()
    settings = ServiceSettings(
        service_name=name, host=LOOPBACK, bind_host=LOOPBACK, port=port,
        register_in_consul=False, auth_enabled=False, consul_http_addr="127.0.0.1:1",
        tls_ca=pki / "ca.pem", tls_cert=pki / "server.pem", tls_key=pki / "server.key",
    )  # fmt: skip
    app = create_app(settings)
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    with UvicornThread(app, uvicorn_config=server_config(app, settings)):
        text = httpx.get(f"https://{LOOPBACK}:{port}/metrics", verify=context, timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith("morgan_tls_certificate_expiry_timestamp_seconds{") and name in line:
            labels, _, value = line.rpartition(" ")
            values[labels.split('kind="')[1].split('"')[0]] = float(value)
    assert values == {
        "certificate": _enddate(pki / "server.pem"),
        "ca": _enddate(pki / "ca.pem"),
    }
