"""The `morgan` command line: one entry point, one sub-command module per concern."""

from __future__ import annotations

import typer

from morgan import __version__

app = typer.Typer(
    name="morgan",
    help="Morgan: run, inspect and manage a self-hosted AI voice assistant.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print Morgan's version."""
    typer.echo(__version__)


def _register() -> None:
    # Sub-command modules add themselves to `app`; each owns one concern.
    from morgan.cli import (  # noqa: F401
        config_cmd,
        keys_cmd,
        models_cmd,
        plan_cmd,
        stack_cmd,
    )


_register()

if __name__ == "__main__":
    app()
