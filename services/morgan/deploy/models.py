"""Models on a remote host: its model volume gets the tiny offline test models for each kind
its services need and no real model serves yet (what `morgan up` does on this machine).

A real fleet fetches real models (`morgan models fetch`) into the volume; a tiny model
is never put over a real one.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from infra.deployment import Deployment
from morgan.deploy.engine import DockerEngine
from morgan.lab.model_seed import TINY_MARKER, tiny_variant

SEED_CONTAINER = "morgan-model-seed"
MODEL_UID = 10001  # the services' user in every Morgan image


def _tar(kind: str, source: Path, variant: str) -> bytes:
    buf = io.BytesIO()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name.endswith("/.complete"):
            return None  # the cache's own marker, not the model's
        info.uid = info.gid = MODEL_UID
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(source, arcname=f"{kind}/default", filter=owned)
        marker = f"{variant}\n".encode()
        info = tarfile.TarInfo(f"{kind}/default/{TINY_MARKER}")
        info.uid = info.gid = MODEL_UID
        info.size, info.mode = len(marker), 0o644
        tar.addfile(info, io.BytesIO(marker))
    return buf.getvalue()


def seed_host_models(engine: DockerEngine, deployment: Deployment, host: str) -> list[str]:
    """Seed the model volume of every model service on `host`; returns the kinds seeded."""
    from morgan.models.testing import cached_tiny_model

    specs = [s for s in deployment.on_host(host) if s.role in ("llm", "stt", "tts")]
    if not specs:
        return []
    llm_engine = deployment.plan.config.services.llm.engine or "auto"
    seeded: list[str] = []
    for volume in dict.fromkeys(v.name for s in specs for v in s.volumes if v.path == "/models"):
        image = specs[0].image
        engine.run("rm", "-f", SEED_CONTAINER, check=False, timeout=60)
        engine.run("create", "--name", SEED_CONTAINER, "-v", f"{volume}:/models",
                   "--entrypoint", "sh", image, "-c",
                   "for d in /models/*/default; do [ -d $d ] && echo $d $(cat $d/"
                   f"{TINY_MARKER} 2>/dev/null || echo real); done; true",
                   timeout=60)  # fmt: skip
        try:
            listing = engine.run("start", "-a", SEED_CONTAINER, timeout=120).stdout.decode()
            found = {
                Path(line.split()[0]).parent.name: line.split()[1]
                for line in listing.splitlines()
                if len(line.split()) == 2
            }
            for kind in sorted({s.role for s in specs}):
                variant = tiny_variant(kind, llm_engine)
                if found.get(kind) == "real":
                    continue
                seeded.append(kind)
                if found.get(kind) == variant:
                    continue
                archive = _tar(kind, cached_tiny_model(variant), variant)  # type: ignore[arg-type]
                engine.run("cp", "-", f"{SEED_CONTAINER}:/models", stdin=archive, timeout=600)
        finally:
            engine.run("rm", "-f", SEED_CONTAINER, check=False, timeout=60)
    return seeded
