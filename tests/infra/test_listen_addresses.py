"""Where each internal listener binds: loopback on the one-machine dev stack (only the
gateway is reachable from the home network), every interface on a fleet host."""

from __future__ import annotations

import shlex

from infra.config import load_stack_file
from infra.configs import consul as consul_cfg
from infra.configs import data as data_cfg
from infra.configs import patroni as patroni_cfg
from infra.deployment import build_deployment
from infra.placement import Plan, make_plan
from tests.infra.conftest import ROOT


def _listeners(plan: Plan, host: str) -> dict[str, str]:
    """Each internal listener's bind address as the plan writes it, by what it is."""
    agent = consul_cfg.agent_config(plan, host, server=host in plan.hosts_of("consul-server"))
    specs = {s.name: s for s in build_deployment(plan, ROOT).on_host(host)}
    found = {
        "consul client_addr": agent["client_addr"],
        "consul bind_addr": agent["bind_addr"],
        "redis --bind": data_cfg.redis_server_args(plan, host, cluster=False).split("--bind ")[1]
        .split()[0],
    }  # fmt: skip
    for spec in specs.values():
        # Prometheus and Alertmanager start from a shell line: its words.
        for arg in (word for part in spec.command for word in shlex.split(part)):
            if arg.startswith("--web.listen-address="):
                found[f"{spec.name} web"] = arg.split("=", 1)[1].rsplit(":", 1)[0]
        for name, value in spec.env.items():
            if name.endswith("_BIND_HOST"):
                found[f"{spec.name} {name}"] = value
    settings = data_cfg.pg_settings(plan, host)
    found["postgres"] = settings[settings.index("-c") + 1].removeprefix("listen_addresses=")
    return found


def test_dev_stack_binds_everything_but_the_gateway_to_loopback(dev_plan: Plan) -> None:
    found = _listeners(dev_plan, "local")
    assert any(k.startswith("morgan-core") for k in found), found
    assert any(k.endswith(" web") for k in found), "prometheus' listen address not found"
    assert set(found.values()) == {"127.0.0.1"}, found


def test_fleet_hosts_listen_on_every_interface() -> None:
    lab = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))
    host = lab.hosts_of("postgres-primary")[0]
    found = _listeners(lab, host)
    assert found["consul client_addr"] == "0.0.0.0" and found["postgres"] == "*", found
    assert found["redis --bind"] == "0.0.0.0"
    # bind_host keeps its default (every interface) rather than an address in the env.
    assert not [k for k in found if k.endswith("_BIND_HOST")], found
    patroni = patroni_cfg.patroni_config(lab, host)
    assert patroni["postgresql"]["listen"] == "0.0.0.0:5432"
    assert patroni["restapi"]["listen"].startswith("0.0.0.0:")
