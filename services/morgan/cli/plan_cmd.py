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
    ports_of: str | None = typer.Option(
        None,
        "--ports",
        metavar="HOST",
        help="Print the ports HOST's firewall opens to the fleet (for setup-linux.sh --ports).",
    ),
    stack_file: Path | None = typer.Option(None, "--file", help="Read this stack file instead."),
) -> None:
    """Show which replica of every service runs on which host."""
    from infra.memory_check import memory_warnings
    from infra.placement import plan_table

    plan = _load_plan(stack, stack_file)
    if ports_of is not None:
        _print_ports(plan, ports_of)
        return
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


def _print_ports(plan: Plan, host: str) -> None:
    from infra.deployment import build_deployment
    from infra.host_ports import firewall_ports

    names = [h.name for h in plan.hosts]
    if host not in names:
        console.print(
            f"[red]error:[/red] stack {plan.config.stack} has no host {host!r};"
            f" its hosts are {', '.join(names)}"
        )
        raise typer.Exit(2)
    # One line, ready for `setup-linux.sh --ports "..."`.
    typer.echo(" ".join(str(p) for p in firewall_ports(build_deployment(plan), host)))


@app.command("render")
def render_command(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack name (dev or stacks/<name>)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for docker-stack.yml and compose files."
    ),
    diagrams: Path | None = typer.Option(
        None,
        "--diagrams",
        help="Redraw the generated mermaid blocks of this Markdown file (docs/architecture.md).",
    ),
    stack_file: Path | None = typer.Option(None, "--file", help="Read this stack file instead."),
) -> None:
    """Write docker-stack.yml (Swarm) and compose-<host>.yml for every host of the stack,
    or redraw the architecture diagrams of a Markdown file from the stack's plan."""
    from infra.deployment import build_deployment
    from infra.render.files import write_renderings

    if (out is None) == (diagrams is None):
        console.print("[red]error:[/red] give exactly one of --out DIR and --diagrams FILE")
        raise typer.Exit(2)
    plan = _load_plan(stack, stack_file)
    if diagrams is not None:
        _redraw(diagrams, plan)
        return
    assert out is not None
    for path in write_renderings(build_deployment(plan), out):
        console.print(f"wrote {path}")
    console.print(
        "Next: fill secrets.env.example, then `docker compose --env-file secrets.env -f"
        " compose-<host>.yml up -d` on each host, or write the ./secrets/ files it names and"
        " `docker stack deploy -c docker-stack.yml morgan`"
    )


def _redraw(path: Path, plan: Plan) -> None:
    from infra.render.diagrams import DiagramError, update_document

    try:
        text = path.read_text()
        new = update_document(text, plan)
    except (OSError, DiagramError) as error:
        console.print(f"[red]error:[/red] {path}: {error}")
        raise typer.Exit(2) from None
    if new == text:
        console.print(f"{path}: diagrams already match stack {plan.config.stack}")
        return
    path.write_text(new)
    console.print(f"redrew the diagrams of {path} from stack {plan.config.stack}")
