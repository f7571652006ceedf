"""`morgan config`: move configuration into Consul KV and look at it."""

from __future__ import annotations

from pathlib import Path

import typer

from morgan.cli.main import app
from morgan.shared.config_loader import ConfigError
from morgan.shared.config_migrate import apply_migration, plan_migration
from morgan.shared.consul_client import CONSUL_UNREACHABLE_ERRORS, ConsulClientFactory

config_app = typer.Typer(help="Service configuration in Consul KV.", no_args_is_help=True)

CONSUL_OPTION = typer.Option(None, "--consul", help="Consul address (default CONSUL_HTTP_ADDR).")


@config_app.command("migrate")
def migrate(
    from_dir: Path = typer.Option(..., "--from", help="Folder with global.yaml, <service>.yaml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, change nothing."),
    prune: bool = typer.Option(False, "--prune", help="Delete keys of these services that "
                               "the files no longer have."),
    consul_addr: str | None = CONSUL_OPTION,
) -> None:
    """Upload YAML files to Consul KV (morgan/config/<service>/<field>, JSON values)."""
    consul = ConsulClientFactory.from_env(consul_addr)
    try:
        plan = plan_migration(consul, from_dir, prune=prune)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except CONSUL_UNREACHABLE_ERRORS as exc:
        typer.echo(f"error: Consul at {consul.addr} unreachable ({exc}); start it or set "
                   "CONSUL_HTTP_ADDR / --consul", err=True)
        raise typer.Exit(1) from exc
    for change in plan.changes:
        typer.echo(change.describe())
    scopes = ", ".join(plan.scopes)
    summary = f"{len(plan.changes)} change(s), {plan.unchanged} unchanged ({scopes})"
    if dry_run:
        typer.echo(f"dry run: {summary}; run without --dry-run to apply")
        return
    apply_migration(consul, plan)
    typer.echo(f"applied: {summary}; running services pick the changes up live")


app.add_typer(config_app, name="config")
