"""What `morgan verify` checks on a deployed fleet: each host from the inside, then the
stack end to end through its gateway.

Per host: Docker answers at its endpoint, its Consul agent is a member, every planned
container runs (healthy) as a non-root user, and the host listens where the plan says
and nowhere else (testinfra over ssh:// where the host is reached by SSH). Then: a text
and an audio turn, one conversation continued through each core in turn (each reply
names the core that made it), 3 Consul servers with a leader, a Patroni leader with a
streaming synchronous replica, Redis Cluster ok with each master's replica on another
host, and every Prometheus target up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from infra.config import MorganStackConfig
from infra.configs import patroni as patroni_cfg
from infra.configs.data import redis_cli
from infra.configs.observability import MORGAN_SERVICES
from infra.configs.observability import PORTS as OBS_PORTS
from infra.deployment import Deployment
from morgan.deploy.engine import DockerEngine
from morgan.deploy.outputs import monitoring_auth
from morgan.lab.polling import NotYet, poll
from morgan.lab.sample_audio import one_second_wav

# Listeners a host has besides the plan's: sshd, and dockerd's TLS port on tcp:// hosts.
HOST_PORTS = {"ssh": 22, "docker-tls": 2376}
SWARM_PORTS = {"gossip": 7946, "manager": 2377}
INSTANCE_HEADER = "x-morgan-instance"


def _exec(engine: DockerEngine, container: str, *cmd: str) -> str:
    return engine.text("exec", container, *cmd, timeout=60)


def _planned(deployment: Deployment, host: str) -> list[Any]:
    return list(deployment.rendered_specs(host, kv_seed=False))


# -- each host ---------------------------------------------------------------------------


def test_docker_answers_at_the_endpoint(host_name: str, docker_engines: dict[str, Any]) -> None:
    name = docker_engines[host_name].text("info", "--format", "{{.Name}}", timeout=60)
    assert name == host_name


def test_ssh_hosts_via_testinfra(
    host_name: str, config: MorganStackConfig, docker_engines: dict[str, Any]
) -> None:
    host_cfg = config.host(host_name)
    if not host_cfg.docker.startswith("ssh://"):
        # tcp:// hosts (the Windows host) are not reached by SSH: checked over the API above.
        assert host_cfg.docker.startswith("tcp://") and host_cfg.docker_tls is not None
        return
    engine = docker_engines[host_name]
    host = testinfra.get_host(
        host_cfg.docker, ssh_extra_args=" ".join(host_cfg.ssh_opts), sudo=False
    )
    assert host.run("docker info --format '{{.Name}}'").stdout.strip() == host_name
    assert host.socket("tcp://0.0.0.0:22").is_listening
    user = host.user()
    assert user.name == host_cfg.docker.removeprefix("ssh://").split("@")[0]
    assert "docker" in user.groups
    assert engine.root.is_dir()


def test_planned_containers_run_healthy(host_name: str, deployment: Deployment,
                                        docker_engines: dict[str, Any],
                                        containers: Any) -> None:  # fmt: skip
    engine = docker_engines[host_name]
    bad = []
    for spec in _planned(deployment, host_name):
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        state = engine.text("inspect", "-f", fmt + " {{.State.ExitCode}}",
                            containers.of(host_name, spec.name), timeout=60).split()  # fmt: skip
        if spec.one_shot:
            ok = state[0] == "exited" and state[-1] == "0"
        else:
            ok = state[:2] == ["running", "healthy"]
        if not ok:
            bad.append(f"{spec.name}: {' '.join(state)}")
    assert not bad, f"{host_name}: {bad}"


def test_containers_run_as_non_root(host_name: str, deployment: Deployment,
                                    docker_engines: dict[str, Any],
                                    containers: Any) -> None:  # fmt: skip
    engine = docker_engines[host_name]
    root = []
    for spec in _planned(deployment, host_name):
        if spec.one_shot:
            continue
        rows = engine.text("top", containers.of(host_name, spec.name), "-eo", "pid,uid,comm",
                           timeout=60).splitlines()  # fmt: skip
        root += [f"{spec.name}: {r.split()[2]}" for r in rows[1:] if r.split()[1] == "0"]
    assert not root, f"{host_name}: processes running as root: {root}"


def _listening(engine: DockerEngine, image: str) -> set[int]:
    """TCP ports listening in the host's own network namespace (not Docker's DNS)."""
    text = engine.text("run", "--rm", "--network", "host", "--entrypoint", "cat", image,
                       "/proc/net/tcp", "/proc/net/tcp6", timeout=120)  # fmt: skip
    ports = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":  # LISTEN
            address, port = parts[1].rsplit(":", 1)
            if address == "0B00007F":  # 127.0.0.11, the engine's embedded DNS
                continue
            ports.add(int(port, 16))
    return ports


def test_listens_where_the_plan_says_and_nowhere_else(
    host_name: str, config: MorganStackConfig, deployment: Deployment,
    docker_engines: dict[str, Any], containers: Any,
) -> None:  # fmt: skip
    specs = _planned(deployment, host_name)
    planned = {p.number for s in specs if not s.one_shot for p in s.ports if p.protocol == "tcp"}
    allowed = planned | {HOST_PORTS["ssh"]}
    if config.host(host_name).docker.startswith("tcp://"):
        allowed.add(HOST_PORTS["docker-tls"])
    in_swarm, manager = containers.swarm_node(host_name)
    if in_swarm:  # dockerd's own Swarm listeners: gossip, and the managers' raft API
        allowed |= {SWARM_PORTS["gossip"]} | ({SWARM_PORTS["manager"]} if manager else set())
    found = _listening(docker_engines[host_name], specs[0].image)
    assert planned <= found, f"{host_name}: planned but not listening: {sorted(planned - found)}"
    assert found <= allowed, f"{host_name}: listening outside the plan: {sorted(found - allowed)}"


def test_consul_agent_is_a_member(host_name: str, docker_engines: dict[str, Any],
                                  containers: Any) -> None:  # fmt: skip
    agent = containers.of(host_name, f"consul-agent-{host_name}")
    members = _exec(docker_engines[host_name], agent, "consul", "members")
    rows = {line.split()[0]: line.split()[2] for line in members.splitlines()[1:]}
    assert rows.get(host_name) == "alive", members


# -- the fleet ---------------------------------------------------------------------------


def test_three_consul_servers_and_a_leader(deployment: Deployment,
                                           docker_engines: dict[str, Any],
                                           containers: Any) -> None:  # fmt: skip
    servers = deployment.of_role("consul-server")
    first = servers[0]
    peers = _exec(docker_engines[first.host], containers.of(first.host, first.name), "consul",
                  "operator", "raft", "list-peers")  # fmt: skip
    rows = [line.split() for line in peers.splitlines()[1:] if line.strip()]
    assert len(rows) == len(servers) == 3, peers
    assert [r[3] for r in rows].count("leader") == 1, peers
    assert all(r[4] == "true" for r in rows), f"every server a voter: {peers}"


def test_patroni_leader_with_a_streaming_sync_replica(
    deployment: Deployment, docker_engines: dict[str, Any], containers: Any
) -> None:
    member = deployment.of_role("postgres-primary")[0]
    engine = docker_engines[member.host]
    listed = _exec(engine, containers.of(member.host, member.name), "patronictl", "-c",
                   patroni_cfg.RUN_CONFIG_PATH, "list", "--format", "json")  # fmt: skip
    listing = json.loads(listed)
    roles = {m["Member"]: m["Role"] for m in listing}
    assert sorted(roles) == sorted(patroni_cfg.members(deployment.plan)), listing
    assert sorted(roles.values()) == ["Leader", "Sync Standby"], listing
    leader = next(s for s in deployment.specs if roles.get(s.host) == "Leader"
                  and s.role.startswith("postgres-"))  # fmt: skip
    standby = next(m for m, r in roles.items() if r == "Sync Standby")
    # The leader's own view: the standby streams and is the synchronous one.
    replication = _exec(
        docker_engines[leader.host],
        containers.of(leader.host, leader.name),
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        deployment.plan.config.postgres.user,
        "-d",
        "postgres",
        "-Atc",
        "SELECT application_name, state, sync_state FROM pg_stat_replication",
    )
    assert replication.splitlines() == [f"{standby}|streaming|sync"], replication  # fmt: skip


def test_redis_cluster_ok_with_replicas_on_other_hosts(
    config: MorganStackConfig,
    deployment: Deployment,
    docker_engines: dict[str, Any],
    containers: Any,
) -> None:
    node = deployment.of_role("redis")[0]
    engine = docker_engines[node.host]
    name = containers.of(node.host, node.name)
    cli = ["sh", "-c", f"{redis_cli(deployment.plan)} cluster {{}}"]
    info = _exec(engine, name, cli[0], cli[1], cli[2].format("info"))
    assert "cluster_state:ok" in info, info
    assert "cluster_known_nodes:6" in info, info
    nodes = _exec(engine, name, cli[0], cli[1], cli[2].format("nodes"))
    by_id = {}
    for line in nodes.splitlines():
        parts = line.split()
        by_id[parts[0]] = (parts[1].split(":")[0], parts[2], parts[3])  # ip, flags, master id
    masters = {i for i, (_ip, flags, _m) in by_id.items() if "master" in flags}
    assert len(masters) == 3, nodes
    for replica_id, (ip, flags, master_id) in by_id.items():
        if "slave" not in flags:
            continue
        assert master_id in masters, nodes
        assert ip != by_id[master_id][0], f"{replica_id} replicates a master on its own host"
    replicated = {m for _i, (_ip, f, m) in by_id.items() if "slave" in f}
    assert replicated == masters, f"every master has a replica: {nodes}"


def test_every_prometheus_target_up(deployment: Deployment, outputs: dict[str, Any],
                                    ca_file: Path) -> None:  # fmt: skip
    prom = deployment.of_role("prometheus")[0]
    address = deployment.plan.config.host(prom.host).address
    url = f"https://{address}:{OBS_PORTS['prometheus']}/api/v1/targets"
    auth = monitoring_auth(outputs)

    def all_up() -> list[dict[str, Any]]:
        answer = httpx.get(url, auth=auth, verify=str(ca_file), timeout=10)
        answer.raise_for_status()
        body = answer.json()
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        down = [t["scrapeUrl"] for t in targets if t["health"] != "up"]
        if down or not targets:
            raise NotYet(f"down: {down}")
        return targets

    # A target scraped for the first time is "unknown" for up to one interval (15 s).
    targets = poll(all_up, what="every Prometheus target up", timeout=60, interval=5)
    services = {t["labels"].get("service") for t in targets}
    planned = {s for s in MORGAN_SERVICES if deployment.of_role(s.removeprefix("morgan-"))}
    assert planned <= services, f"not scraped: {sorted(planned - services)}"


# -- end to end through the gateway ------------------------------------------------------


@pytest.fixture(scope="module")
def api(outputs: dict[str, Any], ca_file: Path, config: MorganStackConfig) -> Any:
    from morgan.deploy.rollout import api_key_for

    key = api_key_for(config, outputs, ca_file, owner="verify")
    with httpx.Client(base_url=outputs["gateway_url"].rstrip("/"), verify=str(ca_file),
                      headers={"X-API-Key": key}, timeout=120) as client:  # fmt: skip
        yield client


def test_text_turn(api: httpx.Client) -> None:
    resp = api.post("/api/text", json={"text": "Hello from the lab", "user_id": "verify"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["text"].strip()
    assert resp.headers[INSTANCE_HEADER].startswith("morgan-core-")


def test_audio_turn(api: httpx.Client) -> None:
    resp = api.post("/api/audio", files={"file": ("hello.wav", one_second_wav(), "audio/wav")},
                    data={"user_id": "verify"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["text"].strip() and body["audio_base64"]


def test_one_conversation_through_each_core(api: httpx.Client, deployment: Deployment) -> None:
    cores = {f"morgan-core-{deployment.plan.config.host(s.host).address}-8000"
             for s in deployment.of_role("core")}  # fmt: skip
    first = api.post("/api/text", json={"text": "turn 1", "user_id": "verify"})
    assert first.status_code == 200, first.text
    conversation = first.json()["conversation_id"]
    answered = [first.headers[INSTANCE_HEADER]]
    # Traefik balances round-robin (sticky by cookie): a few turns reach every core.
    for turn in range(2, 3 * len(cores) + 1):
        if set(answered) == cores:
            break
        # Without the affinity cookie, as a new client would come: the next core in turn.
        api.cookies.clear()
        resp = api.post("/api/text", json={"text": f"turn {turn}", "user_id": "verify",
                                           "conversation_id": conversation})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["conversation_id"] == conversation
        answered.append(resp.headers[INSTANCE_HEADER])
    assert set(answered) == cores, f"cores that answered: {answered}"
    stored = api.get(f"/api/conversations/{conversation}")
    assert stored.status_code == 200, stored.text
    texts = [t["user_text"] for t in stored.json()["turns"]]
    assert texts == [f"turn {i}" for i in range(1, len(answered) + 1)], texts
