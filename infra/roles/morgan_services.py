"""Container specs of morgan's own services: core, llm, stt, tts and vad."""

from __future__ import annotations

import json
import math

from infra import consul_acl
from infra.configs import consul as consul_cfg
from infra.configs import data as data_cfg
from infra.configs import gateway as gateway_cfg
from infra.model import (
    MORGAN_USER,
    TLS_DIR,
    UNPRIVILEGED,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretFile,
    Volume,
)
from infra.placement import Plan, Replica
from infra.spec_common import (
    http_probe,
    image_for,
    infra_name,
    port_encryption,
    role_labels,
    service_port,
    tls_files,
)


def stop_grace_seconds() -> int:
    """A Morgan service's stop: its shutdown delay (the gateway stops sending it requests)
    and its drain (in-flight requests finish), and a few seconds to exit."""
    from morgan.shared.settings import ServiceSettings

    fields = ServiceSettings.model_fields
    delay = float(fields["shutdown_delay_seconds"].default)
    drain = float(fields["shutdown_drain_seconds"].default)
    return math.ceil(delay + drain) + 5


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
        f"{prefix}VRAM_MB": str(host.gpu.vram_mb if host.gpu and svc.device == "cuda" else 0),
        f"{prefix}VERSION": cfg.images.version,
        "MORGAN_HOST_OS": host.os,
        "MORGAN_HOST_ARCH": host.arch,
        "MORGAN_MODEL_DIR": "/models",
        "CONSUL_HTTP_ADDR": consul_cfg.local_agent_addr(plan),
    }
    if (listen := plan.listen_address(replica.host)) != "0.0.0.0":  # else bind_host's default
        env[f"{prefix}BIND_HOST"] = listen
    if svc.engine is not None:
        env[f"{prefix}ENGINE"] = svc.engine
    # The name or address this replica registers in Consul: how the other hosts reach it,
    # and a name its certificate carries.
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
    gpus = host.gpu.devices if host.gpu and svc.device == "cuda" else ()
    if gpus:
        # The GPUs it is placed on, not every GPU of the host.
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpus)
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    # Every secret as a file, none in the environment (which `docker inspect` shows).
    secret_files: list[SecretFile] = []
    # morgan-vad's model ships in its image (the silero-vad package): no model volume.
    volumes = [] if service == "vad" else [Volume(name=svc.models_volume, path="/models")]
    if service == "core":
        core_files, core_env, core_volumes = _core_data_settings(plan)
        secret_files += core_files
        env.update(core_env)
        volumes += core_volumes
    if consul_acl.scoped_tokens(plan):
        # Its own registration and config keys, nothing else (infra.consul_acl).
        token = consul_acl.service_token_secret(service)
        secret_files.append(SecretFile("CONSUL_HTTP_TOKEN", token))
    env.update(dict(f.env for f in secret_files))
    return ContainerSpec(
        name=f"morgan-{service}-{replica.index}",
        role=service,
        host=replica.host,
        image=image_for(plan, service).name(plan),
        platform=host.platform,
        env=env,
        secret_files=tuple(secret_files),
        ports=(Port(port, encryption=port_encryption(plan), purpose="http api"),),
        volumes=tuple(volumes),
        tls=tls_files(plan, service),
        healthcheck=Healthcheck(test=http_probe(port, "/health", tls), start_period="120s"),
        memory_mb=svc.memory_mb,
        gpu_devices=gpus,
        privileges=UNPRIVILEGED,
        runs_as=MORGAN_USER,
        labels=role_labels(plan, replica),
        stop_grace_seconds=stop_grace_seconds(),
    )


def _postgres_hosts(plan: Plan) -> str:
    """host:port of PostgreSQL for core's DSN, by Consul name (core expands each name to
    its passing instances, morgan.shared.consul_names). With Patroni both members: libpq's
    target_session_attrs picks whichever is the primary now, also after a failover."""
    roles: tuple[str, ...] = ("postgres-primary", "postgres-standby")
    if plan.config.postgres.ha != "patroni":
        roles = roles[:1]
    return ",".join(f"{infra_name(plan, r)}:{data_cfg.PG_PORT}" for r in roles)


def _redis_nodes(plan: Plan) -> list[str]:
    """Startup nodes of core's cluster client: the masters (the name expands to all)."""
    return [f"{infra_name(plan, 'redis')}:{data_cfg.REDIS_PORT}"]


def _core_data_settings(plan: Plan) -> tuple[list[SecretFile], dict[str, str], list[Volume]]:
    cfg = plan.config
    tls = cfg.security.internal_tls
    pg = cfg.postgres
    # With TLS core shows its own certificate too: pg_hba asks every remote login for one.
    query = (
        f"sslmode=verify-full&sslrootcert={TLS_DIR}/ca.pem"
        f"&sslcert={TLS_DIR}/cert.pem&sslkey={TLS_DIR}/key.pem"
        if tls
        else "sslmode=prefer"
    )
    if pg.ha == "patroni":
        query += "&target_session_attrs=read-write"
    # The DSN without its password: core adds MORGAN_CORE_POSTGRES_PASSWORD's.
    env: dict[str, str] = {
        "MORGAN_CORE_POSTGRES_DSN": f"postgresql://{pg.app_user}@{_postgres_hosts(plan)}"
        f"/{pg.database}?{query}",
    }
    files = [
        SecretFile("MORGAN_CORE_POSTGRES_PASSWORD", "postgres_app_password"),
        SecretFile("MORGAN_CORE_REDIS_PASSWORD", "redis_password"),
        # Sent to the model services' /v1 routes; its hash is in KV (components/service_key.py).
        SecretFile("MORGAN_CORE_SERVICE_API_KEY", "core_service_api_key"),
    ]
    volumes: list[Volume] = []
    if cfg.redis.mode == "cluster":
        env["MORGAN_CORE_REDIS_CLUSTER_NODES"] = json.dumps(_redis_nodes(plan))
        # The cluster client speaks TLS to TLS-only nodes, with core's own certificate.
        env["MORGAN_CORE_REDIS_TLS"] = json.dumps(tls)
    else:
        redis_at = _redis_nodes(plan)[0]
        scheme = "rediss" if tls else "redis"
        # Without its password: core adds MORGAN_CORE_REDIS_PASSWORD's.
        env["MORGAN_CORE_REDIS_URL"] = f"{scheme}://{redis_at}/0"
    if cfg.memory.store == "postgres":
        env["MORGAN_CORE_MEMORY_STORE"] = "postgres"
    elif cfg.qdrant.mode == "local":
        volumes.append(Volume(name="morgan-qdrant-local", path="/data/qdrant"))
        env["MORGAN_CORE_QDRANT_PATH"] = "/data/qdrant"
    else:
        scheme = "https" if tls else "http"
        env["MORGAN_CORE_QDRANT_URL"] = f"{scheme}://{infra_name(plan, 'qdrant')}:6333"
        files.append(SecretFile("MORGAN_CORE_QDRANT_API_KEY", "qdrant_api_key"))
    return files, env, volumes
