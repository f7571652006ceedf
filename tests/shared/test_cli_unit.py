"""`morgan keys` / `morgan config` when Consul is not there: a clear message, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from morgan.cli.main import app as cli
from typer.testing import CliRunner

from tests.harness.ports import free_port

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list"],
        ["keys", "create", "--owner", "alice"],
        ["keys", "revoke", "abcdefabcdef"],
    ],
)
def test_keys_commands_name_the_unreachable_consul(args: list[str]) -> None:
    addr = f"127.0.0.1:{free_port()}"
    r = CliRunner().invoke(cli, [*args, "--consul", addr])
    assert r.exit_code == 1
    assert f"Consul at {addr} unreachable" in r.output and "CONSUL_HTTP_ADDR" in r.output
    assert "Traceback" not in r.output


def test_config_migrate_names_the_unreachable_consul(tmp_path: Path) -> None:
    (tmp_path / "global.yaml").write_text("log_level: DEBUG\n")
    addr = f"127.0.0.1:{free_port()}"
    r = CliRunner().invoke(cli, ["config", "migrate", "--from", str(tmp_path), "--consul", addr])
    assert r.exit_code == 1 and f"Consul at {addr} unreachable" in r.output


def test_config_migrate_rejects_bad_yaml_before_touching_consul(tmp_path: Path) -> None:
    (tmp_path / "llm.yaml").write_text("port: [unclosed\n")
    r = CliRunner().invoke(
        cli, ["config", "migrate", "--from", str(tmp_path), "--consul", f"127.0.0.1:{free_port()}"]
    )
    assert r.exit_code == 2 and "not valid YAML" in r.output
