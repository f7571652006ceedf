"""`morgan backup` and `morgan restore`: a deployed stack's data to a directory and back
(morgan.deploy.backup; docs/operations/backup-restore.md)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from morgan.cli.main import app
from morgan.cli.stack_cmd import STACK_ERRORS, STACK_OPTION
from morgan.deploy import backup as bk
from morgan.deploy import restore as rs
from morgan.deploy.backup_manifest import RESTORABLE
from morgan.deploy.engine import DeployError
from morgan.lab import images as img
from morgan.lab import stack as st

console = Console()


def _log(message: str) -> None:
    console.print(f"  {message}", markup=False, highlight=False)


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}", highlight=False)
    raise typer.Exit(1) from None


@app.command()
def backup(
    stack: str = STACK_OPTION,
    to: Path | None = typer.Option(
        None,
        "--to",
        help="Directory the backup is made in (default: backups/ beside the stack's secrets"
        " file, ~/.local/state/morgan/backups: outside the checkout, as private as they are).",
    ),
) -> None:
    """Back up a deployed stack: its database, Consul KV and snapshot, secrets and PKI."""
    root = img.repo_root()
    t0 = time.monotonic()
    console.print(f"[bold]morgan backup[/bold] — stack {stack}")
    try:
        config = st.load_config(stack, root)
        p = st.paths(stack, root)
        made = bk.take(config, root, p, to or p.env_file.parent / "backups", _log)
    except (DeployError, *STACK_ERRORS) as err:  # type: ignore[misc]
        _fail(err)
    seconds = time.monotonic() - t0
    console.print(f"[green]✓[/green] {made} in {seconds:.0f} s (it holds the stack's secrets:"
                  " keep it off the fleet, encrypted)", highlight=False)  # fmt: skip
    console.print(f"Restore: `morgan restore --stack {stack} --from {made}`.", highlight=False)


@app.command()
def restore(
    stack: str = STACK_OPTION,
    source: Path = typer.Option(..., "--from", help="A directory `morgan backup` made."),
    part: list[str] = typer.Option(
        list(RESTORABLE),
        "--part",
        help="What to put back (repeat): secrets (onto this machine, where it has none),"
        " postgres, consul-kv. A deploy machine that lost its state: --part secrets, then"
        " `morgan deploy`, then the rest.",
    ),
) -> None:
    """Put a backup back into a deployed stack (the database through its leader)."""
    root = img.repo_root()
    t0 = time.monotonic()
    console.print(f"[bold]morgan restore[/bold] — stack {stack} from {source}", highlight=False)
    try:
        config = st.load_config(stack, root)
        rs.restore(config, root, st.paths(stack, root), source, part, _log)
    except (DeployError, *STACK_ERRORS) as err:  # type: ignore[misc]
        _fail(err)
    console.print(f"[green]✓[/green] restored {', '.join(part)} in {time.monotonic() - t0:.0f} s")
    console.print(f"Next: `morgan verify --stack {stack}`.")
