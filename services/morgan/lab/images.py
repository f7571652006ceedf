"""Image builds for the dev stack: content-addressed, cached, offline.

Every image is tagged with a hash of what goes into it (Dockerfile, staged
files, build arguments, the tags of the images it builds on), so `morgan up`
skips any image whose inputs did not change. Builds use Docker's classic
builder (BuildKit needs the buildx plugin, which no registry here provides)
with a minimal staged context: the repository itself (with .venv) is never sent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from morgan.catalog import RUNTIME_FLAVOUR, build_runtimes
from morgan.lab import wheelhouse
from morgan.lab.lock import BUILD_GROUP, RUNTIME_EXTRAS, lock_path

BASE_IMAGE_DEFAULT = "morgan-base:py3.11-bookworm"
# Supporting servers the dev stack runs, and the official image each one stands in for.
SUPPORT_UPSTREAM: dict[str, str] = {
    "consul": "hashicorp/consul:1.16.1",
    "traefik": "traefik:v3",
    "postgres": "postgres:15",
    "redis": "redis:7",
    "prometheus": "prom/prometheus:v2.53.0",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "node_exporter": "prom/node-exporter:v1.8.1",
    "postgres_exporter": "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
    "redis_exporter": "oliver006/redis_exporter:v1.62.0",
}
LOCAL_SUPPORT_REPO = "morgan-local"
# Supporting servers with no upstream image: always built here (from Debian's packages).
LOCAL_ONLY_SUPPORT: dict[str, str] = {"patroni": "3.0.2"}


class ImageBuildError(RuntimeError):
    """A docker build failed; the message names the image, the last log line and the log."""


def repo_root() -> Path:
    # services/morgan/lab/images.py -> repository root
    return Path(__file__).resolve().parents[3]


def base_image() -> str:
    return os.environ.get("MORGAN_BASE_IMAGE", BASE_IMAGE_DEFAULT)


@dataclass(frozen=True)
class ImageSpec:
    """One image: where its Dockerfile is, what is staged next to it, what it builds on."""

    name: str
    dockerfile: Path
    # (file or folder on this machine, path inside the build context)
    files: tuple[tuple[Path, str], ...]
    build_args: dict[str, str] = field(default_factory=dict)
    needs: dict[str, str] = field(default_factory=dict)  # build arg -> image name
    uses_wheelhouse: bool = False
    extra_tags: tuple[str, ...] = ()


def _iter_files(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for item in sorted(path.rglob("*")):
        if item.is_file() and "__pycache__" not in item.parts and item.suffix != ".pyc":
            yield item


def runtime_specs(root: Path) -> list[ImageSpec]:
    return [
        ImageSpec(
            name=f"morgan-runtime-{flavour}",
            dockerfile=root / "images/runtime/Dockerfile",
            files=(
                (lock_path(root, BUILD_GROUP), "images/lock/build.txt"),
                (lock_path(root, flavour), f"images/lock/runtime-{flavour}.txt"),
            ),
            build_args={"FLAVOUR": flavour, "BASE_IMAGE": base_image()},
            uses_wheelhouse=True,
        )
        for flavour in RUNTIME_EXTRAS
    ]


def service_specs(root: Path, version: str) -> list[ImageSpec]:
    specs = []
    # Service images are tagged with the stack's image version too (what the plan names).
    for service in RUNTIME_FLAVOUR:
        specs.append(
            ImageSpec(
                name=f"morgan-{service}",
                dockerfile=root / f"images/{service}/Dockerfile",
                files=(
                    (lock_path(root, BUILD_GROUP), "images/lock/build.txt"),
                    (root / "pyproject.toml", "pyproject.toml"),
                    (root / "README.md", "README.md"),
                    (root / "services/morgan", "services/morgan"),
                ),
                needs={arg: f"morgan-runtime-{f}" for arg, f in build_runtimes(service).items()},
                uses_wheelhouse=True,
                extra_tags=(version,),
            )
        )
    return specs


def _consul_binary() -> Path:
    found = shutil.which("consul")
    return Path(found) if found else Path("/usr/local/bin/consul")


def _traefik_binary(root: Path) -> Path:
    venv = root / ".venv/bin/traefik"
    if venv.exists():
        return venv
    found = shutil.which("traefik")
    return Path(found) if found else venv


def support_tags() -> dict[str, str]:
    """Supporting server -> the tag of its local build (the upstream tag it stands in for)."""
    return {s: ref.rsplit(":", 1)[1] for s, ref in SUPPORT_UPSTREAM.items()} | LOCAL_ONLY_SUPPORT


def support_specs(root: Path) -> list[ImageSpec]:
    """Local equivalents of the official supporting images, built from the base image."""
    files: dict[str, tuple[tuple[Path, str], ...]] = {
        "consul": (
            (_consul_binary(), "consul"),
            (root / "images/consul/consul-entrypoint.sh", "consul-entrypoint.sh"),
        ),
        "traefik": (
            (_traefik_binary(root), "traefik"),
            (root / "images/traefik/traefik-entrypoint.sh", "traefik-entrypoint.sh"),
        ),
        "postgres": ((root / "images/postgres/postgres-entrypoint.sh", "postgres-entrypoint.sh"),),
        "redis": ((root / "images/redis/redis-entrypoint.sh", "redis-entrypoint.sh"),),
        "prometheus": (),
        "alertmanager": (),
        "node_exporter": (),
        "postgres_exporter": (),
        "redis_exporter": (),
        "patroni": (),
    }
    tags = support_tags()
    return [
        ImageSpec(
            name=f"{LOCAL_SUPPORT_REPO}/{server}",
            dockerfile=root / f"images/{server}/Dockerfile",
            files=files[server],
            build_args={"BASE_IMAGE": base_image()},
            extra_tags=(tags[server],),
        )
        for server in tags
    ]


@dataclass
class BuildResult:
    spec: ImageSpec
    ref: str
    built: bool
    seconds: float


def docker(
    *args: str, check: bool = True, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ImageBuildError(
            f"docker {' '.join(args[:2])}: {(proc.stderr or proc.stdout).strip()[-400:]}"
        )
    return proc


def image_id(ref: str) -> str | None:
    proc = docker("image", "inspect", "-f", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


class ImageBuilder:
    """Builds specs in order, skipping those whose content tag already exists."""

    def __init__(self, root: Path, state_dir: Path, log: Callable[[str], None] = print) -> None:
        self.root = root
        self.state_dir = state_dir
        self.log = log
        self.tags: dict[str, str] = {}

    def content_tag(self, spec: ImageSpec) -> str:
        digest = hashlib.sha256()
        digest.update(spec.dockerfile.read_bytes())
        for source, dest in spec.files:
            if not source.exists():
                raise ImageBuildError(
                    f"{spec.name}: {source} is missing; run scripts/setup (it installs consul,"
                    " traefik and the virtualenv) and retry"
                )
            for item in _iter_files(source):
                rel = dest if source.is_file() else f"{dest}/{item.relative_to(source)}"
                digest.update(rel.encode() + b"\0")
                digest.update(hashlib.sha256(item.read_bytes()).digest())
        for key, value in sorted(spec.build_args.items()):
            digest.update(f"{key}={value}".encode())
        if "BASE_IMAGE" in spec.build_args:
            digest.update((image_id(spec.build_args["BASE_IMAGE"]) or "").encode())
        for need in spec.needs.values():
            digest.update(self.tags[need].encode())
        return "h-" + digest.hexdigest()[:16]

    def _stage(self, spec: ImageSpec) -> Path:
        context = self.state_dir / "build" / spec.name.replace("/", "-")
        if context.exists():
            shutil.rmtree(context)
        context.mkdir(parents=True)
        for source, dest in spec.files:
            target = context / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(
                    source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(source, target)
        return context

    def build(self, spec: ImageSpec, find_links: str | None) -> BuildResult:
        tag = self.content_tag(spec)
        ref = f"{spec.name}:{tag}"
        self.tags[spec.name] = ref
        start = time.monotonic()
        aliases = [f"{spec.name}:{t}" for t in ("latest", *spec.extra_tags)]
        if image_id(ref) is not None:
            for alias in aliases:
                docker("tag", ref, alias)
            return BuildResult(spec, ref, False, time.monotonic() - start)
        context = self._stage(spec)
        args = dict(spec.build_args)
        for arg, need in spec.needs.items():
            args[arg] = self.tags[need]
        if spec.uses_wheelhouse and find_links:
            args["PIP_SOURCE"] = f"--no-index --find-links {find_links}"
        args["SOURCE_HASH"] = tag
        cmd = ["build", "--network", "host", "-f", str(spec.dockerfile), "-t", ref]
        for alias in aliases:
            cmd += ["-t", alias]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        cmd.append(str(context))
        log_path = self.state_dir / "logs" / f"build-{spec.name.replace('/', '-')}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        with log_path.open("w") as out:
            proc = subprocess.run(
                ["docker", *cmd], stdout=out, stderr=subprocess.STDOUT, env=env, check=False
            )
        if proc.returncode != 0:
            lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
            raise ImageBuildError(
                f"{spec.name}: docker build failed ({lines[-1] if lines else 'no output'});"
                f" see {log_path}"
            )
        shutil.rmtree(context, ignore_errors=True)
        self.remove_older(spec.name, tag)
        return BuildResult(spec, ref, True, time.monotonic() - start)

    def remove_older(self, name: str, keep: str) -> None:
        """Drop earlier content tags of `name` so rebuilds do not fill the disk (~8 GB each)."""
        proc = docker("images", name, "--format", "{{.Tag}}", check=False)
        old = [f"{name}:{t}" for t in proc.stdout.split() if t.startswith("h-") and t != keep]
        if old:
            # Fails harmlessly for an image a container still uses.
            docker("rmi", *old, check=False)
        docker("image", "prune", "-f", check=False)

    def build_all(
        self, specs: list[ImageSpec], on_done: Callable[[BuildResult], None] | None = None
    ) -> list[BuildResult]:
        """Build in order (a spec's `needs` come earlier); the wheelhouse starts only if used."""
        locks = sorted(
            {src for s in specs if s.uses_wheelhouse for src, _ in s.files if src.suffix == ".txt"}
        )
        results = []
        with ExitStack() as stack:
            url: str | None = None
            for spec in specs:
                cached = image_id(f"{spec.name}:{self.content_tag(spec)}") is not None
                if not cached and spec.uses_wheelhouse and url is None:
                    self.log("checking the wheelhouse (PyPI is asked only for missing wheels)")
                    wheelhouse.ensure_wheels(locks)
                    url = stack.enter_context(wheelhouse.serve())
                results.append(self.build(spec, url))
                if on_done:
                    on_done(results[-1])
        return results


def prune_stale(current: dict[str, str]) -> list[str]:
    """Remove content tags of Morgan's images other than the current ones (children first).

    A rebuild cannot drop an image a running container still uses; once the stack runs
    on the new images, the old ones (a stale torch runtime weighs ~8 GB) can go.
    """
    removed = []
    names = sorted(current, key=lambda n: n.startswith("morgan-runtime-"))
    for name in names:
        keep = current[name].rsplit(":", 1)[1]
        proc = docker("images", name, "--format", "{{.Tag}}", check=False)
        old = [f"{name}:{t}" for t in proc.stdout.split() if t.startswith("h-") and t != keep]
        if old and docker("rmi", *old, check=False).returncode == 0:
            removed += old
    docker("image", "prune", "-f", check=False)
    return removed


def upstream_available(ref: str, timeout: float = 60) -> bool:
    """An official image is usable when it is already here or a registry hands it over."""
    if image_id(ref) is not None:
        return True
    try:
        proc = subprocess.run(
            ["docker", "pull", "-q", ref], capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def image_size_mb(ref: str) -> float:
    proc = docker("image", "inspect", "-f", "{{.Size}}", ref)
    return int(proc.stdout.strip()) / 1e6
