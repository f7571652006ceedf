"""PostgreSQL primary/standby and Redis node scripts."""

from __future__ import annotations

from infra.model import TLS_DIR
from infra.placement import Plan

PG_PORT = 5432
REDIS_PORT = 6379
REDIS_BUS_PORT = 16379
QDRANT_PORTS = (6333, 6334)


def pg_hba(plan: Plan) -> str:
    kind = "hostssl" if plan.config.security.internal_tls else "host"
    user = plan.config.postgres.user
    db = plan.config.postgres.database
    return (
        "local all all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        f"{kind} replication replicator 0.0.0.0/0 scram-sha-256\n"
        f"{kind} {db} {user} 0.0.0.0/0 scram-sha-256\n"
    )


def pg_settings(plan: Plan) -> list[str]:
    args = [
        "-c",
        "listen_addresses=*",
        "-c",
        "wal_level=replica",
        "-c",
        "max_wal_senders=10",
        "-c",
        "max_replication_slots=10",
        "-c",
        "hot_standby=on",
        "-c",
        "hba_file=/etc/morgan/postgres/pg_hba.conf",
        "-c",
        "password_encryption=scram-sha-256",
    ]
    if plan.config.security.internal_tls:
        args += [
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={TLS_DIR}/cert.pem",
            "-c",
            f"ssl_key_file={TLS_DIR}/key.pem",
            "-c",
            f"ssl_ca_file={TLS_DIR}/ca.pem",
        ]
    return args


def primary_init_script(plan: Plan) -> str:
    """Runs once on an empty data dir: replication role and one slot per standby host."""
    slots = "".join(
        f"  SELECT pg_create_physical_replication_slot('standby_{h.replace('-', '_')}');\n"
        for h in plan.hosts_of("postgres-standby")
    )
    return (
        "#!/bin/sh\nset -eu\n"
        'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL\n'
        "  CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$REPLICATION_PASSWORD';\n"
        f"{slots}"
        "SQL\n"
    )


def standby_entrypoint(plan: Plan, host: str) -> str:
    """Clone the primary with pg_basebackup on first start, then run as a hot standby."""
    primary = plan.host_of("postgres-primary")
    assert primary is not None
    address = plan.config.host(primary).address
    sslmode = "verify-full" if plan.config.security.internal_tls else "prefer"
    slot = f"standby_{host.replace('-', '_')}"
    settings = " ".join(pg_settings(plan))
    return (
        "set -eu\n"
        'if [ ! -s "$PGDATA/PG_VERSION" ]; then\n'
        '  mkdir -p "$PGDATA" && chown postgres "$PGDATA" && chmod 700 "$PGDATA"\n'
        '  until gosu postgres env PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup'
        f' -h {address} -p {PG_PORT} -U replicator -D "$PGDATA" -X stream -R -c fast -S {slot}'
        f" -d 'sslmode={sslmode} sslrootcert={TLS_DIR}/ca.pem'; do\n"
        '    echo "waiting for the primary to accept the standby"; sleep 5\n'
        "  done\n"
        "fi\n"
        f"exec gosu postgres postgres {settings}\n"
    )


def redis_server_args(plan: Plan, host: str, cluster: bool) -> str:
    address = plan.config.host(host).address
    parts = ['exec redis-server --appendonly yes --dir /data --requirepass "$REDIS_PASSWORD"']
    if plan.config.security.internal_tls:
        parts.append(
            f"--port 0 --tls-port {REDIS_PORT} --tls-cert-file {TLS_DIR}/cert.pem"
            f" --tls-key-file {TLS_DIR}/key.pem --tls-ca-cert-file {TLS_DIR}/ca.pem"
            " --tls-auth-clients optional"
        )
        if cluster:
            parts.append("--tls-cluster yes --tls-replication yes")
    else:
        parts.append(f"--port {REDIS_PORT}")
    if cluster:
        parts.append(
            '--masterauth "$REDIS_PASSWORD" --cluster-enabled yes'
            " --cluster-config-file /data/nodes.conf --cluster-node-timeout 5000"
            f" --cluster-announce-hostname {address} --cluster-preferred-endpoint-type hostname"
        )
    return " ".join(parts)


def redis_cli_flags(plan: Plan) -> str:
    if plan.config.security.internal_tls:
        return f"--tls --cacert {TLS_DIR}/ca.pem --cert {TLS_DIR}/cert.pem --key {TLS_DIR}/key.pem"
    return ""


def redis_cluster_create(plan: Plan) -> str:
    """One-shot: create the cluster once all nodes answer; a no-op when it already exists."""
    nodes = [f"{plan.config.host(h).address}:{REDIS_PORT}" for h in plan.hosts_of("redis")]
    flags = redis_cli_flags(plan)
    first_host, first_port = nodes[0].rsplit(":", 1)
    probe = (
        f'redis-cli {flags} -h {first_host} -p {first_port} -a "$REDIS_PASSWORD" --no-auth-warning'
    )
    return (
        "set -eu\n"
        f"for node in {' '.join(nodes)}; do\n"
        f'  until redis-cli {flags} -h "${{node%:*}}" -p "${{node##*:}}" -a "$REDIS_PASSWORD"'
        " --no-auth-warning ping | grep -q PONG; do sleep 2; done\n"
        "done\n"
        f"if {probe} cluster info | grep -q 'cluster_state:ok'; then exit 0; fi\n"
        f'redis-cli {flags} -a "$REDIS_PASSWORD" --no-auth-warning --cluster create'
        f" {' '.join(nodes)} --cluster-replicas 0 --cluster-yes\n"
    )
