"""`morgan models`: what is in the model directory, and how models get there."""

from __future__ import annotations

from pathlib import Path

import typer

from morgan.cli.main import app
from morgan.models.directory import KINDS, ModelDirectoryError, default_model_dir, list_models
from morgan.models.store import CATALOG, ModelStoreError, fetch_model, import_model

models_app = typer.Typer(
    help="Models in the model directory (llm, stt, tts).", no_args_is_help=True
)

MODEL_DIR_OPTION = typer.Option(
    None, "--model-dir", help="Model directory (default MORGAN_MODEL_DIR, else /models)."
)
KIND_OPTION = typer.Option(None, "--kind", help="llm, stt or tts.")


def _root(model_dir: Path | None) -> Path:
    return model_dir or default_model_dir()


@models_app.command("list")
def list_command(model_dir: Path | None = MODEL_DIR_OPTION) -> None:
    """Installed models, by kind."""
    root = _root(model_dir)
    total = 0
    for kind in KINDS:
        names = list_models(root, kind)
        total += len(names)
        typer.echo(f"{kind}: {', '.join(names) if names else '-'}")
    if not total:
        typer.echo(
            f"no models in {root}; add one with `morgan models import DIR` or "
            "`morgan models fetch NAME`"
        )


@models_app.command("catalog")
def catalog_command() -> None:
    """Names `morgan models fetch` knows."""
    for name, entry in sorted(CATALOG.items()):
        sizes = (f"  download ~{entry.download_mb / 1000:.1f} GB, needs ~{entry.ram_mb / 1000:.1f}"
                 " GB RAM" if entry.ram_mb else "")  # fmt: skip
        typer.echo(f"{name:26} {entry.kind:4} {entry.repo_id:36} {entry.note}{sizes}")


@models_app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="Folder holding the model files, or a .gguf file."),
    kind: str | None = KIND_OPTION,
    name: str | None = typer.Option(
        None,
        "--name",
        help="Folder name in the model directory (default: the source folder's name).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace a model of the same name."),
    model_dir: Path | None = MODEL_DIR_OPTION,
) -> None:
    """Copy a model folder into the model directory (for hosts without internet)."""
    try:
        dest = import_model(source, _root(model_dir), kind=kind, name=name, force=force)
    except (ModelStoreError, ModelDirectoryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"imported {dest}; point the service at it with model={dest.name}")


@models_app.command("fetch")
def fetch_command(
    name: str = typer.Argument(
        ...,
        help="Catalog name (see `morgan models catalog`) or a Hugging Face repo id with --kind.",
    ),
    kind: str | None = KIND_OPTION,
    folder: str | None = typer.Option(None, "--name", help="Folder name in the model directory."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit."),
    force: bool = typer.Option(False, "--force", help="Replace a model of the same name."),
    model_dir: Path | None = MODEL_DIR_OPTION,
) -> None:
    """Download a model into the model directory (hosts with internet)."""
    try:
        dest = fetch_model(
            name, _root(model_dir), kind=kind, folder=folder, revision=revision, force=force
        )
    except (ModelStoreError, ModelDirectoryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"fetched {dest}; point the service at it with model={dest.name}")


app.add_typer(models_app, name="models")
