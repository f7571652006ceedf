"""The deployment: everything a deploy path needs, derived once from the plan.

Pulumi (`infra/fleet.py`), the rendered Swarm and compose files (`infra/render/`) and
`morgan up` (`morgan.lab.stack`) all read one `Deployment` and re-derive none of it:
per host its container specs, the images each host builds, the secrets (how each is
made, which containers read it), the Consul KV entries, core's service key, where
every endpoint is, and the order in which the parts start.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra import consul_acl
from infra.builds import BuildStep, build_steps
from infra.configs import consul as consul_cfg
from infra.configs.observability import PORTS as OBS_PORTS
from infra.kv import kv_entries
from infra.model import (
    JOB_LABEL,
    TLS_DIR,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    SecretFile,
    TlsFiles,
)
from infra.placement import Plan, Replica
from infra.spec_common import role_labels
from infra.specs import SERVICE_PORTS, build_specs, service_port

# "provided": the operator's own (a Slack webhook URL, an SMTP password), never generated.
# "bcrypt": the bcrypt hash of the password secret named without the `_bcrypt` suffix.
SecretKind = Literal["password", "gossip-key", "token", "htpasswd", "bcrypt", "api-key", "provided"]
BCRYPT_SUFFIX = "_bcrypt"

# Every secret of a stack, and how it is made. Pulumi makes them with pulumi_random
# (infra/components/secrets.py), `morgan up` locally (morgan.lab.secrets): both read
# this table.
SECRETS: tuple[tuple[str, SecretKind], ...] = (
    ("postgres_password", "password"),
    # The application role's (postgres.app_user), which core connects with.
    ("postgres_app_password", "password"),
    ("replication_password", "password"),
    ("redis_password", "password"),
    ("qdrant_api_key", "password"),
    ("grafana_admin_password", "password"),
    # Prometheus' and Alertmanager's basic auth: the password for their clients, its hash
    # for their web config.
    ("monitoring_password", "password"),
    ("monitoring_password_bcrypt", "bcrypt"),
    ("consul_gossip_key", "gossip-key"),
    ("consul_management_token", "token"),
    # Scoped Consul tokens (infra.consul_acl): each Morgan service's, Patroni's, and each
    # client agent's (HOST_SECRETS). The management token stays with the Consul servers.
    ("consul_token_core", "token"),
    ("consul_token_llm", "token"),
    ("consul_token_stt", "token"),
    ("consul_token_tts", "token"),
    ("consul_token_vad", "token"),
    ("consul_token_patroni", "token"),
    # `user:bcrypt-hash` lines for Traefik's dashboard; the password itself is an output.
    ("traefik_dashboard_users", "htpasswd"),
    # The key core sends to the model services; only its salted record goes to KV.
    ("core_service_api_key", "api-key"),
    # Alert receivers' (infra.alerting_config): needed only when a receiver uses them.
    ("alert_slack_url", "provided"),
    ("alert_smtp_password", "provided"),
)
SECRET_NAMES: tuple[str, ...] = tuple(name for name, _kind in SECRETS)
# Secrets made once per host, named `<name>_<host>` (consul_acl.host_secrets says which
# hosts): a host that is taken over holds its own, never another host's.
HOST_SECRETS: tuple[tuple[str, SecretKind], ...] = ((consul_acl.AGENT_TOKEN_SECRET, "token"),)


_KINDS: dict[str, SecretKind] = dict(SECRETS)


def _host_secret_kind(name: str) -> SecretKind | None:
    return next((kind for base, kind in HOST_SECRETS if name.startswith(f"{base}_")), None)


def secret_table(plan: Plan) -> tuple[tuple[str, SecretKind], ...]:
    """Every secret of the plan's stack and its kind: SECRETS and the per-host ones."""
    per_host = ((name, _host_secret_kind(name)) for name in consul_acl.host_secrets(plan))
    return (*SECRETS, *((name, kind) for name, kind in per_host if kind is not None))


def secret_kind(name: str) -> SecretKind | None:
    """The kind of the secret `name` (a per-host one included); None if it is none."""
    return _KINDS.get(name) or _host_secret_kind(name)


# The phases a deploy brings up in order; each waits for the one before.
START_ORDER: tuple[tuple[str, ...], ...] = (
    ("consul-server",),
    ("consul-agent",),
    (
        "postgres-primary",
        "postgres-standby",
        "postgres-app-role",
        "redis",
        "redis-replica",
        "redis-cluster-create",
        "qdrant",
    ),
    ("traefik", *OBS_PORTS),
    tuple(SERVICE_PORTS),
)


def secret_variable(secret: str) -> str:
    """The environment variable a rendered file reads the secret from."""
    return f"MORGAN_{secret.upper()}"


@dataclass(frozen=True)
class Secret:
    name: str
    kind: SecretKind
    # Container names whose environment carries it.
    consumers: tuple[str, ...]

    @property
    def variable(self) -> str:
        return secret_variable(self.name)


@dataclass(frozen=True)
class ServiceKey:
    """Core's key for the model services: a secret in core's environment, a record in KV."""

    secret: str = "core_service_api_key"
    variable: str = "MORGAN_CORE_SERVICE_API_KEY"
    record_prefix: str = "morgan/auth/keys"
    owner: str = "morgan-core (service key)"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    scheme: str = "http"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"


@dataclass(frozen=True)
class Endpoints:
    """Where an operator (or `pulumi up`, or `morgan up`) reaches the deployed stack."""

    consul: Endpoint
    gateway: Endpoint
    dashboard_url: str
    grafana: Endpoint | None
    # Consul service name -> every replica's endpoint.
    services: dict[str, tuple[Endpoint, ...]]

    @property
    def gateway_url(self) -> str:
        port = "" if self.gateway.port == 443 else f":{self.gateway.port}"
        return f"https://{self.gateway.host}{port}"


@dataclass(frozen=True)
class Deployment:
    plan: Plan
    specs: tuple[ContainerSpec, ...]
    # Morgan images, per host, in build order (a runtime before the services on it).
    images: tuple[BuildStep, ...]
    secrets: tuple[Secret, ...]
    kv: dict[str, str]
    service_key: ServiceKey
    endpoints: Endpoints
    # Container names per start phase (START_ORDER), empty phases left out.
    start_order: tuple[tuple[str, ...], ...]
    # Swarm node labels per host (also Pulumi's Host component labels).
    node_labels: dict[str, dict[str, str]]
    # The rendered files' one-shot step that writes `kv` into Consul. Pulumi writes the
    # entries with its ConsulKv resource, `morgan up` with the Consul API instead.
    kv_seed: ContainerSpec

    def rendered_specs(
        self, host: str | None = None, kv_seed: bool = True
    ) -> tuple[ContainerSpec, ...]:
        """The containers of a rendered compose/Swarm file: the specs plus the KV seed."""
        every = (*self.specs, self.kv_seed) if kv_seed else self.specs
        return tuple(s for s in every if host is None or s.host == host)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.plan.hosts)

    def on_host(self, host: str) -> tuple[ContainerSpec, ...]:
        self.plan.config.host(host)  # KeyError for an unknown host
        return tuple(s for s in self.specs if s.host == host)

    def jobs_before(self, spec: ContainerSpec) -> tuple[str, ...]:
        """The one-shot jobs on `spec`'s host that a later start phase waits for (the
        application role before core, the cluster before its clients)."""
        phase = {name: i for i, names in enumerate(self.start_order) for name in names}
        if spec.one_shot or spec.name not in phase:
            return ()
        return tuple(
            s.name
            for s in self.on_host(spec.host)
            if s.one_shot and s.name in phase and phase[s.name] < phase[spec.name]
        )

    def of_role(self, *roles: str) -> tuple[ContainerSpec, ...]:
        return tuple(s for s in self.specs if s.role in roles)

    def role(self, role: str) -> ContainerSpec | None:
        found = self.of_role(role)
        return found[0] if found else None

    def secret_variables(self, host: str | None = None) -> list[str]:
        """Variables a rendered file for `host` (or for every host) needs, sorted."""
        names = {s.name for s in self.rendered_specs(host)}
        return sorted(sec.variable for sec in self.secrets if set(sec.consumers) & names)

    def images_on(self, host: str) -> tuple[BuildStep, ...]:
        return tuple(step for step in self.images if step.host == host)


KV_SEED_FILE = "/etc/morgan/kv-seed.json"


def kv_seed_document(entries: dict[str, str]) -> str:
    """`consul kv import` input: every entry, values base64-encoded."""
    items = [
        {"key": k, "flags": 0, "value": base64.b64encode(v.encode()).decode()}
        for k, v in sorted(entries.items())
    ]
    return json.dumps(items, indent=1) + "\n"


def kv_seed_spec(plan: Plan, entries: dict[str, str]) -> ContainerSpec:
    """A one-shot container that imports the KV entries through the first server host's agent.

    It restarts on failure until Consul has a leader and accepts the management token.
    """
    cfg = plan.config
    host = plan.consul_servers[0]
    tls = cfg.security.internal_tls
    agent_role = "consul-server" if consul_cfg.server_acts_as_agent(plan, host) else "consul-agent"
    token = SecretFile("CONSUL_HTTP_TOKEN", "consul_management_token")
    env = {"CONSUL_HTTP_ADDR": consul_cfg.local_agent_addr(plan), **dict([token.env])}
    if tls:
        env.update(
            {
                "CONSUL_CACERT": f"{TLS_DIR}/ca.pem",
                "CONSUL_CLIENT_CERT": f"{TLS_DIR}/cert.pem",
                "CONSUL_CLIENT_KEY": f"{TLS_DIR}/key.pem",
            }
        )
    return ContainerSpec(
        name="morgan-kv-seed",
        role="kv-seed",
        host=host,
        image=cfg.images.support.consul,
        platform=cfg.host(host).platform,
        entrypoint=("/bin/sh",),
        command=("-c", f"exec consul kv import @{KV_SEED_FILE}"),
        env=env,
        secret_files=(token,),
        files=(ConfigFile(KV_SEED_FILE, kv_seed_document(entries)),),
        tls=TlsFiles(role=agent_role) if tls else None,
        healthcheck=Healthcheck(test=("CMD", "consul", "version"), start_period="5s"),
        memory_mb=64,
        restart="on-failure",
        one_shot=True,
        labels={**role_labels(plan, Replica("kv-seed", host, 0)), JOB_LABEL: "true"},
    )


def _secrets(plan: Plan, specs: tuple[ContainerSpec, ...]) -> tuple[Secret, ...]:
    table = secret_table(plan)
    names = {name for name, _kind in table}
    unknown = sorted({n for s in specs for n in s.secrets} - names)
    if unknown:
        raise ValueError(
            f"container specs use secrets missing from infra.deployment.SECRETS: {unknown}"
        )
    return tuple(
        Secret(name, kind, tuple(s.name for s in specs if name in s.secrets))
        for name, kind in table
    )


def _endpoints(plan: Plan, specs: tuple[ContainerSpec, ...]) -> Endpoints:
    cfg = plan.config
    tls = cfg.security.internal_tls
    scheme = "https" if tls else "http"
    first_server = cfg.host(plan.consul_servers[0])
    if consul_cfg.server_acts_as_agent(plan, first_server.name):
        api_port = consul_cfg.AGENT_PORTS[scheme]
    else:
        api_port = consul_cfg.SERVER_PORTS[scheme]
    gateway_host = cfg.host(plan.host_of("traefik") or cfg.hosts[0].name)
    grafana_host = plan.host_of("grafana")
    services: dict[str, tuple[Endpoint, ...]] = {}
    for replica in plan.replicas:
        if replica.role in SERVICE_PORTS:
            ep = Endpoint(cfg.host(replica.host).address, service_port(plan, replica), scheme)
            services[f"morgan-{replica.role}"] = (*services.get(f"morgan-{replica.role}", ()), ep)
    port = "" if cfg.gateway.https_port == 443 else f":{cfg.gateway.https_port}"
    return Endpoints(
        consul=Endpoint(first_server.address, api_port, scheme),
        gateway=Endpoint(gateway_host.address, cfg.gateway.https_port, "https"),
        dashboard_url=f"https://traefik.{cfg.domain}{port}/dashboard/",
        grafana=(
            Endpoint(cfg.host(grafana_host).address, OBS_PORTS["grafana"], scheme)
            if grafana_host
            else None
        ),
        services=services,
    )


def node_labels(plan: Plan) -> dict[str, dict[str, str]]:
    """Swarm node labels per host, for `docker node update --label-add`."""
    out = {}
    for host in plan.hosts:
        labels = {
            "morgan.host": host.name,
            "os": host.os,
            "arch": host.arch,
            "gpu": str(host.has_gpu).lower(),
        }
        if host.gpu:
            labels["cuda"] = host.gpu.cuda
        labels.update(host.labels)
        out[host.name] = labels
    return out


def build_deployment(plan: Plan, project_root: str | Path = ".") -> Deployment:
    """The one typed deployment of `plan` (pure: nothing is contacted or written)."""
    specs = build_specs(plan)
    kv = kv_entries(plan)
    seed = kv_seed_spec(plan, kv)
    phases = tuple(
        names
        for names in (tuple(s.name for s in specs if s.role in phase) for phase in START_ORDER)
        if names
    )
    return Deployment(
        plan=plan,
        specs=specs,
        images=build_steps(plan, project_root),
        secrets=_secrets(plan, (*specs, seed)),
        kv=kv,
        service_key=ServiceKey(),
        endpoints=_endpoints(plan, specs),
        start_order=phases,
        node_labels=node_labels(plan),
        kv_seed=seed,
    )
