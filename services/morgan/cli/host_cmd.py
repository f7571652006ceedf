"""`morgan host probe`: this host's entry for the stack file, and what would fail later."""

from __future__ import annotations

import typer

from morgan import host_probe
from morgan.cli.main import app

host_app = typer.Typer(help="Prepare a host for the fleet.", no_args_is_help=True)


@host_app.command("probe")
def probe(
    name: str | None = typer.Option(None, "--name", help="The host's name in the stack file."),
    address: str | None = typer.Option(
        None, "--address", help="How the other hosts reach this one (name or IP)."
    ),
    user: str = typer.Option("morgan", "--user", help="The deploy user (ssh://USER@...)."),
    docker_tls: bool = typer.Option(
        False, "--docker-tls", help="Docker is reached at tcp://ADDRESS:2376 with TLS certificates."
    ),
) -> None:
    """Print this host's `hosts:` entry (os, arch, memory, GPU, Docker endpoint) and every
    problem a deploy would run into here (exit 1 when there is one). Standard library only:
    on a host without Morgan, run `python3 host_probe.py` from services/morgan/."""
    try:
        found = host_probe.probe_host(name, address, user, docker_tls=docker_tls)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(host_probe.report(found))
    if found.problems:
        raise typer.Exit(1)


app.add_typer(host_app, name="host")
