"""PostgreSQL primary/standby and Redis node scripts."""

from __future__ import annotations

import ipaddress

from infra.model import TLS_DIR, SecretFile
from infra.placement import Plan

PG_PORT = 5432
REDIS_PORT = 6379
REDIS_BUS_PORT = 16379
REDIS_REPLICA_PORT = 6380  # a replica node beside a master on the same host
REDIS_BUS_OFFSET = REDIS_BUS_PORT - REDIS_PORT
QDRANT_PORTS = (6333, 6334)


def pg_clients(plan: Plan) -> list[str]:
    """pg_hba's addresses for remote connections: postgres.client_networks, or each host of
    the stack (an IP as /32, a name as PostgreSQL matches names)."""
    pg = plan.config.postgres
    if pg.client_networks is not None:
        return [str(n) for n in pg.client_networks]
    clients = []
    for host in plan.hosts:
        try:
            ip = ipaddress.ip_address(host.address)
        except ValueError:
            clients.append(host.address)
        else:
            clients.append(f"{ip}/{ip.max_prefixlen}")
    return list(dict.fromkeys(clients))


def pg_hba_rules(plan: Plan) -> list[str]:
    """Over the network only from the fleet's hosts, and only: the replicator (streaming),
    the application role to its database, the administrator (Patroni's pg_rewind and
    checks, the role step, which may find the leader on another host). With internal TLS
    each of them also shows a certificate of the stack's CA: a password alone, sniffed or
    guessed, opens nothing. Over the socket, the container's own processes."""
    tls = plan.config.security.internal_tls
    kind = "hostssl" if tls else "host"
    auth = "scram-sha-256 clientcert=verify-ca" if tls else "scram-sha-256"
    pg = plan.config.postgres
    rules = ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256"]
    for client in pg_clients(plan):
        rules += [
            f"{kind} replication replicator {client} {auth}",
            f"{kind} {pg.database} {pg.app_user} {client} {auth}",
            f"{kind} all {pg.user} {client} {auth}",
        ]
    return rules


def pg_hba(plan: Plan) -> str:
    return "".join(f"{rule}\n" for rule in pg_hba_rules(plan))


def pg_settings(plan: Plan, host: str) -> list[str]:
    listen = plan.listen_address(host)
    args = [
        "-c",
        f"listen_addresses={'*' if listen == '0.0.0.0' else listen}",
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
        # A builtin's argument, then psql's variable: the password is in no process's
        # arguments.
        f"export REPLICATION_PASSWORD={REPLICATION_PASSWORD.shell_value}\n"
        'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"'
        " <<'SQL'\n"
        "  \\getenv password REPLICATION_PASSWORD\n"
        "  CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';\n"
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
    settings = " ".join(pg_settings(plan, host))
    return (
        "set -eu\n"
        'if [ ! -s "$PGDATA/PG_VERSION" ]; then\n'
        '  mkdir -p "$PGDATA" && chown postgres "$PGDATA" && chmod 700 "$PGDATA"\n'
        # Exported by the shell (a builtin): the password is in no process's arguments.
        f"  export PGPASSWORD={REPLICATION_PASSWORD.shell_value}\n"
        "  until gosu postgres pg_basebackup"
        f' -h {address} -p {PG_PORT} -U replicator -D "$PGDATA" -X stream -R -c fast -S {slot}'
        f" -d 'sslmode={sslmode} sslrootcert={TLS_DIR}/ca.pem'; do\n"
        '    echo "waiting for the primary to accept the standby"; sleep 5\n'
        "  done\n"
        "  unset PGPASSWORD\n"
        "fi\n"
        f"exec gosu postgres postgres {settings}\n"
    )


# PostgreSQL's administrator and replication passwords, as files (the image's entrypoint
# reads POSTGRES_PASSWORD_FILE; the scripts below read both).
POSTGRES_PASSWORD = SecretFile("POSTGRES_PASSWORD", "postgres_password")
REPLICATION_PASSWORD = SecretFile("REPLICATION_PASSWORD", "replication_password")
REDIS_AUTH_CONF = "/tmp/redis-auth.conf"
# The password, as a file, in every container that talks to a node with redis-cli.
REDIS_PASSWORD = SecretFile("REDIS_PASSWORD", "redis_password")
# redis-cli reads the password from REDISCLI_AUTH: never `-a PASSWORD` in its arguments.
REDIS_CLI = f"REDISCLI_AUTH={REDIS_PASSWORD.shell_value} redis-cli"


def redis_server_args(plan: Plan, host: str, cluster: bool, port: int = REDIS_PORT) -> str:
    """The node's shell command. The password goes into a 0600 config file written by the
    shell's own printf, never into redis-server's arguments (which any process can read)."""
    address = plan.config.host(host).address
    auth = ["requirepass", "masterauth"] if cluster else ["requirepass"]
    value = REDIS_PASSWORD.shell_value
    lines = "; ".join(f"printf '{name} \"%s\"\\n' {value}" for name in auth)
    parts = [f"umask 077; {{ {lines}; }} > {REDIS_AUTH_CONF};",
             f"exec redis-server {REDIS_AUTH_CONF} --appendonly yes --dir /data",
             f"--bind {plan.listen_address(host)}"]  # fmt: skip
    if plan.config.security.internal_tls:
        parts.append(
            f"--port 0 --tls-port {port} --tls-cert-file {TLS_DIR}/cert.pem"
            f" --tls-key-file {TLS_DIR}/key.pem --tls-ca-cert-file {TLS_DIR}/ca.pem"
            # Every client shows a certificate from the fleet CA: core, the exporter and
            # redis-cli use their role's, the nodes their own on the cluster bus.
            " --tls-auth-clients yes"
        )
        if cluster:
            parts.append("--tls-cluster yes --tls-replication yes")
    else:
        parts.append(f"--port {port}")
    if cluster:
        parts.append(
            "--cluster-enabled yes"
            " --cluster-config-file /data/nodes.conf --cluster-node-timeout 5000"
            # The cluster bus follows the port (+10000); nodes.conf stays in the node's volume.
            f" --cluster-announce-hostname {address} --cluster-preferred-endpoint-type hostname"
        )
    return " ".join(parts)


def redis_cli_flags(plan: Plan) -> str:
    if plan.config.security.internal_tls:
        return f"--tls --cacert {TLS_DIR}/ca.pem --cert {TLS_DIR}/cert.pem --key {TLS_DIR}/key.pem"
    return ""


def redis_cli(plan: Plan) -> str:
    """The shell words that run redis-cli against this plan's nodes: TLS flags, and the
    password from its file (REDIS_PASSWORD) through REDISCLI_AUTH."""
    flags = redis_cli_flags(plan)
    return f"{REDIS_CLI} {flags}" if flags else REDIS_CLI


def redis_cluster_create(plan: Plan) -> str:
    """One-shot: create the cluster once all nodes answer, then give each master the replica
    the plan put on the next host. Each step is skipped when already done."""
    cfg = plan.config
    masters = [f"{cfg.host(h).address}:{REDIS_PORT}" for h in plan.hosts_of("redis")]
    replicas = [
        f"{cfg.host(r.host).address}:{REDIS_REPLICA_PORT}" for r in plan.of_role("redis-replica")
    ]
    cli = redis_cli(plan)
    first_host, first_port = masters[0].rsplit(":", 1)
    first = f"{cli} -h {first_host} -p {first_port}"
    lines = [
        "set -eu",
        f"for node in {' '.join(masters + replicas)}; do",
        f'  until {cli} -h "${{node%:*}}" -p "${{node##*:}}" ping | grep -q PONG; do sleep 2; done',
        "done",
        f"if ! {first} cluster info | grep -q 'cluster_state:ok'; then",
        f"  {cli} --cluster create {' '.join(masters)} --cluster-replicas 0 --cluster-yes",
        "fi",
    ]
    for master, replica in zip(masters, replicas, strict=False):
        m_host, m_port = master.rsplit(":", 1)
        lines += [
            f"if ! {first} cluster nodes | grep -q ' {replica}@'; then",
            f"  id=$({cli} -h {m_host} -p {m_port} cluster myid)",
            f"  {cli} --cluster add-node {replica} {master} --cluster-slave"
            ' --cluster-master-id "$id"',
            "fi",
        ]
    return "\n".join(lines) + "\n"
