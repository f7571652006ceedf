"""Fixtures of `morgan verify`: the running stack, read from what `morgan up` wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from morgan.lab import compose_runner as cr
from morgan.lab import endpoints as eps
from morgan.lab import stack as st


@pytest.fixture(scope="session")
def stack_paths() -> st.StackPaths:
    root = Path(os.environ.get("MORGAN_ROOT") or st.repo_root())
    return st.paths(os.environ.get("MORGAN_STACK", "dev"), root)


@pytest.fixture(scope="session")
def compose_doc(stack_paths: st.StackPaths) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(stack_paths.compose_file.read_text())
    return doc


@pytest.fixture(scope="session")
def endpoints(stack_paths: st.StackPaths) -> eps.Endpoints:
    ep = eps.load_endpoints(stack_paths)
    eps.wait_for_gateway(ep)
    return ep


@pytest.fixture(scope="session")
def containers(stack_paths: st.StackPaths) -> dict[str, str]:
    """Compose service name -> container name, for every running container."""
    rows = cr.running_containers(stack_paths)
    return {str(r["Service"]): str(r["Name"]) for r in rows if r.get("State") == "running"}
