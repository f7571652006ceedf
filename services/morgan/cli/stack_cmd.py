"""`morgan` sub-commands: the dev stack on this machine (up, down, status, logs, verify, build)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.config import StackConfigError
from infra.placement import PlacementError
from morgan.cli.main import app
from morgan.lab import compose_runner as cr
from morgan.lab import endpoints as eps
from morgan.lab import images as img
from morgan.lab import keys, model_seed
from morgan.lab import stack as st
from morgan.lab.secrets import MissingSecretError, ensure_env
from morgan.lab.wheelhouse import WheelhouseError

console = Console()
# Failures with a message that names the fix: printed on one line, exit 1.
STACK_ERRORS: tuple[type[Exception], ...] = (
    img.ImageBuildError,
    st.StackError,
    StackConfigError,
    PlacementError,
    WheelhouseError,
    MissingSecretError,
)
STACK_OPTION = typer.Option("dev", "--stack", "-s", help="Stack to run (its Pulumi.<stack>.yaml).")


def _fail(message: str) -> None:
    # The message is text, not markup: paths and values may hold brackets.
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


def build_images(
    stack: str, root: Path, offline_support: bool | None = None, built: dict[str, str] | None = None
) -> dict[str, str]:
    """Build every image the stack needs; returns the support images to use (server -> ref).

    `built`, when given, receives image name -> current content-tagged ref.
    """
    config = st.load_config(stack, root)
    p = st.paths(stack, root)
    builder = img.ImageBuilder(root, p.state, log=lambda m: console.print(f"  [dim]{m}[/dim]"))
    if img.image_id(img.base_image()) is None:
        _fail(f"base image {img.base_image()} is missing; run scripts/setup (it builds it)")
    used = st.images_used(config)
    local: list[str] = []
    for server, tag in img.support_tags().items():
        ref = getattr(config.images.support, server)
        if ref not in used:
            continue
        if ref.endswith(f"{img.LOCAL_SUPPORT_REPO}/{server}:{tag}"):
            local.append(server)  # the stack names the local build (e.g. in its registry)
            continue
        upstream = img.SUPPORT_UPSTREAM.get(server)
        if upstream is None:
            continue
        if offline_support is None:
            use_local = not img.upstream_available(upstream, timeout=30)
        else:
            use_local = offline_support
        if use_local:
            local.append(server)
    specs = [s for s in img.support_specs(root) if s.name.split("/")[-1] in local]
    specs += img.runtime_specs(root) + img.service_specs(root, config.images.version)

    def report(result: img.BuildResult) -> None:
        state = f"built in {result.seconds:.0f}s" if result.built else "cached"
        console.print(f"  [green]✓[/green] {result.ref:<48} {state}")

    with console.status("building images"):
        builder.build_all(specs, on_done=report)
    if built is not None:
        built.update(builder.tags)
    return st.local_support_refs(
        [s for s in local if getattr(config.images.support, s) == img.SUPPORT_UPSTREAM.get(s)]
    )


@app.command()
def build(
    stack: str = STACK_OPTION,
    local_support: bool = typer.Option(
        False,
        "--local-support",
        help="Build local supporting-server images without asking a registry.",
    ),
) -> None:
    """Build (or reuse) every image of the stack; unchanged images are skipped."""
    try:
        build_images(stack, img.repo_root(), True if local_support else None)
    except STACK_ERRORS as err:
        _fail(str(err))


@app.command()
def up(stack: str = STACK_OPTION) -> None:
    """Build the images, start the stack with Docker Compose, and print how to talk to it."""
    root = img.repo_root()
    p = st.paths(stack, root)
    t0 = time.monotonic()
    try:
        console.print(f"[bold]morgan up[/bold] — stack {stack}")
        st.check_runnable(st.load_config(stack, root))
        current: dict[str, str] = {}
        local = build_images(stack, root, built=current)
        config = st.with_support_images(st.load_config(stack, root), local)
        rendered = st.render(config)
        deployment, doc = rendered.deployment, rendered.doc
        fresh_secrets = not p.env_file.exists()
        env = ensure_env(p.env_file, rendered.secret_names)
        if fresh_secrets:
            cr.check_no_stale_volumes(p)
        path = cr.write_compose(p, doc)
        console.print(f"  [green]✓[/green] rendered {len(doc['services'])} services to {path}")
        with console.status("creating containers and volumes"):
            cr.compose(p, "create", "--remove-orphans")
        volume = cr.project_volume(p, config.services.llm.models_volume)
        seeded = model_seed.seed_models(
            volume, img.base_image(), config.services.llm.engine or "auto"
        )
        if seeded:
            console.print(
                f"  [bold yellow]![/bold yellow] [yellow]{model_seed.TINY_MODEL_WARNING}[/yellow]"
                f" (kinds: {', '.join(seeded)})"
            )
        ep = eps.endpoints(deployment, env)
        eps.save_endpoints(p, ep)
        # The first start phase: Consul, then what Pulumi's ConsulKv resources write on a fleet.
        with console.status("starting Consul"):
            cr.compose(p, "up", "-d", "--wait", *deployment.start_order[0])
        written = keys.write_kv(keys.key_store(ep), deployment.kv)
        console.print(f"  [green]✓[/green] wrote {written} settings to Consul KV")
        service_key = deployment.service_key
        if keys.ensure_service_key_record(
            keys.key_store(ep), env[service_key.variable], service_key
        ):
            console.print("  [green]✓[/green] stored the record of core's model-service key")
        with console.status("starting containers (docker compose up -d --wait)"):
            cr.compose(p, "up", "-d", "--wait", "--remove-orphans")
        with console.status("waiting for the gateway to route to core"):
            eps.wait_for_gateway(ep)
        key = keys.create_api_key(keys.key_store(ep))
        img.prune_stale(current)
    except STACK_ERRORS as err:
        _fail(str(err))
        return
    console.print(f"  [green]✓[/green] stack up in {time.monotonic() - t0:.0f}s")
    console.print(
        f"\nGateway: [bold]{ep.gateway_url}[/bold] (Traefik's own TLS certificate: curl -k)"
    )
    console.print(f"API key: [bold]{key}[/bold]\n")
    console.print("Try a text turn:")
    console.print(
        f"  curl -sk {ep.gateway_url}/api/text -H 'X-API-Key: {key}'"
        " -H 'Content-Type: application/json'"
        ' -d \'{"text": "Hello Morgan"}\'',
        soft_wrap=True,
        highlight=False,
    )
    console.print("\nNext: `morgan status`, `morgan verify`, `morgan down`.")


@app.command()
def down(
    stack: str = STACK_OPTION,
    volumes: bool = typer.Option(False, "--volumes", help="Also delete the stack's data volumes."),
) -> None:
    """Stop and remove the stack's containers (data volumes stay unless --volumes)."""
    p = st.paths(stack)
    try:
        args = ["down", "--remove-orphans", *(["--volumes"] if volumes else [])]
        with console.status("stopping containers"):
            cr.compose(p, *args)
    except st.StackError as err:
        _fail(str(err))
    console.print(f"stack {stack} is down" + ("; volumes deleted" if volumes else "; data kept"))


@app.command()
def status(stack: str = STACK_OPTION) -> None:
    """Per host, each container's state and health, its service's health in Consul and, on a
    fleet, each Morgan service's requests, errors and p95 latency (exit 1 when one is down)."""
    from morgan.deploy.outputs import outputs_file

    p = st.paths(stack)
    if outputs_file(p).exists():
        from morgan.cli.fleet_status_view import print_fleet_status

        if not print_fleet_status(stack, p, console):
            raise typer.Exit(1)
        return
    try:
        rows = cr.running_containers(p)
        ep = eps.load_endpoints(p)
    except st.StackError as err:
        _fail(str(err))
        return
    try:
        health = eps.consul_health(ep.consul_addr, ep.consul_token)
    except Exception as err:  # Consul down is a status to show, not a crash.
        health = {}
        console.print(f"[yellow]Consul at {ep.consul_addr} does not answer ({err})[/yellow]")
    doc = yaml.safe_load(p.compose_file.read_text())
    table = Table(title=f"stack {stack}")
    table.add_column("container", no_wrap=True)
    for column in ("state", "docker health", "consul service", "consul health"):
        table.add_column(column)
    for row in rows:
        service = str(row.get("Service", ""))
        consul_name = st.consul_name(doc, service)
        table.add_row(
            str(row.get("Name", "")),
            str(row.get("State", "")),
            str(row.get("Health", "")) or "-",
            consul_name,
            health.get(consul_name, "-"),
        )
    console.print(table)
    console.print(f"Gateway: {ep.gateway_url}   Consul: http://{ep.consul_addr}")


@app.command()
def logs(
    service: str = typer.Argument(
        ..., help="Compose service name, e.g. core-1 (see `morgan status`)."
    ),
    stack: str = STACK_OPTION,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(200, "--tail", help="Lines to show from the end."),
) -> None:
    """Print one service's logs."""
    p = st.paths(stack)
    try:
        names = [str(r.get("Service")) for r in cr.running_containers(p)]
        if service not in names:
            _fail(f"no service {service!r} in stack {stack}; choose one of {', '.join(names)}")
        args = ["logs", "--no-color", "--tail", str(tail), *(["-f"] if follow else []), service]
        cr.compose(p, *args, check=True, capture=False)
    except st.StackError as err:
        _fail(str(err))


@app.command()
def lock(
    upgrade: bool = typer.Option(
        False, "--upgrade", help="Re-resolve every pin to the newest release pyproject.toml allows."
    ),
) -> None:
    """Rewrite uv.lock for pyproject.toml and export images/lock/ from it."""
    from morgan.lab.lock import LockError, lock_file, write_locks

    root = img.repo_root()
    console.print(f"{'upgrading' if upgrade else 'updating'} {lock_file(root)} (asks PyPI)…")
    try:
        written = write_locks(root, upgrade=upgrade)
    except LockError as err:
        _fail(str(err))
        return
    console.print(f"  [green]✓[/green] lock: {lock_file(root)}")
    for flavour, path in written.items():
        console.print(f"  [green]✓[/green] {flavour}: {path}")
    console.print("Next: scripts/setup installs the new lock; commit uv.lock and images/lock/.")


@app.command()
def verify(
    stack: str = STACK_OPTION,
    outputs: Path | None = typer.Option(
        None,
        "--outputs",
        help="Check the fleet these stack outputs describe: a file saved with"
        " `pulumi stack output --json --show-secrets` (default: what `morgan deploy` wrote).",
    ),
    pytest_args: list[str] = typer.Argument(None, help="Extra pytest arguments, e.g. -k consul."),
) -> None:
    """Check the running stack: every container from the inside (testinfra), then end to end."""
    import os

    import pytest

    from morgan.deploy import checks as fleet_checks
    from morgan.deploy.engine import DeployError
    from morgan.deploy.outputs import (
        OUTPUTS_ENV,
        PULUMI_OUTPUTS_COMMAND,
        outputs_file,
        read_outputs,
    )
    from morgan.lab import checks

    p = st.paths(stack)
    if outputs is not None:
        try:
            read_outputs(outputs, made_by=PULUMI_OUTPUTS_COMMAND)
        except DeployError as err:
            _fail(str(err))
        os.environ[OUTPUTS_ENV] = str(outputs.resolve())
    deployed = outputs is not None or outputs_file(p).exists()
    if not deployed and not p.info_file.exists():
        _fail(
            f"stack {stack!r} is not up here; run `morgan up --stack {stack}` (one machine)"
            f" or `morgan deploy --stack {stack}` (a fleet) first, or name the outputs of a"
            " `pulumi up` with --outputs FILE"
        )
    os.environ["MORGAN_STACK"] = stack
    # A fleet is checked host by host from its outputs.
    folder = Path(str((fleet_checks if deployed else checks).__file__)).parent
    args = [str(folder), "-p", "no:cacheprovider", "-q", "--rootdir", str(folder)]
    # The project's pytest settings (markers, test paths) are not the checks' settings.
    args += ["-c", os.devnull, "-W", "ignore:Unverified HTTPS request", *(pytest_args or [])]
    code = pytest.main(args)
    raise typer.Exit(int(code))
