"""The `morgan` CLI where the infra package is not installed (as in the service images)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from morgan.cli.main import DEPLOY_COMMANDS, app
from typer.main import get_command

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Run the CLI with `infra` and the Pulumi SDK made unimportable, as in a service image.
WITHOUT_INFRA = """
import sys

for name in ("infra", "pulumi", "pulumi_docker", "pulumi_tls", "pulumi_random"):
    sys.modules[name] = None  # import raises ModuleNotFoundError; find_spec gives None
sys.argv = ["morgan", *sys.argv[1:]]
from morgan.cli.main import app
app()
"""


def morgan_without_infra(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_INFRA, *args], cwd="/", env=env,
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_the_blocker_really_hides_infra() -> None:
    probe = WITHOUT_INFRA.split("sys.argv")[0] + "import infra\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd="/", check=False)  # fmt: skip
    assert result.returncode == 1 and "ModuleNotFoundError: import of infra halted" in result.stderr


def test_help_and_the_service_commands_work() -> None:
    result = morgan_without_infra("--help")
    assert result.returncode == 0, result.stderr
    for command in ("config", "keys", "models", "version"):
        assert command in result.stdout
    assert morgan_without_infra("config", "--help").returncode == 0
    version = morgan_without_infra("version")
    assert version.returncode == 0 and version.stdout.strip()


@pytest.mark.parametrize("command", ["up", "plan", "verify"])
def test_deploy_commands_say_what_is_missing(command: str) -> None:
    result = morgan_without_infra(command, "--stack", "lab")
    assert result.returncode == 2
    assert f"`morgan {command}` needs Morgan's deploy tools (the infra package)" in result.stderr
    assert "Traceback" not in result.stderr


def test_deploy_commands_list_matches_the_registered_ones() -> None:
    registered = set(get_command(app).commands)  # type: ignore[attr-defined]
    service_commands = {"version", "config", "keys", "models", "host"}
    assert registered - service_commands == set(DEPLOY_COMMANDS)
