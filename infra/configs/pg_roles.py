"""The application role core connects as: made, or brought up to date, by a deploy step.

A one-shot step, after PostgreSQL is up, logs in as the administrator and makes sure that
`postgres.app_user` exists, may log in with the stack's `postgres_app_password`, is not a
superuser and cannot make roles or databases, and owns the database and every table in it
(so core's migrations run as it). It runs the same on a new cluster and on one whose data
predates the role (tables made by the administrator are handed over), and sets the
password each time it runs: a deploy runs it again whenever its inputs change (a rotated
`postgres_app_password`, another `app_user`).
"""

from __future__ import annotations

import shlex

from infra.configs.data import PG_PORT, POSTGRES_PASSWORD
from infra.model import TLS_DIR, SecretFile
from infra.placement import Plan

# Both passwords reach the step as files; the script exports them (a shell builtin) to
# psql, which reads the administrator's as PGPASSWORD and the role's with \getenv: never
# from its arguments.
APP_PASSWORD = SecretFile("POSTGRES_APP_PASSWORD", "postgres_app_password")
ADMIN_PASSWORD = POSTGRES_PASSWORD
# The step's copy of its key, readable by itself only (libpq insists).
CLIENT_KEY_PATH = "/tmp/client-key.pem"

APP_ROLE_SQL = r"""\getenv password POSTGRES_APP_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"app";
\connect :"db"
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'app')
  FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'app' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', n.nspname, c.relname, :'app')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'S' AND n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> :'app'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
\gexec
"""


def admin_conninfo(plan: Plan) -> str:
    """libpq's keyword form: the administrator at whichever member is the primary now."""
    cfg = plan.config
    roles = ["postgres-primary"]
    if cfg.postgres.ha == "patroni":
        roles.append("postgres-standby")
    hosts = [cfg.host(h).address for r in roles for h in plan.hosts_of(r)]
    words = {
        "host": ",".join(hosts),
        "port": ",".join(str(PG_PORT) for _ in hosts),
        "dbname": "postgres",
        "user": cfg.postgres.user,
        "target_session_attrs": "read-write",
        "connect_timeout": "5",
    }
    if cfg.security.internal_tls:
        words.update({"sslmode": "verify-full", "sslrootcert": f"{TLS_DIR}/ca.pem",
                      "sslcert": f"{TLS_DIR}/cert.pem", "sslkey": CLIENT_KEY_PATH})  # fmt: skip
    return " ".join(f"{k}={v}" for k, v in words.items())


def app_role_script(plan: Plan) -> str:
    """The step's shell script: wait for a primary, then run APP_ROLE_SQL on it."""
    pg = plan.config.postgres
    conninfo = shlex.quote(admin_conninfo(plan))
    key = (
        # libpq refuses a client key others may read; uploaded files are (0644).
        f"install -m 0600 {TLS_DIR}/key.pem {CLIENT_KEY_PATH}\n"
        if plan.config.security.internal_tls
        else ""
    )
    return (
        "set -eu\n"
        f"{key}"
        # Exported by the shell (a builtin): the password is in no process's arguments.
        f"export PGPASSWORD={ADMIN_PASSWORD.shell_value}"
        f" {APP_PASSWORD.variable}={APP_PASSWORD.shell_value}\n"
        f"until psql {conninfo} -Atc 'SELECT 1' >/dev/null; do\n"
        '  echo "waiting for the PostgreSQL primary"; sleep 2\n'
        "done\n"
        f"psql {conninfo} -v ON_ERROR_STOP=1 -q"
        f" -v app={shlex.quote(pg.app_user)} -v db={shlex.quote(pg.database)} <<'SQL'\n"
        f"{APP_ROLE_SQL}"
        "SQL\n"
        f'echo "role {pg.app_user} owns database {pg.database}"\n'
    )
