"""`morgan plan` warns where a host or an LLM container cannot hold what the plan gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import MorganStackConfig
from infra.memory_check import memory_warnings
from infra.placement import Plan, make_plan

pytestmark = pytest.mark.unit


def variant(config: MorganStackConfig, **changes: Any) -> Plan:
    data = config.model_dump(mode="json")  # lists, not tuples: editable in place
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[last] = value
    return make_plan(MorganStackConfig.model_validate_json(json.dumps(data)))


def test_homelab_and_dev_fit(homelab_plan: Plan, dev_plan: Plan) -> None:
    assert memory_warnings(homelab_plan) == []
    assert memory_warnings(dev_plan) == []


def test_a_host_too_small_for_its_services(homelab_config: MorganStackConfig) -> None:
    index = next(i for i, h in enumerate(homelab_config.hosts) if h.name == "h4")
    warnings = memory_warnings(variant(homelab_config, **{f"hosts__{index}__memory_mb": 4096}))
    assert len(warnings) == 1
    assert warnings[0].startswith("h4: its Morgan services may use ")
    assert "(core, llm, vad)" in warnings[0] and "the host has 4096 MB" in warnings[0]


def test_an_llm_container_too_small_for_its_catalog_model(
    homelab_config: MorganStackConfig,
) -> None:
    plan = variant(homelab_config, services__llm__settings={"model": "qwen2.5-7b-instruct-q4"},
                   services__llm__memory_mb=4096)  # fmt: skip
    assert memory_warnings(plan) == [
        "llm: model qwen2.5-7b-instruct-q4 needs about 6200 MB but each llm container may use "
        "4096 MB (services.llm.memory_mb); raise it or choose a smaller model"
    ]
