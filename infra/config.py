"""Stack configuration: one strict pydantic model, validated once at start.

A stack file (`Pulumi.<stack>.yaml`) holds the whole fleet under the key
`morgan:fleet`. Every mistake fails with the key's path and what to write
instead, e.g. ``morgan:fleet.hosts[1].docker: 'h2:2375' has no scheme; write
ssh://user@h2 or tcp://h2:2376 (with docker_tls)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import Field, IPvAnyNetwork, ValidationError, field_validator, model_validator

from infra.alerting_config import AlertingConfig
from infra.config_base import StrictModel

CONFIG_KEY = "morgan:fleet"
SERVICE_NAMES: tuple[str, ...] = ("core", "llm", "stt", "tts", "vad")
ObservabilityPart = Literal[
    "prometheus",
    "alertmanager",
    "grafana",
    "loki",
    "promtail",
    "node-exporter",
    "postgres-exporter",
    "redis-exporter",
    "dcgm-exporter",
]
OBSERVABILITY_PARTS: tuple[ObservabilityPart, ...] = get_args(ObservabilityPart)

_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class StackConfigError(ValueError):
    """A stack file that cannot be used; the message names every bad key and the fix."""


class GpuConfig(StrictModel):
    vendor: Literal["nvidia"]
    vram_mb: Annotated[int, Field(gt=0)]
    cuda: Annotated[str, Field(pattern=r"^\d+\.\d+$")]
    # The GPUs Morgan's containers on this host get, as `nvidia-smi -L` numbers them (or
    # their UUIDs); the others stay free for the host's own use.
    devices: Annotated[
        tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")], ...], Field(min_length=1)
    ] = ("0",)


class DockerTlsConfig(StrictModel):
    """Client certificates of a `tcp://` Docker endpoint: a folder with ca/cert/key.pem."""

    cert_path: Annotated[str, Field(min_length=1)]


class HostConfig(StrictModel):
    name: str
    docker: str
    docker_tls: DockerTlsConfig | None = None
    ssh_opts: tuple[str, ...] = ()
    address: str
    os: Literal["linux", "windows", "macos"]
    arch: Literal["amd64", "arm64"]
    memory_mb: Annotated[int, Field(gt=0)]
    gpu: GpuConfig | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        if not _HOST_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a host name Morgan can use; write lower-case letters, digits"
                " and '-', starting with a letter (e.g. 'h1', 'gpu-box')"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address_is_host(cls, value: str) -> str:
        if "://" in value or not _ADDRESS.match(value):
            raise ValueError(
                f"{value!r} is not a bare DNS name or IP; write how other hosts reach this one,"
                " e.g. 'h1.lan' or '192.168.1.10' (no scheme, no port)"
            )
        return value

    @field_validator("docker")
    @classmethod
    def _docker_endpoint_form(cls, value: str) -> str:
        if value.startswith("unix://"):
            if len(value) <= len("unix:///"):
                raise ValueError(f"{value!r} names no socket; write unix:///var/run/docker.sock")
            return value
        if value.startswith("ssh://"):
            if len(value) <= len("ssh://") or value.endswith("@"):
                raise ValueError(f"{value!r} names no host; write ssh://user@h1.lan")
            return value
        if value.startswith("tcp://"):
            if not re.match(r"^tcp://[A-Za-z0-9.-]+:\d+$", value):
                raise ValueError(f"{value!r} needs host and port; write tcp://h2.lan:2376")
            return value
        raise ValueError(
            f"{value!r} is not a Docker endpoint Morgan can reach; write ssh://user@host,"
            " tcp://host:2376 (with docker_tls) or unix:///var/run/docker.sock"
        )

    @model_validator(mode="after")
    def _host_rules(self) -> HostConfig:
        if self.docker.startswith("tcp://") and self.docker_tls is None:
            raise ValueError(
                f"docker: {self.docker!r} is plain TCP; Docker over TCP must use TLS. Add"
                " docker_tls: {cert_path: ~/.docker/morgan/" + self.name + "} or use ssh://"
            )
        if self.os == "macos" and self.gpu is not None:
            raise ValueError(
                "gpu: Docker on macOS cannot reach the GPU (containers run in a Linux VM);"
                " remove the gpu key for this host"
            )
        if self.gpu is not None and self.arch != "amd64":
            raise ValueError("gpu: CUDA images are built for amd64 only; remove gpu or set arch")
        return self

    @property
    def platform(self) -> str:
        # Docker inside WSL2 on Windows, and in Colima's or Docker Desktop's VM on macOS,
        # runs Linux containers.
        return f"linux/{self.arch}"

    @property
    def has_gpu(self) -> bool:
        return self.gpu is not None


class ServiceConfig(StrictModel):
    replicas: Annotated[int, Field(ge=0)] = 1
    device: Literal["cpu", "cuda"] = "cpu"
    # None: the service's own default (llm: `auto`, llama.cpp on CPU, vLLM on CUDA).
    engine: str | None = None
    memory_mb: Annotated[int, Field(gt=0)] = 2048
    hosts: tuple[str, ...] | None = None
    pin: dict[str, Annotated[int, Field(ge=0)]] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    models_volume: str = "morgan-models"

    @model_validator(mode="after")
    def _pin_matches_replicas(self) -> ServiceConfig:
        if self.pin is not None and sum(self.pin.values()) != self.replicas:
            raise ValueError(
                f"pin puts {sum(self.pin.values())} replicas but replicas is {self.replicas};"
                " make the pin counts add up to replicas"
            )
        if self.pin is not None and self.hosts is not None:
            raise ValueError("set either hosts (spread over these) or pin (exact counts), not both")
        return self


class ServicesConfig(StrictModel):
    core: ServiceConfig = ServiceConfig()
    llm: ServiceConfig = ServiceConfig()
    stt: ServiceConfig = ServiceConfig()
    tts: ServiceConfig = ServiceConfig()
    # Voice activity detection: one 32 ms window at a time on one CPU thread, ~2 MB model.
    vad: ServiceConfig = ServiceConfig(memory_mb=512)

    def get(self, name: str) -> ServiceConfig:
        service: ServiceConfig = getattr(self, name)
        return service

    @model_validator(mode="after")
    def _vad_on_cpu(self) -> ServicesConfig:
        if self.vad.device != "cpu":
            raise ValueError(
                "services.vad.device: morgan-vad runs on the CPU only (Silero VAD takes well "
                "under a millisecond per 32 ms window); set device: cpu"
            )
        return self


class ImageOverrides(StrictModel):
    """Image references for the supporting servers; override to use local builds."""

    consul: str = "hashicorp/consul:1.16.1"
    traefik: str = "traefik:v3"
    postgres: str = "postgres:15"
    # PostgreSQL 15 with Patroni (postgres.ha: patroni); no upstream image: Morgan builds it.
    patroni: str = "morgan-local/patroni:3.0.2"
    redis: str = "redis:7"
    qdrant: str = "qdrant/qdrant:v1.12.4"
    prometheus: str = "prom/prometheus:v2.53.0"
    alertmanager: str = "prom/alertmanager:v0.27.0"
    grafana: str = "grafana/grafana:11.1.0"
    loki: str = "grafana/loki:3.1.0"
    promtail: str = "grafana/promtail:3.1.0"
    node_exporter: str = "prom/node-exporter:v1.8.1"
    # NVIDIA's GPU metrics (utilisation, memory, temperature) on each host with a GPU.
    dcgm_exporter: str = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"
    postgres_exporter: str = "quay.io/prometheuscommunity/postgres-exporter:v0.15.0"
    redis_exporter: str = "oliver006/redis_exporter:v1.62.0"


class ImagesConfig(StrictModel):
    registry: str = ""
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = "0.1.0"
    build: bool = True
    # scripts/setup builds morgan-base (Debian bookworm with Python 3.11) on every machine.
    base_image_cpu: str = "morgan-base:py3.11-bookworm"
    base_image_cuda: str = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
    support: ImageOverrides = ImageOverrides()


class ConsulConfig(StrictModel):
    datacenter: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "morgan"
    servers: tuple[str, ...] | None = None
    agent_on_server_hosts: bool = True
    ui: bool = True


class PostgresConfig(StrictModel):
    primary: str | None = None
    standby: str | None = None
    # patroni: both members run Patroni with Consul as its DCS; the standby is promoted when
    # the primary is lost. none: a fixed primary and a streaming standby.
    ha: Literal["none", "patroni"] = "none"
    # With patroni: a commit waits for the standby, so an acknowledged write survives a
    # failover (synchronous_mode_strict stays off: the primary keeps serving alone).
    synchronous: bool = True
    database: str = "morgan"
    # The administrator (PostgreSQL's superuser: Patroni, the exporter, the role step).
    user: str = "morgan"
    # The role core connects as: not a superuser; it owns the database and its tables.
    app_user: str = Field(default="morgan_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Where remote connections may come from (pg_hba): by default each host of the stack,
    # an IP address as /32, a name as PostgreSQL's name match (which needs reverse DNS
    # that names the host; where the network has none, list its networks here).
    client_networks: tuple[IPvAnyNetwork, ...] | None = None
    memory_mb: Annotated[int, Field(gt=0)] = 1024

    @model_validator(mode="after")
    def _app_user_is_its_own(self) -> PostgresConfig:
        if self.app_user in (self.user, "replicator", "postgres"):
            raise ValueError(
                f"postgres.app_user {self.app_user!r} must be a role of its own (not the"
                f" administrator {self.user!r}, replicator or postgres): core connects with"
                " it, without a superuser's rights"
            )
        return self

    @model_validator(mode="after")
    def _patroni_needs_standby(self) -> PostgresConfig:
        if self.ha == "patroni" and self.standby is None:
            raise ValueError(
                "ha: 'patroni' fails over to a standby and none is set; add postgres.standby"
                " or set ha: none"
            )
        return self


class RedisConfig(StrictModel):
    mode: Literal["single", "cluster"] = "cluster"
    nodes: tuple[str, ...] | None = None
    # Cluster only: 1 gives every master a replica on the next node's host, so losing any
    # one host loses no slot (its masters' replicas are promoted).
    replicas: Literal[0, 1] = 0
    memory_mb: Annotated[int, Field(gt=0)] = 512

    @model_validator(mode="after")
    def _node_count(self) -> RedisConfig:
        if self.nodes is not None:
            want = 1 if self.mode == "single" else 3
            if len(self.nodes) != want:
                raise ValueError(
                    f"nodes lists {len(self.nodes)} hosts but mode {self.mode!r} runs {want};"
                    f" list {want} host(s) or change mode"
                )
        if self.replicas and self.mode != "cluster":
            raise ValueError("replicas: only a cluster has replicas; set mode: cluster or 0")
        return self


class MemoryConfig(StrictModel):
    """Where core keeps semantic memory (embeddings of past turns)."""

    # qdrant: Qdrant (embedded in core with qdrant.mode local, or the server); postgres: a
    # table in the stack's PostgreSQL, one store for every core and replicated with it.
    store: Literal["qdrant", "postgres"] = "qdrant"


class QdrantConfig(StrictModel):
    mode: Literal["local", "server"] = "server"
    host: str | None = None
    memory_mb: Annotated[int, Field(gt=0)] = 1024


class GatewayConfig(StrictModel):
    host: str | None = None
    api_rate_per_minute: Annotated[int, Field(gt=0)] = 100
    audio_rate_per_minute: Annotated[int, Field(gt=0)] = 10
    dashboard_user: str = "admin"
    http_port: Annotated[int, Field(gt=0, lt=65536)] = 80
    https_port: Annotated[int, Field(gt=0, lt=65536)] = 443


class ObservabilityConfig(StrictModel):
    host: str | None = None
    # node-exporter and promtail run on every host, the PostgreSQL and Redis exporters
    # next to their servers, the DCGM exporter on every host with a GPU, the others on
    # `host`.
    enabled: tuple[ObservabilityPart, ...] = OBSERVABILITY_PARTS
    metrics_retention: Annotated[str, Field(pattern=r"^\d+[dhw]$")] = "15d"
    logs_retention: Annotated[str, Field(pattern=r"^\d+h$")] = "336h"
    # How Prometheus finds its targets: Consul's catalogue, or the plan's replicas written
    # into its config (for a Prometheus built without Consul discovery, like Debian's).
    discovery: Literal["consul", "static"] = "consul"
    error_rate_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.05
    p95_latency_seconds: Annotated[float, Field(gt=0)] = 2.0
    scrape_interval: Annotated[str, Field(pattern=r"^[1-9]\d*(s|m)$")] = "15s"
    alerting: AlertingConfig = AlertingConfig()


class SecurityConfig(StrictModel):
    internal_tls: bool = True


class MorganStackConfig(StrictModel):
    stack: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    domain: str
    hosts: tuple[HostConfig, ...]
    services: ServicesConfig = ServicesConfig()
    images: ImagesConfig = ImagesConfig()
    consul: ConsulConfig = ConsulConfig()
    postgres: PostgresConfig = PostgresConfig()
    redis: RedisConfig = RedisConfig()
    memory: MemoryConfig = MemoryConfig()
    qdrant: QdrantConfig = QdrantConfig()
    gateway: GatewayConfig = GatewayConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    security: SecurityConfig = SecurityConfig()

    @model_validator(mode="after")
    def _references_name_hosts(self) -> MorganStackConfig:
        if not self.hosts:
            raise ValueError("hosts: the stack lists no host; add at least one under hosts")
        names = [h.name for h in self.hosts]
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                raise ValueError(
                    f"hosts[{index}].name: {name!r} is used twice; give every host its own name"
                )
            seen.add(name)
        refs: list[tuple[str, str]] = []
        for service in SERVICE_NAMES:
            cfg = self.services.get(service)
            refs += [(f"services.{service}.hosts", h) for h in cfg.hosts or ()]
            refs += [(f"services.{service}.pin", h) for h in cfg.pin or {}]
        refs += [("consul.servers", h) for h in self.consul.servers or ()]
        refs += [("redis.nodes", h) for h in self.redis.nodes or ()]
        for key, value in (
            ("postgres.primary", self.postgres.primary),
            ("postgres.standby", self.postgres.standby),
            ("qdrant.host", self.qdrant.host),
            ("gateway.host", self.gateway.host),
            ("observability.host", self.observability.host),
        ):
            if value is not None:
                refs.append((key, value))
        for key, value in refs:
            if value not in seen:
                raise ValueError(
                    f"{key}: {value!r} is not a host of this stack; use one of {sorted(seen)}"
                )
        if self.consul.servers is not None and len(self.consul.servers) not in (1, 3, 5):
            raise ValueError(
                f"consul.servers: {len(self.consul.servers)} servers cannot keep a quorum well;"
                " list 1, 3 or 5 hosts"
            )
        if self.postgres.standby is not None and self.postgres.standby == self.postgres.primary:
            raise ValueError(
                "postgres.standby: the standby must run on another host than the primary;"
                " pick a different host or remove standby"
            )
        if self.redis.nodes is not None and len(set(self.redis.nodes)) != len(self.redis.nodes):
            raise ValueError("redis.nodes: a host is listed twice; list distinct hosts")
        return self

    def host(self, name: str) -> HostConfig:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _location(loc: tuple[int | str, ...]) -> str:
    out = CONFIG_KEY
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: the key's path, what is wrong, and what to write."""
    lines = []
    for item in error.errors():
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = (
                "is not a known key; remove it or check its spelling (see docs/infrastructure.md)"
            )
        elif item["type"] == "missing":
            message = "is required; add it (see stacks/Pulumi.homelab.yaml for an example)"
        elif item["type"].endswith("_type") or item["type"] == "literal_error":
            message = f"{message} (got {item.get('input')!r})"
        lines.append(f"{_location(loc)}: {message}")
    return "; ".join(lines)


def parse_stack_config(raw: Any) -> MorganStackConfig:
    """Validate the `morgan:fleet` object; raise StackConfigError naming each bad key."""
    if not isinstance(raw, dict):
        raise StackConfigError(
            f"{CONFIG_KEY}: expected a mapping of stack settings, got {type(raw).__name__};"
            " see stacks/Pulumi.homelab.yaml"
        )
    try:
        return MorganStackConfig.model_validate(_tupleize(raw))
    except ValidationError as error:
        raise StackConfigError(format_validation_error(error)) from None


def _tupleize(value: Any) -> Any:
    # YAML gives lists; the frozen models keep tuples. Strict mode refuses the coercion.
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    if isinstance(value, dict):
        return {k: (_tupleize(v) if k != "settings" else v) for k, v in value.items()}
    return value


def load_stack_file(path: str | Path) -> MorganStackConfig:
    """Read a `Pulumi.<stack>.yaml` without the Pulumi engine and validate its fleet."""
    file = Path(path)
    try:
        document = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise StackConfigError(
            f"{file}: no such stack file; pass Pulumi.dev.yaml or stacks/Pulumi.<stack>.yaml"
        ) from None
    except yaml.YAMLError as error:
        raise StackConfigError(f"{file}: not valid YAML ({error}); fix the syntax") from None
    config = (document or {}).get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or CONFIG_KEY not in config:
        raise StackConfigError(
            f"{file}: has no config.{CONFIG_KEY}; put the fleet under config: {CONFIG_KEY}:"
        )
    return parse_stack_config(config[CONFIG_KEY])


def stack_file_for(stack: str, root: str | Path = ".") -> Path:
    """Where a stack's file lives: the dev stack at the root, the others in stacks/."""
    base = Path(root)
    if stack == "dev":
        return base / "Pulumi.dev.yaml"
    return base / "stacks" / f"Pulumi.{stack}.yaml"
