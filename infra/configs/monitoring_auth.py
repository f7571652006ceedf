"""Prometheus' and Alertmanager's basic auth, and how their secrets reach them as files.

Both ask every request for the user `morgan` and the stack's `monitoring_password`
(exporter-toolkit's `basic_auth_users`, a bcrypt hash): without it nobody on the network
reads the metrics or silences an alert. Their clients (Prometheus sending alerts and
scraping itself, Grafana, amtool, `morgan status`, `morgan verify`) send it; the
containers' healthchecks hold no secret (they require the 401: spec_common.auth_probe).

Secrets reach each container as files (infra.model.SecretFile: its user's alone where the
plan knows the user); the start line writes the web config (the image's TLS part plus the
user and hash) to a file only the server's user reads, in the container's own layer (never
a volume). Loki's ruler is the exception: its config takes the password from the
environment (`-config.expand-env`), the only way Loki reads it.
"""

from __future__ import annotations

import shlex
from typing import Any

from infra.model import TLS_DIR, SecretEnv, SecretFile

# Where the start line writes the web config it composes: the container's own layer.
SECRETS_DIR = "/tmp/morgan-secrets"
MONITORING_USER = "morgan"
PASSWORD = SecretFile("MONITORING_PASSWORD", "monitoring_password")
HASH = SecretFile("MONITORING_PASSWORD_BCRYPT", "monitoring_password_bcrypt")
PASSWORD_VARIABLE = PASSWORD.variable
# What every client of Prometheus or Alertmanager reads the password from.
PASSWORD_FILE = PASSWORD.path
# The web config the server reads: the TLS part from the image's files, the user appended.
WEB_CONFIG = f"{SECRETS_DIR}/web.yml"


def basic_auth() -> dict[str, Any]:
    """A Prometheus-style client's `basic_auth` (scrape jobs, alertmanagers, http configs)."""
    return {"username": MONITORING_USER, "password_file": PASSWORD_FILE}


def client_config(tls: bool) -> dict[str, Any]:
    """amtool's --http.config.file: the password (from its file), and the fleet CA."""
    config: dict[str, Any] = {"basic_auth": basic_auth()}
    if tls:
        config["tls_config"] = {"ca_file": f"{TLS_DIR}/ca.pem"}
    return config


def secret_env() -> tuple[SecretEnv, ...]:
    """Loki's: the password in its environment (see the module's docstring)."""
    return (SecretEnv(PASSWORD_VARIABLE, f"{{{PASSWORD.secret}}}"),)


def secret_files() -> tuple[SecretFile, ...]:
    """Prometheus' and Alertmanager's: the password (their clients') and its hash."""
    return (PASSWORD, HASH)


def start_script(executable: str, flags: list[str], *, web_base: str) -> str:
    """The shell line a Prometheus or Alertmanager container starts with: write the web
    config (the file `web_base` plus the user and the hash from its secret file) to a 0600
    file, then exec the server with it. No secret is ever in a process's arguments or
    environment."""
    user = f'basic_auth_users:\\n  {MONITORING_USER}: "%s"\\n'
    steps = [
        f"umask 077 && mkdir -p {SECRETS_DIR}",
        f"{{ cat {web_base} && printf '{user}' {HASH.shell_value}; }} > {WEB_CONFIG}",
        "exec " + shlex.join([executable, *flags, f"--web.config.file={WEB_CONFIG}"]),
    ]
    return " && ".join(steps)
