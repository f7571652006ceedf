"""Build every component of a stack from its plan (what `infra/__main__.py` runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra.builds import build_steps
from infra.components.consul import ConsulCluster, ConsulClusterArgs
from infra.components.consul_kv import ConsulKv, ConsulKvArgs
from infra.components.containers import DeployContext
from infra.components.data import (
    PostgresCluster,
    PostgresClusterArgs,
    Qdrant,
    QdrantArgs,
    RedisCluster,
    RedisClusterArgs,
)
from infra.components.gateway import Gateway, GatewayArgs
from infra.components.host import Host, HostArgs
from infra.components.images import Images, ImagesArgs
from infra.components.observability import Observability, ObservabilityArgs
from infra.components.pki import CertificateRequest, Pki, PkiArgs
from infra.components.secrets import FleetSecrets, FleetSecretsArgs
from infra.components.service_key import KEYS_PREFIX as SERVICE_KEYS_PREFIX
from infra.components.services import MorganServices, MorganServicesArgs
from infra.configs import consul as consul_cfg
from infra.configs.observability import PORTS as OBS_PORTS
from infra.kv import kv_entries
from infra.placement import Plan
from infra.render.compose import node_labels
from infra.specs import SERVICE_PORTS, build_specs, images_needed

OBSERVABILITY_ROLES = ("prometheus", "alertmanager", "grafana", "loki", "promtail")


@dataclass(frozen=True)
class Fleet:
    plan: Plan
    hosts: dict[str, Host]
    secrets: FleetSecrets
    pki: Pki | None
    images: Images
    consul: ConsulCluster
    kv: ConsulKv
    service_key_kv: ConsulKv
    gateway: Gateway
    postgres: PostgresCluster
    redis: RedisCluster
    qdrant: Qdrant | None
    observability: Observability
    services: MorganServices


def certificate_requests(plan: Plan) -> tuple[CertificateRequest, ...]:
    """One certificate per TLS role, valid for every name the role is reached by."""
    cfg = plan.config
    roles: dict[str, set[str]] = {}
    for spec in build_specs(plan):
        if spec.tls is None:
            continue
        names = roles.setdefault(spec.tls.role, {"localhost", spec.tls.role})
        names.add(cfg.host(spec.host).address)
        names.add(f"{spec.role}.service.consul")
        if spec.role in SERVICE_PORTS:
            names.update({f"morgan-{spec.role}", f"morgan-{spec.role}.service.consul"})
        if spec.role.startswith("consul-"):
            names.update(
                {f"server.{cfg.consul.datacenter}.consul", f"client.{cfg.consul.datacenter}.consul"}
            )
        if spec.role == "traefik":
            names.update({cfg.domain, f"*.{cfg.domain}"})
    return tuple(
        CertificateRequest(
            role=role,
            dns_names=tuple(sorted(n for n in names if not _is_ip(n))),
            ip_addresses=tuple(sorted({"127.0.0.1", *(n for n in names if _is_ip(n))})),
        )
        for role, names in sorted(roles.items())
    )


def _is_ip(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def build_fleet(plan: Plan, project_root: str | Path = ".") -> Fleet:
    cfg = plan.config
    specs = build_specs(plan)
    root = Path(project_root)

    hosts: dict[str, Host] = {}
    labels = node_labels(plan)
    morgan_images = images_needed(plan)
    for host in cfg.hosts:
        on_host = [s for s in specs if s.host == host.name]
        pulled = tuple(
            dict.fromkeys(s.image for s in on_host if (host.name, s.image) not in morgan_images)
        )
        volumes = tuple(dict.fromkeys(v.name for s in on_host for v in s.volumes))
        hosts[host.name] = Host(
            host.name,
            HostArgs(
                host=host, volumes=volumes, pulled_images=pulled, node_labels=labels[host.name]
            ),
        )

    secrets = FleetSecrets("secrets", FleetSecretsArgs(dashboard_user=cfg.gateway.dashboard_user))
    pki = None
    if cfg.security.internal_tls:
        pki = Pki(
            "pki",
            PkiArgs(
                organization=f"Morgan {cfg.stack}",
                requests=certificate_requests(plan),
                docker_hosts=tuple(h.address for h in cfg.hosts if h.docker.startswith("tcp://")),
            ),
        )

    images = Images(
        "images",
        ImagesArgs(
            hosts=hosts,
            steps=build_steps(plan, root),
            context=str(root),
            push=bool(cfg.images.registry),
        ),
    )
    ctx = DeployContext(hosts=hosts, secrets=secrets, pki=pki, built_images=dict(images.built))

    first_server = cfg.host(plan.consul_servers[0])
    tls = cfg.security.internal_tls
    acts_as_agent = consul_cfg.server_acts_as_agent(plan, first_server.name)
    if acts_as_agent:
        api_port = consul_cfg.AGENT_PORTS["https" if tls else "http"]
    else:
        api_port = consul_cfg.SERVER_PORTS["https" if tls else "http"]
    scheme = "https" if tls else "http"
    consul = ConsulCluster(
        "consul",
        ConsulClusterArgs(
            ctx=ctx,
            servers=tuple(s for s in specs if s.role == "consul-server"),
            agents=tuple(s for s in specs if s.role == "consul-agent"),
            ui_url=f"{scheme}://{first_server.address}:{api_port}/ui/",
            api_address=f"{first_server.address}:{api_port}",
            api_scheme=scheme,
        ),
    )
    kv = ConsulKv(
        "config",
        ConsulKvArgs(
            address=consul.api_address,
            scheme=scheme,
            token=consul.management_token,
            ca_pem=pki.ca_cert_pem if pki else None,
            entries=kv_entries(plan),
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.servers]),
    )
    # The record (salted hash) of core's service key, so the model services accept it.
    service_key_kv = ConsulKv(
        "service-key",
        ConsulKvArgs(
            address=consul.api_address,
            scheme=scheme,
            token=consul.management_token,
            ca_pem=pki.ca_cert_pem if pki else None,
            entries=secrets.service_key.entries,
            prefix=SERVICE_KEYS_PREFIX,
            secret=True,
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.servers]),
    )

    gateway_host = cfg.host(plan.host_of("traefik") or cfg.hosts[0].name)
    port = "" if cfg.gateway.https_port == 443 else f":{cfg.gateway.https_port}"
    gateway = Gateway(
        "gateway",
        GatewayArgs(
            ctx=ctx,
            traefik=next(s for s in specs if s.role == "traefik"),
            url=f"https://{gateway_host.address}{port}/",
            dashboard_url=f"https://traefik.{cfg.domain}{port}/dashboard/",
            dashboard_user=cfg.gateway.dashboard_user,
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.agents, *consul.servers]),
    )
    postgres = PostgresCluster(
        "postgres",
        PostgresClusterArgs(
            ctx=ctx,
            primary=next(s for s in specs if s.role == "postgres-primary"),
            standbys=tuple(s for s in specs if s.role == "postgres-standby"),
        ),
    )
    redis = RedisCluster(
        "redis",
        RedisClusterArgs(
            ctx=ctx,
            nodes=tuple(s for s in specs if s.role == "redis"),
            create=next((s for s in specs if s.role == "redis-cluster-create"), None),
        ),
    )
    qdrant_spec = next((s for s in specs if s.role == "qdrant"), None)
    qdrant = Qdrant("qdrant", QdrantArgs(ctx=ctx, server=qdrant_spec)) if qdrant_spec else None

    grafana_host = plan.host_of("grafana")
    observability = Observability(
        "observability",
        ObservabilityArgs(
            ctx=ctx,
            containers=tuple(s for s in specs if s.role in OBSERVABILITY_ROLES),
            grafana_url=(
                f"{scheme}://{cfg.host(grafana_host).address}:{OBS_PORTS['grafana']}/"
                if grafana_host
                else None
            ),
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.agents, *consul.servers]),
    )
    data_deps: list[pulumi.Resource] = [
        postgres,
        redis,
        kv,
        service_key_kv,
        *consul.agents,
        *consul.servers,
    ]
    if qdrant is not None:
        data_deps.append(qdrant)
    services = MorganServices(
        "morgan",
        MorganServicesArgs(ctx=ctx, replicas=tuple(s for s in specs if s.role in SERVICE_PORTS)),
        opts=pulumi.ResourceOptions(depends_on=data_deps),
    )
    return Fleet(
        plan=plan,
        hosts=hosts,
        secrets=secrets,
        pki=pki,
        images=images,
        consul=consul,
        kv=kv,
        service_key_kv=service_key_kv,
        gateway=gateway,
        postgres=postgres,
        redis=redis,
        qdrant=qdrant,
        observability=observability,
        services=services,
    )
