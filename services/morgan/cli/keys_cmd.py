"""`morgan keys`: create, list and revoke API keys (stored hashed in Consul KV)."""

from __future__ import annotations

import typer

from morgan.cli.main import app
from morgan.shared.auth import SCOPES, ApiKeyStore, Scope
from morgan.shared.consul_client import CONSUL_UNREACHABLE_ERRORS, ConsulClientFactory

keys_app = typer.Typer(help="API keys for Morgan's HTTP APIs.", no_args_is_help=True)

CONSUL_OPTION = typer.Option(None, "--consul", help="Consul address (default CONSUL_HTTP_ADDR).")


def _store(consul_addr: str | None) -> ApiKeyStore:
    return ApiKeyStore(ConsulClientFactory.from_env(consul_addr))


def _unreachable(store: ApiKeyStore, exc: BaseException) -> typer.Exit:
    typer.echo(
        f"error: Consul at {store.consul.addr} unreachable ({exc}); start it or set "
        "CONSUL_HTTP_ADDR / --consul",
        err=True,
    )
    return typer.Exit(1)


def _scopes(names: list[str]) -> list[Scope]:
    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; use {', '.join(SCOPES)}")
    return [n for n in SCOPES if n in names]


@keys_app.command("create")
def create(
    owner: str = typer.Option(..., "--owner", help="Who the key is for (the user id)."),
    expires_days: float | None = typer.Option(None, "--expires-days", help="Expire after N days."),
    scopes: list[str] = typer.Option(
        ["user"],
        "--scope",
        help=f"user (acts only for its owner), admin (may act for any user) or service "
        f"(the model services' key); repeat for several. One of: {', '.join(SCOPES)}.",
    ),
    consul_addr: str | None = CONSUL_OPTION,
) -> None:
    """Create a key; it is printed once and never stored."""
    store = _store(consul_addr)
    try:
        record, key = store.create(owner, expires_days, scopes=_scopes(scopes))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except CONSUL_UNREACHABLE_ERRORS as exc:
        raise _unreachable(store, exc) from exc
    typer.echo(key)
    expires = record.expires.isoformat() if record.expires else "never"
    typer.echo(
        f"key id {record.key_id} for {record.owner} ({', '.join(record.scopes)}), "
        f"expires {expires}. "
        "Store the key now: it cannot be shown again.",
        err=True,
    )


@keys_app.command("list")
def list_keys(consul_addr: str | None = CONSUL_OPTION) -> None:
    """List keys (ids and owners; never the keys)."""
    store = _store(consul_addr)
    try:
        records = store.list()
    except CONSUL_UNREACHABLE_ERRORS as exc:
        raise _unreachable(store, exc) from exc
    if not records:
        typer.echo("no API keys; create one with `morgan keys create --owner NAME`")
        return
    now = store.now()
    typer.echo(f"{'KEY ID':<14}{'OWNER':<20}{'SCOPES':<14}{'CREATED':<27}{'EXPIRES':<27}STATUS")
    for r in records:
        status = "revoked" if r.revoked else "expired" if r.expired(now) else "active"
        expires = r.expires.isoformat(timespec="seconds") if r.expires else "never"
        typer.echo(
            f"{r.key_id:<14}{r.owner:<20}{','.join(r.scopes):<14}"
            f"{r.created.isoformat(timespec='seconds'):<27}"
            f"{expires:<27}{status}"
        )


@keys_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="Key id from `morgan keys list`."),
    consul_addr: str | None = CONSUL_OPTION,
) -> None:
    """Revoke a key (services stop accepting it within their key cache window, 30 s)."""
    store = _store(consul_addr)
    try:
        record = store.revoke(key_id)
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(2) from exc
    except CONSUL_UNREACHABLE_ERRORS as exc:
        raise _unreachable(store, exc) from exc
    typer.echo(f"revoked {record.key_id} ({record.owner})")


app.add_typer(keys_app, name="keys")
