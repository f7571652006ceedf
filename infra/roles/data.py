"""Container specs of the data tier: PostgreSQL, Redis (single or cluster) and Qdrant."""

from __future__ import annotations

from infra import consul_acl
from infra.configs import data as data_cfg
from infra.configs import patroni as patroni_cfg
from infra.configs import pg_roles
from infra.model import (
    JOB_LABEL,
    TLS_DIR,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretEnv,
    SecretFile,
    Volume,
)
from infra.placement import Plan, Replica
from infra.spec_common import (
    port_encryption,
    role_labels,
    tls_files,
)
from infra.support_privileges import image_user, support_privileges


def postgres_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    if plan.config.postgres.ha == "patroni":
        return patroni_spec(plan, replica)
    cfg = plan.config
    pg = cfg.postgres
    primary = replica.role == "postgres-primary"
    files = [ConfigFile("/etc/morgan/postgres/pg_hba.conf", data_cfg.pg_hba(plan))]
    secret_files = (data_cfg.POSTGRES_PASSWORD, data_cfg.REPLICATION_PASSWORD)
    env = {
        "POSTGRES_USER": pg.user,
        "POSTGRES_DB": pg.database,
        "PGDATA": "/var/lib/postgresql/data/pgdata",
        **dict(f.env for f in secret_files),
    }
    if primary:
        files.append(
            ConfigFile(
                "/docker-entrypoint-initdb.d/10-replication.sh", data_cfg.primary_init_script(plan)
            )
        )
        command: tuple[str, ...] = ("postgres", *data_cfg.pg_settings(plan, replica.host))
        entrypoint = None
    else:
        command = ("-c", data_cfg.standby_entrypoint(plan, replica.host))
        entrypoint = ("/bin/sh",)
    return ContainerSpec(
        name=f"morgan-{replica.role}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.postgres,
        privileges=support_privileges(cfg.images.support.postgres),
        runs_as=image_user(cfg.images.support.postgres),
        platform=cfg.host(replica.host).platform,
        command=command,
        entrypoint=entrypoint,
        env=env,
        secret_files=secret_files,
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


def patroni_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    """A Patroni member: `postgres-primary` is the preferred first leader, not a fixed one."""
    cfg = plan.config
    document = patroni_cfg.patroni_config(plan, replica.host)
    places = patroni_cfg.secret_places(
        consul_acl.token_secret(plan, consul_acl.PATRONI_TOKEN_SECRET)
    )
    secrets = tuple(file for _place, file in places)
    return ContainerSpec(
        name=f"morgan-{replica.role}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.patroni,
        privileges=support_privileges(cfg.images.support.patroni),
        runs_as=image_user(cfg.images.support.patroni),
        platform=cfg.host(replica.host).platform,
        entrypoint=("tini", "--"),
        command=patroni_cfg.command(plan),
        env={"PGDATA": "/var/lib/postgresql/data/pgdata", **dict(f.env for f in secrets)},
        secret_files=secrets,
        ports=(
            Port(data_cfg.PG_PORT, encryption=port_encryption(plan), purpose="sql"),
            Port(patroni_cfg.REST_PORT, encryption=port_encryption(plan), purpose="patroni api"),
        ),
        volumes=(Volume(name=f"morgan-{replica.role}-data", path="/var/lib/postgresql/data"),),
        files=(
            ConfigFile(patroni_cfg.CONFIG_PATH, patroni_cfg.render(document)),
            ConfigFile(patroni_cfg.POST_BOOTSTRAP_PATH, patroni_cfg.post_bootstrap_script(plan)),
            ConfigFile(patroni_cfg.WITH_SECRETS_PATH, patroni_cfg.with_secrets_script(places)),
        ),
        tls=tls_files(plan, "postgres"),
        # The member's PostgreSQL accepts connections (leader, or a replica in recovery).
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"pg_isready -h 127.0.0.1 -p {data_cfg.PG_PORT}"),
            start_period="60s",
        ),
        memory_mb=cfg.postgres.memory_mb,
        labels=role_labels(plan, replica),
    )


def _redis_node(plan: Plan, replica: Replica, port: int, volume: str) -> ContainerSpec:
    cfg = plan.config
    cluster = cfg.redis.mode == "cluster"
    ports = [Port(port, encryption=port_encryption(plan), purpose="resp")]
    if cluster:
        ports.append(
            Port(port + data_cfg.REDIS_BUS_OFFSET, encryption=port_encryption(plan),
                 purpose="cluster bus")
        )  # fmt: skip
    kind = "redis" if replica.role == "redis" else "redis-replica"
    return ContainerSpec(
        name=f"morgan-{kind}-{replica.index}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.redis,
        privileges=support_privileges(cfg.images.support.redis),
        runs_as=image_user(cfg.images.support.redis),
        platform=cfg.host(replica.host).platform,
        entrypoint=("/bin/sh",),
        command=("-c", data_cfg.redis_server_args(plan, replica.host, cluster, port)),
        env=dict([data_cfg.REDIS_PASSWORD.env]),
        secret_files=(data_cfg.REDIS_PASSWORD,),
        ports=tuple(ports),
        volumes=(Volume(name=volume, path="/data"),),
        tls=tls_files(plan, "redis"),
        healthcheck=Healthcheck(
            test=(
                "CMD-SHELL",
                f"{data_cfg.redis_cli(plan)} -p {port} ping | grep -q PONG",
            ),
            start_period="10s",
        ),
        memory_mb=cfg.redis.memory_mb,
        labels=role_labels(plan, replica),
    )


def _job(
    plan: Plan,
    role: str,
    beside: Replica,
    image: str,
    script: str,
    secret_files: tuple[SecretFile, ...],
    certificate: str,
    tool: str,
    image_data: str,
) -> ContainerSpec:
    """A one-shot job on `beside`'s host: a shell script, retried until it succeeds.
    `image_data` is the data path the job's image declares as a volume: a scratch mount
    there, since the job keeps nothing."""
    return ContainerSpec(
        name=f"morgan-{role}",
        role=role,
        host=beside.host,
        image=image,
        privileges=support_privileges(image),
        runs_as=image_user(image),
        platform=plan.config.host(beside.host).platform,
        entrypoint=("/bin/sh",),
        command=("-c", script),
        env=dict(f.env for f in secret_files),
        secret_files=secret_files,
        tls=tls_files(plan, certificate),
        healthcheck=Healthcheck(test=("CMD", tool, "--version"), start_period="5s"),
        memory_mb=64,
        scratch=(image_data,),
        restart="on-failure",
        one_shot=True,
        labels={**role_labels(plan, beside), "morgan.role": role, JOB_LABEL: "true"},
    )


def postgres_app_role_specs(plan: Plan) -> list[ContainerSpec]:
    """The one-shot step that makes the application role core connects as (pg_roles)."""
    cfg = plan.config
    primary = next(iter(plan.of_role("postgres-primary")), None)
    if primary is None:
        return []
    support = cfg.images.support
    image = support.patroni if cfg.postgres.ha == "patroni" else support.postgres
    secrets = (pg_roles.ADMIN_PASSWORD, pg_roles.APP_PASSWORD)
    script = pg_roles.app_role_script(plan)
    return [
        _job(
            plan,
            "postgres-app-role",
            primary,
            image,
            script,
            secrets,
            "postgres",
            "psql",
            "/var/lib/postgresql/data",
        )
    ]


def redis_specs(plan: Plan) -> list[ContainerSpec]:
    cfg = plan.config
    specs = [
        _redis_node(plan, r, data_cfg.REDIS_PORT, "morgan-redis-data")
        for r in plan.of_role("redis")
    ]
    specs += [
        _redis_node(plan, r, data_cfg.REDIS_REPLICA_PORT, "morgan-redis-replica-data")
        for r in plan.of_role("redis-replica")
    ]
    if cfg.redis.mode == "cluster":
        secrets = (data_cfg.REDIS_PASSWORD,)
        script = data_cfg.redis_cluster_create(plan)
        specs.append(
            _job(
                plan,
                "redis-cluster-create",
                plan.of_role("redis")[0],
                cfg.images.support.redis,
                script,
                secrets,
                "redis",
                "redis-cli",
                "/data",
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
        privileges=support_privileges(cfg.images.support.qdrant),
        runs_as=image_user(cfg.images.support.qdrant),
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
