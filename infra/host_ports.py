"""What one host of the fleet must accept from the others: the ports its planned containers
listen on for the fleet (not the loopback-only ones), and the port the deploy machine
reaches its Docker daemon on (sshd, or dockerd's TLS port for a `tcp://` host).

`morgan plan --stack S --ports HOST` prints them, and `scripts/setup-linux.sh --ports`
opens exactly these in the host's firewall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import HostConfig
from infra.deployment import Deployment


@dataclass(frozen=True, order=True)
class HostPort:
    number: int
    protocol: str
    what: str = field(compare=False)

    def __str__(self) -> str:
        return f"{self.number}/{self.protocol}"


SSH = HostPort(22, "tcp", "sshd: the deploy user's Docker over SSH")
DOCKER_TLS = HostPort(2376, "tcp", "dockerd: TLS client certificates")


def access_port(host: HostConfig) -> HostPort:
    """How the deploy machine reaches this host's Docker daemon."""
    return DOCKER_TLS if host.docker.startswith("tcp://") else SSH


def planned_ports(deployment: Deployment, host: str) -> tuple[HostPort, ...]:
    """Every port a long-running container of `host` listens on for other hosts."""
    found: dict[tuple[int, str], HostPort] = {}
    for spec in deployment.rendered_specs(host, kv_seed=False):
        if spec.one_shot:
            continue
        for port in spec.ports:
            if port.loopback_only:
                continue
            key = (port.number, port.protocol)
            what = f"{spec.role} {port.purpose}".strip()
            found.setdefault(key, HostPort(port.number, port.protocol, what))
    return tuple(sorted(found.values()))


def firewall_ports(deployment: Deployment, host: str) -> tuple[HostPort, ...]:
    """What the host's firewall opens to the fleet: the planned ports and the access port."""
    config = deployment.plan.config.host(host)
    return tuple(sorted({*planned_ports(deployment, host), access_port(config)}))
