"""What every role's container spec shares: image names, ports, TLS files, labels, probes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from morgan.catalog import REPLICA_PORT_STEP, SERVICE_PORTS

from infra.model import TLS_DIR, Encryption, TlsFiles
from infra.placement import Plan, Replica


@dataclass(frozen=True)
class ImageRef:
    """A Morgan image this plan needs, and which base it builds from."""

    service: str
    variant: str  # "cpu" or "cuda"

    def name(self, plan: Plan) -> str:
        images = plan.config.images
        prefix = f"{images.registry.rstrip('/')}/" if images.registry else ""
        tag = images.version if self.variant == "cpu" else f"{images.version}-{self.variant}"
        return f"{prefix}morgan-{self.service}:{tag}"

    def base_image(self, plan: Plan) -> str:
        images = plan.config.images
        return images.base_image_cuda if self.variant == "cuda" else images.base_image_cpu


def image_for(plan: Plan, service: str) -> ImageRef:
    return ImageRef(service=service, variant=plan.config.services.get(service).device)


def service_port(plan: Plan, replica: Replica) -> int:
    same_host = [r for r in plan.on_host(replica.host) if r.role == replica.role]
    return SERVICE_PORTS[replica.role] + REPLICA_PORT_STEP * same_host.index(replica)


def tls_files(plan: Plan, role: str) -> TlsFiles | None:
    return TlsFiles(role=role) if plan.config.security.internal_tls else None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def port_encryption(plan: Plan) -> Encryption:
    return "tls" if plan.config.security.internal_tls else "none"


def http_probe(port: int, path: str, tls: bool) -> tuple[str, ...]:
    """A Docker healthcheck on the container's own port. With TLS it verifies the service's
    certificate (issued for 127.0.0.1 too) and presents the container's own, as the
    services require client certificates."""
    if not tls:
        code = f"import urllib.request as u;u.urlopen('http://127.0.0.1:{port}{path}',timeout=4)"
        return ("CMD", "python3", "-c", code)
    code = (
        "import ssl,urllib.request as u;"
        f"c=ssl.create_default_context(cafile='{TLS_DIR}/ca.pem');"
        f"c.load_cert_chain('{TLS_DIR}/cert.pem','{TLS_DIR}/key.pem');"
        f"u.urlopen('https://127.0.0.1:{port}{path}',context=c,timeout=4)"
    )
    return ("CMD", "python3", "-c", code)


def wget_probe(port: int, path: str, tls: bool) -> tuple[str, ...]:
    scheme = "https" if tls else "http"
    flags = "--no-check-certificate " if tls else ""
    return ("CMD-SHELL", f"wget -q {flags}-O /dev/null {scheme}://127.0.0.1:{port}{path} || exit 1")


def auth_probe(port: int, path: str, tls: bool) -> tuple[str, ...]:
    """Healthy: the server answers, and asks for a password (a 401, which both GNU and
    BusyBox wget print as `401 Unauthorized`). The probe holds no secret, and a server that
    answered without one would be unhealthy."""
    scheme = "https" if tls else "http"
    flags = "--no-check-certificate " if tls else ""
    url = f"{scheme}://127.0.0.1:{port}{path}"
    return ("CMD-SHELL", f"wget {flags}-O /dev/null {url} 2>&1 | grep -q '401 Unauthorized'")


def role_labels(plan: Plan, replica: Replica) -> dict[str, str]:
    return {
        "morgan.role": replica.role,
        "morgan.stack": plan.config.stack,
        "morgan.host": replica.host,
        # Read by the policy pack: GPU requests only where this is "true".
        "morgan.host.gpu": str(plan.config.host(replica.host).has_gpu).lower(),
    }


def infra_name(plan: Plan, role: str) -> str:
    """How a container reaches a supporting server: loopback on a one-host stack, else its
    Consul DNS name (agents register the supporting servers, see configs/consul.py)."""
    if len(plan.hosts) == 1:
        return "127.0.0.1"
    return f"{role}.service.consul"
