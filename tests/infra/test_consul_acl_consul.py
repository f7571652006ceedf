"""The fleet's Consul ACL identities applied to a real Consul (default deny): each token
does what its holder needs and is refused the rest; the anonymous token reads the
catalogue only. These are the attacks of docs/security.md tried against Consul itself."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import consul
import httpx
import pytest
from morgan.shared.consul_client import ConsulClientFactory

from infra.consul_acl import AclPlan, acl_plan, apply_acl, prune_acl, remove_acl
from infra.placement import Plan
from tests.harness.servers import ConsulServer

pytestmark = pytest.mark.integration

MANAGEMENT = str(uuid.uuid4())


@pytest.fixture(scope="module")
def acl_consul(tmp_path_factory: pytest.TempPathFactory, lab_plan: Plan) -> Iterator[ConsulServer]:
    acl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ initial_management = "{MANAGEMENT}" }} }}'
    )
    args = ["-hcl", acl, "-datacenter", lab_plan.config.consul.datacenter]
    with ConsulServer.run(tmp_path_factory.mktemp("consul-acl"), extra_args=args) as s:
        yield s


def _client(server: ConsulServer, token: str | None) -> Any:
    return ConsulClientFactory(host=server.host, port=server.port, token=token).client()


@pytest.fixture(scope="module")
def applied(acl_consul: ConsulServer, lab_plan: Plan) -> Iterator[tuple[AclPlan, dict[str, str]]]:
    acl = acl_plan(lab_plan)
    secrets = {s: str(uuid.uuid4()) for s in acl.secrets()}
    admin = _client(acl_consul, MANAGEMENT)
    assert apply_acl(admin, MANAGEMENT, acl, secrets) == len(acl.identities)
    # Config and key records as a deploy writes them.
    for key in (
        "morgan/config/global/auth_enabled",
        "morgan/config/core/llm_timeout_seconds",
        "morgan/config/stt/beam_size",
        "morgan/auth/keys/abc",
    ):
        admin.kv.put(key, "1")
    yield acl, secrets
    remove_acl(admin, MANAGEMENT, acl, secrets)


def _token(applied: tuple[AclPlan, dict[str, str]], secret: str) -> str:
    return applied[1][secret]


def test_the_lab_plan_has_an_identity_per_consul_client(lab_plan: Plan) -> None:
    acl = acl_plan(lab_plan)
    by_name = {i.name: i for i in acl.identities}
    hosts = [h.name for h in lab_plan.config.hosts]
    agents = {f"agent-{h}" for h in hosts}
    assert set(by_name) == {*agents, "core", "llm", "stt", "tts", "vad", "patroni"}
    assert by_name["patroni"].rules["key_prefix"] == {"morgan/patroni/": {"policy": "write"}}
    assert by_name["core"].service_identities == ("morgan-core",)
    # One token per client agent: its own node, and only the servers its host runs.
    for host in hosts:
        assert by_name[f"agent-{host}"].node_identities == (host,)
        assert by_name[f"agent-{host}"].secret == f"consul_agent_token_{host}"
    assert by_name["agent-h2"].rules["service"] == {"node-exporter": {"policy": "write"}}
    assert set(by_name["agent-h1"].rules["service"]) >= {"postgres-primary", "redis"}


def test_the_dev_stack_has_no_scoped_tokens(dev_plan: Plan) -> None:
    assert acl_plan(dev_plan).identities == ()


def test_applying_twice_changes_nothing(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    acl, secrets = applied
    admin = _client(acl_consul, MANAGEMENT)
    before = {t["AccessorID"] for t in admin.acl.token.list(token=MANAGEMENT)}
    assert apply_acl(admin, MANAGEMENT, acl, secrets) == len(acl.identities)
    after = {t["AccessorID"] for t in admin.acl.token.list(token=MANAGEMENT)}
    assert after == before


def test_a_service_reads_its_own_and_the_global_config_and_the_key_records(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    core = _client(acl_consul, _token(applied, "consul_token_core"))
    _, entries = core.kv.get("morgan/config/", recurse=True)
    assert sorted(e["Key"] for e in entries) == [
        "morgan/config/core/llm_timeout_seconds",
        "morgan/config/global/auth_enabled",
    ]  # not stt's keys
    _, record = core.kv.get("morgan/auth/keys/abc")
    assert record is not None and record["Value"] == b"1"


def test_a_service_cannot_turn_auth_off_or_mint_a_key(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    for secret in ("consul_token_core", "consul_token_stt", "consul_agent_token_h1"):
        client = _client(acl_consul, _token(applied, secret))
        with pytest.raises(consul.ACLPermissionDenied):
            client.kv.put("morgan/config/global/auth_enabled", "false")
        with pytest.raises(consul.ACLPermissionDenied):
            client.kv.put("morgan/auth/keys/minted", '{"owner": "mallory"}')


def test_only_core_registers_morgan_core(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    for secret in ("consul_token_stt", "consul_agent_token_h1", "consul_token_patroni"):
        client = _client(acl_consul, _token(applied, secret))
        with pytest.raises(consul.ACLPermissionDenied):
            client.agent.service.register("morgan-core", service_id="fake-core", port=1)
    with pytest.raises(consul.ACLPermissionDenied):
        _client(acl_consul, None).agent.service.register(
            "morgan-core", service_id="fake-core", port=1
        )
    core = _client(acl_consul, _token(applied, "consul_token_core"))
    assert core.agent.service.register("morgan-core", service_id="real-core", port=8000)
    assert core.agent.service.deregister("real-core")


def test_anonymous_reads_the_catalogue_and_nothing_else(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    admin = _client(acl_consul, MANAGEMENT)
    admin.agent.service.register("morgan-stt", service_id="stt-1", port=8002)
    try:
        anonymous = _client(acl_consul, None)
        _, services = anonymous.catalog.services()
        assert "morgan-stt" in services
        _, nodes = anonymous.health.service("morgan-stt")
        assert [n["Service"]["ID"] for n in nodes] == ["stt-1"]
        with pytest.raises(consul.ACLPermissionDenied):
            anonymous.kv.get("morgan/auth/keys/abc")
        with pytest.raises(consul.ACLPermissionDenied):
            anonymous.kv.put("morgan/config/global/auth_enabled", "false")
    finally:
        admin.agent.service.deregister("stt-1")


def test_an_agents_token_registers_its_own_hosts_servers_only(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    h1 = _client(acl_consul, _token(applied, "consul_agent_token_h1"))
    assert h1.agent.service.register("redis", service_id="redis-h1-6379", port=6379)
    assert h1.agent.service.deregister("redis-h1-6379")
    h2 = _client(acl_consul, _token(applied, "consul_agent_token_h2"))
    assert h2.agent.service.register("node-exporter", service_id="node-exporter-h2", port=9100)
    assert h2.agent.service.deregister("node-exporter-h2")
    # h2 runs no Redis: its agent's token may not put one in the catalogue.
    with pytest.raises(consul.ACLPermissionDenied):
        h2.agent.service.register("redis", service_id="redis-h2-6379", port=6379)
    with pytest.raises(consul.ACLPermissionDenied):
        h1.agent.service.register("morgan-llm", service_id="fake-llm", port=1)


def _register_node(server: ConsulServer, token: str, node: str, **service: Any) -> int:
    """PUT /v1/catalog/register (the client library sends a field Consul 1.16 refuses)."""
    body: dict[str, Any] = {"Node": node, "Address": "10.0.0.66"}
    if service:
        body["Service"] = service
    answer = httpx.put(
        f"http://{server.host}:{server.port}/v1/catalog/register",
        json=body, headers={"X-Consul-Token": token}, timeout=10,
    )  # fmt: skip
    return answer.status_code


def test_an_agents_token_writes_its_own_node_only(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    """A host that is taken over holds its own agent's token: it cannot act as another
    host's agent (register that node, or services on it)."""
    h2 = _token(applied, "consul_agent_token_h2")
    admin = _client(acl_consul, MANAGEMENT)
    try:
        assert _register_node(acl_consul, h2, "h2") == 200
        for node in ("h3", "h1"):
            assert _register_node(acl_consul, h2, node) == 403
            assert _register_node(acl_consul, h2, node, Service="node-exporter", Port=9100) == 403
    finally:
        httpx.put(
            f"http://{acl_consul.host}:{acl_consul.port}/v1/catalog/deregister",
            json={"Node": "h2"}, headers={"X-Consul-Token": MANAGEMENT}, timeout=10,
        ).raise_for_status()  # fmt: skip
    _, nodes = admin.catalog.nodes()
    assert {"h1", "h3"}.isdisjoint(n["Node"] for n in nodes)


def test_patroni_keeps_its_leader_key_and_sessions_only(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    patroni = _client(acl_consul, _token(applied, "consul_token_patroni"))
    session = patroni.session.create(name="patroni-test", ttl=15)
    assert patroni.kv.put("morgan/patroni/morgan/leader", "h1", acquire=session) is True
    patroni.session.destroy(session)
    with pytest.raises(consul.ACLPermissionDenied):
        patroni.kv.put("morgan/config/global/auth_enabled", "false")
    with pytest.raises(consul.ACLPermissionDenied):
        patroni.kv.get("morgan/auth/keys/abc")


def test_removing_deletes_every_token_and_policy(tmp_path: pathlib.Path, lab_plan: Plan) -> None:
    acl = acl_plan(lab_plan)
    secrets = {s: str(uuid.uuid4()) for s in acl.secrets()}
    hcl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ initial_management = "{MANAGEMENT}" }} }}'
    )
    with ConsulServer.run(tmp_path, extra_args=["-hcl", hcl]) as server:
        admin = _client(server, MANAGEMENT)
        apply_acl(admin, MANAGEMENT, acl, secrets)
        remove_acl(admin, MANAGEMENT, acl, secrets)
        names = {p["Name"] for p in admin.acl.policy.list(token=MANAGEMENT)}
        assert not {i.policy for i in acl.identities} & names
        with pytest.raises(consul.ACLPermissionDenied):
            _client(server, secrets["consul_token_core"]).kv.get("morgan/config/core/x")


def test_a_rotated_token_replaces_the_old_one_once_pruned(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    acl, secrets = applied
    admin = _client(acl_consul, MANAGEMENT)
    old = secrets["consul_token_vad"]
    rotated = {**secrets, "consul_token_vad": str(uuid.uuid4())}
    apply_acl(admin, MANAGEMENT, acl, rotated)
    for secret in (old, rotated["consul_token_vad"]):  # both, until the containers moved
        _, entries = _client(acl_consul, secret).kv.get("morgan/config/", recurse=True)
        assert [e["Key"] for e in entries] == ["morgan/config/global/auth_enabled"]
    assert prune_acl(admin, MANAGEMENT, acl, rotated) == 1
    assert prune_acl(admin, MANAGEMENT, acl, rotated) == 0
    _, entries = _client(acl_consul, rotated["consul_token_vad"]).kv.get(
        "morgan/config/", recurse=True
    )
    assert [e["Key"] for e in entries] == ["morgan/config/global/auth_enabled"]
    with pytest.raises(consul.ACLPermissionDenied):
        _client(acl_consul, old).kv.get("morgan/config/global/auth_enabled")
    secrets["consul_token_vad"] = rotated["consul_token_vad"]  # for the fixture's teardown


def test_pruning_deletes_identities_the_stack_no_longer_has(
    acl_consul: ConsulServer, applied: tuple[AclPlan, dict[str, str]]
) -> None:
    """The one token all client agents shared in earlier releases (policy `morgan-agent`)
    goes at the first prune after the upgrade; the stack's own identities stay."""
    acl, secrets = applied
    admin = _client(acl_consul, MANAGEMENT)
    shared = str(uuid.uuid4())
    policy = admin.acl.policy.create(
        "morgan-agent", token=MANAGEMENT, rules={"node_prefix": {"": {"policy": "read"}}}
    )
    admin.acl.token.create(
        token=MANAGEMENT, secret_id=shared, policies_name=["morgan-agent"],
        node_identities=["h1:" + acl.datacenter, "h2:" + acl.datacenter],
    )  # fmt: skip
    admin.acl.policy.create("someone-elses", token=MANAGEMENT, rules={})
    assert _client(acl_consul, shared).acl.token.read_self(token=shared)["SecretID"] == shared
    assert prune_acl(admin, MANAGEMENT, acl, secrets) == 1
    with pytest.raises(consul.ACLPermissionDenied):
        _client(acl_consul, shared).acl.token.read_self(token=shared)
    names = {p["Name"] for p in admin.acl.policy.list(token=MANAGEMENT)}
    assert policy["Name"] not in names
    assert {"someone-elses", "morgan-anonymous", *(i.policy for i in acl.identities)} <= names
    h2 = _token(applied, "consul_agent_token_h2")
    assert _client(acl_consul, h2).acl.token.read_self(token=h2)["SecretID"] == h2
