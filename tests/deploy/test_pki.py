"""`morgan deploy`'s certificates, made with the real openssl: issued once and kept, issued
again near their end (as Pulumi's early renewal) or when the CA changed, and lasting what
Pulumi's do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from morgan.deploy import pki

from infra.components.pki import CA_HOURS, CERT_HOURS, CertificateRequest

pytestmark = pytest.mark.unit

REQUEST = CertificateRequest("core-h1", ("core.service.consul", "h1"), ("127.0.0.1", "10.0.0.1"))


def _end(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(cert)],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def _ends_within(cert: Path, hours: int) -> bool:
    proc = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(hours * 3600),
                           "-in", str(cert)], capture_output=True, check=False)  # fmt: skip
    return proc.returncode == 1


def test_a_certificate_is_kept_while_it_is_current(tmp_path: Path) -> None:
    first = pki.issue(tmp_path, REQUEST, "Morgan")
    again = pki.issue(tmp_path, REQUEST, "Morgan")
    assert again == first
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                               str(tmp_path / "core-h1" / "cert.pem")],
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr


def test_lifetimes_are_pulumis(tmp_path: Path) -> None:
    pki.issue(tmp_path, REQUEST, "Morgan")
    for path, hours in ((tmp_path / "core-h1" / "cert.pem", CERT_HOURS),
                        (tmp_path / "ca.pem", CA_HOURS)):  # fmt: skip
        assert not _ends_within(path, hours - 24), (path, _end(path))
        assert _ends_within(path, hours + 24), (path, _end(path))


def test_a_certificate_near_its_end_is_issued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pki.issue(tmp_path, REQUEST, "Morgan")
    ca = (tmp_path / "ca.pem").read_text()
    # Every certificate now "ends within" the renewal window: a CA and certificate are
    # made again, as a year and 30 days minus a day on would find them.
    monkeypatch.setattr(pki, "RENEW_HOURS", CA_HOURS + 24)
    renewed = pki.issue(tmp_path, REQUEST, "Morgan")
    assert renewed.cert != first.cert and renewed.key != first.key
    assert renewed.ca != ca


def test_a_certificate_the_ca_does_not_sign_is_issued_again(tmp_path: Path) -> None:
    first = pki.issue(tmp_path, REQUEST, "Morgan")
    (tmp_path / "ca.pem").unlink()  # a new CA: what it signed before is no longer trusted
    renewed = pki.issue(tmp_path, REQUEST, "Morgan")
    assert renewed.ca != first.ca and renewed.cert != first.cert
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                               str(tmp_path / "core-h1" / "cert.pem")],
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
