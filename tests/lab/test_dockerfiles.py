"""Every Dockerfile follows the rules: base by ARG, multi-stage services, non-root, healthcheck."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from morgan.catalog import SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
SERVICES = tuple(SERVICE_PORTS)
# No CUDA variant: core runs no model on a GPU, vad runs on the CPU only.
CPU_ONLY = ("core", "vad")
SUPPORT = ("consul", "traefik", "postgres", "redis", "prometheus")

pytestmark = pytest.mark.unit


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def args_before_first_from(ins: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, rest in ins:
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = rest.partition("=")
            out[name] = default
    return out


def all_dockerfiles() -> list[Path]:
    return sorted(p for p in IMAGES.glob("*/Dockerfile*") if p.suffix != ".dockerignore")


def test_every_image_folder_has_a_dockerfile() -> None:
    names = {p.parent.name for p in all_dockerfiles()}
    assert {*SERVICES, *SUPPORT, "runtime"} <= names


@pytest.mark.parametrize("path", all_dockerfiles(), ids=lambda p: str(p.relative_to(IMAGES)))
def test_base_comes_from_an_arg(path: Path) -> None:
    ins = instructions(path)
    args = args_before_first_from(ins)
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    assert froms, f"{path}: no FROM"
    first = froms[0]
    assert first.startswith("${") and first[2:-1] in args, f"{path}: FROM {first} is not an ARG"
    if path.name.endswith(".cuda"):
        assert args["CUDA_BASE_IMAGE"].startswith("nvidia/cuda:"), path
    elif path.parent.name in SERVICES:
        assert args["RUNTIME_IMAGE"].startswith("morgan-runtime-"), path
    else:
        assert args["BASE_IMAGE"] == "morgan-base:py3.11-bookworm", path


@pytest.mark.parametrize(
    "path",
    [p for p in all_dockerfiles() if p.parent.name != "runtime"],
    ids=lambda p: str(p.relative_to(IMAGES)),
)
def test_runs_as_non_root_with_a_healthcheck(path: Path) -> None:
    ins = instructions(path)
    checks = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert checks and "CMD" in checks[-1], f"{path}: no HEALTHCHECK"
    if path.parent.name == "labhost":
        return  # a simulated machine: its dockerd runs as root, as on a real host
    users = [rest for word, rest in ins if word == "USER"]
    assert users, f"{path}: no USER; the final stage must not run as root"
    assert users[-1] not in ("root", "0"), f"{path}: final USER is {users[-1]}"
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    assert any(w == "USER" for w, _ in ins[last_from:]), f"{path}: USER not in the final stage"


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("suffix", ["", ".cuda"])
def test_service_images_are_multi_stage_and_run_their_module(service: str, suffix: str) -> None:
    path = IMAGES / service / f"Dockerfile{suffix}"
    if service in CPU_ONLY and suffix:
        assert not path.exists(), f"{service} has no CUDA variant: it runs nothing on a GPU"
        return
    ins = instructions(path)
    stages = [rest for word, rest in ins if word == "FROM"]
    if service == "core" and not suffix:
        # The ONNX export stage runs on the torch runtime; only its result is copied.
        export, *stages = stages
        assert export == "${EXPORT_IMAGE} AS embedder", f"{path}: stages {stages}"
        assert ("COPY", "--from=embedder /opt/morgan/embedder /opt/morgan/embedder") in ins
    assert len(stages) == 2 and " AS build" in stages[0], f"{path}: stages {stages}"
    assert any(w == "COPY" and rest.startswith("--from=build") for w, rest in ins), path
    cmd = [rest for word, rest in ins if word == "CMD"][-1]
    assert f'"morgan.{service}' in cmd, f"{path}: CMD {cmd}"
    port = SERVICE_PORTS[service]
    assert ("EXPOSE", str(port)) in ins, f"{path}: does not EXPOSE {port}"


def test_llm_cuda_installs_vllm() -> None:
    ins = instructions(IMAGES / "llm" / "Dockerfile.cuda")
    args = {rest.partition("=")[0]: rest.partition("=")[2] for w, rest in ins if w == "ARG"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["VLLM_VERSION"]), args
    assert any(w == "RUN" and '"vllm==${VLLM_VERSION}"' in rest for w, rest in ins)


@pytest.mark.parametrize("path", sorted(IMAGES.glob("*/*.sh")), ids=lambda p: p.name)
def test_entrypoint_scripts_exec_their_command(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#!/bin/"), path
    assert 'exec "$@"' in text, f"{path}: the server must replace the shell (signals reach it)"


@pytest.mark.parametrize(
    "path",
    [p for p in all_dockerfiles() if p.parent.name in ("runtime", *SERVICES)],
    ids=lambda p: str(p.relative_to(IMAGES)),
)
def test_repo_root_builds_send_only_what_the_dockerfile_copies(path: Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    assert "*" in ignore, f"{path}: its .dockerignore must exclude everything by default"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in instructions(path):
        if word == "COPY" and not rest.startswith("--from"):
            sources = rest.split()[:-1]
            for source in sources:
                assert any(source.startswith(a) for a in allowed), f"{path}: {source} ignored"


def test_llm_runtime_builds_llama_cpp_with_the_lock_s_portable_flags() -> None:
    import shlex
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = project["tool"]["uv"]["extra-build-variables"]["llama-cpp-python"]["CMAKE_ARGS"]
    assert "-DGGML_NATIVE=OFF" in wanted.split()
    envs = [rest for word, rest in instructions(IMAGES / "runtime" / "Dockerfile") if word == "ENV"]
    cmake = next(e for e in envs if e.startswith("CMAKE_ARGS="))
    assert shlex.split(cmake)[0] == f"CMAKE_ARGS={wanted}"
