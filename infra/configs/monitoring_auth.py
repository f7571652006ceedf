"""Prometheus' and Alertmanager's basic auth, and how their secrets reach them as files.

Both ask every request for the user `morgan` and the stack's `monitoring_password`
(exporter-toolkit's `basic_auth_users`, a bcrypt hash): without it nobody on the network
reads the metrics or silences an alert. Their clients (Prometheus sending alerts and
scraping itself, Grafana, amtool, `morgan status`, `morgan verify`) send it; the
containers' healthchecks hold no secret (they require the 401: spec_common.auth_probe).

Secrets reach each container as environment variables that its start line writes to files
only the server's user reads, in the container's own layer (never a volume), and then
drops from the environment before the server starts.
"""

from __future__ import annotations

import shlex
from typing import Any

from infra.model import TLS_DIR, SecretEnv

SECRETS_DIR = "/tmp/morgan-secrets"
MONITORING_USER = "morgan"
PASSWORD_SECRET = "monitoring_password"
HASH_SECRET = "monitoring_password_bcrypt"
PASSWORD_VARIABLE = "MONITORING_PASSWORD"
HASH_VARIABLE = "MONITORING_PASSWORD_BCRYPT"
PASSWORD_FILE = f"{SECRETS_DIR}/monitoring_password"
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
    return (
        SecretEnv(PASSWORD_VARIABLE, f"{{{PASSWORD_SECRET}}}"),
        SecretEnv(HASH_VARIABLE, f"{{{HASH_SECRET}}}"),
    )


def start_script(
    executable: str,
    flags: list[str],
    *,
    web_base: str,
    secret_files: tuple[tuple[str, str], ...] = (),
) -> str:
    """The shell line a Prometheus or Alertmanager container starts with: write the
    password (and `secret_files`: variable, path) to 0600 files, the web config (the file
    `web_base` plus the user and hash), then exec the server with that web config. No
    secret is ever in a process's arguments."""
    steps = [f"umask 077 && mkdir -p {SECRETS_DIR}"]
    for variable, path in ((PASSWORD_VARIABLE, PASSWORD_FILE), *secret_files):
        steps.append(f"printf '%s' \"${variable}\" > {path} && unset {variable}")
    user = f'basic_auth_users:\\n  {MONITORING_USER}: "%s"\\n'
    steps.append(
        f"{{ cat {web_base} && printf '{user}' \"${HASH_VARIABLE}\"; }} > {WEB_CONFIG}"
        f" && unset {HASH_VARIABLE}"
    )
    command = [executable, *flags, f"--web.config.file={WEB_CONFIG}"]
    steps.append("exec " + shlex.join(command))
    return " && ".join(steps)
