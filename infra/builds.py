"""Which Morgan images each host builds, in order, with which Dockerfile and build args.

Service images build FROM a runtime image (`images/runtime`, pinned Python
dependencies) that itself builds FROM `BASE_IMAGE`; CUDA variants use the
service's `Dockerfile.cuda` FROM `CUDA_BASE_IMAGE` where it exists, else their CPU runtime
(`morgan.catalog.build_runtimes`: core also copies from the torch runtime). Every build
gets `BASE_IMAGE`. The build context is the repository root (the Dockerfiles
copy the lock files and the package source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from morgan.catalog import build_runtimes

from infra.placement import Plan
from infra.specs import images_needed


@dataclass(frozen=True)
class BuildStep:
    host: str
    name: str
    dockerfile: str
    platform: str
    args: dict[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()  # images on the same host this build starts FROM

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.name)


def _prefix(plan: Plan) -> str:
    registry = plan.config.images.registry
    return f"{registry.rstrip('/')}/" if registry else ""


def build_steps(plan: Plan, root: str | Path) -> tuple[BuildStep, ...]:
    """Runtime images first, then the service images that start FROM them."""
    images = plan.config.images
    base = Path(root)
    runtimes: dict[tuple[str, str], BuildStep] = {}
    services: list[BuildStep] = []
    for (host_name, name), ref in sorted(images_needed(plan).items()):
        platform = plan.config.host(host_name).platform
        cuda_file = Path("images") / ref.service / "Dockerfile.cuda"
        if ref.variant == "cuda" and (base / cuda_file).exists():
            services.append(
                BuildStep(
                    host=host_name,
                    name=name,
                    dockerfile=str(cuda_file),
                    platform=platform,
                    args={
                        "BASE_IMAGE": images.base_image_cuda,
                        "CUDA_BASE_IMAGE": images.base_image_cuda,
                    },
                )
            )
            continue
        # Without a Dockerfile.cuda the CUDA variant runs on the same runtime: the PyTorch
        # wheels carry their CUDA libraries and only need the host's driver.
        runtime_base = images.base_image_cpu
        args = {"BASE_IMAGE": runtime_base}
        for arg, flavour in build_runtimes(ref.service).items():
            runtime_name = f"{_prefix(plan)}morgan-runtime-{flavour}:{images.version}"
            args[arg] = runtime_name
            runtimes.setdefault(
                (host_name, runtime_name),
                BuildStep(
                    host=host_name,
                    name=runtime_name,
                    dockerfile="images/runtime/Dockerfile",
                    platform=platform,
                    args={"BASE_IMAGE": runtime_base, "FLAVOUR": flavour},
                ),
            )
        services.append(
            BuildStep(
                host=host_name,
                name=name,
                dockerfile=f"images/{ref.service}/Dockerfile",
                platform=platform,
                args=args,
                after=tuple(v for k, v in args.items() if k != "BASE_IMAGE"),
            )
        )
    return (*runtimes.values(), *services)
