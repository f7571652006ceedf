"""A stack on this machine: its config, its deployment rendered to compose for `morgan up`.

`morgan up` = build images (cached) -> render the deployment with the infra
compose renderer -> post-process for this machine -> start Consul, write the KV
entries and core's service-key record (`keys`) -> `docker compose up -d --wait`
(`compose_runner`) -> seed the model volume (`model_seed`) -> create an API key.
Where the stack is reached lives in `endpoints`. Everything it writes lives under
`.morgan/` (gitignored), its secrets per machine (`secrets`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from infra.config import MorganStackConfig, load_stack_file, stack_file_for
from morgan.lab.images import LOCAL_SUPPORT_REPO, SUPPORT_UPSTREAM, repo_root

if TYPE_CHECKING:
    from infra.deployment import Deployment


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


def images_used(config: MorganStackConfig) -> set[str]:
    """Every image a container of the stack runs (the KV seed's too)."""
    from infra.deployment import build_deployment
    from infra.placement import make_plan

    deployment = build_deployment(make_plan(config), repo_root())
    return {s.image for s in deployment.rendered_specs()}


def local_support_refs(servers: list[str]) -> dict[str, str]:
    return {s: f"{LOCAL_SUPPORT_REPO}/{s}:{SUPPORT_UPSTREAM[s].rsplit(':', 1)[1]}" for s in servers}


def check_runnable(config: MorganStackConfig) -> None:
    """`morgan up` runs stacks of one machine; fleets go through Pulumi."""
    if len(config.hosts) != 1:
        raise StackError(
            f"stack {config.stack!r} has {len(config.hosts)} hosts; `morgan up` runs one-machine"
            " stacks (use `pulumi up` for fleets)"
        )


@dataclass(frozen=True)
class RenderedStack:
    """The stack's deployment and the compose document of its one host."""

    deployment: Deployment
    doc: dict[str, Any]
    # Variables the compose file reads from the stack's secrets file.
    secret_names: list[str]


def render(config: MorganStackConfig) -> RenderedStack:
    """The deployment of the stack's (single) host, rendered to compose for this machine.

    Without the KV seed: `morgan up` writes the deployment's KV entries itself.
    """
    try:
        from infra.deployment import build_deployment
        from infra.placement import make_plan
        from infra.render.compose import render_compose
    except ImportError as err:
        raise StackError(
            f"the compose renderer is not importable ({err}); install morgan[infra]"
            " (scripts/setup does) to run stacks with `morgan up`"
        ) from err
    check_runnable(config)
    deployment = build_deployment(make_plan(config), repo_root())
    host = deployment.hosts[0]
    doc = render_compose(deployment, host, kv_seed=False)
    if not doc.get("services"):
        raise StackError("the compose renderer returned no services; check infra.render.compose")
    names = deployment.secret_variables(host)
    return RenderedStack(deployment, post_process(doc, deployment), names)


def post_process(doc: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """Adjustments the local dev stack needs on top of the renderer's output.

    Kept thin and listed here so the renderer can absorb them:
    - `pull_policy: never` on images built here, so compose never asks a registry
      for them (no registry answers on an offline machine);
    - with the local Prometheus image (Debian's build has no Consul service
      discovery), Consul SD jobs get the deployment's static targets instead;
    - a `morgan.config-hash` label per service, so a changed config file
      recreates its container on the next `morgan up`.
    """
    for service in doc.get("services", {}).values():
        image = str(service.get("image", ""))
        if image.startswith(("morgan-", f"{LOCAL_SUPPORT_REPO}/")):
            service.setdefault("pull_policy", "never")
    prometheus = service_of_role(doc, "prometheus")
    if prometheus and str(prometheus[1].get("image", "")).startswith(f"{LOCAL_SUPPORT_REPO}/"):
        targets = {
            name: [e.address for e in eps] for name, eps in deployment.endpoints.services.items()
        }
        for mount in prometheus[1].get("configs") or []:
            config = doc.get("configs", {}).get(mount.get("source"), {})
            if "content" in config and str(mount.get("target", "")).endswith("prometheus.yml"):
                config["content"] = consul_sd_to_static(str(config["content"]), targets)
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


def consul_sd_to_static(content: str, targets: dict[str, list[str]]) -> str:
    """Replace Consul service discovery in a Prometheus config with the stack's static targets.

    Debian's Prometheus (the local equivalent of prom/prometheus) is built without
    Consul service discovery and refuses such a config. On one machine the targets
    are known from the rendering, so the same scrape jobs get static targets with
    the labels the Consul relabelling would have set (service, host, instance).
    """
    prom = yaml.safe_load(content)
    if not isinstance(prom, dict):
        return content
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


def is_job(doc: dict[str, Any], service: str) -> bool:
    """A one-shot job (label morgan.job): it runs once, exits 0 and stays exited."""
    labels = doc.get("services", {}).get(service, {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get("morgan.job") == "true"


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
