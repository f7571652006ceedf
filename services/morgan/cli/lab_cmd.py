"""`morgan lab up|down|status|add-host|remove-host`: the multi-host lab's simulated hosts
on this machine."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from morgan.cli.main import app
from morgan.lab import hosts as lab
from morgan.lab import images as img

lab_app = typer.Typer(help="The multi-host lab: simulated hosts h1…hN, each its own Docker.")
console = Console()


def _paths() -> lab.LabPaths:
    return lab.LabPaths(img.repo_root() / ".morgan" / "lab")


def build_lab_images() -> tuple[str, str]:
    """The lab host image and the lab registry image (built once, then cached)."""
    root = img.repo_root()
    specs = [
        img.ImageSpec(
            name=lab.IMAGE,
            dockerfile=root / "images/labhost/Dockerfile",
            files=(
                (root / "scripts/setup-linux.sh", "setup-linux.sh"),
                (root / "services/morgan/host_probe.py", "host_probe.py"),
            ),
            build_args={"BASE_IMAGE": img.base_image()},
        ),
        img.ImageSpec(
            name=lab.REGISTRY_IMAGE,
            dockerfile=root / "images/labregistry/Dockerfile",
            files=(),
            build_args={"BASE_IMAGE": img.base_image()},
        ),
    ]
    builder = img.ImageBuilder(root, _paths().root, log=lambda m: console.print(f"  {m}"))
    refs = []
    for spec in specs:
        result = builder.build(spec, None)
        console.print(f"  [green]✓[/green] {result.ref} {'built' if result.built else 'cached'}")
        refs.append(result.ref)
    return refs[0], refs[1]


@lab_app.command("up")
def up(hosts: int = typer.Option(4, "--hosts", help="How many hosts (h1…hN).")) -> None:
    """Start the lab hosts (replacing a previous lab) and wait for every Docker daemon."""
    try:
        host_image, registry_image = build_lab_images()
        made = lab.up(_paths(), hosts, host_image, registry_image,
                      log=lambda m: console.print(f"  [green]✓[/green] {m}"))  # fmt: skip
    except (lab.LabError, img.ImageBuildError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"lab up: {len(made)} hosts on network {lab.NETWORK}. Next: `morgan lab status`")


@lab_app.command("down")
def down() -> None:
    """Remove the lab hosts, the registry, their network and their volumes."""
    removed = lab.down(_paths())
    console.print(f"lab down: removed {len(removed)} containers and volumes")


@lab_app.command("add-host")
def add_host(name: str = typer.Argument(..., help="The new host's name: h5, h6, …")) -> None:
    """One more host on the running lab, to rehearse adding a host
    (docs/operations/scaling.md); add its entry to the stack file to give it work."""
    try:
        host = lab.add_host(_paths(), name, log=lambda m: console.print(f"  [green]✓[/green] {m}"))
    except lab.LabError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"lab host {host.name} up at {host.address} ({host.docker})")


@lab_app.command("remove-host")
def remove_host(name: str = typer.Argument(..., help="The lab host to take away.")) -> None:
    """Take a host out of the running lab (its container and its Docker daemon's data)."""
    try:
        lab.remove_host(_paths(), name)
    except lab.LabError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"lab host {name} removed")


@lab_app.command("status")
def status() -> None:
    """Each lab host, its endpoint, and whether its Docker daemon answers there."""
    p = _paths()
    try:
        made = lab.load(p)
    except lab.LabError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    table = Table(title="morgan lab")
    for column in ("host", "address", "docker endpoint", "daemon"):
        table.add_column(column)
    failed = 0
    for host in made:
        try:
            info = lab.daemon_info(p, host)
            state = f"docker {info['version']} ({info['name']})"
        except lab.NotYet as err:
            failed += 1
            state = f"[red]no answer[/red]: {err}"
        table.add_row(host.name, host.address, host.docker, state)
    console.print(table)
    if failed:
        raise typer.Exit(1)


app.add_typer(lab_app, name="lab")
