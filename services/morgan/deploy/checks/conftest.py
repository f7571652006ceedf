"""Fixtures of a fleet's `morgan verify`: the stack's outputs (written by `morgan deploy`,
or saved from `pulumi stack output --json --show-secrets` and named by `--outputs`) and
its hosts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from infra.config import MorganStackConfig
from infra.deployment import Deployment, build_deployment
from infra.placement import make_plan
from morgan.deploy.engine import DockerEngine
from morgan.deploy.outputs import (
    OUTPUTS_ENV,
    PULUMI_OUTPUTS_COMMAND,
    load_outputs,
    read_outputs,
    write_ca_file,
)
from morgan.deploy.rollout import engines, swarm_stack_name
from morgan.deploy.running import Containers
from morgan.lab import stack as st


def _root() -> Path:
    return Path(os.environ.get("MORGAN_ROOT") or st.repo_root())


def _config() -> MorganStackConfig:
    return st.load_config(os.environ.get("MORGAN_STACK", "lab"), _root())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host_name" in metafunc.fixturenames:
        metafunc.parametrize("host_name", [h.name for h in _config().hosts])


@pytest.fixture(scope="session")
def config() -> MorganStackConfig:
    return _config()


@pytest.fixture(scope="session")
def deployment(config: MorganStackConfig) -> Deployment:
    return build_deployment(make_plan(config), _root())


@pytest.fixture(scope="session")
def outputs(config: MorganStackConfig) -> dict[str, Any]:
    # `morgan verify --outputs FILE`: a file saved from `pulumi stack output`.
    given = os.environ.get(OUTPUTS_ENV)
    if given:
        return read_outputs(Path(given), made_by=PULUMI_OUTPUTS_COMMAND)
    return load_outputs(st.paths(config.stack, _root()))


@pytest.fixture(scope="session")
def docker_engines(config: MorganStackConfig) -> dict[str, DockerEngine]:
    return engines(config, _root())


@pytest.fixture(scope="session")
def containers(docker_engines: dict[str, DockerEngine], config: MorganStackConfig) -> Containers:
    return Containers(docker_engines, swarm_stack_name(config.stack))


@pytest.fixture(scope="session")
def ca_file(outputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca_file(outputs, tmp_path_factory.mktemp("ca"))
