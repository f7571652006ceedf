"""Consul agent configs (servers, client agents, the secret part) through `consul validate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.configs import consul as consul_cfg
from infra.model import SECRETS_DIR, TLS_DIR, SecretFile
from infra.placement import Plan
from tests.harness.binaries import find_binary

pytestmark = pytest.mark.integration


def _tls_files(tmp_path: Path) -> Path:
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
            "/CN=server.morgan.consul",
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


def _validate(
    plan: Plan, host: str, server: bool, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    config_dir = tmp_path / f"{host}-{'server' if server else 'agent'}"
    config_dir.mkdir()
    text = consul_cfg.render(consul_cfg.agent_config(plan, host, server=server))
    if plan.config.security.internal_tls:
        text = text.replace(TLS_DIR, str(_tls_files(config_dir)))
    document = json.loads(text)
    document["data_dir"] = str(config_dir / "data")
    (config_dir / "morgan.json").write_text(json.dumps(document))
    default = consul_cfg.default_token_for_anonymous(plan, host, server=server)
    agent = consul_cfg.MANAGEMENT_TOKEN if server else SecretFile("CONSUL_HTTP_TOKEN", "agent")
    step, files = consul_cfg.secret_config(server=server, default_token=default, agent_token=agent)
    # The container's start step, verbatim but for its paths; as root it would hand the
    # file to the image's `consul` user, which this machine does not have.
    handover = (
        f' && {{ [ "$(id -u)" != 0 ] || chown consul:consul {consul_cfg.SECRET_CONFIG_PATH}; }}'
    )
    assert step.endswith(handover)
    secrets = config_dir / "secrets"
    secrets.mkdir()
    values = {
        "consul_gossip_key": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
        "consul_management_token": "0b0a0a4e-51a5-4f1f-9b6c-2f1d0c4b8e11",
        "agent": "6f1c0d2e-8a3b-4c5d-9e7f-1a2b3c4d5e6f",
    }
    for file in files:
        (secrets / file.variable).write_text(values[file.secret] + "\n")
    step = step.removesuffix(handover).replace(SECRETS_DIR, str(secrets))
    step = step.replace(consul_cfg.SECRET_CONFIG_PATH, str(config_dir / "secrets.json"))
    subprocess.run(["/bin/sh", "-c", step], check=True, timeout=30)
    written = json.loads((config_dir / "secrets.json").read_text())
    assert written["encrypt"] == values["consul_gossip_key"]
    tokens = written["acl"]["tokens"]
    assert tokens["agent"] == values["consul_management_token" if server else "agent"]
    assert ("default" in tokens) == default
    assert oct((config_dir / "secrets.json").stat().st_mode & 0o777) == "0o600"
    return subprocess.run(
        [find_binary("consul"), "validate", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("host", "server"), [("h1", True), ("h1", False), ("h2", False), ("h4", True)]
)
def test_homelab_agent_configs_validate(
    homelab_plan: Plan, host: str, server: bool, tmp_path: Path
) -> None:
    result = _validate(homelab_plan, host, server, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dev_server_doubles_as_agent_and_validates(dev_plan: Plan, tmp_path: Path) -> None:
    document = consul_cfg.agent_config(dev_plan, "local", server=True)
    assert document["ports"]["http"] == 8500 and document["ports"]["dns"] == 8600
    assert {s["name"] for s in document["services"]} == {"postgres-primary", "redis", "prometheus"}
    result = _validate(dev_plan, "local", True, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_consul_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps({"ports": {"http": "x"}, "data_dir": str(tmp_path)})
    )
    result = subprocess.run(
        [find_binary("consul"), "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


@pytest.mark.unit
def test_servers_expect_each_other_and_agents_join_them(homelab_plan: Plan) -> None:
    server = consul_cfg.agent_config(homelab_plan, "h3", server=True)
    agent = consul_cfg.agent_config(homelab_plan, "h2", server=False)
    assert server["bootstrap_expect"] == 3
    joins = ["h1.lan:8301", "h3.lan:8301", "h4.lan:8301"]
    assert server["retry_join"] == joins and agent["retry_join"] == joins
    assert server["acl"]["default_policy"] == "deny"
    assert server["tls"]["defaults"]["verify_incoming"] is True
    assert agent["ports"]["http"] == -1 and agent["ports"]["https"] == 8501
    # The server and the agent on one host use different gossip ports.
    h1_server = consul_cfg.agent_config(homelab_plan, "h1", server=True)["ports"]["serf_lan"]
    h1_agent = consul_cfg.agent_config(homelab_plan, "h1", server=False)["ports"]["serf_lan"]
    assert h1_server != h1_agent


@pytest.mark.unit
def test_agents_register_the_supporting_servers_of_their_host(homelab_plan: Plan) -> None:
    h3 = consul_cfg.agent_config(homelab_plan, "h3", server=False)
    names = {s["name"] for s in h3["services"]}
    assert names == {"postgres-standby", "redis", "prometheus", "alertmanager", "grafana",
                     "loki", "node-exporter", "postgres-exporter", "redis-exporter"}  # fmt: skip
    assert all(s["address"] == "h3.lan" for s in h3["services"])
    assert "services" not in consul_cfg.agent_config(homelab_plan, "h3", server=True)


@pytest.mark.unit
def test_server_and_agent_on_one_host_share_no_port(homelab_plan: Plan) -> None:
    server = consul_cfg.agent_config(homelab_plan, "h1", server=True)["ports"]
    agent = consul_cfg.agent_config(homelab_plan, "h1", server=False)["ports"]
    used_by_server = {p for p in server.values() if p > 0}
    used_by_agent = {p for p in agent.values() if p > 0}
    assert not used_by_server & used_by_agent
    # Consul's defaults (8500-8503, 8600, 8300-8302) must not sneak in twice: every port
    # either side leaves out is switched off explicitly or not used by that role.
    assert server["grpc"] == agent["grpc"] == -1
    assert server["grpc_tls"] == agent["grpc_tls"] == -1
    assert server["dns"] == -1 and agent["dns"] == 8600
