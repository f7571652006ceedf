"""Container specs: what every replica of the plan runs, engine-neutral.

Pulumi components, the Swarm stack and the per-host compose files all read
these specs, so the deploy paths cannot drift apart. Containers use the host's
network: every listener is a host port, services advertise their host in
Consul, and the local Consul agent is always on the container's loopback.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

# Several replicas of one service on a host listen REPLICA_PORT_STEP apart: 8000, 8010, ...
from morgan.catalog import REPLICA_PORT_STEP, SERVICE_PORTS

from infra.configs import consul as consul_cfg
from infra.configs import data as data_cfg
from infra.configs import gateway as gateway_cfg
from infra.configs import observability as obs_cfg
from infra.model import (
    TLS_DIR,
    BindMount,
    ConfigFile,
    ContainerSpec,
    Encryption,
    Healthcheck,
    Port,
    SecretEnv,
    TlsFiles,
    Volume,
)
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


def _tls(plan: Plan, role: str) -> TlsFiles | None:
    return TlsFiles(role=role) if plan.config.security.internal_tls else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _port_encryption(plan: Plan) -> Encryption:
    return "tls" if plan.config.security.internal_tls else "none"


def _http_probe(port: int, path: str, tls: bool) -> tuple[str, ...]:
    scheme = "https" if tls else "http"
    code = (
        "import ssl,urllib.request as u;"
        f"u.urlopen('{scheme}://127.0.0.1:{port}{path}',"
        "context=ssl._create_unverified_context(),timeout=4)"
    )
    return ("CMD", "python3", "-c", code)


def _wget_probe(port: int, path: str, tls: bool) -> tuple[str, ...]:
    scheme = "https" if tls else "http"
    flags = "--no-check-certificate " if tls else ""
    return ("CMD-SHELL", f"wget -q {flags}-O /dev/null {scheme}://127.0.0.1:{port}{path} || exit 1")


def _labels(plan: Plan, replica: Replica) -> dict[str, str]:
    return {
        "morgan.role": replica.role,
        "morgan.stack": plan.config.stack,
        "morgan.host": replica.host,
        # Read by the policy pack: GPU requests only where this is "true".
        "morgan.host.gpu": str(plan.config.host(replica.host).has_gpu).lower(),
    }


def morgan_service_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    service = replica.role
    svc = cfg.services.get(service)
    host = cfg.host(replica.host)
    port = service_port(plan, replica)
    tls = cfg.security.internal_tls
    prefix = f"MORGAN_{service.upper()}_"
    env = {
        f"{prefix}SERVICE_NAME": f"morgan-{service}",
        f"{prefix}PORT": str(port),
        f"{prefix}DEVICE": svc.device,
        f"{prefix}ENGINE": svc.engine,
        f"{prefix}VRAM_MB": str(host.gpu.vram_mb if host.gpu and svc.device == "cuda" else 0),
        f"{prefix}VERSION": cfg.images.version,
        "MORGAN_HOST_OS": host.os,
        "MORGAN_HOST_ARCH": host.arch,
        "MORGAN_MODEL_DIR": "/models",
        "CONSUL_HTTP_ADDR": consul_cfg.local_agent_addr(plan),
    }
    if not _is_ip(host.address) or host.address.startswith("127."):
        # The name this replica registers in Consul (its certificate carries it too). A bare
        # IP is left out: the service then registers its hostname.
        env["MORGAN_ADVERTISE_HOST"] = host.address
    if tls:
        env.update(
            {
                f"{prefix}TLS_CA": f"{TLS_DIR}/ca.pem",
                f"{prefix}TLS_CERT": f"{TLS_DIR}/cert.pem",
                f"{prefix}TLS_KEY": f"{TLS_DIR}/key.pem",
                "CONSUL_CACERT": f"{TLS_DIR}/ca.pem",
            }
        )
    if service == "core":
        env[f"{prefix}TAGS"] = json.dumps(gateway_cfg.core_consul_tags(plan))
    if svc.device == "cuda":
        env["NVIDIA_VISIBLE_DEVICES"] = "all"
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    secret_env: tuple[SecretEnv, ...] = ()
    volumes = [Volume(name=svc.models_volume, path="/models")]
    if service == "core":
        secret_env, core_env, core_volumes = _core_data_settings(plan)
        env.update(core_env)
        volumes += core_volumes
    return ContainerSpec(
        name=f"morgan-{service}-{replica.index}",
        role=service,
        host=replica.host,
        image=image_for(plan, service).name(plan),
        platform=host.platform,
        env=env,
        secret_env=secret_env,
        ports=(Port(port, encryption=_port_encryption(plan), purpose="http api"),),
        volumes=tuple(volumes),
        tls=_tls(plan, service),
        healthcheck=Healthcheck(test=_http_probe(port, "/health", tls), start_period="120s"),
        memory_mb=svc.memory_mb,
        gpu=svc.device == "cuda" and host.has_gpu,
        labels=_labels(plan, replica),
    )


def infra_name(plan: Plan, role: str) -> str:
    """How a container reaches a supporting server: loopback on a one-host stack, else its
    Consul DNS name (agents register the supporting servers, see configs/consul.py)."""
    if len(plan.hosts) == 1:
        return "127.0.0.1"
    return f"{role}.service.consul"


def _core_data_settings(plan: Plan) -> tuple[tuple[SecretEnv, ...], dict[str, str], list[Volume]]:
    cfg = plan.config
    tls = cfg.security.internal_tls
    pg = cfg.postgres
    sslmode = f"verify-full&sslrootcert={TLS_DIR}/ca.pem" if tls else "prefer"
    secret_env = [
        SecretEnv(
            "MORGAN_CORE_POSTGRES_DSN",
            f"postgresql://{pg.user}:{{postgres_password}}@{infra_name(plan, 'postgres-primary')}"
            f":{data_cfg.PG_PORT}/{pg.database}?sslmode={sslmode}",
        ),
        SecretEnv("MORGAN_CORE_REDIS_PASSWORD", "{redis_password}"),
        # Sent to the model services' /v1 routes; its hash is in KV (components/service_key.py).
        SecretEnv("MORGAN_CORE_SERVICE_API_KEY", "{core_service_api_key}"),
    ]
    env: dict[str, str] = {}
    volumes: list[Volume] = []
    redis_at = f"{infra_name(plan, 'redis')}:{data_cfg.REDIS_PORT}"
    if cfg.redis.mode == "cluster":
        env["MORGAN_CORE_REDIS_CLUSTER_NODES"] = json.dumps([redis_at])
    else:
        scheme = "rediss" if tls else "redis"
        secret_env.append(
            SecretEnv("MORGAN_CORE_REDIS_URL", f"{scheme}://:{{redis_password}}@{redis_at}/0")
        )
    if cfg.qdrant.mode == "local":
        volumes.append(Volume(name="morgan-qdrant-local", path="/data/qdrant"))
        env["MORGAN_CORE_QDRANT_PATH"] = "/data/qdrant"
    else:
        scheme = "https" if tls else "http"
        env["MORGAN_CORE_QDRANT_URL"] = f"{scheme}://{infra_name(plan, 'qdrant')}:6333"
        secret_env.append(SecretEnv("MORGAN_CORE_QDRANT_API_KEY", "{qdrant_api_key}"))
    return tuple(secret_env), env, volumes


def consul_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    server = replica.role == "consul-server"
    tls = cfg.security.internal_tls
    document = consul_cfg.agent_config(plan, replica.host, server=server)
    ports_cfg = document["ports"]
    ports = [
        Port(p, encryption="gossip", purpose=k)
        for k, p in ports_cfg.items()
        if k in ("serf_lan", "serf_wan") and p > 0
    ]
    if server:
        ports.append(Port(ports_cfg["server"], encryption="tls" if tls else "none", purpose="rpc"))
    http_key = "https" if tls else "http"
    http_port = ports_cfg[http_key]
    ports.append(Port(http_port, encryption="tls" if tls else "none", purpose="http api"))
    if ports_cfg.get("dns", -1) > 0:
        ports.append(
            Port(
                ports_cfg["dns"],
                protocol="udp",
                encryption="none",
                purpose="dns",
                loopback_only=False,
            )
        )
    env = {"CONSUL_HTTP_ADDR": f"{'https' if tls else 'http'}://127.0.0.1:{http_port}"}
    if tls:
        env["CONSUL_CACERT"] = f"{TLS_DIR}/ca.pem"
    return ContainerSpec(
        name=f"{replica.role}-{replica.host}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.consul,
        platform=cfg.host(replica.host).platform,
        # The image entrypoint adds -data-dir and -config-dir=/consul/config.
        command=("agent",),
        env=env,
        secret_env=(
            SecretEnv("CONSUL_LOCAL_CONFIG", consul_cfg.secret_config_template(server=server)),
            SecretEnv("CONSUL_HTTP_TOKEN", "{consul_management_token}"),
        ),
        ports=tuple(ports),
        volumes=(Volume(name=f"morgan-{replica.role}-data", path="/consul/data"),),
        files=(ConfigFile("/consul/config/morgan.json", consul_cfg.render(document)),),
        tls=_tls(plan, replica.role),
        healthcheck=Healthcheck(test=("CMD", "consul", "members"), start_period="20s"),
        memory_mb=256,
        labels=_labels(plan, replica),
    )


def postgres_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    pg = cfg.postgres
    primary = replica.role == "postgres-primary"
    files = [ConfigFile("/etc/morgan/postgres/pg_hba.conf", data_cfg.pg_hba(plan))]
    env = {
        "POSTGRES_USER": pg.user,
        "POSTGRES_DB": pg.database,
        "PGDATA": "/var/lib/postgresql/data/pgdata",
    }
    secret_env = [
        SecretEnv("POSTGRES_PASSWORD", "{postgres_password}"),
        SecretEnv("REPLICATION_PASSWORD", "{replication_password}"),
    ]
    if primary:
        files.append(
            ConfigFile(
                "/docker-entrypoint-initdb.d/10-replication.sh", data_cfg.primary_init_script(plan)
            )
        )
        command: tuple[str, ...] = ("postgres", *data_cfg.pg_settings(plan))
        entrypoint = None
    else:
        command = ("-c", data_cfg.standby_entrypoint(plan, replica.host))
        entrypoint = ("/bin/sh",)
    return ContainerSpec(
        name=f"morgan-{replica.role}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.postgres,
        platform=cfg.host(replica.host).platform,
        command=command,
        entrypoint=entrypoint,
        env=env,
        secret_env=tuple(secret_env),
        ports=(Port(data_cfg.PG_PORT, encryption=_port_encryption(plan), purpose="sql"),),
        volumes=(Volume(name=f"morgan-{replica.role}-data", path="/var/lib/postgresql/data"),),
        files=tuple(files),
        tls=_tls(plan, "postgres"),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"pg_isready -h 127.0.0.1 -U {pg.user} -d {pg.database}"),
            start_period="60s",
        ),
        memory_mb=pg.memory_mb,
        labels=_labels(plan, replica),
    )


def redis_specs(plan: Plan) -> list[ContainerSpec]:
    cfg = plan.config
    cluster = cfg.redis.mode == "cluster"
    flags = data_cfg.redis_cli_flags(plan)
    specs = []
    for replica in plan.of_role("redis"):
        ports = [Port(data_cfg.REDIS_PORT, encryption=_port_encryption(plan), purpose="resp")]
        if cluster:
            ports.append(
                Port(
                    data_cfg.REDIS_BUS_PORT,
                    encryption=_port_encryption(plan),
                    purpose="cluster bus",
                )
            )
        specs.append(
            ContainerSpec(
                name=f"morgan-redis-{replica.index}",
                role="redis",
                host=replica.host,
                image=cfg.images.support.redis,
                platform=cfg.host(replica.host).platform,
                entrypoint=("/bin/sh",),
                command=("-c", data_cfg.redis_server_args(plan, replica.host, cluster)),
                secret_env=(SecretEnv("REDIS_PASSWORD", "{redis_password}"),),
                ports=tuple(ports),
                volumes=(Volume(name="morgan-redis-data", path="/data"),),
                tls=_tls(plan, "redis"),
                healthcheck=Healthcheck(
                    test=(
                        "CMD-SHELL",
                        f'redis-cli {flags} -p {data_cfg.REDIS_PORT} -a "$REDIS_PASSWORD"'
                        " --no-auth-warning ping | grep -q PONG",
                    ),
                    start_period="10s",
                ),
                memory_mb=cfg.redis.memory_mb,
                labels=_labels(plan, replica),
            )
        )
    if cluster:
        first = plan.of_role("redis")[0]
        specs.append(
            ContainerSpec(
                name="morgan-redis-cluster-create",
                role="redis-cluster-create",
                host=first.host,
                image=cfg.images.support.redis,
                platform=cfg.host(first.host).platform,
                entrypoint=("/bin/sh",),
                command=("-c", data_cfg.redis_cluster_create(plan)),
                secret_env=(SecretEnv("REDIS_PASSWORD", "{redis_password}"),),
                tls=_tls(plan, "redis"),
                healthcheck=Healthcheck(test=("CMD", "redis-cli", "--version"), start_period="5s"),
                memory_mb=64,
                restart="on-failure",
                one_shot=True,
                labels={**_labels(plan, first), "morgan.role": "redis-cluster-create"},
            )
        )
    return specs


def qdrant_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    tls = cfg.security.internal_tls
    env = {"QDRANT__SERVICE__HTTP_PORT": "6333", "QDRANT__SERVICE__GRPC_PORT": "6334"}
    if tls:
        env.update(
            {
                "QDRANT__SERVICE__ENABLE_TLS": "true",
                "QDRANT__TLS__CERT": f"{TLS_DIR}/cert.pem",
                "QDRANT__TLS__KEY": f"{TLS_DIR}/key.pem",
                "QDRANT__TLS__CA_CERT": f"{TLS_DIR}/ca.pem",
            }
        )
    return ContainerSpec(
        name="morgan-qdrant",
        role="qdrant",
        host=replica.host,
        image=cfg.images.support.qdrant,
        platform=cfg.host(replica.host).platform,
        env=env,
        secret_env=(SecretEnv("QDRANT__SERVICE__API_KEY", "{qdrant_api_key}"),),
        ports=tuple(
            Port(p, encryption=_port_encryption(plan), purpose="api") for p in data_cfg.QDRANT_PORTS
        ),
        volumes=(Volume(name="morgan-qdrant-data", path="/qdrant/storage"),),
        tls=_tls(plan, "qdrant"),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", "bash -c ':> /dev/tcp/127.0.0.1/6333' || exit 1")
        ),
        memory_mb=cfg.qdrant.memory_mb,
        labels=_labels(plan, replica),
    )


def traefik_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    start = (
        f"mkdir -p /run/traefik && printf '%s\\n' \"$TRAEFIK_DASHBOARD_USERS\""
        f" > {gateway_cfg.DASHBOARD_USERS_FILE}"
        " && exec traefik --configFile=/etc/traefik/traefik.yml"
    )
    return ContainerSpec(
        name="morgan-traefik",
        role="traefik",
        host=replica.host,
        image=cfg.images.support.traefik,
        platform=cfg.host(replica.host).platform,
        entrypoint=("/bin/sh",),
        command=("-c", start),
        secret_env=(SecretEnv("TRAEFIK_DASHBOARD_USERS", "{traefik_dashboard_users}"),),
        ports=(
            Port(
                cfg.gateway.http_port, encryption="none", purpose="redirect to https", public=True
            ),
            Port(cfg.gateway.https_port, encryption="tls", purpose="gateway", public=True),
            Port(
                gateway_cfg.PING_PORT,
                encryption="none",
                purpose="ping, metrics",
                loopback_only=True,
            ),
        ),
        files=(
            ConfigFile(
                "/etc/traefik/traefik.yml", gateway_cfg.to_yaml(gateway_cfg.static_config(plan))
            ),
            ConfigFile(
                f"{gateway_cfg.DYNAMIC_DIR}/morgan.yml",
                gateway_cfg.to_yaml(gateway_cfg.dynamic_config(plan)),
            ),
        ),
        tls=_tls(plan, "traefik"),
        healthcheck=Healthcheck(
            test=("CMD", "traefik", "healthcheck", "--configFile=/etc/traefik/traefik.yml"),
            start_period="10s",
        ),
        memory_mb=256,
        labels=_labels(plan, replica),
    )


def observability_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    obs = cfg.observability
    role = replica.role
    tls = cfg.security.internal_tls
    port = obs_cfg.PORTS[role]
    enc = _port_encryption(plan)
    base: dict[str, Any] = {
        "name": f"morgan-{role}" if role != "promtail" else f"morgan-promtail-{replica.host}",
        "role": role,
        "host": replica.host,
        "platform": cfg.host(replica.host).platform,
        "tls": _tls(plan, role),
        "labels": _labels(plan, replica),
    }
    if role == "prometheus":
        files = [
            ConfigFile(
                "/etc/prometheus/prometheus.yml", obs_cfg.to_yaml(obs_cfg.prometheus_config(plan))
            ),
            ConfigFile("/etc/prometheus/alerts.yml", obs_cfg.to_yaml(obs_cfg.alert_rules(plan))),
        ]
        command = [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={obs.metrics_retention}",
            f"--web.listen-address=:{port}",
        ]
        if tls:
            files.append(
                ConfigFile("/etc/prometheus/web.yml", obs_cfg.to_yaml(obs_cfg.web_config(plan)))
            )
            command.append("--web.config.file=/etc/prometheus/web.yml")
        return ContainerSpec(
            image=cfg.images.support.prometheus,
            command=tuple(command),
            ports=(Port(port, encryption=enc, purpose="api"),),
            volumes=(Volume(name="morgan-prometheus-data", path="/prometheus"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=_wget_probe(port, "/-/healthy", tls)),
            memory_mb=1024,
            **base,
        )
    if role == "alertmanager":
        files = [
            ConfigFile(
                "/etc/alertmanager/alertmanager.yml",
                obs_cfg.to_yaml(obs_cfg.alertmanager_config(plan)),
            )
        ]
        command = [
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/alertmanager",
            f"--web.listen-address=:{port}",
            "--cluster.listen-address=",
        ]
        if tls:
            files.append(
                ConfigFile("/etc/alertmanager/web.yml", obs_cfg.to_yaml(obs_cfg.web_config(plan)))
            )
            command.append("--web.config.file=/etc/alertmanager/web.yml")
        return ContainerSpec(
            image=cfg.images.support.alertmanager,
            command=tuple(command),
            ports=(Port(port, encryption=enc, purpose="api"),),
            volumes=(Volume(name="morgan-alertmanager-data", path="/alertmanager"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=_wget_probe(port, "/-/healthy", tls)),
            memory_mb=256,
            **base,
        )
    if role == "grafana":
        files = [
            ConfigFile(
                "/etc/grafana/provisioning/datasources/morgan.yml",
                obs_cfg.to_yaml(obs_cfg.grafana_datasources(plan)),
            ),
            ConfigFile(
                "/etc/grafana/provisioning/dashboards/morgan.yml",
                obs_cfg.to_yaml(obs_cfg.grafana_dashboard_provider()),
            ),
        ]
        files += [
            ConfigFile(f"/var/lib/grafana/dashboards/{name}", obs_cfg.to_json(board))
            for name, board in obs_cfg.dashboards(plan).items()
        ]
        env = {
            "GF_SERVER_HTTP_PORT": str(port),
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
        }
        if tls:
            env.update(
                {
                    "GF_SERVER_PROTOCOL": "https",
                    "GF_SERVER_CERT_FILE": f"{TLS_DIR}/cert.pem",
                    "GF_SERVER_CERT_KEY": f"{TLS_DIR}/key.pem",
                }
            )
        return ContainerSpec(
            image=cfg.images.support.grafana,
            env=env,
            secret_env=(SecretEnv("GF_SECURITY_ADMIN_PASSWORD", "{grafana_admin_password}"),),
            ports=(Port(port, encryption=enc, purpose="ui"),),
            volumes=(Volume(name="morgan-grafana-data", path="/var/lib/grafana"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=_wget_probe(port, "/api/health", tls)),
            memory_mb=512,
            **base,
        )
    if role == "loki":
        return ContainerSpec(
            image=cfg.images.support.loki,
            command=("-config.file=/etc/loki/loki.yml",),
            ports=(
                Port(port, encryption=enc, purpose="push, query"),
                Port(obs_cfg.LOKI_GRPC_PORT, encryption="none", purpose="grpc", loopback_only=True),
            ),
            volumes=(Volume(name="morgan-loki-data", path="/loki"),),
            files=(ConfigFile("/etc/loki/loki.yml", obs_cfg.to_yaml(obs_cfg.loki_config(plan))),),
            healthcheck=Healthcheck(test=_wget_probe(port, "/ready", tls), start_period="30s"),
            memory_mb=512,
            **base,
        )
    # promtail: ships every container's JSON log lines to Loki.
    return ContainerSpec(
        image=cfg.images.support.promtail,
        command=("-config.file=/etc/promtail/promtail.yml",),
        ports=(Port(port, encryption="none", purpose="status", loopback_only=True),),
        volumes=(Volume(name="morgan-promtail-positions", path="/promtail"),),
        binds=(BindMount("/var/run/docker.sock", "/var/run/docker.sock"),),
        files=(
            ConfigFile(
                "/etc/promtail/promtail.yml",
                obs_cfg.to_yaml(obs_cfg.promtail_config(plan, replica.host)),
            ),
        ),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"bash -c ':> /dev/tcp/127.0.0.1/{port}' || exit 1")
        ),
        memory_mb=128,
        **base,
    )


def build_specs(plan: Plan) -> tuple[ContainerSpec, ...]:
    """Every container of the plan, in plan order (then the one-shot jobs)."""
    specs: list[ContainerSpec] = []
    for replica in plan.replicas:
        role = replica.role
        if role in SERVICE_PORTS:
            specs.append(morgan_service_spec(plan, replica))
        elif role.startswith("consul-"):
            specs.append(consul_spec(plan, replica))
        elif role.startswith("postgres-"):
            specs.append(postgres_spec(plan, replica))
        elif role == "qdrant":
            specs.append(qdrant_spec(plan, replica))
        elif role == "traefik":
            specs.append(traefik_spec(plan, replica))
        elif role in obs_cfg.PORTS:
            specs.append(observability_spec(plan, replica))
    specs += redis_specs(plan)
    return tuple(specs)


def images_needed(plan: Plan) -> dict[tuple[str, str], ImageRef]:
    """(host, image name) → Morgan image to build on that host's engine."""
    out: dict[tuple[str, str], ImageRef] = {}
    for replica in plan.replicas:
        if replica.role in SERVICE_PORTS:
            ref = image_for(plan, replica.role)
            out[(replica.host, ref.name(plan))] = ref
    return out
