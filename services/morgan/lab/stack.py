"""The dev stack on this machine: render the plan to compose, start it, stop it, inspect it.

`morgan up` = build images (cached) -> render the stack's plan with the infra
compose renderer -> post-process for this machine -> `docker compose up -d
--wait` -> seed the model volume -> create an API key. Everything it writes
lives under `.morgan/` (gitignored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.config import MorganStackConfig, load_stack_file, stack_file_for
from morgan.lab.images import LOCAL_SUPPORT_REPO, SUPPORT_UPSTREAM, repo_root

MODELS_VOLUME_DEFAULT = "morgan-models"
TINY_MARKER = ".morgan-tiny-test-model"
TINY_MODEL_WARNING = "using tiny test models; run `morgan models fetch` for real ones"


class StackError(RuntimeError):
    """The dev stack cannot be rendered, started or reached; the message says what to do."""


@dataclass(frozen=True)
class StackPaths:
    root: Path
    stack: str

    @property
    def state(self) -> Path:
        return self.root / ".morgan" / self.stack

    @property
    def compose_file(self) -> Path:
        return self.state / "compose.yml"

    @property
    def info_file(self) -> Path:
        return self.state / "stack.json"

    @property
    def env_file(self) -> Path:
        # The data volumes belong to the Docker engine, not to a checkout: their secrets
        # live per machine too, so a fresh clone (CI) opens volumes an earlier one made.
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "morgan" / f"{self.project}.env"

    @property
    def project(self) -> str:
        return f"morgan-{self.stack}"


def paths(stack: str = "dev", root: Path | None = None) -> StackPaths:
    return StackPaths(root or repo_root(), stack)


def load_config(stack: str, root: Path | None = None) -> MorganStackConfig:
    return load_stack_file(stack_file_for(stack, root or repo_root()))


def with_support_images(config: MorganStackConfig, local: dict[str, str]) -> MorganStackConfig:
    """The same config with the given supporting servers pointing at local images."""
    support = config.images.support.model_copy(update=local)
    images = config.images.model_copy(update={"support": support})
    return config.model_copy(update={"images": images})


def local_support_refs(servers: list[str]) -> dict[str, str]:
    return {s: f"{LOCAL_SUPPORT_REPO}/{s}:{SUPPORT_UPSTREAM[s].rsplit(':', 1)[1]}" for s in servers}


def check_runnable(config: MorganStackConfig) -> None:
    """`morgan up` runs stacks of one machine; fleets go through Pulumi."""
    if len(config.hosts) != 1:
        raise StackError(
            f"stack {config.stack!r} has {len(config.hosts)} hosts; `morgan up` runs one-machine"
            " stacks (use `pulumi up` for fleets)"
        )


def render(config: MorganStackConfig) -> tuple[dict[str, Any], list[str]]:
    """The compose document of the stack's (single) host and the secret variables it needs."""
    try:
        from infra.placement import make_plan
        from infra.render.compose import render_compose, secret_variables
    except ImportError as err:
        raise StackError(
            f"the compose renderer is not importable ({err}); infra.render.compose must define"
            " render_compose(plan, host)"
        ) from err
    check_runnable(config)
    plan = make_plan(config)
    host = config.hosts[0].name
    rendered: Any = render_compose(plan, host)
    doc = yaml.safe_load(rendered) if isinstance(rendered, str) else rendered
    if not isinstance(doc, dict) or not doc.get("services"):
        raise StackError("the compose renderer returned no services; check infra.render.compose")
    names = [n for n in secret_variables(plan, host) if n != SERVICE_KEY_ENV]
    return post_process(doc), names


def post_process(doc: dict[str, Any]) -> dict[str, Any]:
    """Adjustments the local dev stack needs on top of the renderer's output.

    Kept thin and listed here so the renderer can absorb them:
    - `pull_policy: never` on images built here, so compose never asks a registry
      for them (no registry answers on an offline machine);
    - with the local Prometheus image (Debian's build has no Consul service
      discovery), Consul SD jobs get the stack's static targets instead;
    - a `morgan.config-hash` label per service, so a changed config file
      recreates its container on the next `morgan up`;
    - no `MORGAN_CORE_SERVICE_API_KEY` in core's environment: here the key is made by
      `ensure_service_key` and read from KV (the environment would override it).
    """
    for name, service in doc.get("services", {}).items():
        if role_of(doc, name) == "core" and isinstance(service.get("environment"), dict):
            service["environment"].pop(SERVICE_KEY_ENV, None)
    for service in doc.get("services", {}).values():
        image = str(service.get("image", ""))
        if image.startswith(("morgan-", f"{LOCAL_SUPPORT_REPO}/")):
            service.setdefault("pull_policy", "never")
    prometheus = service_of_role(doc, "prometheus")
    if prometheus and str(prometheus[1].get("image", "")).startswith(f"{LOCAL_SUPPORT_REPO}/"):
        for mount in prometheus[1].get("configs") or []:
            config = doc.get("configs", {}).get(mount.get("source"), {})
            if "content" in config and str(mount.get("target", "")).endswith("prometheus.yml"):
                config["content"] = consul_sd_to_static(str(config["content"]), doc)
    for service in doc.get("services", {}).values():
        # Compose does not recreate a container when only a config's content changed;
        # a label with their hash makes it.
        contents = [
            str(doc.get("configs", {}).get(m.get("source"), {}).get("content", ""))
            for m in service.get("configs") or []
        ]
        if contents:
            digest = hashlib.sha256("\0".join(contents).encode()).hexdigest()[:16]
            service.setdefault("labels", {})["morgan.config-hash"] = digest
    return doc


def _morgan_targets(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Consul service name -> host:port of its containers in this (one-machine) stack."""
    out: dict[str, list[str]] = {}
    for name, service in doc.get("services", {}).items():
        role = role_of(doc, name)
        env = service.get("environment") or {}
        port = env.get(f"MORGAN_{role.upper()}_PORT") if isinstance(env, dict) else None
        consul_name = env.get(f"MORGAN_{role.upper()}_SERVICE_NAME") if port else None
        if consul_name:
            out.setdefault(str(consul_name), []).append(f"127.0.0.1:{port}")
    return out


def consul_sd_to_static(content: str, doc: dict[str, Any]) -> str:
    """Replace Consul service discovery in a Prometheus config with the stack's static targets.

    Debian's Prometheus (the local equivalent of prom/prometheus) is built without
    Consul service discovery and refuses such a config. On one machine the targets
    are known from the rendering, so the same scrape jobs get static targets with
    the labels the Consul relabelling would have set (service, host, instance).
    """
    prom = yaml.safe_load(content)
    if not isinstance(prom, dict):
        return content
    targets = _morgan_targets(doc)
    for job in prom.get("scrape_configs") or []:
        sd = job.pop("consul_sd_configs", None)
        if sd is None:
            continue
        names = [n for entry in sd for n in entry.get("services") or []] or sorted(targets)
        job["relabel_configs"] = [
            r
            for r in job.get("relabel_configs") or []
            if not any(str(s).startswith("__meta_consul") for s in r.get("source_labels") or [])
        ]
        if not job["relabel_configs"]:
            job.pop("relabel_configs")
        job["static_configs"] = [
            {"targets": [t], "labels": {"service": n, "host": "local", "instance": f"{n}-{t}"}}
            for n in names
            for t in targets.get(n, [])
        ]
    return yaml.safe_dump(prom, sort_keys=False)


def write_compose(p: StackPaths, doc: dict[str, Any]) -> Path:
    p.state.mkdir(parents=True, exist_ok=True)
    p.compose_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p.compose_file


def compose(
    p: StackPaths, *args: str, check: bool = True, capture: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    if not p.compose_file.exists():
        raise StackError(
            f"no rendered stack at {p.compose_file}; run `morgan up --stack {p.stack}` first"
        )
    cmd = ["docker", "compose", "-p", p.project, "-f", str(p.compose_file)]
    if p.env_file.exists():
        cmd += ["--env-file", str(p.env_file)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        detail = ((proc.stderr or "") + (proc.stdout or "")).strip()[-800:]
        raise StackError(f"docker compose {args[0]} failed: {detail}")
    return proc


def running_containers(p: StackPaths) -> list[dict[str, Any]]:
    """`docker compose ps` rows (Service, Name, State, Health, Publishers)."""
    proc = compose(p, "ps", "--all", "--format", "json")
    rows: list[dict[str, Any]] = []
    out = proc.stdout.strip()
    if not out:
        return rows
    if out.startswith("["):
        rows = json.loads(out)
    else:
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return rows


def role_of(doc: dict[str, Any], service: str) -> str:
    """The plan role of a compose service (label `morgan.role`), e.g. `core`, `traefik`."""
    labels = doc.get("services", {}).get(service, {}).get("labels") or {}
    return str(labels.get("morgan.role", service)) if isinstance(labels, dict) else service


def consul_name(doc: dict[str, Any], service: str) -> str:
    """The name a compose service's container is registered under in Consul."""
    role = role_of(doc, service)
    env = doc.get("services", {}).get(service, {}).get("environment") or {}
    name = env.get(f"MORGAN_{role.upper()}_SERVICE_NAME") if isinstance(env, dict) else None
    if name:
        return str(name)
    return "consul" if role.startswith("consul-") else role


def service_of_role(doc: dict[str, Any], role: str) -> tuple[str, dict[str, Any]] | None:
    for name, service in doc.get("services", {}).items():
        if role_of(doc, name) == role:
            return name, service
    return None


def published_port(service: dict[str, Any], container_port: int) -> int:
    """Where a container port is reachable from this machine (host networking: itself)."""
    if service.get("network_mode") == "host":
        return container_port
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if int(entry.get("target", 0)) == container_port and entry.get("published"):
                return int(entry["published"])
        else:
            parts = str(entry).split("/")[0].split(":")
            if len(parts) >= 2 and int(parts[-1]) == container_port:
                return int(parts[-2])
    raise StackError(
        f"port {container_port} is not published to this machine by the rendered stack;"
        " the renderer must publish it (or use host networking)"
    )


@dataclass(frozen=True)
class Endpoints:
    consul_addr: str
    gateway_url: str
    consul_token: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "consul_addr": self.consul_addr,
                "gateway_url": self.gateway_url,
                "consul_token": self.consul_token,
            }
        )


def endpoints(config: MorganStackConfig, doc: dict[str, Any], env: dict[str, str]) -> Endpoints:
    """Where this machine reaches the stack: Consul's HTTP API and Traefik's HTTPS entry point."""
    consul = service_of_role(doc, "consul-server") or service_of_role(doc, "consul-agent")
    traefik = service_of_role(doc, "traefik")
    if consul is None or traefik is None:
        raise StackError("the rendered stack has no consul or traefik service; check the plan")
    consul_port = published_port(consul[1], 8500)
    # The web entry point only redirects to websecure (TLS, Traefik's own certificate).
    gw_port = published_port(traefik[1], config.gateway.https_port)
    return Endpoints(
        f"127.0.0.1:{consul_port}",
        f"https://127.0.0.1:{gw_port}",
        env.get("MORGAN_CONSUL_MANAGEMENT_TOKEN"),
    )


def save_endpoints(p: StackPaths, ep: Endpoints) -> None:
    p.state.mkdir(parents=True, exist_ok=True)
    p.info_file.write_text(ep.to_json())
    os.chmod(p.info_file, 0o600)


def load_endpoints(p: StackPaths) -> Endpoints:
    try:
        data = json.loads(p.info_file.read_text())
    except FileNotFoundError:
        raise StackError(
            f"stack {p.stack!r} was never started here; run `morgan up --stack {p.stack}`"
        ) from None
    return Endpoints(data["consul_addr"], data["gateway_url"], data.get("consul_token"))


def consul_health(consul_addr: str, token: str | None = None) -> dict[str, str]:
    """Consul service name -> worst check status of its instances (passing/warning/critical)."""
    import consul as consul_lib

    host, _, port = consul_addr.partition(":")
    client = consul_lib.Consul(host=host, port=int(port or 8500), token=token)
    _, services = client.catalog.services()
    order = {"passing": 0, "warning": 1, "critical": 2}
    out: dict[str, str] = {}
    for name in services:
        _, nodes = client.health.service(name)
        worst = "critical" if not nodes else "passing"
        for node in nodes:
            for check in node.get("Checks", []):
                if order.get(check["Status"], 2) > order[worst]:
                    worst = check["Status"]
        out[name] = worst
    return out


def check_no_stale_volumes(p: StackPaths) -> None:
    """New secrets cannot open old data: refuse volumes made with secrets that are gone."""
    label = f"label=com.docker.compose.project={p.project}"
    proc = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    volumes = proc.stdout.split()
    if volumes:
        p.env_file.unlink(missing_ok=True)
        raise StackError(
            f"{p.env_file} (the stack's secrets) is gone but its data volumes remain"
            f" ({', '.join(volumes)}); PostgreSQL and Consul would refuse the new secrets."
            f" Restore the file, or delete the data with `docker volume rm {' '.join(volumes)}`"
        )


def project_volume(p: StackPaths, volume: str) -> str:
    """The engine's name of a compose volume: compose prefixes it with the project."""
    return f"{p.project}_{volume}"


def seed_models(volume: str, base_image: str) -> list[str]:
    """Put the tiny test models in the model volume for every kind that has no model yet.

    Returns the kinds served by a tiny model (empty when real models are present).
    """
    from morgan.models.directory import KINDS
    from morgan.models.testing import cached_tiny_model

    # One line per installed model: "<kind> <name> tiny|real".
    present = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{volume}:/models", base_image, "sh", "-c",
         "for d in /models/llm/* /models/stt/* /models/tts/*; do [ -d \"$d\" ] || continue;"
         f" k=$(basename $(dirname $d)); [ -e $d/{TINY_MARKER} ] && echo $k tiny || echo $k real;"
         " done"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found: dict[str, set[str]] = {}
    for line in present.stdout.splitlines():
        kind, _, what = line.partition(" ")
        found.setdefault(kind, set()).add(what)
    seeded: list[str] = []
    for kind in KINDS:
        if "real" in found.get(kind, set()):
            continue
        seeded.append(kind)
        if "tiny" in found.get(kind, set()):
            continue
        source = cached_tiny_model(kind)
        proc = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{volume}:/models", "-v", f"{source}:/src:ro",
             base_image, "sh", "-c",
             f"mkdir -p /models/{kind} && cp -a /src /models/{kind}/default"
             f" && rm -f /models/{kind}/default/.complete"
             f" && touch /models/{kind}/default/{TINY_MARKER}"
             " && chown -R 10001:10001 /models"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(
                f"could not copy the tiny {kind} model into volume {volume}: {proc.stderr.strip()}"
            )
    return seeded


def _key_store(ep: Endpoints) -> Any:
    from morgan.shared.auth import ApiKeyStore
    from morgan.shared.consul_client import ConsulClientFactory

    factory = ConsulClientFactory.from_env(ep.consul_addr)
    if ep.consul_token:
        factory = dataclasses.replace(factory, token=ep.consul_token)
    return ApiKeyStore(factory)


def wait_for_gateway(ep: Endpoints, timeout: float = 120) -> float:
    """Wait until Traefik routes to a healthy core (its Consul catalog refreshes every ~15 s).

    Returns the seconds waited.
    """
    import httpx

    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout:
        try:
            resp = httpx.get(f"{ep.gateway_url}/health", verify=False, timeout=5)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"HTTP {resp.status_code}: {resp.text[:80].strip()}"
        except httpx.HTTPError as err:
            last = str(err) or type(err).__name__
        time.sleep(1)
    raise StackError(
        f"the gateway {ep.gateway_url} did not route to core within {timeout:.0f} s ({last});"
        " see `morgan status` and `morgan logs morgan-traefik`"
    )


def create_api_key(ep: Endpoints, owner: str = "dev") -> str:
    """A new API key in the stack's Consul KV (the `morgan keys create` logic)."""
    _record, key = _key_store(ep).create(owner)
    return str(key)


SERVICE_KEY_KV = "morgan/config/core/service_api_key"
# What a Pulumi stack gives core instead (infra/components/service_key.py).
SERVICE_KEY_ENV = "MORGAN_CORE_SERVICE_API_KEY"


def ensure_service_key(ep: Endpoints) -> bool:
    """Give core the API key it sends to the model services (their /v1 routes need one).

    Stored as core's `service_api_key` in Consul KV before core starts; kept while
    it still verifies (Consul's data volume persists across `morgan down`).
    Returns True when a new key was made.
    """
    from morgan.shared.auth import AuthError

    store = _key_store(ep)
    client = store.consul.client()
    _index, item = client.kv.get(SERVICE_KEY_KV)
    if item and item.get("Value"):
        try:
            store.verify(json.loads(item["Value"]))
            return False
        except (AuthError, ValueError):
            pass
    _record, key = store.create("morgan-core (service key)")
    client.kv.put(SERVICE_KEY_KV, json.dumps(key))
    return True
