"""Patroni's configuration: PostgreSQL primary and standby with Consul as the DCS.

Both members run the same file but for their own name and address. The first member
to take the leader key in Consul bootstraps the cluster (initdb, the application
database); the other clones it and streams. With `postgres.synchronous` a commit waits
for the standby, so a turn acknowledged to a client survives the loss of the primary.
Secrets come as files (the superuser's and the replication role's passwords, the
member's Consul token); Patroni reads them only from its config or its environment, so
the member's start writes its config with them to a file of its own (`RUN_CONFIG_PATH`,
0600) and runs Patroni on that. patronictl reads the same file.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from infra.configs import consul as consul_cfg
from infra.configs.data import PG_PORT, pg_hba_rules
from infra.model import TLS_DIR, SecretFile
from infra.placement import Plan

REST_PORT = 8008
SCOPE = "morgan"
NAMESPACE = "/morgan/patroni/"
CONFIG_PATH = "/etc/morgan/patroni/patroni.yml"
# PostgreSQL refuses a key file others can read; uploaded files are, so the member copies
# the key to a file of its own (0600) before Patroni starts PostgreSQL.
PG_KEY_PATH = "/var/run/postgresql/server.key"
POST_BOOTSTRAP_PATH = "/etc/morgan/patroni/post-bootstrap.sh"
# The member's full config (CONFIG_PATH plus its secrets), in the container's own layer;
# what patronictl reads too. The secret files' variables do not start with PATRONI_, which
# Patroni would read as settings.
RUN_CONFIG_PATH = "/var/run/postgresql/patroni.yml"
WITH_SECRETS_PATH = "/etc/morgan/patroni/with-secrets.py"
SUPERUSER_PASSWORD = SecretFile("POSTGRES_SUPERUSER_PASSWORD", "postgres_password")
REPLICATION_PASSWORD = SecretFile("POSTGRES_REPLICATION_PASSWORD", "replication_password")
# Reads CONFIG_PATH, sets each secret from its file at its place, writes RUN_CONFIG_PATH
# (0600). The places and files come after it, as JSON (`with_secrets_script`).
_WITH_SECRETS = """\
import json
import os
import sys

import yaml

source, target = sys.argv[1:]
with open(source) as file:
    config = yaml.safe_load(file)
for keys, path in PLACES:
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    with open(path) as file:
        node[keys[-1]] = file.read().removesuffix("\\n")
descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(descriptor, "w") as file:
    yaml.safe_dump(config, file, sort_keys=False)
"""
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


SecretPlaces = tuple[tuple[tuple[str, ...], SecretFile], ...]


def secret_places(consul_token: str) -> SecretPlaces:
    """(where in Patroni's config, the secret file) for each of the member's secrets;
    `consul_token` names the secret that is its Consul token."""
    return (
        (("postgresql", "authentication", "superuser", "password"), SUPERUSER_PASSWORD),
        (("postgresql", "authentication", "replication", "password"), REPLICATION_PASSWORD),
        (("consul", "token"), SecretFile("DCS_CONSUL_TOKEN", consul_token)),
    )


def with_secrets_script(secrets: SecretPlaces) -> str:
    places = [[list(keys), file.path] for keys, file in secrets]
    return _WITH_SECRETS.replace(
        "for keys, path in PLACES:", f"PLACES = {json.dumps(places)}\nfor keys, path in PLACES:"
    )


def command(plan: Plan) -> tuple[str, ...]:
    run = (
        f"python3 {WITH_SECRETS_PATH} {CONFIG_PATH} {RUN_CONFIG_PATH}"
        f" && exec patroni {RUN_CONFIG_PATH}"
    )
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
