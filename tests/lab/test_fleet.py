"""The lab stack deployed for real onto the lab's four hosts, then verified the way an
operator verifies a fleet (`morgan verify --stack lab`), redeployed (a no-op), and probed
in plain text on every internal port (each refuses)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import pytest
from morgan.deploy.rollout import DeployReport, deploy, engines
from morgan.lab import images as img
from morgan.lab import stack as st
from morgan.lab.secrets import read_env

from infra.config import MorganStackConfig
from infra.configs import consul as consul_cfg
from infra.configs import patroni as patroni_cfg
from infra.deployment import build_deployment, secret_variable
from infra.model import UNPRIVILEGED, TlsFiles
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def config() -> MorganStackConfig:
    return st.load_config("lab", ROOT)


def test_first_deploy_created_every_planned_container(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    deployment = build_deployment(make_plan(config), ROOT)
    for host in deployment.hosts:
        planned = {s.name for s in deployment.rendered_specs(host, kv_seed=False)}
        assert set(lab_fleet.changes[host]) == planned, host
    print(f"first deploy: {lab_fleet.changed} containers in {lab_fleet.seconds:.0f} s")


def test_morgan_verify_passes_on_the_lab(lab_fleet: DeployReport) -> None:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.run([MORGAN, "verify", "--stack", "lab", "--", "-v"], capture_output=True,
                          text=True, env=env, check=False, timeout=900)  # fmt: skip
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def test_second_deploy_changes_nothing(lab_fleet: DeployReport, config: MorganStackConfig) -> None:
    lines: list[str] = []
    again = deploy(config, ROOT, st.paths("lab", img.repo_root()), log=lines.append)
    print("\n".join(lines[-5:]), f"\nsecond deploy: {again.seconds:.0f} s")
    changed = {h: {n: c for n, c in per.items() if c != "unchanged"} for h, per in
               again.changes.items()}  # fmt: skip
    assert again.changed == 0, changed
    assert sum(len(per) for per in again.changes.values()) == sum(
        len(per) for per in lab_fleet.changes.values()
    )


def _plaintext_answer(address: str, port: int, probe: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.settimeout(5)
        sock.sendall(probe)
        chunks = b""
        try:
            while len(chunks) < 4096:
                data = sock.recv(4096)
                if not data:
                    break
                chunks += data
        except (TimeoutError, ConnectionResetError):
            pass
        return chunks


def _seen(answer: bytes) -> str:
    if not answer:
        return "closed, no data"
    if answer.startswith(b"HTTP/1."):
        return answer.split(b"\r\n", 1)[0].decode()
    return f"{len(answer)} bytes, first {answer[:1]!r}"


def test_every_internal_port_refuses_plaintext(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Each TLS port of each host, spoken to in plain text, answers with no data: no HTTP
    response, no Redis reply, no PostgreSQL session, no Consul RPC."""
    deployment = build_deployment(make_plan(config), ROOT)
    user = config.postgres.user
    params = f"user\0{user}\0database\0{config.postgres.database}\0\0".encode()
    probes = {
        "resp": b"PING\r\n",
        # A StartupMessage (protocol 3.0) without asking for SSL first.
        "sql": struct.pack("!ii", 8 + len(params), 196608) + params,
    }
    tried = []
    for spec in deployment.specs:
        if spec.one_shot:
            continue
        address = config.host(spec.host).address
        for port in spec.ports:
            if port.encryption != "tls" or port.protocol != "tcp" or port.public:
                continue  # the gateway's public ports are the one way in, by design
            if port.loopback_only:
                continue  # not reachable from the LAN at all (tests/lab/test_lan_boundaries.py)
            probe = probes.get(port.purpose, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _plaintext_answer(address, port.number, probe)
            tried.append(f"{spec.host}:{port.number} {spec.name} {port.purpose}: {_seen(answer)}")
            if answer.startswith(b"HTTP/1."):
                # Go's TLS servers (Consul) answer a plain request with a 400 naming HTTPS.
                assert answer.split(b" ", 2)[1] == b"400" and b"HTTPS" in answer, (
                    spec.name, port, answer[:160],
                )  # fmt: skip
                continue
            if port.purpose == "sql":
                # PostgreSQL's refusal: pg_hba.conf only has hostssl lines for remote hosts.
                assert answer[:1] == b"E" and b"no encryption" in answer, (spec.name, answer)
                continue
            for readable in (b"+PONG", b"-NOAUTH", b"-ERR", b"SCRAM", b"R\x00\x00"):
                assert readable not in answer[:64], (spec.name, port, answer[:120])
            # Otherwise a TLS alert or nothing at all: never readable protocol text.
            assert answer[:1] in (b"", b"\x15", b"\x16") or not answer.isascii(), (
                spec.name, port, answer[:120],
            )  # fmt: skip
    print(f"{len(tried)} TLS ports refused plain text:\n" + "\n".join(tried))
    assert len(tried) >= 20


def _health_over_tls(address: str, ctx: ssl.SSLContext) -> bytes:
    try:
        with (
            socket.create_connection((address, 8000), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=address) as tls,
        ):
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return tls.recv(200)
    except (ssl.SSLError, ConnectionResetError) as exc:
        return f"refused: {exc}".encode()


def test_core_refuses_a_tls_client_without_a_certificate(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """core requires a client certificate from the fleet CA: without one no reply comes;
    with one (core's own, as its peers present) /health answers."""
    deployment = build_deployment(make_plan(config), ROOT)
    address = config.host(deployment.of_role("core")[0].host).address
    pki = st.paths("lab", ROOT).state / "pki"
    anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    without = _health_over_tls(address, anonymous)
    print(f"without a client certificate: {without[:80]!r}")
    assert not without.startswith(b"HTTP/"), without
    member = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    member.load_cert_chain(str(pki / "core-h1" / "cert.pem"), str(pki / "core-h1" / "key.pem"))
    with_cert = _health_over_tls(address, member)
    assert with_cert.startswith(b"HTTP/1.1 200"), with_cert


def _peer_names(address: str, port: int, ctx: ssl.SSLContext, starttls: bytes) -> set[str]:
    """The subjectAltName entries of the certificate served at address:port, verified
    against the fleet CA *for that address* (the handshake fails when it lacks the IP)."""
    with socket.create_connection((address, port), timeout=5) as raw:
        if starttls:
            raw.sendall(starttls)
            assert raw.recv(1) == b"S", (address, port)
        with ctx.wrap_socket(raw, server_hostname=address) as tls:
            cert = tls.getpeercert()
    assert cert is not None
    return {str(value) for _kind, value in cert.get("subjectAltName", ())}


def test_each_host_serves_a_certificate_of_its_own(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Per-host certificates: every internal TLS port serves a certificate valid for its
    own host's name and address and for no other host's address."""
    deployment = build_deployment(make_plan(config), ROOT)
    pki = st.paths("lab", ROOT).state / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "core-h1" / "cert.pem"), str(pki / "core-h1" / "key.pem"))
    ssl_request = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest
    addresses = {h.name: h.address for h in config.hosts}
    seen = []
    for spec in deployment.specs:
        if spec.one_shot:
            continue
        for port in spec.ports:
            if port.encryption != "tls" or port.protocol != "tcp" or port.public:
                continue
            if port.loopback_only:
                continue
            address = addresses[spec.host]
            names = _peer_names(address, port.number, ctx,
                                ssl_request if port.purpose == "sql" else b"")  # fmt: skip
            others = {a for h, a in addresses.items() if h != spec.host} & names
            assert spec.host in names and address in names, (spec.name, port.number, names)
            assert not others, (spec.name, port.number, sorted(others))
            if spec.role == "consul-agent":
                assert f"server.{config.consul.datacenter}.consul" not in names, names
            seen.append(f"{spec.host}:{port.number} {spec.name}")
    print(f"{len(seen)} TLS ports, each with its own host's certificate")
    assert len(seen) >= 20


def test_morgan_containers_hold_no_capability(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Every container the plan marks unprivileged runs so on its host: the engine dropped
    every capability and set no-new-privileges, its processes have no effective or
    bounding capability, and opening a raw socket on the host's network (sniffing the
    LAN) is refused."""
    deployment = build_deployment(make_plan(config), ROOT)
    engines_ = engines(config, ROOT)
    hardened = [s for s in deployment.specs if s.privileges == UNPRIVILEGED]
    assert {"core", "llm", "stt", "tts"} <= {s.role for s in hardened}
    fmt = "{{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}}"
    for spec in hardened:
        engine = engines_[spec.host]
        assert engine.text("inspect", "-f", fmt, spec.name, timeout=60) == (
            '["ALL"] ["no-new-privileges=true"]'
        ), spec.name
    for spec in (s for s in hardened if s.role in ("core", "stt")):
        engine = engines_[spec.host]
        status = engine.text("exec", spec.name, "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs)",
                             "/proc/self/status", timeout=60)  # fmt: skip
        fields = dict(line.split(":\t") for line in status.splitlines())
        print(spec.name, fields)
        assert fields == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000",
                          "NoNewPrivs": "1"}, spec.name  # fmt: skip
        raw = engine.run("exec", spec.name, "python", "-c",
                         "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
                         check=False, timeout=60)  # fmt: skip
        assert raw.returncode != 0, spec.name
        assert b"PermissionError" in raw.stderr, raw.stderr[-300:]


def test_the_gateway_keeps_only_the_right_to_bind_its_ports(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Traefik (the lab runs Morgan's build: its own user, a file capability on the
    binary) holds NET_BIND_SERVICE and nothing else, and serves 443 with it."""
    deployment = build_deployment(make_plan(config), ROOT)
    gateway = next(iter(deployment.of_role("traefik")))
    engine = engines(config, ROOT)[gateway.host]
    caps = engine.text("inspect", "-f", "{{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}}",
                       gateway.name, timeout=60)  # fmt: skip
    assert caps == '["ALL"] ["NET_BIND_SERVICE"]'
    status = engine.text("exec", gateway.name, "grep", "-E", "^(Uid|CapEff|CapBnd)",
                         "/proc/1/status", timeout=60)  # fmt: skip
    fields = {k: v.split()[0] for k, v in (line.split(":\t") for line in status.splitlines())}
    print(gateway.name, fields)
    net_bind_service = f"{1 << 10:016x}"
    assert fields == {"Uid": "10200", "CapEff": net_bind_service, "CapBnd": net_bind_service}


def test_each_tls_key_is_readable_by_its_servers_user_alone(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Where the plan knows the user a container runs as (`runs_as`, from its image), the
    container's first process runs as that user and the TLS key on the host is that user's
    alone (0400); elsewhere (PostgreSQL's and Redis's images) it is root's, readable."""
    deployment = build_deployment(make_plan(config), ROOT)
    engines_ = engines(config, ROOT)
    owned = []
    for spec in (s for s in deployment.specs if s.tls is not None and not s.one_shot):
        engine = engines_[spec.host]
        key = engine.text("exec", spec.name, "stat", "-c", "%a %u:%g", TlsFiles(spec.role).key,
                          timeout=60)  # fmt: skip
        status = engine.text("exec", spec.name, "grep", "-E", "^(Uid|Gid)", "/proc/1/status",
                             timeout=60)  # fmt: skip
        ids = {k: v.split()[0] for k, v in (line.split(":\t") for line in status.splitlines())}
        if spec.runs_as is None:
            assert key == "644 0:0", (spec.name, key)
            continue
        uid, gid = spec.runs_as
        assert key == f"400 {uid}:{gid}", (spec.name, key)
        assert ids == {"Uid": str(uid), "Gid": str(gid)}, (spec.name, ids)
        owned.append(spec.name)
    print(f"{len(owned)} containers whose key is their user's alone: {', '.join(owned)}")
    roles = {s.role for s in deployment.specs if s.name in owned}
    assert {"core", "llm", "stt", "tts", "vad", "consul-server", "consul-agent", "traefik",
            "prometheus", "node-exporter"} <= roles  # fmt: skip


def test_no_secret_in_a_support_servers_environment(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Every running container of the lab: neither its environment (`docker inspect`) nor
    any of its processes' (`/proc/*/environ`, read as the container's user) holds a
    secret of the stack, but those its spec declares as environment (the Redis exporter's
    password: tests/infra/test_specs.py pins that list). The configs that Consul and Patroni
    start lines write with secrets are their users' alone."""
    deployment = build_deployment(make_plan(config), ROOT)
    engines_ = engines(config, ROOT)
    values = read_env(st.paths("lab", ROOT).env_file)
    secrets = {name: values[secret_variable(name)] for name in {n for s in deployment.specs
               for n in s.secrets}}  # fmt: skip
    assert all(len(v) >= 16 for v in secrets.values()), "a secret too short to look for"
    checked = []
    for spec in (s for s in deployment.specs if not s.one_shot):
        engine = engines_[spec.host]
        declared = {n for e in spec.secret_env for n in e.secrets}
        config_env = engine.text("inspect", "-f", "{{json .Config.Env}}", spec.name, timeout=60)
        processes = engine.run("exec", spec.name, "sh", "-c", "cat /proc/[0-9]*/environ",
                               check=False, timeout=60).stdout.decode(errors="replace")  # fmt: skip
        assert "PATH=" in processes, (spec.name, processes[:200])
        for name, value in secrets.items():
            if name in declared:
                continue
            assert value not in config_env, f"{spec.name}: {name} in its environment"
            assert value not in processes, f"{spec.name}: {name} in a process's environment"
        checked.append(spec.name)
    print(f"{len(checked)} containers: no undeclared secret in any environment")
    assert len(checked) >= 30
    for spec in deployment.of_role("consul-server", "consul-agent", "postgres-primary",
                                   "postgres-standby"):  # fmt: skip
        path = (
            patroni_cfg.RUN_CONFIG_PATH
            if spec.role.startswith("postgres")
            else consul_cfg.SECRET_CONFIG_PATH
        )
        mode = engines_[spec.host].text("exec", spec.name, "stat", "-c", "%a %u", path, timeout=60)
        uid = spec.runs_as[0] if spec.runs_as else None
        print(spec.name, path, mode)
        assert mode.split()[0] == "600", (spec.name, mode)
        if uid is not None:
            assert mode.split()[1] == str(uid), (spec.name, mode)
