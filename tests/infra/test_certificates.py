"""Per-host certificates: one per TLS role and host, carrying that host's own names only."""

from __future__ import annotations

import pytest

from infra.config import load_stack_file
from infra.deployment import build_deployment
from infra.fleet import certificate_requests
from infra.placement import Plan, make_plan
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lab_plan() -> Plan:
    return make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))


def test_one_certificate_per_role_and_host(lab_plan: Plan) -> None:
    deployment = build_deployment(lab_plan, ROOT)
    requests = {r.name: r for r in certificate_requests(deployment)}
    wanted = {s.certificate for s in deployment.specs if s.certificate}
    assert set(requests) == wanted
    cores = sorted(n for n in requests if n.startswith("core-"))
    assert cores == ["core-h1", "core-h3", "core-h4"]
    # The KV seed of the rendered files holds its host's agent certificate.
    assert deployment.kv_seed.certificate in requests


def test_a_certificate_names_its_own_host_and_no_other(lab_plan: Plan) -> None:
    config = lab_plan.config
    addresses = {h.name: h.address for h in config.hosts}
    deployment = build_deployment(lab_plan, ROOT)
    for request in certificate_requests(deployment):
        host = request.name.rsplit("-", 1)[1]
        assert host in request.dns_names and addresses[host] in request.ip_addresses, request
        others = {a for h, a in addresses.items() if h != host}
        assert not others & set(request.ip_addresses), request
        assert not {h for h in addresses if h != host} & set(request.dns_names), request
        assert "127.0.0.1" in request.ip_addresses and "localhost" in request.dns_names


def test_only_consul_servers_carry_the_server_name(lab_plan: Plan) -> None:
    dc = lab_plan.config.consul.datacenter
    requests = {r.name: r for r in certificate_requests(build_deployment(lab_plan, ROOT))}
    for name, request in requests.items():
        is_server = name.startswith("consul-server-")
        assert (f"server.{dc}.consul" in request.dns_names) == is_server, name
        if name.startswith("consul-agent-"):
            assert f"client.{dc}.consul" in request.dns_names
