"""`morgan plan` and `morgan render`: what runs where, and the Swarm/compose files for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from morgan.cli.main import app

if TYPE_CHECKING:
    from infra.placement import Plan

console = Console()


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _load_plan(stack: str, stack_file: Path | None) -> Plan:
    from infra.config import StackConfigError, load_stack_file, stack_file_for
    from infra.placement import PlacementError, make_plan

    path = stack_file or stack_file_for(stack, _repo_root())
    try:
        return make_plan(load_stack_file(path))
    except (StackConfigError, PlacementError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


@app.command("plan")
def plan_command(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack name (dev or stacks/<name>)."),
    as_json: bool = typer.Option(False, "--json", help="Print host -> sorted roles as JSON."),
    stack_file: Path | None = typer.Option(None, "--file", help="Read this stack file instead."),
) -> None:
    """Show which replica of every service runs on which host."""
    from infra.memory_check import memory_warnings
    from infra.placement import plan_table

    plan = _load_plan(stack, stack_file)
    if as_json:
        typer.echo(json.dumps(plan.by_host(), sort_keys=True))
        return
    table = Table(title=f"Morgan plan: stack {plan.config.stack}")
    table.add_column("host")
    table.add_column("machine")
    table.add_column("runs")
    for row in plan_table(plan):
        table.add_row(*row)
    console.print(table)
    for warning in memory_warnings(plan):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print("Next: [bold]morgan render --stack " + stack + " --out DIR[/bold] or pulumi up")


@app.command("render")
def render_command(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack name (dev or stacks/<name>)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for docker-stack.yml and compose files."
    ),
    stack_file: Path | None = typer.Option(None, "--file", help="Read this stack file instead."),
) -> None:
    """Write docker-stack.yml (Swarm) and compose-<host>.yml for every host of the stack."""
    from infra.deployment import build_deployment
    from infra.render.files import write_renderings

    plan = _load_plan(stack, stack_file)
    for path in write_renderings(build_deployment(plan), out):
        console.print(f"wrote {path}")
    console.print(
        "Next: fill secrets.env.example, then `docker stack deploy -c docker-stack.yml morgan`"
        " or `docker compose --env-file secrets.env -f compose-<host>.yml up -d` on each host"
    )
