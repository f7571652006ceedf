"""No password in any process's arguments (`ps` and /proc/<pid>/cmdline show them to every
user of the host): Redis gets its password from a 0600 file and redis-cli from
REDISCLI_AUTH, pg_basebackup from an exported PGPASSWORD."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from infra.config import load_stack_file
from infra.configs import data as data_cfg
from infra.deployment import build_deployment
from infra.placement import make_plan
from tests.harness.binaries import find_binary
from tests.harness.ports import free_port
from tests.infra.conftest import ROOT

# A password in an argument: `-a $X`, `--requirepass $X`, `--masterauth $X`, `env X=...`.
_IN_ARGUMENTS = re.compile(
    r"""-a\s+["']?\$|--requirepass\s|--masterauth\s|\benv\s+\w*PASSWORD=|--password[= ]"""
)


@pytest.mark.parametrize("stack", ["dev", "homelab", "lab"])
def test_no_container_puts_a_password_in_arguments(stack: str) -> None:
    plan = make_plan(load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml"))
    deployment = build_deployment(plan, ROOT)
    checked = 0
    for host in plan.config.hosts:
        for spec in deployment.on_host(host.name):
            text = " ".join([*spec.command, *(spec.entrypoint or ()), *spec.healthcheck.test])
            text += " ".join(f.content for f in spec.files if f.path.endswith(".sh"))
            assert not _IN_ARGUMENTS.search(text), (spec.name, _IN_ARGUMENTS.search(text))
            checked += 1
    assert checked >= 5


def test_redis_node_keeps_its_password_out_of_its_arguments(tmp_path: Path) -> None:
    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.dev.yaml"))
    port = free_port()
    script = data_cfg.redis_server_args(plan, "local", cluster=False, port=port)
    script = script.replace("--dir /data", f"--dir {tmp_path}").replace(
        data_cfg.REDIS_AUTH_CONF, str(tmp_path / "auth.conf")
    )
    script = script.replace("exec redis-server", f"exec {find_binary('redis-server')}")
    password = secrets.token_hex(16)
    # The node reads it from its secret file: here, a file of the test's own.
    (tmp_path / "password").write_text(password + "\n")
    script = script.replace(data_cfg.REDIS_PASSWORD.path, str(tmp_path / "password"))
    env = {k: v for k, v in os.environ.items() if "REDIS" not in k}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        cli = [find_binary("redis-cli"), "-p", str(port), "ping"]
        deadline = time.monotonic() + 20
        while True:
            answer = subprocess.run(cli, env={**env, "REDISCLI_AUTH": password},
                                    capture_output=True, text=True, check=False)  # fmt: skip
            if answer.stdout.strip() == "PONG":
                break
            assert time.monotonic() < deadline, answer.stdout + answer.stderr
            time.sleep(0.2)
        refused = subprocess.run(cli, capture_output=True, text=True, check=False)
        assert "NOAUTH" in refused.stdout + refused.stderr
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "redis" in cmdline, cmdline  # the exec'd server itself
        assert password not in cmdline
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().decode(errors="replace")
        assert password not in environ
        assert oct((tmp_path / "auth.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        server.terminate()
        server.wait(timeout=10)
