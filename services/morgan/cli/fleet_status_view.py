"""How `morgan status` prints a deployed fleet: a table per host (its CPU, memory and disk
use, containers, Docker and Consul health, each Morgan service's requests, errors and p95),
then what did not answer."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from morgan.lab import images as img
from morgan.lab import stack as st


def print_fleet_status(stack: str, p: st.StackPaths, console: Console) -> bool:
    """Print every host's table; False when something needs attention."""
    import tempfile

    from infra.deployment import build_deployment
    from infra.placement import make_plan
    from morgan.deploy.engine import DeployError
    from morgan.deploy.outputs import load_outputs, write_ca_file
    from morgan.deploy.rollout import engines
    from morgan.deploy.status import QUERIES, fleet_status

    root = img.repo_root()
    config = st.load_config(stack, root)
    try:
        outputs = load_outputs(p)
    except DeployError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        return False
    deployment = build_deployment(make_plan(config), root)
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = write_ca_file(outputs, Path(tmp))
        with console.status(f"asking {len(config.hosts)} hosts, Consul and Prometheus"):
            found = fleet_status(deployment, engines(config, root), outputs, ca_file)
    for host in found.hosts:
        mark = "[green]ok[/green]" if host.ok else "[red]needs attention[/red]"
        use = "  ".join(
            f"{label} {host.numbers[key]:.0f}%" for key, label in HOST_LABELS if key in host.numbers
        )
        title = f"{host.name}  {host.endpoint}  {mark}" + (f"  {use}" if use else "")
        table = Table(title=title, title_justify="left")
        for column in ("container", "state", "health", "consul"):
            table.add_column(column, no_wrap=True)
        for column in ("req/s", "5xx/s", "p95 ms"):
            table.add_column(column, justify="right")
        if host.error:
            console.print(f"{host.name}  {host.endpoint}  [red]{escape(host.error)}[/red]")
            continue
        for c in host.containers:
            style = "" if c.ok else "red"
            cells = [_number(c.numbers.get(k)) for k in QUERIES]
            table.add_row(c.name, c.state, c.health, c.consul, *cells, style=style)
        console.print(table)
    for warning in found.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(
        f"numbers: the last 5 minutes, from Prometheus. Gateway: {outputs['gateway_url']}"
    )
    return found.ok


HOST_LABELS = (("cpu_percent", "cpu"), ("memory_percent", "mem"), ("disk_percent", "disk"))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"
