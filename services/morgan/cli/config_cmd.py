"""`morgan config`: move configuration into Consul KV and look at it."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import typer
from pydantic import SecretStr, ValidationError

from morgan.cli.main import app
from morgan.shared.config_docs import load_known_settings
from morgan.shared.config_loader import (
    GLOBAL_SCOPE,
    KV_ROOT,
    ConfigError,
    ConsulConfigLoader,
    env_prefix,
    kv_prefix,
)
from morgan.shared.config_migrate import apply_migration, plan_migration
from morgan.shared.consul_client import CONSUL_UNREACHABLE_ERRORS, ConsulClientFactory
from morgan.shared.settings import ServiceSettings, is_env_only, needs_restart

config_app = typer.Typer(help="Service configuration in Consul KV.", no_args_is_help=True)

CONSUL_OPTION = typer.Option(None, "--consul", help="Consul address (default CONSUL_HTTP_ADDR).")


def service_classes() -> dict[str, type[ServiceSettings]]:
    """Known service -> its settings class (the shared base left out)."""
    return {
        name: cls
        for name, cls in load_known_settings().items()
        if name != "shared" and issubclass(cls, ServiceSettings)
    }


def owners(scope: str, field: str) -> dict[str, type[ServiceSettings]]:
    """The services a key `morgan/config/<scope>/<field>` applies to."""
    classes = service_classes()
    if scope != GLOBAL_SCOPE:
        classes = {scope: classes[scope]} if scope in classes else {}
    return {name: cls for name, cls in classes.items() if field in cls.model_fields}


def split_key(key: str) -> tuple[str, str] | None:
    """(scope, top-level field) of a key under morgan/config/, else None."""
    if not key.startswith(KV_ROOT):
        return None
    scope, _, rest = key[len(KV_ROOT) :].partition("/")
    field = rest.split("/", 1)[0]
    return (scope, field) if scope and field else None


def restarts_needed(keys: list[str]) -> dict[str, list[str]]:
    """Service -> the fields among `keys` it reads only at start-up."""
    out: dict[str, list[str]] = {}
    for key in keys:
        parts = split_key(key)
        if parts is None:
            continue
        for service, cls in owners(*parts).items():
            if needs_restart(cls, parts[1]) and parts[1] not in out.get(service, []):
                out.setdefault(service, []).append(parts[1])
    return out


def describe_restarts(restarts: dict[str, list[str]]) -> str:
    return ", ".join(f"{svc} ({', '.join(fields)})" for svc, fields in sorted(restarts.items()))


def parse_value(text: str) -> Any:
    """JSON when `text` is JSON, else `text` itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _field_errors(exc: ValidationError, field: str) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
        for e in exc.errors()
        if not e["loc"] or str(e["loc"][0]) == field
    ]


def check_value(loader: ConsulConfigLoader[Any], kv: dict[str, Any], field: str) -> list[str]:
    """Errors the service would reject `field` for, given the rest of its KV layer (keys
    of other fields it would reject anyway are left out, as the service does)."""
    try:
        loader.build(kv)
        return []
    except ValidationError as exc:
        ours = _field_errors(exc, field)
        if ours:
            return ours
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    try:
        loader.build({k: v for k, v in kv.items() if k not in bad})
    except ValidationError as exc:
        return _field_errors(exc, field)
    return []


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@config_app.command("set")
def set_value(
    service: str = typer.Argument(
        ..., help="core, llm, stt, tts, vad, or global (every service that has the setting)."
    ),
    key: str = typer.Argument(
        ...,
        help="Setting name, e.g. system_prompt; a nested field "
        "is a deeper key (sampling/temperature).",
    ),
    value: str = typer.Argument(
        ...,
        help="JSON value: 512, true, '[\"a\"]', '\"text\"'; "
        "anything that is not JSON is stored as text.",
    ),
    consul_addr: str | None = CONSUL_OPTION,
) -> None:
    """Write one setting to Consul KV (morgan/config/<service>/<key>) after checking it
    against the service's settings; says whether running services pick it up live or need
    a restart."""
    key = key.strip("/")
    field = key.split("/", 1)[0]
    classes = service_classes()
    if service != GLOBAL_SCOPE and service not in classes:
        raise _fail(
            f"unknown service {service!r}; use one of {', '.join(classes)} or {GLOBAL_SCOPE}"
        )
    targets = owners(service, field)
    if not field or not targets:
        names = sorted(
            {n for c in classes.values() for n in c.model_fields}
            if service == GLOBAL_SCOPE
            else classes[service].model_fields
        )
        close = difflib.get_close_matches(field, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = "no service" if service == GLOBAL_SCOPE else service
        raise _fail(
            f"{where} has no setting {field!r}{hint}; docs/configuration.md lists every setting"
        )
    env_only = [n for n, cls in targets.items() if is_env_only(cls, field)]
    if env_only:
        envs = ", ".join(env_prefix(n) + field.upper() for n in env_only)
        raise _fail(
            f"{field} is a security setting that only the environment may set ({envs}); "
            "services ignore it in Consul KV, so nothing was written"
        )
    secret = [n for n, cls in targets.items() if cls.model_fields[field].annotation is SecretStr]
    if secret:
        envs = ", ".join(env_prefix(n) + field.upper() for n in secret)
        raise _fail(
            f"{field} is a secret and Consul KV would hold it in plain text; set it in "
            f"the environment of the service instead ({envs})"
        )
    parsed = parse_value(value)
    full_key = kv_prefix(service) + key
    consul = ConsulClientFactory.from_env(consul_addr)
    try:
        client = consul.client()
        _, entries = client.kv.get(KV_ROOT, recurse=True)
    except CONSUL_UNREACHABLE_ERRORS as exc:
        raise _fail(
            f"Consul at {consul.addr} unreachable ({exc}); start it or set "
            "CONSUL_HTTP_ADDR / --consul",
            code=1,
        ) from exc
    entries = [e for e in entries or [] if e["Key"] != full_key]
    entries.append({"Key": full_key, "Value": json.dumps(parsed).encode()})
    for name, cls in targets.items():
        loader = ConsulConfigLoader(cls, name, consul, environ={})
        kv, _ = loader.kv_layers(entries)
        errors = check_value(loader, kv, field)
        if errors:
            raise _fail(
                f"{name} would reject {full_key} = {value}: {'; '.join(errors)}. Nothing was "
                "written; fix the value (JSON: quote text as '\"...\"', lists as '[...]')"
            )
    client.kv.put(full_key, json.dumps(parsed))
    shown = json.dumps(parsed)
    live = [n for n, cls in targets.items() if not needs_restart(cls, field)]
    restart = [n for n, cls in targets.items() if needs_restart(cls, field)]
    said = []
    if live:
        said.append(f"picked up live by {', '.join(live)}")
    if restart:
        said.append(f"needs a restart of {', '.join(restart)} ({field} is read at start-up)")
    if service == GLOBAL_SCOPE:
        own = {e["Key"] for e in entries}
        for name in targets:
            mine = kv_prefix(name) + key
            if mine in own:
                said.append(f"{mine} is set too and wins for {name}")
    typer.echo(f"{full_key} = {shown}: {'; '.join(said)}")


@config_app.command("migrate")
def migrate(
    from_dir: Path = typer.Option(..., "--from", help="Folder with global.yaml, <service>.yaml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, change nothing."),
    prune: bool = typer.Option(
        False, "--prune", help="Delete keys of these services that the files no longer have."
    ),
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
        typer.echo(
            f"error: Consul at {consul.addr} unreachable ({exc}); start it or set "
            "CONSUL_HTTP_ADDR / --consul",
            err=True,
        )
        raise typer.Exit(1) from exc
    for change in plan.changes:
        typer.echo(change.describe())
    scopes = ", ".join(plan.scopes)
    summary = f"{len(plan.changes)} change(s), {plan.unchanged} unchanged ({scopes})"
    restarts = restarts_needed([c.key for c in plan.changes])
    if dry_run:
        later = f"; would need a restart of {describe_restarts(restarts)}" if restarts else ""
        typer.echo(f"dry run: {summary}{later}; run without --dry-run to apply")
        return
    apply_migration(consul, plan)
    if restarts:
        typer.echo(
            f"applied: {summary}; needs a restart of {describe_restarts(restarts)}, "
            "the other changes are picked up live"
        )
    else:
        typer.echo(f"applied: {summary}; running services pick the changes up live")


app.add_typer(config_app, name="config")
