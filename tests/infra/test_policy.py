"""The policy pack's rules over every resource the program makes, and over bad resources."""

from __future__ import annotations

from typing import Any

import pytest

from infra.policy.rules import (
    CONTAINER,
    RULES,
    container_basics,
    explicit_provider,
    gpu_only_on_gpu_hosts,
    no_addresses_in_env,
)
from tests.infra.mocks import unwrap
from tests.infra.program import Built

pytestmark = pytest.mark.unit

_PROVIDER = "urn:pulumi:s::morgan::morgan:host:Host$pulumi:providers:docker::h1-docker::id"


def test_every_resource_of_both_stacks_passes_every_rule(built: dict[str, Built]) -> None:
    checked = 0
    for stack in built.values():
        for r in stack.mocks.resources:
            props = unwrap(r.inputs)
            for name, rule in RULES.items():
                assert rule(r.typ, props, r.provider) == [], (name, r.name)
            checked += 1
    assert checked > 100


def _container(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "healthcheck": {"tests": ["CMD", "true"]},
        "restart": "unless-stopped",
        "memory": 256,
        "labels": [{"label": "morgan.host.gpu", "value": "false"}],
        "envs": ["A=1"],
    }
    props.update(overrides)
    return props


def test_container_without_healthcheck_or_limit_is_refused() -> None:
    problems = container_basics(CONTAINER, _container(healthcheck=None, memory=None), _PROVIDER)
    assert any("healthcheck" in p for p in problems)
    assert any("memory limit" in p for p in problems)


def test_gpu_request_on_cpu_host_is_refused() -> None:
    props = _container(deviceRequests=[{"driver": "nvidia", "count": -1}])
    assert gpu_only_on_gpu_hosts(CONTAINER, props, _PROVIDER)
    props["labels"] = [{"label": "morgan.host.gpu", "value": "true"}]
    assert gpu_only_on_gpu_hosts(CONTAINER, props, _PROVIDER) == []


@pytest.mark.parametrize(
    "entry",
    ["LLM=http://h3.lan:8001", "DB=postgresql://u:p@192.168.1.10:5432/x", "PEER=10.0.0.4"],
)
def test_addresses_in_env_are_refused(entry: str) -> None:
    assert no_addresses_in_env(CONTAINER, _container(envs=[entry]), _PROVIDER)


def test_consul_names_and_loopback_are_allowed() -> None:
    envs = ["CONSUL_HTTP_ADDR=https://127.0.0.1:8501", "Q=https://qdrant.service.consul:6333"]
    assert no_addresses_in_env(CONTAINER, _container(envs=envs), _PROVIDER) == []


def test_default_provider_is_refused() -> None:
    default = "urn:pulumi:s::morgan::pulumi:providers:docker::default_4_5_0::id"
    assert explicit_provider(CONTAINER, _container(), default)
    assert explicit_provider(CONTAINER, _container(), "")
    assert explicit_provider(CONTAINER, _container(), _PROVIDER) == []
