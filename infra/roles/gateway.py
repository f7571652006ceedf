"""Container specs of traefik, the gateway."""

from __future__ import annotations

from infra.configs import gateway as gateway_cfg
from infra.model import (
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
)
from infra.placement import Plan, Replica
from infra.spec_common import (
    role_labels,
    tls_files,
)
from infra.support_privileges import image_user, support_privileges


def traefik_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    return ContainerSpec(
        name="morgan-traefik",
        role="traefik",
        host=replica.host,
        image=cfg.images.support.traefik,
        privileges=support_privileges(cfg.images.support.traefik, low_ports=True),
        runs_as=image_user(cfg.images.support.traefik),
        platform=cfg.host(replica.host).platform,
        entrypoint=("traefik",),
        command=("--configFile=/etc/traefik/traefik.yml",),
        # The dashboard's users file (htpasswd lines), read by its basicAuth middleware.
        env=dict([gateway_cfg.DASHBOARD_USERS.env]),
        secret_files=(gateway_cfg.DASHBOARD_USERS,),
        ports=(
            Port(
                cfg.gateway.http_port, encryption="none", purpose="redirect to https", public=True
            ),
            Port(cfg.gateway.https_port, encryption="tls", purpose="gateway", public=True),
            Port(
                gateway_cfg.PING_PORT,
                encryption="none",
                purpose="ping, metrics",
                loopback_only=True,
            ),
        ),
        files=(
            ConfigFile(
                "/etc/traefik/traefik.yml", gateway_cfg.to_yaml(gateway_cfg.static_config(plan))
            ),
            ConfigFile(
                f"{gateway_cfg.DYNAMIC_DIR}/morgan.yml",
                gateway_cfg.to_yaml(gateway_cfg.dynamic_config(plan)),
            ),
        ),
        tls=tls_files(plan, "traefik"),
        healthcheck=Healthcheck(
            test=("CMD", "traefik", "healthcheck", "--configFile=/etc/traefik/traefik.yml"),
            start_period="10s",
        ),
        memory_mb=256,
        labels=role_labels(plan, replica),
    )
