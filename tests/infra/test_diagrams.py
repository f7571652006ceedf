"""docs/architecture.md's diagrams are the homelab plan's: redrawn here and compared, and
each edge of the call graph is one the deployment really wires."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from morgan.cli.main import app
from typer.testing import CliRunner

from infra.placement import ROLE_NAMES, Plan
from infra.render.diagrams import CALLS, PATRONI_CALLS, DiagramError, calls, update_document
from infra.spec_common import infra_name
from infra.specs import build_specs
from tests.infra.conftest import ROOT, plan_from

pytestmark = pytest.mark.unit

DOC = ROOT / "docs" / "architecture.md"


def test_the_architecture_page_matches_the_homelab_plan(homelab_plan: Plan) -> None:
    text = DOC.read_text()
    assert update_document(text, homelab_plan) == text, (
        "docs/architecture.md's diagrams differ from the homelab plan; run"
        " `morgan render --stack homelab --diagrams docs/architecture.md`"
    )


def test_every_host_and_replica_is_drawn(homelab_plan: Plan) -> None:
    text = DOC.read_text()
    for host in homelab_plan.hosts:
        assert f'subgraph {host.name}["{host.name}: {host.os} {host.arch}' in text
        roles = {r.role for r in homelab_plan.on_host(host.name)}
        for role in roles:
            assert f"{host.name}_{role.replace('-', '_')}[" in text


def test_moving_a_service_redraws_the_topology(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"]["pin"] = {"h3": 4}
    homelab_raw["services"]["core"]["replicas"] = 4
    moved = update_document(DOC.read_text(), plan_from(homelab_raw))
    assert moved != DOC.read_text()
    assert 'h3_core["core x4"]' in moved
    assert "h1_core[" not in moved


def test_calls_name_only_roles_of_the_plan() -> None:
    for call in CALLS + PATRONI_CALLS:
        assert call.caller in ROLE_NAMES and call.callee in ROLE_NAMES, call
    assert len({(c.caller, c.callee) for c in CALLS}) == len(CALLS)


def _env_text(plan: Plan, role: str) -> str:
    spec = next(s for s in build_specs(plan) if s.role == role)
    return " ".join([*spec.env.values(), *(e.template for e in spec.secret_env)])


def test_cores_data_calls_are_the_servers_its_environment_names(homelab_plan: Plan) -> None:
    data_roles = {"postgres-primary", "redis", "qdrant"}
    drawn = {c.callee for c in calls(homelab_plan) if c.caller == "core"} & data_roles
    assert drawn == data_roles
    env = _env_text(homelab_plan, "core")
    for role in drawn:
        assert infra_name(homelab_plan, role) in env


def test_memory_in_postgres_draws_no_qdrant(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["memory"] = {"store": "postgres"}
    plan = plan_from(homelab_raw)
    assert all("qdrant" not in (c.caller, c.callee) for c in calls(plan))
    assert "qdrant" not in _env_text(plan, "core")


def test_patroni_adds_the_leader_lock(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["postgres"]["ha"] = "patroni"
    drawn = calls(plan_from(homelab_raw))
    assert set(PATRONI_CALLS) <= set(drawn)
    assert not set(PATRONI_CALLS) & set(calls(plan_from({**homelab_raw, "postgres": {}})))


def test_sequence_diagrams_speak_of_roles_only() -> None:
    participants = re.findall(r"^  participant (\S+)(?: as (\S+))?$", DOC.read_text(), re.M)
    assert participants
    for name, alias in participants:
        assert (alias or name) in {*ROLE_NAMES, "client"}, (name, alias)


def test_a_document_without_the_blocks_is_refused(homelab_plan: Plan) -> None:
    with pytest.raises(DiagramError, match=r"missing \['dependencies', 'topology'\]"):
        update_document("# no diagrams here\n", homelab_plan)


def test_render_diagrams_rewrites_a_stale_file_and_names_bad_input(tmp_path: Path) -> None:
    stale = tmp_path / "architecture.md"
    stale.write_text(re.sub(r"h1_core\[[^\]]*\]", 'h1_core["core x9"]', DOC.read_text()))
    runner = CliRunner()
    result = runner.invoke(app, ["render", "--stack", "homelab", "--diagrams", str(stale)])
    assert result.exit_code == 0, result.output
    assert stale.read_text() == DOC.read_text()

    missing = runner.invoke(
        app, ["render", "--stack", "homelab", "--diagrams", str(tmp_path / "nosuch.md")]
    )
    assert missing.exit_code == 2
    assert "nosuch.md" in missing.output and "Traceback" not in missing.output
    neither = runner.invoke(app, ["render", "--stack", "homelab"])
    assert neither.exit_code == 2
    assert "exactly one of --out DIR and --diagrams FILE" in neither.output
