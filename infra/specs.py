"""Container specs: what every replica of the plan runs, engine-neutral.

Each role's spec is built next to its config (infra/roles/ with infra/configs/);
`build_specs` dispatches by role through one table. The deployment model
(infra/deployment.py) reads these specs, so the deploy paths cannot drift apart.
Containers use the host's network: every listener is a host port, services
advertise their host in Consul, and the local Consul agent is always on the
container's loopback.
"""

from __future__ import annotations

from collections.abc import Callable

from morgan.catalog import REPLICA_PORT_STEP, SERVICE_PORTS

from infra.configs.observability import PORTS as OBS_PORTS
from infra.model import ContainerSpec
from infra.placement import Plan, Replica
from infra.roles.consul import consul_spec
from infra.roles.data import postgres_app_role_specs, postgres_spec, qdrant_spec, redis_specs
from infra.roles.gateway import traefik_spec
from infra.roles.morgan_services import morgan_service_spec
from infra.roles.observability import observability_spec
from infra.spec_common import ImageRef, image_for, infra_name, service_port

__all__ = [
    "REPLICA_PORT_STEP",
    "SERVICE_PORTS",
    "ImageRef",
    "build_specs",
    "image_for",
    "images_needed",
    "infra_name",
    "service_port",
]

SpecBuilder = Callable[[Plan, Replica], ContainerSpec]
# Role -> the builder of one replica's spec. Redis is built for all its nodes at once
# (the cluster-create job needs them all), after the rest.
ROLE_SPECS: dict[str, SpecBuilder] = {
    **dict.fromkeys(SERVICE_PORTS, morgan_service_spec),
    "consul-server": consul_spec,
    "consul-agent": consul_spec,
    "postgres-primary": postgres_spec,
    "postgres-standby": postgres_spec,
    "qdrant": qdrant_spec,
    "traefik": traefik_spec,
    **dict.fromkeys(OBS_PORTS, observability_spec),
}


def build_specs(plan: Plan) -> tuple[ContainerSpec, ...]:
    """Every container of the plan, in plan order (then PostgreSQL's role step, Redis and
    its one-shot job)."""
    specs = [ROLE_SPECS[r.role](plan, r) for r in plan.replicas if r.role in ROLE_SPECS]
    specs += postgres_app_role_specs(plan)
    specs += redis_specs(plan)
    return tuple(specs)


def images_needed(plan: Plan) -> dict[tuple[str, str], ImageRef]:
    """(host, image name) → Morgan image to build on that host's engine."""
    out: dict[tuple[str, str], ImageRef] = {}
    for replica in plan.replicas:
        if replica.role in SERVICE_PORTS:
            ref = image_for(plan, replica.role)
            out[(replica.host, ref.name(plan))] = ref
    return out
