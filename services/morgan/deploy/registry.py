"""The stack's registry: every image a host pulls is pushed once from this machine.

An image named `<registry>/<name>` in the deployment is the local image `<name>`
(built by `morgan build`), tagged and pushed; pushing an unchanged image moves no layer.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from infra.deployment import Deployment
from morgan.deploy.engine import DeployError


def _docker(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)  # fmt: skip


def registry_images(deployment: Deployment, registry: str) -> list[str]:
    prefix = f"{registry.rstrip('/')}/"
    refs = dict.fromkeys(s.image for s in deployment.rendered_specs(kv_seed=False))
    return [r for r in refs if r.startswith(prefix)]


def push_images(deployment: Deployment, registry: str, log: Callable[[str], None]) -> list[str]:
    """Push every image, two at a time (pushing compresses, one core per push); the
    largest first, so the small ones go while it does."""
    refs = registry_images(deployment, registry)
    sizes = {ref: _size(ref.removeprefix(f"{registry.rstrip('/')}/")) for ref in refs}
    ordered = sorted(refs, key=lambda r: -sizes[r])
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda ref: _push(deployment, registry, ref, log), ordered))
    return ordered


def _size(local: str) -> int:
    proc = _docker("image", "inspect", "-f", "{{.Size}}", local, timeout=60)
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _push(deployment: Deployment, registry: str, ref: str, log: Callable[[str], None]) -> None:
    local = ref.removeprefix(f"{registry.rstrip('/')}/")
    if _docker("image", "inspect", local, timeout=60).returncode != 0:
        raise DeployError(
            f"image {local} (pushed as {ref}) is not on this machine; run"
            f" `morgan build --stack {deployment.plan.config.stack}` first"
        )
    _docker("tag", local, ref, timeout=60)
    t = time.monotonic()
    proc = _docker("push", ref)
    if proc.returncode != 0:
        raise DeployError(
            f"pushing {ref} failed: {proc.stderr.strip()[-400:]}; check that the registry"
            f" {registry} answers and that this machine trusts its CA"
            " (/etc/docker/certs.d/<registry>/ca.crt)"
        )
    log(f"pushed {ref} ({time.monotonic() - t:.0f} s)")
