"""Consul service names in connection settings, expanded through the Consul catalogue.

The fleet's data stores are named, never addressed: core's DSN says
`postgres-primary.service.consul:5432,postgres-standby.service.consul:5432`, its Redis
startup nodes `redis.service.consul:6379`. At start each `<name>.service.consul[:port]`
becomes the `address:port` of every passing instance of that Consul service, so no
host's address is written into a container and no DNS forwarding to Consul is needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from morgan.shared.consul_client import ConsulClientFactory

_NAME = re.compile(r"(?<![A-Za-z0-9.-])([a-z0-9][a-z0-9-]*)\.service\.consul(?::(\d+))?")

Instances = Callable[[str], list[tuple[str, int]]]


class ConsulNameError(RuntimeError):
    """A Consul name in a setting has no passing instance."""


def has_names(value: str) -> bool:
    return _NAME.search(value) is not None


def expand(value: str, instances: Instances) -> str:
    """`value` with every Consul name replaced by its instances, comma-separated."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        found = instances(name)
        if not found:
            raise ConsulNameError(
                f"{match.group(0)}: Consul has no passing instance of service {name!r};"
                f" check `consul catalog services` and the {name} container's health"
            )
        return ",".join(f"{host}:{port}" for host, port in found)

    return _NAME.sub(one, value)


def expand_nodes(nodes: Sequence[str], instances: Instances) -> list[str]:
    """host:port items, each Consul name becoming one item per instance."""
    out: list[str] = []
    for node in nodes:
        out += expand(node, instances).split(",")
    return list(dict.fromkeys(out))


def catalog_instances(factory: ConsulClientFactory) -> Instances:
    """Passing instances of a service, from the local agent (address, port), stable order."""

    def lookup(name: str) -> list[tuple[str, int]]:
        _index, entries = factory.client().health.service(name, passing=True)
        found = {
            (e["Service"].get("Address") or e["Node"]["Address"], int(e["Service"]["Port"]))
            for e in entries
        }
        return sorted(found)

    return lookup
