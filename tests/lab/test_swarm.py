"""The lab's fleet deployed again with `morgan deploy --engine swarm`: the four hosts form
one swarm, each replica becomes a Swarm service on its host (host ports, no routing
mesh: this kernel has no IPVS), and `morgan verify` passes as it does for the plain
engine. Runs last (tests/lab/conftest.py): it replaces the plain containers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from morgan.deploy.engine import DeployError
from morgan.deploy.rollout import DeployReport, deploy, engines, swarm_stack_name
from morgan.deploy.swarm import deploy_swarm
from morgan.lab import stack as st

from infra.config import MorganStackConfig
from infra.deployment import Deployment, build_deployment
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")
STACK = swarm_stack_name("lab")

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def config() -> MorganStackConfig:
    return st.load_config("lab", ROOT)


@pytest.fixture(scope="module")
def deployment(config: MorganStackConfig) -> Deployment:
    return build_deployment(make_plan(config), ROOT)


@pytest.fixture(scope="module")
def swarm_fleet(lab_fleet: DeployReport, config: MorganStackConfig) -> DeployReport:
    report = deploy_swarm(config, ROOT, st.paths("lab", ROOT), log=print)
    print(f"swarm deploy over the plain fleet: {report.seconds:.0f} s")
    return report


def test_every_container_became_a_service_on_its_host(
    swarm_fleet: DeployReport, config: MorganStackConfig, deployment: Deployment
) -> None:
    eng = engines(config, ROOT)
    manager = eng[deployment.of_role("consul-server")[0].host]
    for host in deployment.hosts:
        planned = {s.name for s in deployment.rendered_specs(host, kv_seed=False)}
        assert swarm_fleet.changes[host] == dict.fromkeys(planned, "created"), host
        # No plain container of the plan's names is left beside the services.
        names = set(eng[host].text("ps", "-a", "--format", "{{.Names}}").split())
        assert not planned & names, (host, sorted(planned & names))
    fmt = "{{.Node}}|{{.DesiredState}}|{{.CurrentState}}"
    for spec in deployment.specs:
        rows = manager.text("service", "ps", "--format", fmt, f"{STACK}_{spec.name}").splitlines()
        node, desired, current = rows[0].split("|")
        assert node == spec.host, (spec.name, rows[0])
        expected = "Shutdown Complete" if spec.one_shot else "Running Running"
        assert f"{desired} {current}".startswith(expected), (spec.name, rows[0])


def test_nodes_labelled_from_the_plan_with_consul_hosts_as_managers(
    swarm_fleet: DeployReport, config: MorganStackConfig, deployment: Deployment
) -> None:
    eng = engines(config, ROOT)
    manager = eng[deployment.of_role("consul-server")[0].host]
    rows = manager.text("node", "ls", "--format", "{{.Hostname}}|{{.ManagerStatus}}|{{.ID}}")
    nodes = {r.split("|")[0]: r.split("|")[1:] for r in rows.splitlines()}
    print(nodes)
    servers = {s.host for s in deployment.of_role("consul-server")}
    assert set(nodes) == set(deployment.hosts)
    for host, (status, node_id) in nodes.items():
        assert (status in ("Leader", "Reachable")) == (host in servers), (host, status)
        labels = json.loads(manager.text("node", "inspect", "--format",
                                         "{{json .Spec.Labels}}", node_id))  # fmt: skip
        assert labels == deployment.node_labels[host], host


def test_morgan_verify_passes_under_swarm(swarm_fleet: DeployReport) -> None:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.run([MORGAN, "verify", "--stack", "lab", "--", "-v"], capture_output=True,
                          text=True, env=env, check=False, timeout=900)  # fmt: skip
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def test_second_swarm_deploy_changes_nothing(
    swarm_fleet: DeployReport, config: MorganStackConfig
) -> None:
    lines: list[str] = []
    again = deploy_swarm(config, ROOT, st.paths("lab", ROOT), log=lines.append)
    print("\n".join(lines[-4:]), f"\nsecond swarm deploy: {again.seconds:.0f} s")
    changed = {h: {n: c for n, c in per.items() if c != "unchanged"}
               for h, per in again.changes.items()}  # fmt: skip
    assert again.changed == 0, changed


def test_the_docker_engine_refuses_a_stack_that_swarm_runs(
    swarm_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Plain containers would fight the services for the host ports: refused, with the fix."""
    with pytest.raises(DeployError, match="--engine swarm") as err:
        deploy(config, ROOT, st.paths("lab", ROOT), log=lambda _m: None)
    assert "docker stack rm morgan-lab" in str(err.value)


def test_a_service_the_plan_no_longer_has_is_removed(
    swarm_fleet: DeployReport, config: MorganStackConfig, deployment: Deployment
) -> None:
    """What each phase's `docker stack deploy` cannot prune (it names only that phase's
    services): a service of the stack with no replica in the plan, on h4."""
    from morgan.deploy.swarm import remove_unplanned_services

    eng = engines(config, ROOT)
    manager = eng[deployment.of_role("consul-server")[0].host]
    image = next(s.image for s in deployment.of_role("node-exporter") if s.host == "h4")
    manager.run("service", "create", "--detach", "--name", f"{STACK}_morgan-stale",
                "--label", f"com.docker.stack.namespace={STACK}",
                "--container-label", "morgan.host=h4",
                "--constraint", "node.labels.morgan.host == h4", image, timeout=120)  # fmt: skip

    assert remove_unplanned_services(manager, STACK, deployment) == [
        ("h4", f"{STACK}_morgan-stale")]  # fmt: skip
    listed = manager.text("service", "ls", "--format", "{{.Name}}", timeout=60).split()
    assert f"{STACK}_morgan-stale" not in listed
    assert sorted(listed) == sorted(f"{STACK}_{s.name}" for s in deployment.specs)
