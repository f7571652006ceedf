"""Build every component of a stack from its plan (what `infra/__main__.py` runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from infra.components.consul import ConsulCluster, ConsulClusterArgs
from infra.components.consul_acl import ConsulAcl, ConsulAclArgs
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
from infra.components.services import MorganServices, MorganServicesArgs
from infra.config import OBSERVABILITY_PARTS
from infra.consul_acl import acl_plan
from infra.deployment import Deployment, build_deployment
from infra.placement import Plan
from infra.specs import SERVICE_PORTS

OBSERVABILITY_ROLES: tuple[str, ...] = OBSERVABILITY_PARTS


@dataclass(frozen=True)
class Fleet:
    plan: Plan
    deployment: Deployment
    hosts: dict[str, Host]
    secrets: FleetSecrets
    pki: Pki | None
    images: Images
    consul: ConsulCluster
    kv: ConsulKv
    service_key_kv: ConsulKv
    consul_acl: ConsulAcl
    gateway: Gateway
    postgres: PostgresCluster
    redis: RedisCluster
    qdrant: Qdrant | None
    observability: Observability
    services: MorganServices


def certificate_requests(deployment: Deployment) -> tuple[CertificateRequest, ...]:
    """One certificate per TLS role and host, valid for the names the role is reached by on
    that host: its Consul names, the host's own name and address, loopback. A Consul agent's
    certificate does not carry the servers' name (`server.<dc>.consul`), so it cannot pose
    as a server."""
    cfg = deployment.plan.config
    dc = cfg.consul.datacenter
    certs: dict[str, set[str]] = {}
    for spec in deployment.specs:
        if spec.tls is None or spec.certificate is None:
            continue
        host = cfg.host(spec.host)
        names = certs.setdefault(
            spec.certificate, {"localhost", spec.tls.role, host.name, host.address}
        )
        names.add(f"{spec.role}.service.consul")
        if spec.role in SERVICE_PORTS:
            names.update({f"morgan-{spec.role}", f"morgan-{spec.role}.service.consul"})
        if spec.role == "consul-server":
            names.add(f"server.{dc}.consul")
        elif spec.role.startswith("consul-"):
            names.add(f"client.{dc}.consul")
        if spec.role == "traefik":
            names.update({cfg.domain, f"*.{cfg.domain}"})
    return tuple(
        CertificateRequest(
            name=name,
            dns_names=tuple(sorted(n for n in names if not _is_ip(n))),
            ip_addresses=tuple(sorted({"127.0.0.1", *(n for n in names if _is_ip(n))})),
        )
        for name, names in sorted(certs.items())
    )


def _is_ip(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def build_fleet(plan: Plan, project_root: str | Path = ".") -> Fleet:
    cfg = plan.config
    root = Path(project_root)
    deployment = build_deployment(plan, root)
    specs = deployment.specs
    endpoints = deployment.endpoints

    hosts: dict[str, Host] = {}
    labels = deployment.node_labels
    for host in cfg.hosts:
        on_host = deployment.on_host(host.name)
        built = {step.name for step in deployment.images_on(host.name)}
        pulled = tuple(dict.fromkeys(s.image for s in on_host if s.image not in built))
        volumes = tuple(dict.fromkeys(v.name for s in on_host for v in s.volumes))
        hosts[host.name] = Host(
            host.name,
            HostArgs(
                host=host, volumes=volumes, pulled_images=pulled, node_labels=labels[host.name]
            ),
        )

    provided = tuple(s.name for s in deployment.secrets if s.kind == "provided" and s.consumers)
    secrets = FleetSecrets(
        "secrets",
        FleetSecretsArgs(
            dashboard_user=cfg.gateway.dashboard_user,
            provided=provided,
            table=tuple((s.name, s.kind) for s in deployment.secrets),
        ),
    )
    pki = None
    if cfg.security.internal_tls:
        pki = Pki(
            "pki",
            PkiArgs(
                organization=f"Morgan {cfg.stack}",
                requests=certificate_requests(deployment),
                docker_hosts=tuple(h.address for h in cfg.hosts if h.docker.startswith("tcp://")),
            ),
        )

    images = Images(
        "images",
        ImagesArgs(
            hosts=hosts,
            steps=deployment.images,
            context=str(root),
            push=bool(cfg.images.registry),
        ),
    )
    ctx = DeployContext(hosts=hosts, secrets=secrets, pki=pki, built_images=dict(images.built))

    scheme = endpoints.consul.scheme
    consul = ConsulCluster(
        "consul",
        ConsulClusterArgs(
            ctx=ctx,
            servers=tuple(s for s in specs if s.role == "consul-server"),
            agents=tuple(s for s in specs if s.role == "consul-agent"),
            ui_url=f"{endpoints.consul.url}/ui/",
            api_address=endpoints.consul.address,
            api_scheme=scheme,
        ),
    )
    # Where and as whom the deploy machine talks to Consul's API (KV, ACLs).
    api: dict[str, Any] = {
        "address": consul.api_address,
        "scheme": scheme,
        "token": consul.management_token,
        "ca_pem": pki.ca_cert_pem if pki else None,
    }
    kv = ConsulKv(
        "config",
        ConsulKvArgs(**api, entries=deployment.kv),
        opts=pulumi.ResourceOptions(depends_on=[*consul.servers]),
    )
    # The record (salted hash) of core's service key, so the model services accept it.
    service_key_kv = ConsulKv(
        "service-key",
        ConsulKvArgs(
            **api,
            entries=secrets.service_key.entries,
            prefix=deployment.service_key.record_prefix,
            secret=True,
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.servers]),
    )

    # Scoped tokens for the agents, the Morgan services and Patroni (infra.consul_acl).
    consul_acl = ConsulAcl(
        "consul-acl",
        ConsulAclArgs(**api, acl=acl_plan(plan), secret_ids=secrets.values),
        opts=pulumi.ResourceOptions(depends_on=[*consul.servers]),
    )

    gateway = Gateway(
        "gateway",
        GatewayArgs(
            ctx=ctx,
            traefik=next(s for s in specs if s.role == "traefik"),
            url=f"{endpoints.gateway_url}/",
            dashboard_url=endpoints.dashboard_url,
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
            app_role=next(s for s in specs if s.role == "postgres-app-role"),
        ),
        opts=pulumi.ResourceOptions(depends_on=[consul_acl]),
    )
    redis = RedisCluster(
        "redis",
        RedisClusterArgs(
            ctx=ctx,
            nodes=tuple(s for s in specs if s.role in ("redis", "redis-replica")),
            create=next((s for s in specs if s.role == "redis-cluster-create"), None),
        ),
    )
    qdrant_spec = next((s for s in specs if s.role == "qdrant"), None)
    qdrant = Qdrant("qdrant", QdrantArgs(ctx=ctx, server=qdrant_spec)) if qdrant_spec else None

    observability = Observability(
        "observability",
        ObservabilityArgs(
            ctx=ctx,
            containers=tuple(s for s in specs if s.role in OBSERVABILITY_ROLES),
            grafana_url=f"{endpoints.grafana.url}/" if endpoints.grafana else None,
        ),
        opts=pulumi.ResourceOptions(depends_on=[*consul.agents, *consul.servers]),
    )
    data_deps: list[pulumi.Resource] = [
        postgres,
        redis,
        kv,
        service_key_kv,
        consul_acl,
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
    # Tokens that rotated secrets replaced go once every holder runs with its new one.
    consul_acl.prune_after([services, postgres, *consul.agents])
    return Fleet(
        plan=plan,
        deployment=deployment,
        hosts=hosts,
        secrets=secrets,
        pki=pki,
        images=images,
        consul=consul,
        kv=kv,
        service_key_kv=service_key_kv,
        consul_acl=consul_acl,
        gateway=gateway,
        postgres=postgres,
        redis=redis,
        qdrant=qdrant,
        observability=observability,
        services=services,
    )
