"""Patroni's configuration: PostgreSQL primary and standby with Consul as the DCS.

Both members run the same file but for their own name and address. The first member
to take the leader key in Consul bootstraps the cluster (initdb, the application
database); the other clones it and streams. With `postgres.synchronous` a commit waits
for the standby, so a turn acknowledged to a client survives the loss of the primary.
Secrets come from the environment: PATRONI_SUPERUSER_PASSWORD,
PATRONI_REPLICATION_PASSWORD and PATRONI_CONSUL_TOKEN.
"""

from __future__ import annotations

from typing import Any

import yaml

from infra.configs import consul as consul_cfg
from infra.configs.data import PG_PORT, pg_hba_rules
from infra.model import TLS_DIR
from infra.placement import Plan

REST_PORT = 8008
SCOPE = "morgan"
NAMESPACE = "/morgan/patroni/"
CONFIG_PATH = "/etc/morgan/patroni/patroni.yml"
# PostgreSQL refuses a key file others can read; uploaded files are, so the member copies
# the key to a file of its own (0600) before Patroni starts PostgreSQL.
PG_KEY_PATH = "/var/run/postgresql/server.key"
POST_BOOTSTRAP_PATH = "/etc/morgan/patroni/post-bootstrap.sh"
# Loss of the leader is noticed within ttl; Patroni needs loop_wait + 2 * retry_timeout <= ttl.
# Consul refuses session TTLs under 10 s, and Patroni asks for ttl / 2.
DCS_TIMING = {"ttl": 20, "loop_wait": 5, "retry_timeout": 5}


def members(plan: Plan) -> tuple[str, ...]:
    """Hosts of the Patroni members: the preferred first leader, then the standby."""
    return (*plan.hosts_of("postgres-primary"), *plan.hosts_of("postgres-standby"))


def _tls_files() -> dict[str, str]:
    return {
        "certfile": f"{TLS_DIR}/cert.pem",
        "keyfile": f"{TLS_DIR}/key.pem",
        "cafile": f"{TLS_DIR}/ca.pem",
    }


def patroni_config(plan: Plan, host: str) -> dict[str, Any]:
    cfg = plan.config
    pg = cfg.postgres
    tls = cfg.security.internal_tls
    address = cfg.host(host).address
    parameters: dict[str, Any] = {
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_log_hints": "on",
        # A standby that vanished without closing its connection (its host lost or cut
        # off) leaves pg_stat_replication after this, and Patroni stops waiting for it
        # as the synchronous standby; at the default 60 s every commit would wait that long.
        "wal_sender_timeout": "10s",
        "password_encryption": "scram-sha-256",
    }
    sslmode = "verify-full" if tls else "prefer"
    replication: dict[str, Any] = {"username": "replicator", "sslmode": sslmode}
    superuser: dict[str, Any] = {"username": pg.user, "sslmode": sslmode}
    if tls:
        parameters.update(
            {
                "ssl": "on",
                "ssl_cert_file": f"{TLS_DIR}/cert.pem",
                "ssl_key_file": PG_KEY_PATH,
                "ssl_ca_file": f"{TLS_DIR}/ca.pem",
            }
        )
        # The member's own certificate as its client certificate (pg_hba asks for one):
        # streaming from the leader, pg_rewind, and Patroni's own connections.
        for conn in (replication, superuser):
            conn.update(sslrootcert=f"{TLS_DIR}/ca.pem", sslcert=f"{TLS_DIR}/cert.pem",
                        sslkey=PG_KEY_PATH)  # fmt: skip
    agent = consul_cfg.local_agent_addr(plan).removeprefix("https://")
    consul: dict[str, Any] = {
        "host": agent,
        "scheme": "https" if tls else "http",
        "register_service": False,
    }
    if tls:
        consul.update(
            {
                "cacert": f"{TLS_DIR}/ca.pem",
                "cert": f"{TLS_DIR}/cert.pem",
                "key": f"{TLS_DIR}/key.pem",
                "verify": True,
            }
        )
    restapi: dict[str, Any] = {
        "listen": f"{plan.listen_address(host)}:{REST_PORT}",
        "connect_address": f"{address}:{REST_PORT}",
    }
    if tls:
        restapi.update(_tls_files())
    return {
        "scope": SCOPE,
        "namespace": NAMESPACE,
        "name": host,
        "restapi": restapi,
        "consul": consul,
        "bootstrap": {
            "dcs": {
                **DCS_TIMING,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": pg.synchronous,
                "postgresql": {"use_pg_rewind": True, "parameters": parameters},
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
            "post_bootstrap": POST_BOOTSTRAP_PATH,
        },
        "postgresql": {
            "listen": f"{plan.listen_address(host)}:{PG_PORT}",
            "connect_address": f"{address}:{PG_PORT}",
            "data_dir": "/var/lib/postgresql/data/pgdata",
            "bin_dir": "/usr/lib/postgresql/15/bin",
            "pgpass": "/tmp/pgpass",
            "authentication": {"superuser": superuser, "replication": replication},
            "parameters": {"unix_socket_directories": "/var/run/postgresql"},
            "pg_hba": pg_hba_rules(plan),
            # An old primary that cannot be rewound onto the new leader's timeline is
            # cloned again rather than left stopped: with synchronous replication what it
            # would throw away was never acknowledged to anyone.
            "remove_data_directory_on_rewind_failure": True,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def command(plan: Plan) -> tuple[str, ...]:
    run = f"exec patroni {CONFIG_PATH}"
    if plan.config.security.internal_tls:
        run = f"install -m 0600 {TLS_DIR}/key.pem {PG_KEY_PATH} && {run}"
    return ("/bin/sh", "-c", run)


def render(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def post_bootstrap_script(plan: Plan) -> str:
    """Runs once on the member that bootstraps: the application database.

    Patroni passes a connection URL for its superuser as the first argument.
    """
    db = plan.config.postgres.database
    return f'#!/bin/sh\nset -eu\npsql -v ON_ERROR_STOP=1 "$1" -c \'CREATE DATABASE "{db}"\'\n'
