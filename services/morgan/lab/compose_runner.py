"""Docker Compose for a stack on this machine: write the file, run compose, read its state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from morgan.lab.stack import StackError, StackPaths


def write_compose(p: StackPaths, doc: dict[str, Any]) -> Path:
    p.state.mkdir(parents=True, exist_ok=True)
    p.compose_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p.compose_file


def compose(
    p: StackPaths, *args: str, check: bool = True, capture: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    if not p.compose_file.exists():
        raise StackError(
            f"no rendered stack at {p.compose_file}; run `morgan up --stack {p.stack}` first"
        )
    cmd = ["docker", "compose", "-p", p.project, "-f", str(p.compose_file)]
    if p.env_file.exists():
        cmd += ["--env-file", str(p.env_file)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        detail = ((proc.stderr or "") + (proc.stdout or "")).strip()[-800:]
        raise StackError(f"docker compose {args[0]} failed: {detail}")
    return proc


def running_containers(p: StackPaths) -> list[dict[str, Any]]:
    """`docker compose ps` rows (Service, Name, State, Health, Publishers)."""
    proc = compose(p, "ps", "--all", "--format", "json")
    rows: list[dict[str, Any]] = []
    out = proc.stdout.strip()
    if not out:
        return rows
    if out.startswith("["):
        rows = json.loads(out)
    else:
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return rows


def check_no_stale_volumes(p: StackPaths) -> None:
    """New secrets cannot open old data: refuse volumes made with secrets that are gone."""
    label = f"label=com.docker.compose.project={p.project}"
    proc = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    volumes = proc.stdout.split()
    if volumes:
        p.env_file.unlink(missing_ok=True)
        raise StackError(
            f"{p.env_file} (the stack's secrets) is gone but its data volumes remain"
            f" ({', '.join(volumes)}); PostgreSQL and Consul would refuse the new secrets."
            f" Restore the file, or delete the data with `docker volume rm {' '.join(volumes)}`"
        )


def project_volume(p: StackPaths, volume: str) -> str:
    """The engine's name of a compose volume: compose prefixes it with the project."""
    return f"{p.project}_{volume}"
