"""The `morgan` command line: one entry point, one sub-command module per concern.

The deploy commands (`DEPLOY_COMMANDS`) need the `infra` package, which a Morgan checkout
has and the service images do not; where it is missing they say so instead of failing to
start, and every other command works.
"""

from __future__ import annotations

import importlib.util

import typer

from morgan import __version__

app = typer.Typer(
    name="morgan",
    help="Morgan: run, inspect and manage a self-hosted AI voice assistant.",
    no_args_is_help=True,
    add_completion=False,
)

# The commands of `morgan.cli.stack_cmd`, `plan_cmd`, `lab_cmd` and `deploy_cmd`.
DEPLOY_COMMANDS = (
    "build", "up", "down", "status", "logs", "lock", "verify", "plan", "render", "lab",
    "deploy", "backup", "restore",
)  # fmt: skip


@app.command()
def version() -> None:
    """Print Morgan's version."""
    typer.echo(__version__)


def infra_installed() -> bool:
    return importlib.util.find_spec("infra") is not None


def _missing_infra(name: str) -> None:
    @app.command(
        name,
        help="Needs Morgan's deploy tools (the infra package), which this install lacks.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    def unavailable() -> None:
        typer.echo(
            f"error: `morgan {name}` needs Morgan's deploy tools (the infra package), which "
            "this install lacks (the service images ship without them); run it from a Morgan "
            "checkout after scripts/setup",
            err=True,
        )
        raise typer.Exit(2)


def _register() -> None:
    # Sub-command modules add themselves to `app`; each owns one concern.
    from morgan.cli import config_cmd, host_cmd, keys_cmd, models_cmd  # noqa: F401

    if infra_installed():
        from morgan.cli import backup_cmd, deploy_cmd, lab_cmd, plan_cmd, stack_cmd  # noqa: F401
    else:
        for name in DEPLOY_COMMANDS:
            _missing_infra(name)


_register()

if __name__ == "__main__":
    app()
