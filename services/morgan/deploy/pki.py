"""The stack's internal CA and one certificate per TLS role, made with openssl.

What Pulumi's Pki component (pulumi-tls) makes on a fleet, for `morgan deploy`: the same
requests (`infra.fleet.certificate_requests`: every name and address a role is reached
by), P-256 keys, each certificate for server and client use (services require client
certificates of each other). Kept under `.morgan/<stack>/pki/` (0600 keys): a CA of the
stack's own, apart from any CA that opens a Docker daemon. Lifetimes are Pulumi's: a
certificate lasts `CERT_HOURS`, the CA `CA_HOURS`. A role's certificate is made again
when its names change, when it ends within `RENEW_HOURS` (as Pulumi's
`early_renewal_hours`), or when the CA no longer signs it; the CA is made again when it
ends within `RENEW_HOURS`, and every certificate with it (each container then restarts
with its new files).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.components.pki import CA_HOURS, CERT_HOURS, RENEW_HOURS, CertificateRequest
from morgan.deploy.engine import DeployError


@dataclass(frozen=True)
class IssuedTls:
    ca: str
    cert: str
    key: str

    def content(self, kind: str) -> str:
        return {"ca": self.ca, "cert": self.cert, "key": self.key}[kind]


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeployError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def _valid_for(cert: Path, hours: int) -> bool:
    """The certificate exists and does not end within `hours`."""
    if not cert.exists():
        return False
    proc = subprocess.run(
        ["openssl", "x509", "-noout", "-checkend", str(hours * 3600), "-in", str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.returncode == 0


def _signed_by(ca: Path, cert: Path) -> bool:
    proc = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.returncode == 0


def ensure_ca(folder: Path, organization: str) -> Path:
    ca = folder / "ca.pem"
    if not _valid_for(ca, RENEW_HOURS):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(folder / "ca-key.pem"), "-out", str(ca),
                 "-days", str(CA_HOURS // 24),
                 "-subj", f"/O={organization}/CN={organization} CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        (folder / "ca-key.pem").chmod(0o600)
    return ca


def issue(folder: Path, request: CertificateRequest, organization: str) -> IssuedTls:
    """The role's certificate and key, made (again) when missing, when its names changed,
    when it ends within RENEW_HOURS or when the CA does not sign it."""
    ca = ensure_ca(folder, organization)
    out = folder / request.name
    sans = ",".join([*(f"DNS:{d}" for d in request.dns_names),
                     *(f"IP:{i}" for i in request.ip_addresses)])  # fmt: skip
    names = out / "names.txt"
    cert = out / "cert.pem"
    current = (
        names.exists()
        and names.read_text() == sans
        and _valid_for(cert, RENEW_HOURS)
        and _signed_by(ca, cert)
    )
    if not current:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        (out / "ext.cnf").write_text(
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
        )
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(out / "key.pem"), "-out", str(out / "req.csr"),
                 "-subj", f"/O={organization}/CN={request.name}")  # fmt: skip
        _openssl("x509", "-req", "-in", str(out / "req.csr"), "-CA", str(ca),
                 "-CAkey", str(folder / "ca-key.pem"), "-CAcreateserial",
                 "-days", str(CERT_HOURS // 24), "-extfile", str(out / "ext.cnf"),
                 "-out", str(out / "cert.pem"))  # fmt: skip
        (out / "key.pem").chmod(0o600)
        names.write_text(sans)
    return IssuedTls(
        ca=ca.read_text(), cert=(out / "cert.pem").read_text(), key=(out / "key.pem").read_text()
    )
