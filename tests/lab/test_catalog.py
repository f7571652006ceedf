"""Values that a Dockerfile or a settings model must repeat agree with the one table."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from morgan.catalog import RUNTIME_EXTRAS, RUNTIME_FLAVOUR, SERVICE_PORTS, consul_name

from infra.kv import settings_model
from tests.lab.test_dockerfiles import instructions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_settings_default_port_and_name_are_the_tables(service: str) -> None:
    model = settings_model(service)
    assert model is not None
    assert model.model_fields["port"].default == SERVICE_PORTS[service]
    assert model.model_fields["service_name"].default == consul_name(service)


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_dockerfile_port_service_and_runtime_are_the_tables(service: str) -> None:
    ins = instructions(ROOT / "images" / service / "Dockerfile")
    port = SERVICE_PORTS[service]
    assert ("EXPOSE", str(port)) in ins
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert f"MORGAN_SERVICE={service}" in env and f"MORGAN_PORT={port}" in env
    runtime = [rest for word, rest in ins if word == "ARG" and rest.startswith("RUNTIME_IMAGE=")]
    assert runtime == [f"RUNTIME_IMAGE=morgan-runtime-{RUNTIME_FLAVOUR[service]}:latest"]


def test_core_finds_the_model_services_by_their_consul_names() -> None:
    model = settings_model("core")
    assert model is not None
    for service in ("llm", "stt", "tts"):
        assert model.model_fields[f"{service}_service"].default == consul_name(service)


def test_every_runtime_flavour_is_used_and_made_of_real_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(RUNTIME_FLAVOUR.values()) == set(RUNTIME_EXTRAS)
    # The extra each service's CPU image runs on (llm: the llama.cpp engine).
    cpu_extra = {"core": "core", "llm": "llm-cpp", "stt": "stt", "tts": "tts", "vad": "vad"}
    for service, flavour in RUNTIME_FLAVOUR.items():
        assert cpu_extra[service] in RUNTIME_EXTRAS[flavour]
        assert set(RUNTIME_EXTRAS[flavour]) <= set(extras)
