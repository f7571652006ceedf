"""What Morgan's containers may do on their host: no capabilities, no privilege gain, the
GPUs they are placed on and no other, no Docker socket; the same in every rendering."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import StackConfigError, parse_stack_config
from infra.configs import observability as obs
from infra.container_run import LOG_OPTS, container_run
from infra.deployment import build_deployment
from infra.model import UNPRIVILEGED, ContainerSpec, Privileges
from infra.placement import Plan
from infra.render.compose import render_compose
from infra.render.swarm import render_swarm
from infra.specs import build_specs
from infra.support_privileges import is_local_build
from tests.infra.conftest import ROOT, plan_from, raw_fleet

pytestmark = pytest.mark.unit

HARDENED = {
    "core",
    "llm",
    "stt",
    "tts",
    "prometheus",
    "alertmanager",
    "grafana",
    "loki",
    "promtail",
}


def test_morgan_and_monitoring_containers_run_unprivileged(
    homelab_plan: Plan, dev_plan: Plan
) -> None:
    for plan in (homelab_plan, dev_plan):
        specs = [s for s in build_specs(plan) if s.role in HARDENED]
        assert {"core", "llm", "stt", "tts"} <= {s.role for s in specs}
        for spec in specs:
            assert spec.privileges == UNPRIVILEGED, spec.name
            assert spec.privileges.cap_drop == ("ALL",) and not spec.privileges.cap_add


def test_compose_and_swarm_drop_capabilities(homelab_plan: Plan) -> None:
    deployment = build_deployment(homelab_plan)
    swarm = render_swarm(deployment)["services"]
    for host in homelab_plan.hosts:
        services = render_compose(deployment, host.name)["services"]
        for spec in build_specs(homelab_plan):
            if spec.host != host.name or spec.role not in HARDENED:
                continue
            assert services[spec.name]["cap_drop"] == ["ALL"], spec.name
            assert services[spec.name]["security_opt"] == ["no-new-privileges:true"]
            assert swarm[spec.name]["cap_drop"] == ["ALL"], spec.name


def test_gpu_containers_get_the_hosts_listed_gpus_only(homelab_raw: dict[str, Any]) -> None:
    h2 = next(h for h in homelab_raw["hosts"] if h["name"] == "h2")
    h2["gpu"]["devices"] = ["1", "GPU-8f0c"]
    plan = plan_from(homelab_raw)
    gpu_specs = [s for s in build_specs(plan) if s.gpu]
    assert {s.role for s in gpu_specs} == {"stt", "tts", "dcgm-exporter"}
    deployment = build_deployment(plan)
    swarm = render_swarm(deployment)["services"]
    for spec in gpu_specs:
        expected = ("1", "GPU-8f0c") if spec.host == "h2" else ("0",)
        assert spec.gpu_devices == expected, spec.name
        assert spec.env["NVIDIA_VISIBLE_DEVICES"] == ",".join(expected)
        compose = render_compose(deployment, spec.host)["services"][spec.name]
        device = compose["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["device_ids"] == list(expected) and "count" not in device
        generic = swarm[spec.name]["deploy"]["resources"]["reservations"]["generic_resources"]
        assert generic[0]["discrete_resource_spec"]["value"] == len(expected)
    for spec in build_specs(plan):
        if not spec.gpu:
            assert "NVIDIA_VISIBLE_DEVICES" not in spec.env, spec.name


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([], r"gpu\.devices: Tuple should have at least 1 item"),
        (["0;rm -rf /"], r"gpu\.devices\[0\]: String should match pattern"),
        ([""], r"gpu\.devices\[0\]: String should match pattern"),
    ],
)
def test_bad_gpu_device_lists_are_refused(
    homelab_raw: dict[str, Any], devices: list[str], message: str
) -> None:
    h2 = next(h for h in homelab_raw["hosts"] if h["name"] == "h2")
    h2["gpu"]["devices"] = devices
    with pytest.raises(StackConfigError, match=message):
        parse_stack_config(homelab_raw)


def test_no_container_gets_the_docker_socket(homelab_plan: Plan, dev_plan: Plan) -> None:
    for plan in (homelab_plan, dev_plan):
        for spec in build_specs(plan):
            sources = {b.source for b in spec.binds}
            assert not any(s.endswith("docker.sock") for s in sources), spec.name


def test_promtail_reads_the_engines_log_files_read_only(homelab_plan: Plan) -> None:
    promtail = next(s for s in build_specs(homelab_plan) if s.role == "promtail")
    assert [(b.source, b.path, b.read_only) for b in promtail.binds] == [
        (obs.DOCKER_CONTAINERS_DIR, obs.DOCKER_CONTAINERS_DIR, True)
    ]
    job = obs.promtail_config(homelab_plan, "h1")["scrape_configs"][0]
    assert "docker_sd_configs" not in job
    assert job["static_configs"][0]["labels"]["__path__"] == obs.CONTAINER_LOGS
    # The container name and role Promtail labels lines with come from the log options
    # every container runs with.
    first = job["pipeline_stages"][0]["json"]["expressions"]
    assert (first["container"], first["role"]) == ("attrs.tag", 'attrs."morgan.role"')
    assert LOG_OPTS["tag"] == "{{.Name}}" and LOG_OPTS["labels"] == "morgan.role"
    compose = render_compose(build_deployment(homelab_plan), "h1")["services"]
    assert all(s["logging"]["options"] == LOG_OPTS for s in compose.values())


@pytest.mark.parametrize(
    ("image", "local"),
    [
        ("morgan-local/patroni:3.0.2", True),
        ("10.213.87.10:5000/morgan-local/consul:1.16.1", True),
        ("hashicorp/consul:1.16.1", False),
        ("redis:7", False),
        ("localhost:5000/morgan-local", False),
        ("registry:5000/morgan-local/redis@sha256:" + "0" * 64, True),
    ],
)
def test_morgan_builds_of_support_servers_are_told_apart(image: str, local: bool) -> None:
    assert is_local_build(image) is local


def test_support_servers_are_hardened_by_their_image(homelab_raw: dict[str, Any]) -> None:
    """Upstream images keep what a root entrypoint needs and lose NET_RAW and the rest;
    Morgan's own builds (the lab's) keep nothing, Traefik's only the right to bind 443."""
    support = {"consul-server", "consul-agent", "postgres-primary", "postgres-standby",
               "postgres-app-role", "redis", "redis-replica", "redis-cluster-create",
               "traefik", "qdrant"}  # fmt: skip
    upstream = build_specs(plan_from(homelab_raw))
    for spec in (s for s in upstream if s.role in support):
        p = spec.privileges
        assert p.cap_drop == ("ALL",) and p.no_new_privileges, spec.name
        assert "NET_RAW" not in p.cap_add and "SETUID" in p.cap_add, spec.name
        assert ("NET_BIND_SERVICE" in p.cap_add) == (spec.role == "traefik"), spec.name
    assert {"consul-server", "consul-agent", "postgres-primary", "redis", "traefik",
            "qdrant"} <= {s.role for s in upstream}  # fmt: skip
    lab = build_specs(plan_from(raw_fleet(ROOT / "stacks" / "Pulumi.lab.yaml")))
    for spec in (s for s in lab if s.role in support):
        if spec.role == "traefik":
            assert spec.privileges == Privileges(cap_drop=("ALL",), cap_add=("NET_BIND_SERVICE",))
        else:
            assert spec.privileges == UNPRIVILEGED, spec.name


def _key_files(specs: list[ContainerSpec]) -> dict[str, tuple[int, tuple[int, int] | None]]:
    """Role -> (mode, owner) of its TLS key, as every engine's upload says."""
    out = {}
    for spec in specs:
        for upload in container_run(spec).uploads:
            if upload.tls == "key":
                out[spec.role] = (upload.mode, upload.owner)
    return out


def test_a_tls_key_is_its_users_alone_where_the_image_fixes_the_user(
    homelab_raw: dict[str, Any],
) -> None:
    """The lab's builds: Morgan's services, Consul, Traefik and the monitoring images run as
    users their Dockerfiles fix, who alone read the key (0400). PostgreSQL's and Redis's
    users, and any upstream image's, the plan cannot name: their key stays readable."""
    lab = _key_files(build_specs(plan_from(raw_fleet(ROOT / "stacks" / "Pulumi.lab.yaml"))))
    morgan = (0o400, (10001, 10001))
    nobody = (0o400, (65534, 65534))
    readable = (0o644, None)
    assert lab == {
        "core": morgan, "llm": morgan, "stt": morgan, "tts": morgan, "vad": morgan,
        "consul-server": (0o400, (10100, 10100)), "consul-agent": (0o400, (10100, 10100)),
        "traefik": (0o400, (10200, 10200)),
        "prometheus": nobody, "alertmanager": nobody, "node-exporter": nobody,
        "postgres-exporter": nobody, "redis-exporter": nobody,
        "postgres-primary": readable, "postgres-standby": readable,
        "postgres-app-role": readable, "redis": readable, "redis-replica": readable,
        "redis-cluster-create": readable,
    }  # fmt: skip
    homelab = _key_files(build_specs(plan_from(homelab_raw)))
    assert homelab["core"] == morgan
    assert {role: f for role, f in homelab.items() if role not in HARDENED | {"vad"}} == {
        role: readable for role in homelab if role not in HARDENED | {"vad"}
    }
    assert {"consul-server", "traefik", "postgres-primary", "redis"} <= set(homelab)


def test_swarm_gives_the_key_to_the_same_user(homelab_raw: dict[str, Any]) -> None:
    lab = render_swarm(build_deployment(plan_from(raw_fleet(ROOT / "stacks" / "Pulumi.lab.yaml"))))
    core = lab["services"]["morgan-core-1"]["secrets"]
    assert core[0] == {"source": "tls-core-h1-key", "target": "/etc/morgan/tls/key.pem",
                       "mode": 0o400, "uid": "10001", "gid": "10001"}  # fmt: skip
    # Its secret files too (CONSUL_HTTP_TOKEN, the passwords, the service key).
    assert {(c["mode"], c["uid"], c["gid"]) for c in core} == {(0o400, "10001", "10001")}
    assert len(core) == 5
    assert {c["target"]: c["mode"] for c in lab["services"]["morgan-core-1"]["configs"]} == {
        "/etc/morgan/tls/ca.pem": 0o444, "/etc/morgan/tls/cert.pem": 0o444,
    }  # fmt: skip
    upstream = render_swarm(build_deployment(plan_from(homelab_raw)))["services"]
    # An upstream image starts as root and switches user: its key and secret files are
    # readable in the container.
    assert upstream["morgan-traefik"]["secrets"] == [
        {"source": "tls-traefik-h1-key", "target": "/etc/morgan/tls/key.pem", "mode": 0o444},
        {"source": "secret-traefik_dashboard_users",
         "target": "/run/secrets/TRAEFIK_DASHBOARD_USERS", "mode": 0o444},
    ]  # fmt: skip
