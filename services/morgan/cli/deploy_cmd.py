"""`morgan deploy --stack S`: roll a stack out to its hosts' own Docker daemons."""

from __future__ import annotations

import time
from enum import StrEnum

import typer
from rich.console import Console

from morgan.cli.main import app
from morgan.cli.stack_cmd import STACK_ERRORS, STACK_OPTION, build_images
from morgan.deploy.engine import DeployError
from morgan.deploy.rollout import deploy as run_deploy
from morgan.deploy.swarm import deploy_swarm
from morgan.lab import images as img
from morgan.lab import stack as st

console = Console()


class Engine(StrEnum):
    docker = "docker"
    swarm = "swarm"


@app.command()
def deploy(
    stack: str = STACK_OPTION,
    build: bool = typer.Option(True, help="Build (or reuse) the stack's images first."),
    engine: Engine = typer.Option(
        Engine.docker,
        help="docker: containers on each host's daemon; swarm: the hosts form a swarm and"
        " each replica is a Swarm service pinned to its host.",
    ),
) -> None:
    """Deploy a stack to every host's Docker daemon (ssh:// or tcp://+TLS), in start order.

    Idempotent: a second run leaves unchanged containers (or services) alone and says so.
    """
    root = img.repo_root()
    p = st.paths(stack, root)
    t0 = time.monotonic()
    try:
        config = st.load_config(stack, root)
        console.print(f"[bold]morgan deploy[/bold] — stack {stack}, {len(config.hosts)} hosts")
        if build:
            build_images(stack, root)
        run = deploy_swarm if engine is Engine.swarm else run_deploy
        report = run(config, root, p, log=lambda m: console.print(f"  {m}"))
    except (DeployError, *STACK_ERRORS) as err:  # type: ignore[misc]
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    total = sum(len(c) for c in report.changes.values())
    what = "Swarm services" if engine is Engine.swarm else "containers"
    if report.changed:
        console.print(
            f"[green]✓[/green] deployed: {report.changed} of {total} {what} created, replaced"
            f" or removed in {time.monotonic() - t0:.0f} s"
        )
    else:
        console.print(f"[green]✓[/green] nothing to change: all {total} {what} up to date")
    console.print(f"Next: `morgan verify --stack {stack}`.")
