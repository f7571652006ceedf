"""Bad input to the stack commands: exit 1 with a message that names the fix, never a trace."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")

pytestmark = pytest.mark.unit


def morgan(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([MORGAN, *args], capture_output=True, text=True, env=env, check=False)


def test_up_with_unknown_stack_names_the_stack_file() -> None:
    result = morgan("up", "--stack", "nosuch")
    assert result.returncode == 1
    assert "no such stack file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_up_with_a_multi_host_stack_points_at_pulumi() -> None:
    result = morgan("up", "--stack", "homelab")
    assert result.returncode == 1
    assert "pulumi up" in result.stdout


@pytest.mark.parametrize("command", ["status", "verify", "logs core"])
def test_commands_on_a_stack_never_started_say_run_up(command: str) -> None:
    result = morgan(*command.split(), "--stack", "never-started")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "morgan up --stack never-started" in result.stdout
