"""Consul server and client agent configuration (JSON), plus the secret part."""

from __future__ import annotations

import json
from typing import Any

from infra.model import TLS_DIR, SecretFile
from infra.placement import Plan
from infra.spec_common import is_ip

SERVER_PORTS = {"server": 8300, "serf_lan": 8301, "serf_wan": 8302, "http": 8510, "https": 8511}
AGENT_PORTS = {"serf_lan": 8311, "http": 8500, "https": 8501, "dns": 8600}


def server_acts_as_agent(plan: Plan, host: str) -> bool:
    """A server host without a separate client agent serves the local API itself."""
    return host in plan.consul_servers and not plan.config.consul.agent_on_server_hosts


def local_agent_addr(plan: Plan) -> str:
    """CONSUL_HTTP_ADDR for a container on any host: always the agent on its own loopback."""
    if plan.config.security.internal_tls:
        return f"https://127.0.0.1:{AGENT_PORTS['https']}"
    return f"127.0.0.1:{AGENT_PORTS['http']}"


def _tls_block(verify_incoming: bool) -> dict[str, Any]:
    return {
        "defaults": {
            "ca_file": f"{TLS_DIR}/ca.pem",
            "cert_file": f"{TLS_DIR}/cert.pem",
            "key_file": f"{TLS_DIR}/key.pem",
            "verify_incoming": verify_incoming,
            "verify_outgoing": True,
        },
        "internal_rpc": {"verify_server_hostname": True},
        # Local clients (services, Prometheus, Traefik) authenticate with ACL tokens, not certs.
        "https": {"verify_incoming": False},
    }


# The IPv4 address of the interface with the default route: on a host that runs containers,
# Docker's own bridges (docker0, br-…) are private interfaces too and must not be advertised.
_ADVERTISE_TEMPLATE = (
    '{{ GetDefaultInterfaces | include "type" "IPv4" | limit 1 | attr "address" }}'
)


def advertise_addr(address: str) -> str:
    """The address other agents reach this one at: the host's own when it is an IP."""
    return address if is_ip(address) else _ADVERTISE_TEMPLATE


def serves_remote_api(plan: Plan, host: str, *, server: bool) -> bool:
    """Whether this agent's HTTP API is for other machines too.

    A client agent's API serves only the containers of its own host, so it listens on
    loopback; a server's serves the deploy machine (KV, keys, the UI) as well.
    """
    return server


def default_token_for_anonymous(plan: Plan, host: str, *, server: bool) -> bool:
    """Whether a request without a token runs with the management token.

    Only on a server that also serves its host's containers
    (consul.agent_on_server_hosts: false, the dev stack), whose loopback API its
    containers use without a token. Everywhere else a request without a token has the
    anonymous token's rights (DNS and the catalogue, infra.consul_acl) and each
    container holds its own scoped token.
    """
    return server_acts_as_agent(plan, host) or not plan.config.consul.agent_on_server_hosts


def agent_config(plan: Plan, host: str, *, server: bool) -> dict[str, Any]:
    cfg = plan.config
    tls = cfg.security.internal_tls
    addresses = [cfg.host(h).address for h in plan.consul_servers]
    acts_as_agent = server and server_acts_as_agent(plan, host)
    ports: dict[str, int] = {}
    if server:
        ports.update(
            server=SERVER_PORTS["server"],
            serf_lan=SERVER_PORTS["serf_lan"],
            serf_wan=SERVER_PORTS["serf_wan"],
        )
        if acts_as_agent:
            ports.update(dns=AGENT_PORTS["dns"])
            http, https = AGENT_PORTS["http"], AGENT_PORTS["https"]
        else:
            ports.update(dns=-1)
            http, https = SERVER_PORTS["http"], SERVER_PORTS["https"]
    else:
        ports.update(serf_lan=AGENT_PORTS["serf_lan"], dns=AGENT_PORTS["dns"], serf_wan=-1)
        http, https = AGENT_PORTS["http"], AGENT_PORTS["https"]
    if tls:
        ports.update(http=-1, https=https)
    else:
        ports.update(http=http)
    # No service mesh: gRPC (8502/8503 by default) would collide between a server and the
    # client agent on the same host.
    ports.update(grpc=-1, grpc_tls=-1)
    listen_on: dict[str, str] = {}
    if ports.get("dns", -1) > 0:
        listen_on["dns"] = "127.0.0.1"
    document: dict[str, Any] = {
        "datacenter": cfg.consul.datacenter,
        "node_name": f"{host}-server" if server and not acts_as_agent else host,
        "data_dir": "/consul/data",
        "server": server,
        "bind_addr": plan.listen_address(host),
        "advertise_addr": advertise_addr(cfg.host(host).address),
        "client_addr": (
            plan.listen_address(host)
            if serves_remote_api(plan, host, server=server)
            else "127.0.0.1"
        ),
        "addresses": listen_on,
        "retry_join": [f"{a}:{SERVER_PORTS['serf_lan']}" for a in addresses],
        "ports": ports,
        "node_meta": {
            "os": cfg.host(host).os,
            "arch": cfg.host(host).arch,
            "gpu": "true" if cfg.host(host).has_gpu else "false",
        },
        "log_json": True,
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "enable_token_persistence": True,
        },
        "leave_on_terminate": not server,
        "rejoin_after_leave": True,
    }
    services = service_definitions(plan, host)
    if services and (not server or acts_as_agent):
        document["services"] = services
    if server:
        document["bootstrap_expect"] = len(plan.consul_servers)
        document["ui_config"] = {"enabled": cfg.consul.ui}
        document["performance"] = {"raft_multiplier": 1}
    if tls:
        document["tls"] = _tls_block(verify_incoming=True)
        # HTTPS checks of services that require client certificates present the agent's.
        document["enable_agent_tls_for_checks"] = True
        document["auto_encrypt"] = {"allow_tls": True} if server else {"tls": False}
    return document


# Supporting servers the local agent registers, so that containers find them by Consul name.
SUPPORT_SERVICES = {
    "postgres-primary": 5432,
    "postgres-standby": 5432,
    "redis": 6379,
    "qdrant": 6333,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
    "loki": 3100,
    "node-exporter": 9100,
    "postgres-exporter": 9187,
    "redis-exporter": 9121,
}


def service_definitions(plan: Plan, host: str) -> list[dict[str, Any]]:
    address = plan.config.host(host).address
    out = []
    for replica in plan.on_host(host):
        port = SUPPORT_SERVICES.get(replica.role)
        if port is None:
            continue
        out.append(
            {
                "id": f"{replica.role}-{host}-{port}",
                "name": replica.role,
                "address": address,
                "port": port,
                "meta": {"host": host},
                "check": {"tcp": f"127.0.0.1:{port}", "interval": "10s", "timeout": "2s"},
            }
        )
    return out


# The agent's secret config: written at start from the container's secret files (Consul
# takes its gossip key and ACL tokens only inline in a config file).
SECRET_CONFIG_PATH = "/consul/config/secrets.json"
GOSSIP_KEY = SecretFile("CONSUL_GOSSIP_KEY", "consul_gossip_key")
MANAGEMENT_TOKEN = SecretFile("CONSUL_MANAGEMENT_TOKEN", "consul_management_token")


def secret_config(
    *, server: bool, default_token: bool, agent_token: SecretFile
) -> tuple[str, tuple[SecretFile, ...]]:
    """The start step that writes the agent's gossip key and ACL tokens to
    SECRET_CONFIG_PATH (0600, the agent's user's) from its secret files, and those files.

    `agent_token` is the file of the token the agent acts with (and registers its config
    file's services with): the client agents' scoped token (infra.consul_acl), the
    management token on a server. With `default_token`, a request without a token runs
    with the management token: only on an API that listens on loopback for its own host's
    containers and where no scoped tokens exist (`default_token_for_anonymous`).
    """
    tokens: dict[str, SecretFile] = {
        "agent": agent_token,
        "config_file_service_registration": agent_token,
    }
    if default_token:
        tokens["default"] = MANAGEMENT_TOKEN
    if server:
        tokens["initial_management"] = MANAGEMENT_TOKEN
    body = {"encrypt": GOSSIP_KEY, "acl": {"tokens": tokens}}
    order: list[SecretFile] = []

    def slot(file: SecretFile) -> str:
        order.append(file)
        return "%s"

    # Keys, tokens and gossip keys are base64 or UUIDs: nothing to escape in JSON.
    text = json.dumps(body, sort_keys=True, default=slot)
    values = " ".join(f.shell_value for f in order)
    files = tuple(dict.fromkeys(order))
    step = (
        f"umask 077 && printf '{text}' {values} > {SECRET_CONFIG_PATH}"
        # An image that starts as root (upstream's) hands the agent its file.
        f' && {{ [ "$(id -u)" != 0 ] || chown consul:consul {SECRET_CONFIG_PATH}; }}'
    )
    return step, files


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
