"""`morgan deploy --stack S`: roll a stack out to its hosts' own Docker daemons."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from morgan.cli.main import app
from morgan.cli.stack_cmd import STACK_ERRORS, STACK_OPTION, build_images
from morgan.deploy.engine import DeployError
from morgan.deploy.rollout import deploy as run_deploy
from morgan.lab import images as img
from morgan.lab import stack as st

console = Console()


@app.command()
def deploy(
    stack: str = STACK_OPTION,
    build: bool = typer.Option(True, help="Build (or reuse) the stack's images first."),
) -> None:
    """Deploy a stack to every host's Docker daemon (ssh:// or tcp://+TLS), in start order.

    Idempotent: a second run leaves unchanged containers alone and says so.
    """
    root = img.repo_root()
    p = st.paths(stack, root)
    t0 = time.monotonic()
    try:
        config = st.load_config(stack, root)
        console.print(f"[bold]morgan deploy[/bold] — stack {stack}, {len(config.hosts)} hosts")
        if build:
            build_images(stack, root)
        report = run_deploy(config, root, p, log=lambda m: console.print(f"  {m}"))
    except (DeployError, *STACK_ERRORS) as err:  # type: ignore[misc]
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    total = sum(len(c) for c in report.changes.values())
    if report.changed:
        console.print(
            f"[green]✓[/green] deployed: {report.changed} of {total} containers created or"
            f" replaced in {time.monotonic() - t0:.0f} s"
        )
    else:
        console.print(f"[green]✓[/green] nothing to change: all {total} containers up to date")
    console.print(f"Next: `morgan verify --stack {stack}`.")
