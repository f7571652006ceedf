"""Where this machine reaches a stack it runs: Consul's HTTP API and the gateway.

Taken from the deployment (`infra.deployment.Endpoints`), saved next to the rendered
file so that `morgan status`, `morgan verify` and the tests find the running stack.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from morgan.lab.polling import NotYet, PollTimeout, poll
from morgan.lab.stack import StackError, StackPaths

if TYPE_CHECKING:
    from infra.deployment import Deployment


@dataclass(frozen=True)
class Endpoints:
    consul_addr: str
    gateway_url: str
    consul_token: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "consul_addr": self.consul_addr,
                "gateway_url": self.gateway_url,
                "consul_token": self.consul_token,
            }
        )


def endpoints(deployment: Deployment, env: dict[str, str]) -> Endpoints:
    """The deployment's Consul API and HTTPS gateway, with the stack's management token."""
    ep = deployment.endpoints
    return Endpoints(ep.consul.address, ep.gateway_url, env.get("MORGAN_CONSUL_MANAGEMENT_TOKEN"))


def save_endpoints(p: StackPaths, ep: Endpoints) -> None:
    p.state.mkdir(parents=True, exist_ok=True)
    p.info_file.write_text(ep.to_json())
    os.chmod(p.info_file, 0o600)


def load_endpoints(p: StackPaths) -> Endpoints:
    try:
        data = json.loads(p.info_file.read_text())
    except FileNotFoundError:
        raise StackError(
            f"stack {p.stack!r} was never started here; run `morgan up --stack {p.stack}`"
        ) from None
    return Endpoints(data["consul_addr"], data["gateway_url"], data.get("consul_token"))


def consul_health(consul_addr: str, token: str | None = None) -> dict[str, str]:
    """Consul service name -> worst check status of its instances (passing/warning/critical)."""
    import consul as consul_lib

    host, _, port = consul_addr.partition(":")
    client = consul_lib.Consul(host=host, port=int(port or 8500), token=token)
    _, services = client.catalog.services()
    order = {"passing": 0, "warning": 1, "critical": 2}
    out: dict[str, str] = {}
    for name in services:
        _, nodes = client.health.service(name)
        worst = "critical" if not nodes else "passing"
        for node in nodes:
            for check in node.get("Checks", []):
                if order.get(check["Status"], 2) > order[worst]:
                    worst = check["Status"]
        out[name] = worst
    return out


def wait_for_gateway(ep: Endpoints, timeout: float = 120) -> float:
    """Wait until Traefik routes to a healthy core (its Consul catalog refreshes every ~15 s).

    Returns the seconds waited.
    """
    import httpx

    start = time.monotonic()

    def routed() -> None:
        resp = httpx.get(f"{ep.gateway_url}/health", verify=False, timeout=5)
        if resp.status_code != 200:
            raise NotYet(f"HTTP {resp.status_code}: {resp.text[:80].strip()}")

    try:
        poll(routed, what=f"gateway {ep.gateway_url}", timeout=timeout, interval=1,
             errors=(httpx.HTTPError,))  # fmt: skip
    except PollTimeout as exc:
        raise StackError(
            f"the gateway {ep.gateway_url} did not route to core within {timeout:.0f} s"
            f" ({exc.last}); see `morgan status` and `morgan logs morgan-traefik`"
        ) from None
    return time.monotonic() - start
