"""Every certificate of the fleet rotated while it serves, as docs/operations.md says: each
role's folder under `.morgan/lab/pki/` deleted (the CA kept) and `morgan deploy` run under
a steady load of text turns. Every container that holds a certificate is replaced, one
host at a time; afterwards each of its TLS ports serves the new certificate, which a
client holding another role's new certificate verifies and is accepted with; no turn the
load was told was stored is lost, and a conversation from before reads back the same and
goes on."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from morgan.deploy.rollout import api_key_for, deploy, pki_dir
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll

from infra.model import ContainerSpec
from tests.chaos.conftest import ROOT, Fleet
from tests.chaos.load import text_load
from tests.chaos.test_core_replicas import assert_nothing_lost

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

# Ports that do not start with a TLS handshake: PostgreSQL's (TLS after its own request:
# checked with `openssl s_client -starttls postgres`), Consul's RPC port (a byte saying
# which protocol comes first).
STARTTLS = {5432: "postgres"}
NOT_DIRECT = {8300}
LOAD_START_S = 5.0
# The load lasts the whole deploy (268-298 s on the lab: each host's turn waits for its
# replaced containers' checks, and each Morgan service drains before it stops), with room
# to spare on a busy machine.
LOAD_S = 350.0
# Seconds after `morgan deploy` says the gateway was replaced (its new container started)
# that a connection may still find nothing listening.
GATEWAY_BACK_S = 5.0


@dataclass(frozen=True)
class Served:
    container: str
    port: int
    der: bytes


def _der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def _client(pki: Path, role: str) -> ssl.SSLContext:
    """A client of the stack: trusts its CA, shows `role`'s certificate."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(pki / role / "cert.pem", pki / role / "key.pem")
    return ctx


def _served(address: str, port: int, pki: Path, client: str) -> bytes:
    """The certificate the port serves, verified against the stack's CA for `address`,
    the client showing `client`'s certificate."""
    if starttls := STARTTLS.get(port):
        proc = subprocess.run(
            ["openssl", "s_client", "-connect", f"{address}:{port}", "-starttls", starttls,
             "-CAfile", str(pki / "ca.pem"), "-verify_ip", address, "-verify_return_error",
             "-cert", str(pki / client / "cert.pem"), "-key", str(pki / client / "key.pem")],
            input=b"", capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        out = proc.stdout.decode(errors="replace")
        assert proc.returncode == 0, f"{address}:{port}: {proc.stderr.decode()[-400:]}"
        begin = out.index("-----BEGIN CERTIFICATE-----")
        end = out.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        return _der(out[begin:end])
    ctx = _client(pki, client)
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=address) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _tls_ports(spec: ContainerSpec) -> list[int]:
    return [
        p.number
        for p in spec.ports
        if p.protocol == "tcp" and p.encryption == "tls" and not p.loopback_only
        and p.number not in NOT_DIRECT
    ]  # fmt: skip


def served_certificates(fleet: Fleet, client: str) -> list[Served]:
    pki = pki_dir(st.paths("lab", ROOT))
    addresses = {h.name: h.address for h in fleet.config.hosts}
    return [
        Served(spec.name, port, _served(addresses[spec.host], port, pki, client))
        for spec in fleet.deployment.specs
        if spec.certificate and not spec.one_shot
        for port in dict.fromkeys(_tls_ports(spec))
    ]


async def test_rotating_every_certificate_under_load_loses_nothing(fleet: Fleet) -> None:
    paths = st.paths("lab", ROOT)
    pki = pki_dir(paths)
    holders = [s for s in fleet.deployment.specs if s.certificate]
    folders = sorted({s.certificate for s in holders if s.certificate})
    old = {f: _der((pki / f / "cert.pem").read_text()) for f in folders}
    ca_before = (pki / "ca.pem").read_text()

    # Before: every TLS port serves its role's current certificate (so the check below
    # can tell an old one from a new one).
    before = served_certificates(fleet, client="core-h1")
    by_name = {s.name: s for s in holders}
    for s in before:
        assert s.der == old[by_name[s.container].certificate or ""], (s.container, s.port)
    print(f"[rotation] {len(before)} TLS ports on {len({s.container for s in before})}"
          " containers serve their role's certificate")  # fmt: skip

    owner = f"rotation-{uuid.uuid4().hex[:8]}"
    key = api_key_for(fleet.config, fleet.outputs, fleet.ca_file, owner=owner)
    first = fleet.api(key, "POST", "/api/text", json={"text": "Remember the green lamp."})
    assert first.status_code == 200, first.text
    cid = first.json()["conversation_id"]
    said = {"Remember the green lamp."}

    def remembered() -> None:
        if (found := fleet.memories(key, "green lamp")) != said:
            raise NotYet(f"memories {sorted(found)}")

    poll(remembered, what="the turn in semantic memory", timeout=30, interval=1)
    conversation = fleet.turns(key, cid)

    for folder in folders:
        shutil.rmtree(pki / folder)
    logged: list[tuple[float, str]] = []
    load = asyncio.create_task(text_load("rotation", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=350, duration_s=LOAD_S))  # fmt: skip
    await asyncio.sleep(LOAD_START_S)
    started = time.monotonic()

    def log(line: str) -> None:
        logged.append((time.monotonic() - started + LOAD_START_S, line))
        print(f"{logged[-1][0]:6.1f}  {line}")

    report_deploy = await asyncio.to_thread(deploy, fleet.config, ROOT, paths, log)
    took = time.monotonic() - started
    report = await load
    print(report.summary(LOAD_START_S), f"; deploy {took:.0f} s")

    replaced = sorted(n for per in report_deploy.changes.values()
                      for n, c in per.items() if c == "replaced")  # fmt: skip
    assert replaced == sorted(s.name for s in holders)
    assert (pki / "ca.pem").read_text() == ca_before, "the CA was kept"
    after = served_certificates(fleet, client="traefik-h1")
    for s in after:
        folder = by_name[s.container].certificate or ""
        assert s.der != old[folder], f"{s.container}:{s.port} still serves its old certificate"
        assert s.der == _der((pki / folder / "cert.pem").read_text()), (s.container, s.port)
    assert {(s.container, s.port) for s in after} == {(s.container, s.port) for s in before}

    assert took < LOAD_S - LOAD_START_S, "the deploy outlasted the load"
    assert_nothing_lost(fleet, report)
    # One gateway (Traefik on h1): while its container is replaced nothing listens on
    # 443, from its stop until the new one starts. No other failure: every other role
    # has another instance serving while one host's is replaced.
    gateway = next(iter(fleet.deployment.of_role("traefik")))
    phase = next(t for t, line in logged if line.startswith("phase") and "traefik" in line)
    replaced_at = next(t for t, line in logged if f"{gateway.name} " in line)
    window = (phase, replaced_at + GATEWAY_BACK_S)
    print(f"[rotation] the gateway was replaced between {window[0]:.1f} s and"
          f" {replaced_at:.1f} s")  # fmt: skip
    for a in report.failed:
        assert a.status == 0 and "ConnectError" in a.detail, report.why_failed(LOAD_START_S)
        assert window[0] <= a.sent_s <= window[1], (a, window, report.summary(LOAD_START_S))
    assert fleet.turns(key, cid) == conversation
    assert fleet.memories(key, "green lamp") == said
    more = fleet.api(key, "POST", "/api/text",
                     json={"text": "Which lamp was it?", "conversation_id": cid})  # fmt: skip
    assert more.status_code == 200, more.text
    assert len(fleet.turns(key, cid)) == len(conversation) + 1
