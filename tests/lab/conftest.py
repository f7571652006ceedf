"""The multi-host lab, brought up once per test run and removed at the end, failed or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from morgan.cli.lab_cmd import build_lab_images
from morgan.deploy.rollout import DeployReport
from morgan.lab import hosts as lab
from morgan.lab import images as img


@pytest.fixture(scope="session")
def lab_paths() -> lab.LabPaths:
    return lab.LabPaths(img.repo_root() / ".morgan" / "lab")


@pytest.fixture(scope="session")
def lab_hosts(lab_paths: lab.LabPaths) -> Iterator[list[lab.LabHost]]:
    try:
        yield lab.up(lab_paths, 4, *build_lab_images())
    finally:
        lab.down(lab_paths)


@pytest.fixture(scope="session")
def lab_fleet(lab_hosts: list[lab.LabHost]) -> DeployReport:
    """stacks/Pulumi.lab.yaml deployed onto the lab's hosts once (`morgan deploy --stack lab`).

    Removed with the lab (its containers and volumes live in the hosts' daemons).
    """
    from morgan.cli.stack_cmd import build_images
    from morgan.deploy.rollout import deploy
    from morgan.lab import stack as st

    root = img.repo_root()
    build_images("lab", root)
    return deploy(st.load_config("lab", root), root, st.paths("lab", root), log=print)
