"""A stack's outputs file: what `morgan deploy` writes reads back, and `morgan verify
--outputs FILE` names what is wrong with a file before any check runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from morgan.cli.main import app
from morgan.deploy.engine import DeployError
from morgan.deploy.outputs import REQUIRED, load_outputs, read_outputs, write_outputs
from morgan.deploy.pki import IssuedTls
from morgan.lab.stack import StackPaths
from morgan.shared.auth import compose_key
from typer.testing import CliRunner

from infra.config import load_stack_file
from infra.deployment import build_deployment
from infra.placement import make_plan
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit


def _written(tmp_path: Path) -> Path:
    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))
    deployment = build_deployment(plan, ROOT)
    env = {s.variable: f"value-{s.name}" for s in deployment.secrets}
    env[deployment.service_key.variable] = compose_key("0123456789ab", "s" * 24)
    tls = {"core": IssuedTls("CA-PEM", "C", "K")}
    return write_outputs(deployment, env, tls, StackPaths(tmp_path, "lab"))


def _verify(path: Path) -> Any:
    return CliRunner().invoke(app, ["verify", "--stack", "lab", "--outputs", str(path)])


def test_what_deploy_writes_reads_back(tmp_path: Path) -> None:
    path = _written(tmp_path)
    read = load_outputs(StackPaths(tmp_path, "lab"))
    assert read == json.loads(path.read_text())
    assert read["ca_certificate"] == "CA-PEM"
    assert read["consul_management_token"] == "value-consul_management_token"


def test_a_stack_never_deployed_here_names_morgan_deploy(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"run `morgan deploy --stack lab` first"):
        load_outputs(StackPaths(tmp_path, "lab"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no stack outputs at"),
        ("{not json", "is not JSON (Expecting property name"),
        ("[1, 2]", "holds a JSON list, not the stack's outputs object"),
        ('{"gateway_url": "https://h1/"}', "lacks ca_certificate, consul_ui_url,"),
    ],
    ids=["missing", "not-json", "a-list", "keys-missing"],
)
def test_verify_refuses_a_bad_outputs_file(tmp_path: Path, content: str | None,
                                           message: str) -> None:  # fmt: skip
    path = tmp_path / "outputs.json"
    if content is not None:
        path.write_text(content)
    result = _verify(path)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert message in text
    assert "pulumi stack output --json --show-secrets" in text
    assert "Traceback" not in result.output


def test_verify_asks_for_show_secrets_when_they_are_hidden(tmp_path: Path) -> None:
    data = json.loads(_written(tmp_path).read_text())
    data["consul_management_token"] = "[secret]"
    data["grafana_admin_password"] = "[secret]"
    path = tmp_path / "pulumi-outputs.json"
    path.write_text(json.dumps(data))
    result = _verify(path)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "consul_management_token, grafana_admin_password as '[secret]'" in text
    assert "add --show-secrets" in text


def test_every_required_key_is_one_pulumi_exports(tmp_path: Path) -> None:
    from tests.infra.program import build_under_mocks

    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))
    assert set(REQUIRED) <= set(build_under_mocks(plan).outputs)
    for key in REQUIRED:
        data = json.loads(_written(tmp_path).read_text())
        data[key] = None
        (tmp_path / "o.json").write_text(json.dumps(data))
        with pytest.raises(DeployError, match=f"lacks {key}:"):
            read_outputs(tmp_path / "o.json", made_by="x")
