"""Container specs of the data tier: PostgreSQL, Redis (single or cluster) and Qdrant."""

from __future__ import annotations

from infra.configs import data as data_cfg
from infra.model import (
    TLS_DIR,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretEnv,
    Volume,
)
from infra.placement import Plan, Replica
from infra.spec_common import (
    port_encryption,
    role_labels,
    tls_files,
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
        ports=(Port(data_cfg.PG_PORT, encryption=port_encryption(plan), purpose="sql"),),
        volumes=(Volume(name=f"morgan-{replica.role}-data", path="/var/lib/postgresql/data"),),
        files=tuple(files),
        tls=tls_files(plan, "postgres"),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"pg_isready -h 127.0.0.1 -U {pg.user} -d {pg.database}"),
            start_period="60s",
        ),
        memory_mb=pg.memory_mb,
        labels=role_labels(plan, replica),
    )


def redis_specs(plan: Plan) -> list[ContainerSpec]:
    cfg = plan.config
    cluster = cfg.redis.mode == "cluster"
    flags = data_cfg.redis_cli_flags(plan)
    specs = []
    for replica in plan.of_role("redis"):
        ports = [Port(data_cfg.REDIS_PORT, encryption=port_encryption(plan), purpose="resp")]
        if cluster:
            ports.append(
                Port(
                    data_cfg.REDIS_BUS_PORT,
                    encryption=port_encryption(plan),
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
                tls=tls_files(plan, "redis"),
                healthcheck=Healthcheck(
                    test=(
                        "CMD-SHELL",
                        f'redis-cli {flags} -p {data_cfg.REDIS_PORT} -a "$REDIS_PASSWORD"'
                        " --no-auth-warning ping | grep -q PONG",
                    ),
                    start_period="10s",
                ),
                memory_mb=cfg.redis.memory_mb,
                labels=role_labels(plan, replica),
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
                tls=tls_files(plan, "redis"),
                healthcheck=Healthcheck(test=("CMD", "redis-cli", "--version"), start_period="5s"),
                memory_mb=64,
                restart="on-failure",
                one_shot=True,
                labels={**role_labels(plan, first), "morgan.role": "redis-cluster-create"},
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
            Port(p, encryption=port_encryption(plan), purpose="api") for p in data_cfg.QDRANT_PORTS
        ),
        volumes=(Volume(name="morgan-qdrant-data", path="/qdrant/storage"),),
        tls=tls_files(plan, "qdrant"),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", "bash -c ':> /dev/tcp/127.0.0.1/6333' || exit 1")
        ),
        memory_mb=cfg.qdrant.memory_mb,
        labels=role_labels(plan, replica),
    )
