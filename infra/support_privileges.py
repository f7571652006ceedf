"""What a support server's container may do, by the image it runs rather than its role.

Morgan's own builds of the support servers (images/<name>/Dockerfile, pushed as
`morgan-local/<name>`) start as the server's own user and need no capability at all —
except Traefik's, whose binary carries the file capability to bind 80 and 443: it keeps
NET_BIND_SERVICE, and no-new-privileges stays off, since a file capability is gained when
the binary is run, which that flag forbids.

Upstream images (hashicorp/consul, postgres, redis, traefik, qdrant) start as root to take
ownership of their data folders and then switch user, or stay root (Redis and Traefik,
whose entrypoint the plan replaces): they keep what that needs and lose the rest of the
engine's defaults — NET_RAW above all, since on the host's network a raw socket sees the
LAN's traffic.
"""

from __future__ import annotations

from infra.model import UNPRIVILEGED, Privileges

LOCAL_REPOSITORY = "morgan-local"
# Of the engine's defaults, what an upstream entrypoint running as root uses: taking
# ownership of the data folder and writing in it, switching to the server's user,
# signalling its own processes. Gone: NET_RAW, MKNOD, SYS_CHROOT, AUDIT_WRITE, SETFCAP,
# SETPCAP (and NET_BIND_SERVICE where nothing binds a port below 1024).
ROOT_ENTRYPOINT = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")
LOW_PORTS = "NET_BIND_SERVICE"
# The user (uid, gid) each of Morgan's builds runs as (images/<name>/Dockerfile: the fixed
# ids it creates, or Debian's nobody/nogroup). PostgreSQL's and Redis's users get their ids
# from Debian's packages at build time, so the plan cannot name them.
NOBODY = (65534, 65534)
LOCAL_USERS: dict[str, tuple[int, int]] = {
    "consul": (10100, 10100),
    "traefik": (10200, 10200),
    "prometheus": NOBODY,
    "alertmanager": NOBODY,
    "node_exporter": NOBODY,
    "postgres_exporter": NOBODY,
    "redis_exporter": NOBODY,
}


def is_local_build(image: str) -> bool:
    """`morgan-local/<name>:<tag>`, from this machine or the stack's registry."""
    repository = image.split("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:  # a tag (not a registry's port)
        repository = repository.rsplit(":", 1)[0]
    return LOCAL_REPOSITORY in repository.split("/")[:-1]


def _name(image: str) -> str:
    """`<registry>/morgan-local/<name>:<tag>` -> `<name>`."""
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_user(image: str) -> tuple[int, int] | None:
    """The (uid, gid) a local build runs as, where its Dockerfile fixes it; None for an
    upstream image (whose entrypoint may start as root and switch) or an unfixed one."""
    return LOCAL_USERS.get(_name(image)) if is_local_build(image) else None


def support_privileges(image: str, *, low_ports: bool = False) -> Privileges:
    """The container's privileges for `image`; `low_ports`: it binds ports below 1024."""
    if is_local_build(image):
        if low_ports:
            return Privileges(cap_drop=("ALL",), cap_add=(LOW_PORTS,))
        return UNPRIVILEGED
    kept = (*ROOT_ENTRYPOINT, LOW_PORTS) if low_ports else ROOT_ENTRYPOINT
    return Privileges(cap_drop=("ALL",), cap_add=kept, no_new_privileges=True)
