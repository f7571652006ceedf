"""Every bash script Morgan ships (scripts/) passes shellcheck, infos included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

BASH_SCRIPTS = sorted(
    path
    for path in (ROOT / "scripts").iterdir()
    if path.is_file() and path.read_text().startswith("#!/usr/bin/env bash")
)


def test_the_scripts_are_found() -> None:
    names = {p.name for p in BASH_SCRIPTS}
    assert {"setup", "build-consul", "setup-linux.sh", "setup-macos.sh"} <= names


@pytest.mark.parametrize("script", BASH_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script: Path) -> None:
    result = subprocess.run(["shellcheck", "--severity=info", str(script)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout
