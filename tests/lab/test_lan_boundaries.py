"""Someone on the home network (this machine, on the lab's network but not one of its hosts)
against the lab fleet.

Consul: a client agent's API is not reachable from the LAN at all, and a server's API,
which the deploy machine uses, does nothing for a request without a token: no turning
auth off, no minting a key, no reading the key records, no fake morgan-core for Traefik
to route to. The management token, from the stack's outputs, still does each (so the
refusals are the ACLs', not a wrong URL).

Prometheus and Alertmanager: nobody without the stack's monitoring password reads a metric
or silences an alert (the password, from the outputs, is the control).

PostgreSQL: only the stack's hosts may log in over the network; the application role's
own password, from this machine, is refused by pg_hba.

Redis: a node speaks TLS only, and only to a client that shows a certificate from the
fleet CA; knowing the CA (to trust the node) is not enough to get a Redis reply.

Docker: a container's fleet certificate does not open a tcp:// host's daemon."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from morgan.deploy.outputs import load_outputs, monitoring_auth, write_ca_file
from morgan.deploy.rollout import DeployReport, engines
from morgan.lab import stack as st
from morgan.lab.secrets import read_env

from infra.configs import consul as consul_cfg
from infra.configs.data import PG_PORT, REDIS_PORT
from infra.configs.observability import PORTS as OBS_PORTS
from infra.deployment import Deployment, build_deployment
from infra.model import TLS_DIR
from infra.placement import make_plan
from tests.harness.binaries import postgres_binary

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FORGED_KEY = "morgan/auth/keys/forged0000ab"
FAKE_CORE = {"ID": "morgan-core-forged", "Name": "morgan-core", "Address": "10.213.87.99",
             "Port": 8000, "Tags": ["traefik.enable=true"]}  # fmt: skip


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return build_deployment(make_plan(st.load_config("lab", ROOT)), ROOT)


@pytest.fixture(scope="module")
def outputs(lab_fleet: DeployReport) -> dict[str, Any]:
    return load_outputs(st.paths("lab", ROOT))


@pytest.fixture(scope="module")
def server_api(outputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[httpx.Client]:  # fmt: skip
    ca = write_ca_file(outputs, tmp_path_factory.mktemp("consul-ca"))
    base = outputs["consul_ui_url"].removesuffix("/ui/")
    with httpx.Client(base_url=base, verify=str(ca), timeout=15) as client:
        yield client


def _refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_no_client_agents_api_is_reachable_from_the_lan(deployment: Deployment) -> None:
    tried = []
    for spec in deployment.of_role("consul-agent"):
        address = deployment.plan.config.host(spec.host).address
        port = consul_cfg.AGENT_PORTS["https"]
        assert _refused(address, port), f"{spec.name}: {address}:{port} accepts connections"
        tried.append(f"{address}:{port}")
    print("refused:", ", ".join(tried))
    assert len(tried) == len(deployment.plan.hosts)


def test_a_request_without_a_token_is_denied(server_api: httpx.Client,
                                             outputs: dict[str, Any]) -> None:  # fmt: skip
    service_key = f"morgan/auth/keys/{outputs['core_service_key_id']}"
    attempts = {
        "turn auth off": server_api.put("/v1/kv/morgan/config/global/auth_enabled",
                                        content=b"false"),
        "mint an API key": server_api.put(f"/v1/kv/{FORGED_KEY}",
                                          content=json.dumps({"owner": "mallory"}).encode()),
        "register a fake morgan-core": server_api.put("/v1/agent/service/register",
                                                      json=FAKE_CORE),
        "read core's key record": server_api.get(f"/v1/kv/{service_key}"),
        "read the ACL tokens": server_api.get("/v1/acl/tokens"),
    }  # fmt: skip
    for what, answer in attempts.items():
        print(f"{what}: {answer.status_code} {answer.text[:80]!r}")
        assert answer.status_code == 403, (what, answer.status_code, answer.text[:200])
        assert "Permission denied" in answer.text, (what, answer.text[:200])


def test_nothing_was_written_and_the_token_still_works(
    server_api: httpx.Client, outputs: dict[str, Any], deployment: Deployment
) -> None:
    token = {"X-Consul-Token": outputs["consul_management_token"]}
    # The control: the same API, with the deploy machine's token, reads what was refused.
    keys = server_api.get("/v1/kv/morgan/auth/keys/?keys=true", headers=token)
    assert keys.status_code == 200, keys.text
    assert f"morgan/auth/keys/{outputs['core_service_key_id']}" in keys.json()
    assert FORGED_KEY not in keys.json()
    auth = server_api.get("/v1/kv/morgan/config/global/auth_enabled", headers=token)
    assert auth.status_code == 404, auth.text  # env-only setting: never in KV, not now either
    cores = server_api.get("/v1/catalog/service/morgan-core", headers=token)
    assert cores.status_code == 200
    assert FAKE_CORE["ID"] not in {c["ServiceID"] for c in cores.json()}
    assert len(cores.json()) == len(deployment.of_role("core"))


def _redis_reply_without_a_client_certificate(address: str, ca: Path) -> str:
    """PING a node over TLS, trusting the fleet CA but showing no certificate: the node's
    reply, or how the connection ended."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the node's name is not the question here
    try:
        with (
            socket.create_connection((address, REDIS_PORT), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"PING\r\n")
            reply = tls.recv(256)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
        return f"refused: {type(error).__name__}: {error}"
    return f"replied: {reply!r}" if reply else "refused: closed without a reply"


def test_redis_answers_no_client_without_a_fleet_certificate(
    deployment: Deployment, outputs: dict[str, Any], tmp_path: Path
) -> None:
    ca = write_ca_file(outputs, tmp_path)
    seen = {}
    for spec in deployment.of_role("redis"):
        address = deployment.plan.config.host(spec.host).address
        seen[spec.name] = _redis_reply_without_a_client_certificate(address, ca)
        print(f"{spec.name} ({address}:{REDIS_PORT}): {seen[spec.name]}")
    assert seen, "the lab places no Redis node"
    # `tls-auth-clients optional` would reply "-NOAUTH Authentication required."
    for name, outcome in seen.items():
        assert outcome.startswith("refused: "), (name, outcome)


def test_prometheus_and_alertmanager_answer_only_the_monitoring_password(
    deployment: Deployment, outputs: dict[str, Any], tmp_path: Path
) -> None:
    ca = str(write_ca_file(outputs, tmp_path))
    plan = deployment.plan
    prometheus = plan.config.host(plan.hosts_of("prometheus")[0]).address
    alertmanager = plan.config.host(plan.hosts_of("alertmanager")[0]).address
    query = f"https://{prometheus}:{OBS_PORTS['prometheus']}/api/v1/query"
    silences = f"https://{alertmanager}:{OBS_PORTS['alertmanager']}/api/v2/silences"
    silence = {"matchers": [{"name": "alertname", "value": ".+", "isRegex": True}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
               "createdBy": "mallory", "comment": "hide every alert"}  # fmt: skip
    user, password = monitoring_auth(outputs)
    with httpx.Client(verify=ca, timeout=15) as client:
        for who, auth in {"no password": None, "a wrong password": (user, "guess")}.items():
            read = client.get(query, params={"query": "up"}, auth=auth)
            hide = client.post(silences, json=silence, auth=auth)
            print(f"{who}: query {read.status_code}, silence {hide.status_code}")
            assert read.status_code == 401, (who, read.status_code, read.text[:200])
            assert hide.status_code == 401, (who, hide.status_code, hide.text[:200])
        # The control: the password reads the metrics, and no silence was made.
        read = client.get(query, params={"query": "up"}, auth=(user, password))
        assert read.status_code == 200, read.text[:200]
        assert read.json()["data"]["result"], "Prometheus scrapes nothing"
        made = client.get(silences, auth=(user, password))
        assert made.status_code == 200, made.text[:200]
        assert not [s for s in made.json() if s["createdBy"] == "mallory"], made.json()


def test_postgres_refuses_a_login_from_outside_the_fleet(
    deployment: Deployment, outputs: dict[str, Any], tmp_path: Path
) -> None:
    """The application role's right password, over TLS, from a machine on the network that is
    not one of the stack's hosts: pg_hba has no line for it."""
    ca = write_ca_file(outputs, tmp_path)
    secrets = read_env(st.paths("lab", ROOT).env_file)
    pg = deployment.plan.config.postgres
    env = {**os.environ, "PGPASSWORD": secrets["MORGAN_POSTGRES_APP_PASSWORD"],
           "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
    members = deployment.of_role("postgres-primary", "postgres-standby")
    for spec in members:
        address = deployment.plan.config.host(spec.host).address
        conninfo = (f"host={address} port={PG_PORT} dbname={pg.database} user={pg.app_user}"
                    f" sslmode=verify-ca sslrootcert={ca}")  # fmt: skip
        answer = subprocess.run([postgres_binary("psql"), "-X", "-Atc", "SELECT 1", conninfo],
                                env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
        print(f"{spec.name} ({address}): {answer.returncode} {answer.stderr.strip()[:200]}")
        assert answer.returncode != 0, (spec.name, answer.stdout)
        assert "no pg_hba.conf entry for host" in answer.stderr, (spec.name, answer.stderr)
    assert len(members) == 2


def test_postgres_asks_a_fleet_host_for_a_client_certificate(
    deployment: Deployment, lab_fleet: DeployReport
) -> None:
    """The application role's right password, over TLS, from a host of the fleet (h3's
    PostgreSQL container to h1's member), without a client certificate: refused. The same
    with the member's own certificate is the control. The password comes on standard
    input, never in a process's arguments."""
    from infra.configs.patroni import PG_KEY_PATH

    pg = deployment.plan.config.postgres
    password = read_env(st.paths("lab", ROOT).env_file)["MORGAN_POSTGRES_APP_PASSWORD"]
    standby = next(iter(deployment.of_role("postgres-standby")))
    primary = next(iter(deployment.of_role("postgres-primary")))
    target = deployment.plan.config.host(primary.host).address
    engine = engines(deployment.plan.config, ROOT)[standby.host]
    conninfo = (
        f"host={target} port={PG_PORT} dbname={pg.database} user={pg.app_user}"
        f" sslmode=verify-full sslrootcert={TLS_DIR}/ca.pem connect_timeout=10"
    )
    own = f" sslcert={TLS_DIR}/cert.pem sslkey={PG_KEY_PATH}"
    answers = {}
    for name, extra in (("no certificate", ""), ("its certificate", own)):
        script = (
            f"read -r PGPASSWORD; export PGPASSWORD; psql -X -Atc 'SELECT 1' '{conninfo}{extra}'"
        )
        proc = engine.run("exec", "-i", standby.name, "sh", "-c", script,
                          stdin=f"{password}\n".encode(), check=False, timeout=60)  # fmt: skip
        answers[name] = (proc.returncode, (proc.stdout + proc.stderr).decode().strip())
        print(f"{standby.host} -> {primary.host}, {name}: {answers[name]}")
    assert answers["its certificate"] == (0, "1")
    code, said = answers["no certificate"]
    assert code != 0 and "connection requires a valid client certificate" in said, said


def _docker_version(
    endpoint: str, ca: Path, cert: Path, key: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "--tlsverify", f"--tlscacert={ca}", f"--tlscert={cert}", f"--tlskey={key}",
         "-H", endpoint, "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_containers_certificate_does_not_open_a_hosts_docker_daemon(
    deployment: Deployment, lab_fleet: DeployReport, tmp_path: Path
) -> None:
    """Someone who took over a container holds its fleet certificate and key: the Docker
    daemon a tcp:// host serves (h2, the Windows PC's stand-in) trusts only the CA of its
    own client certificates, so that pair opens nothing. The deploy machine's own client
    certificate is the control."""
    config = deployment.plan.config
    host = next(h for h in config.hosts if h.docker.startswith("tcp://"))
    assert host.docker_tls is not None
    own = ROOT / host.docker_tls.cert_path
    core = next(s for s in deployment.of_role("core"))
    engine = engines(config, ROOT)[core.host]
    for name in ("cert.pem", "key.pem"):
        pem = engine.text("exec", core.name, "cat", f"{TLS_DIR}/{name}", timeout=60)
        (tmp_path / name).write_text(pem + "\n")
    stolen = _docker_version(host.docker, own / "ca.pem", tmp_path / "cert.pem",
                             tmp_path / "key.pem")  # fmt: skip
    print(f"{host.docker} with {core.name}'s certificate: rc {stolen.returncode},"
          f" {stolen.stderr.strip()[-200:]}")  # fmt: skip
    assert stolen.returncode != 0, stolen.stdout
    # The daemon refuses the handshake: the certificate is not from its clients' CA.
    assert "remote error: tls: bad certificate" in stolen.stderr, stolen.stderr
    control = _docker_version(host.docker, own / "ca.pem", own / "cert.pem", own / "key.pem")
    assert control.returncode == 0, control.stderr
    assert control.stdout.strip(), control
