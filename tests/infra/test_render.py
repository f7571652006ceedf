"""Rendered compose and Swarm files: valid YAML, the expected services, accepted by compose."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.deployment import build_deployment
from infra.placement import Plan
from infra.render.compose import render_compose
from infra.render.files import write_renderings
from infra.render.swarm import render_swarm
from infra.specs import build_specs

COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")


def _compose_binary() -> list[str]:
    if COMPOSE_PLUGIN.exists():
        return [str(COMPOSE_PLUGIN)]
    docker = shutil.which("docker")
    assert docker, "docker compose is missing; run scripts/setup"
    return [docker, "compose"]


@pytest.mark.unit
def test_compose_per_host_has_exactly_that_hosts_containers(homelab_plan: Plan) -> None:
    deployment = build_deployment(homelab_plan)
    for host in homelab_plan.hosts:
        document = yaml.safe_load(yaml.safe_dump(render_compose(deployment, host.name)))
        expected = {s.name for s in build_specs(homelab_plan) if s.host == host.name}
        if host.name == homelab_plan.consul_servers[0]:
            expected.add("morgan-kv-seed")
        assert set(document["services"]) == expected
        for service in document["services"].values():
            assert service["network_mode"] == "host"
            assert service["healthcheck"]["test"]
            assert service["mem_limit"].endswith("m")
            assert service["platform"] == host.platform


@pytest.mark.unit
def test_compose_gpu_reservations_only_on_gpu_hosts(homelab_plan: Plan) -> None:
    for host in homelab_plan.hosts:
        services = render_compose(build_deployment(homelab_plan), host.name)["services"]
        reserved = [n for n, s in services.items() if "deploy" in s]
        assert bool(reserved) == host.has_gpu, host.name


@pytest.mark.unit
def test_secrets_stay_variables(homelab_plan: Plan) -> None:
    document = render_compose(build_deployment(homelab_plan), "h1")
    text = yaml.safe_dump(document)
    # As secret files' sources, never as values.
    for name in ("postgres_password", "consul_gossip_key"):
        variable = f"MORGAN_{name.upper()}"
        assert document["secrets"][name] == {"environment": variable}
        assert text.count(variable) == 1, variable
    assert set(build_deployment(homelab_plan).secret_variables("h1")) >= {
        "MORGAN_POSTGRES_PASSWORD",
        "MORGAN_CONSUL_GOSSIP_KEY",
        "MORGAN_TRAEFIK_DASHBOARD_USERS",
    }


@pytest.mark.unit
def test_swarm_stack_pins_every_service_by_node_label(homelab_plan: Plan) -> None:
    deployment = build_deployment(homelab_plan)
    document = render_swarm(deployment)
    specs = {s.name: s for s in deployment.rendered_specs()}
    assert set(document["services"]) == set(specs)
    for name, service in document["services"].items():
        deploy = service["deploy"]
        assert deploy["placement"]["constraints"] == [
            f"node.labels.morgan.host == {specs[name].host}"
        ]
        assert deploy["resources"]["limits"]["memory"].endswith("M")
        if not specs[name].one_shot:
            assert deploy["update_config"]["failure_action"] == "rollback"


def test_compose_services_wait_for_the_jobs_before_them(dev_plan: Plan, homelab_plan: Plan) -> None:
    """`docker compose up --wait` counts a job's exit as done only when a service waits
    for it: core (and the rest of the later phases) wait for the application role."""
    dev = render_compose(build_deployment(dev_plan), "local", kv_seed=False)["services"]
    waits = {"morgan-postgres-app-role": {"condition": "service_completed_successfully"}}
    assert dev["morgan-core-1"]["depends_on"] == waits
    assert "depends_on" not in dev["morgan-postgres-app-role"]
    assert "depends_on" not in dev["morgan-postgres-primary"]  # the job waits for it itself
    deployment = build_deployment(homelab_plan)
    for host in deployment.hosts:
        services = render_compose(deployment, host)["services"]
        for name, service in services.items():
            for job in service.get("depends_on", {}):
                assert job in services, f"{host}: {name} waits for {job} of another host"


@pytest.mark.integration
@pytest.mark.parametrize("stack", ["homelab", "dev"])
def test_docker_compose_accepts_every_rendered_file(
    stack: str, homelab_plan: Plan, dev_plan: Plan, tmp_path: Path
) -> None:
    plan = homelab_plan if stack == "homelab" else dev_plan
    written = write_renderings(build_deployment(plan), tmp_path)
    env = {**os.environ, **{name: "x" for name in build_deployment(plan).secret_variables()}}
    for path in written:
        if path.suffix != ".yml":
            continue
        result = subprocess.run(
            [*_compose_binary(), "-f", str(path), "config", "-q"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


@pytest.mark.integration
def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: compose refuses a service without an image."""
    path = tmp_path / "compose-bad.yml"
    path.write_text(yaml.safe_dump({"services": {"x": {"restart": "always", "mem_limit": "lots"}}}))
    result = subprocess.run(
        [*_compose_binary(), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


@pytest.mark.unit
def test_morgan_render_writes_the_files(tmp_path: Path) -> None:
    from morgan.cli.main import app

    result = CliRunner().invoke(app, ["render", "--stack", "homelab", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "compose-h1.yml",
        "compose-h2.yml",
        "compose-h3.yml",
        "compose-h4.yml",
        "configs",
        "docker-stack.yml",
        "secrets.env.example",
    ]
    stack = yaml.safe_load((tmp_path / "docker-stack.yml").read_text())
    files = [c["file"] for c in stack["configs"].values()]
    plan_files = [f for f in files if f.startswith("./configs/")]
    assert plan_files
    for file in plan_files:
        assert (tmp_path / file).is_file()
    # TLS material is the operator's (from the stack's CA): a config or secret per file.
    tls = [c["file"] for kind in ("configs", "secrets") for c in stack[kind].values()
           if c["file"].startswith("./tls/")]  # fmt: skip
    assert "./tls/ca.pem" in tls and "./tls/core-h1/key.pem" in tls


@pytest.mark.integration
@pytest.mark.parametrize("stack", ["homelab", "dev"])
def test_docker_stack_config_accepts_the_swarm_file(
    stack: str, homelab_plan: Plan, dev_plan: Plan, tmp_path: Path
) -> None:
    """`docker stack config` applies Swarm's schema (stricter than compose's) without a swarm."""
    plan = homelab_plan if stack == "homelab" else dev_plan
    write_renderings(build_deployment(plan), tmp_path)
    docker = shutil.which("docker")
    assert docker, "the docker CLI is missing; run scripts/setup"
    env = {**os.environ, **{name: "x" for name in build_deployment(plan).secret_variables()}}
    result = subprocess.run(
        [docker, "stack", "config", "-c", "docker-stack.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert set(merged["services"]) == {s.name for s in build_specs(plan)} | {"morgan-kv-seed"}


@pytest.mark.unit
def test_swarm_gpu_services_reserve_a_generic_gpu(homelab_plan: Plan) -> None:
    services = render_swarm(build_deployment(homelab_plan))["services"]
    for spec in build_specs(homelab_plan):
        reservations = services[spec.name]["deploy"]["resources"].get("reservations")
        if spec.gpu:
            kinds = [r["discrete_resource_spec"]["kind"] for r in reservations["generic_resources"]]
            assert kinds == ["NVIDIA-GPU"]
        else:
            assert reservations is None, spec.name


@pytest.mark.unit
def test_swarm_tasks_get_files_and_tls_as_configs_and_secrets(homelab_plan: Plan) -> None:
    """No bind mount of ./tls: a path that would have to exist on every node."""
    from infra.model import TLS_DIR

    deployment = build_deployment(homelab_plan)
    document = render_swarm(deployment)
    for spec in deployment.rendered_specs():
        service = document["services"][spec.name]
        binds = [v for v in service.get("volumes", []) if v["type"] == "bind"]
        assert not [b for b in binds if b["source"].startswith("./tls")], spec.name
        configs = {c["target"]: c["source"] for c in service.get("configs", [])}
        secrets = {c["target"]: c["source"] for c in service.get("secrets", [])}
        assert {f.path for f in spec.files} <= set(configs)
        expected = {f.path: f"secret-{f.secret}" for f in spec.secret_files}
        if spec.tls is not None:
            assert configs[f"{TLS_DIR}/ca.pem"] == "tls-ca"
            assert configs[f"{TLS_DIR}/cert.pem"] == f"tls-{spec.certificate}-cert"
            expected[f"{TLS_DIR}/key.pem"] = f"tls-{spec.certificate}-key"
        assert secrets == expected, spec.name
    assert document["secrets"]["tls-core-h1-key"] == {
        "file": "./tls/core-h1/key.pem",
        "name": "tls-core-h1-key",
    }
    assert document["version"] == "3.8"
    assert all(v == {"name": k} for k, v in document["volumes"].items())


@pytest.mark.unit
def test_swarm_config_names_change_with_their_content(homelab_plan: Plan) -> None:
    from infra.render.swarm import SwarmObject

    obj = SwarmObject("traefik-x", "config", "./configs/traefik-x", content="a")
    assert obj.name("a") == obj.name("a") != obj.name("b")
    assert obj.name("a").startswith("traefik-x-")
    named = render_swarm(build_deployment(homelab_plan))["configs"]
    names = [c["name"] for c in named.values() if "name" in c]
    assert names and all(len(n) <= 64 and n[0].isalnum() and n[-1].isalnum() for n in names)
    long_key = SwarmObject("x" * 80, "config", "./configs/x", content="a")
    assert len(long_key.name("a")) == 64 and long_key.name("a") != long_key.name("b")


@pytest.mark.unit
def test_swarm_file_for_deploy_uses_the_swarm_objects_and_values(homelab_plan: Plan) -> None:
    """`morgan deploy --engine swarm`: one phase's services, every object external, each
    secret variable's value (with `$` doubled for the stack file's interpolation)."""
    from infra.render.swarm import stack_objects

    deployment = build_deployment(homelab_plan)
    core = deployment.of_role("core")[0]
    objects = stack_objects([core])
    external = {k: f"{k}-0123456789" for k in stack_objects(deployment.specs)}
    env = {core.name: {e.name: "va$lue" for e in core.secret_env}}
    document = render_swarm(deployment, kv_seed=False, only=[core.name], external=external,
                            env=env)  # fmt: skip
    assert list(document["services"]) == [core.name]
    service_env = document["services"][core.name]["environment"]
    assert {k: service_env[k] for k in env[core.name]} == env[core.name]
    every = {**document.get("configs", {}), **document.get("secrets", {})}
    assert set(every) == set(objects)
    assert all(v == {"external": True, "name": external[k]} for k, v in every.items())


def test_no_config_file_is_empty(dev_plan: Plan, homelab_plan: Plan) -> None:
    """Compose makes an empty config a directory: a file a container reads must have text."""
    for plan in (dev_plan, homelab_plan):
        for spec in build_deployment(plan).rendered_specs():
            for file in spec.files:
                assert file.content.strip(), f"{spec.name}: {file.path} is empty"


def test_a_job_leaves_no_anonymous_volume(dev_plan: Plan, homelab_plan: Plan) -> None:
    """The application-role job runs the PostgreSQL image, which declares its data
    directory a volume: compose and Swarm mount a tmpfs there (16 MiB), and every other
    container keeps its named volumes only."""
    tmpfs = {"type": "tmpfs", "target": "/var/lib/postgresql/data",
             "tmpfs": {"size": 16 * 1024 * 1024}}  # fmt: skip
    dev = render_compose(build_deployment(dev_plan), "local", kv_seed=False)["services"]
    assert dev["morgan-postgres-app-role"]["volumes"] == [tmpfs]
    swarm = render_swarm(build_deployment(homelab_plan))["services"]
    assert swarm["morgan-postgres-app-role"]["volumes"] == [tmpfs]
    for document in (dev, swarm):
        kept = [
            s for s in document.values() if any(v["type"] == "tmpfs" for v in s.get("volumes", []))
        ]
        assert len(kept) == sum(1 for name in document if name.endswith(("-app-role", "-create")))
