"""docs/configuration.md and docs/schemas/*.json must match the settings models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from morgan.shared import config_docs
from morgan.shared.config_docs import DEFAULT_DOCS_DIR, expected_files, load_known_settings

pytestmark = pytest.mark.unit


def test_configuration_doc_is_up_to_date() -> None:
    stale = config_docs.stale_files(DEFAULT_DOCS_DIR)
    assert not stale, (
        f"stale: {[str(p) for p in stale]}; run `python -m morgan.shared.config_docs` and commit"
    )


def test_doc_lists_every_field_of_every_known_settings_class() -> None:
    classes = load_known_settings()
    assert "shared" in classes
    doc = expected_files(DEFAULT_DOCS_DIR, classes)[DEFAULT_DOCS_DIR / "configuration.md"]
    for name in classes["shared"].model_fields:
        assert f"`{name}`" in doc
    schema = json.loads(
        expected_files(DEFAULT_DOCS_DIR, classes)[DEFAULT_DOCS_DIR / "schemas" / "shared.json"]
    )
    assert schema["properties"]["port"]["maximum"] == 65535


def test_missing_modules_are_skipped_but_broken_ones_are_errors() -> None:
    found = load_known_settings(
        {
            "shared": ("morgan.shared.settings", "ServiceSettings"),
            "nope": ("morgan.nonexistent_service.config", "NopeSettings"),
        }
    )
    assert list(found) == ["shared"]
    with pytest.raises(ImportError, match="defines no WrongName"):
        load_known_settings({"shared": ("morgan.shared.settings", "WrongName")})


def test_check_mode_fails_on_a_stale_copy(tmp_path: Path) -> None:
    assert config_docs.main(["--docs-dir", str(tmp_path)]) == 0
    assert config_docs.main(["--docs-dir", str(tmp_path), "--check"]) == 0
    (tmp_path / "configuration.md").write_text("old\n")
    assert config_docs.main(["--docs-dir", str(tmp_path), "--check"]) == 1


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "morgan.shared.config_docs", "--docs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "configuration.md").read_text().startswith("# Configuration reference")
