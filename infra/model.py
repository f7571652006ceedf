"""Engine-neutral container description shared by Pulumi, Swarm and compose renderings."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Literal

TLS_DIR = "/etc/morgan/tls"
# The label of a one-shot job's container ("true"): it runs, exits 0, and stays exited.
JOB_LABEL = "morgan.job"


Encryption = Literal["tls", "gossip", "none"]


@dataclass(frozen=True)
class Port:
    """A port the container listens on (host networking: the same port on the host)."""

    number: int
    protocol: Literal["tcp", "udp"] = "tcp"
    # How traffic on it is protected: TLS, Consul's gossip encryption, or nothing
    # (only allowed for public redirect listeners and for loopback-only ports).
    encryption: Encryption = "tls"
    purpose: str = ""
    public: bool = False
    loopback_only: bool = False


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: str = "15s"
    timeout: str = "5s"
    retries: int = 5
    start_period: str = "30s"

    @property
    def timeout_seconds(self) -> float:
        """`timeout` in seconds (the durations here are written as "<n>s")."""
        return float(self.timeout.removesuffix("s"))

    def exec_argv(self) -> tuple[str, ...] | None:
        """The check as a command to `docker exec` in the container (None for "NONE")."""
        kind, *args = self.test
        if kind == "CMD-SHELL":
            return ("sh", "-c", args[0])
        return tuple(args) if kind == "CMD" else None


@dataclass(frozen=True)
class ConfigFile:
    """A non-secret file written into the container before it starts."""

    path: str
    content: str


def certificate_name(role: str, host: str) -> str:
    """One certificate per (TLS role, host): each carries only its own host's names."""
    return f"{role}-{host}"


@dataclass(frozen=True)
class TlsFiles:
    """Certificate, key and CA of one role, mounted under TLS_DIR."""

    role: str

    @property
    def ca(self) -> str:
        return f"{TLS_DIR}/ca.pem"

    @property
    def cert(self) -> str:
        return f"{TLS_DIR}/cert.pem"

    @property
    def key(self) -> str:
        return f"{TLS_DIR}/key.pem"


@dataclass(frozen=True)
class Volume:
    name: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class BindMount:
    source: str
    path: str
    read_only: bool = True


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable built from secrets: `template` holds `{secret_name}` placeholders."""

    name: str
    template: str

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.template) if f)
        )

    def render(self, values: dict[str, str]) -> str:
        return self.template.format(**values)


# Where a container finds its secret files (Docker's and Swarm's place for them).
SECRETS_DIR = "/run/secrets"


@dataclass(frozen=True)
class SecretFile:
    """One secret as a file `SECRETS_DIR/<variable>`; the container's environment holds
    only `<variable>_FILE`, its path (the convention Consul's CLI and Morgan's settings
    read). The file is the container's user's alone where the plan knows the user."""

    variable: str
    secret: str
    # Grafana's convention is `<variable>__FILE`.
    suffix: str = "_FILE"

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.variable}"

    @property
    def env(self) -> tuple[str, str]:
        return f"{self.variable}{self.suffix}", self.path

    @property
    def shell_value(self) -> str:
        """A shell word that expands to the secret (the file's content, less its final
        line break): for a start script that writes it into a private config file, or for
        a builtin `export`; never an argument of another program."""
        return f'"$(cat {self.path})"'


@dataclass(frozen=True)
class Privileges:
    """What the container's processes may do beyond the engine's defaults: capabilities
    dropped and added back, and whether a process may gain privileges (setuid binaries,
    file capabilities) after it starts."""

    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = False


# Morgan's own containers: no capability at all, no way to gain one.
UNPRIVILEGED = Privileges(cap_drop=("ALL",), no_new_privileges=True)
# The user (uid, gid) Morgan's images run as (images/runtime/Dockerfile).
MORGAN_USER = (10001, 10001)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    role: str
    host: str
    image: str
    platform: str
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnv, ...] = ()
    # Secrets as files; each one's `_FILE` variable is in `env` (SecretFile.env).
    secret_files: tuple[SecretFile, ...] = ()
    ports: tuple[Port, ...] = ()
    volumes: tuple[Volume, ...] = ()
    binds: tuple[BindMount, ...] = ()
    # Paths given an in-memory filesystem: a data path the image declares as a volume where
    # this container keeps nothing (a one-shot job), so no anonymous volume is left behind.
    scratch: tuple[str, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    tls: TlsFiles | None = None
    healthcheck: Healthcheck = Healthcheck(test=("CMD", "true"))
    memory_mb: int = 256
    restart: Literal["unless-stopped", "on-failure"] = "unless-stopped"
    one_shot: bool = False
    gpu_devices: tuple[str, ...] = ()  # the host's GPUs this container gets (ids or UUIDs)
    privileges: Privileges = Privileges()
    # The (uid, gid) the container's processes run as, where the plan knows it from the
    # image: its TLS key is then that user's alone (0400); else readable by all (0644).
    runs_as: tuple[int, int] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    # How long a stop waits after SIGTERM before it kills (the engine's default: 10 s).
    stop_grace_seconds: int = 10

    def __post_init__(self) -> None:
        for file in self.secret_files:
            name, path = file.env
            if self.env.get(name) != path:
                raise ValueError(
                    f"{self.name}: the secret file {path} needs {name}={path} in the"
                    " container's environment (SecretFile.env)"
                )

    @property
    def gpu(self) -> bool:
        return bool(self.gpu_devices)

    @property
    def certificate(self) -> str | None:
        """The certificate this container holds: its TLS role's, issued for its own host."""
        return certificate_name(self.tls.role, self.host) if self.tls else None

    @property
    def secrets(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for env in self.secret_env:
            out.update(dict.fromkeys(env.secrets))
        out.update(dict.fromkeys(f.secret for f in self.secret_files))
        return tuple(out)
