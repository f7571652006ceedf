"""Stack configs for the infra tests: the two real stack files, and a builder for variants."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import CONFIG_KEY, MorganStackConfig, load_stack_file, parse_stack_config
from infra.placement import Plan, make_plan
from tests.infra.program import Built, build_under_mocks

ROOT = Path(__file__).resolve().parents[2]
HOMELAB_FILE = ROOT / "stacks" / "Pulumi.homelab.yaml"
DEV_FILE = ROOT / "Pulumi.dev.yaml"
LAB_FILE = ROOT / "stacks" / "Pulumi.lab.yaml"


def raw_fleet(path: Path) -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(path.read_text())["config"][CONFIG_KEY])


@pytest.fixture(scope="session")
def homelab_config() -> MorganStackConfig:
    return load_stack_file(HOMELAB_FILE)


@pytest.fixture(scope="session")
def dev_config() -> MorganStackConfig:
    return load_stack_file(DEV_FILE)


@pytest.fixture(scope="session")
def homelab_plan(homelab_config: MorganStackConfig) -> Plan:
    return make_plan(homelab_config)


@pytest.fixture(scope="session")
def lab_plan() -> Plan:
    """The lab's stack: the one whose PostgreSQL runs under Patroni."""
    return make_plan(load_stack_file(LAB_FILE))


@pytest.fixture(scope="session")
def dev_plan(dev_config: MorganStackConfig) -> Plan:
    return make_plan(dev_config)


@pytest.fixture()
def homelab_raw() -> dict[str, Any]:
    return raw_fleet(HOMELAB_FILE)


def plan_from(raw: dict[str, Any]) -> Plan:
    return make_plan(parse_stack_config(raw))


@pytest.fixture(scope="session")
def built(homelab_plan: Plan, dev_plan: Plan) -> dict[str, Built]:
    """Both stacks' programs run once under mocks, shared by the component and policy tests."""
    return {"homelab": build_under_mocks(homelab_plan), "dev": build_under_mocks(dev_plan)}
