"""Prometheus and Alertmanager behind basic auth, started by their containers' own start line
(with paths moved under a temporary directory) on this machine's Debian binaries.

Without the password each answers 401, its health endpoint too; with it, 200. The
containers' healthchecks pass (they ask for the 401: no secret in the probe), amtool works
with its secret files, and Prometheus scrapes itself with them. The web config ends up in a
0600 file, and no secret is in any process's arguments or environment."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from infra.configs import monitoring_auth as auth
from infra.configs import observability as obs
from infra.deployment import build_deployment
from infra.model import SECRETS_DIR, TLS_DIR, ContainerSpec
from infra.placement import Plan
from tests.harness.binaries import find_binary
from tests.harness.ports import free_ports
from tests.harness.process import ManagedProcess

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"


def _tls(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1, as the fleet's names loopback."""
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    (tls / "ca.pem").write_text((tls / "cert.pem").read_text())
    return tls


@dataclass
class Started:
    spec: ContainerSpec
    url: str
    process: ManagedProcess
    moved: dict[str, str]

    def here(self, text: str) -> str:
        for inside, outside in self.moved.items():
            text = text.replace(inside, outside)
        return text


def _start(spec: ContainerSpec, tmp_path: Path, binary: str, data: str, port: int,
           files: dict[str, str]) -> Started:  # fmt: skip
    """Run the spec's start line on `port`, with every container path moved under tmp_path."""
    listen = next(a for a in spec.command[1].split() if "--web.listen-address=" in a)
    moved = {
        listen: f"--web.listen-address=127.0.0.1:{port}",
        auth.SECRETS_DIR: str(tmp_path / "secrets"),
        SECRETS_DIR: str(tmp_path / "run-secrets"),
        TLS_DIR: str(_tls(tmp_path)),
        f"/bin/{binary}": find_binary(
            {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager"}[binary]
        ),
        f"--storage.tsdb.path={data}": f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--storage.path={data}": f"--storage.path={tmp_path / 'data'}",
        "/etc/prometheus/": f"{tmp_path / 'etc'}/",
        "/etc/alertmanager/": f"{tmp_path / 'etc'}/",
        "/etc/amtool/": f"{tmp_path / 'etc'}/amtool-",
    }
    started = Started(spec, f"https://127.0.0.1:{port}", None, moved)  # type: ignore[arg-type]
    (tmp_path / "etc").mkdir()
    for file in spec.files:
        content = files.get(file.path, file.content)
        Path(started.here(file.path)).write_text(started.here(content))
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
    # The container's secret files, as the engine puts them there.
    values = {auth.PASSWORD.secret: PASSWORD, auth.HASH.secret: digest}
    (tmp_path / "run-secrets").mkdir()
    for secret in spec.secret_files:
        Path(started.here(secret.path)).write_text(values[secret.secret] + "\n")
    env = {"PATH": os.environ["PATH"]}
    started.process = ManagedProcess(
        binary, ["/bin/sh", "-c", started.here(spec.command[1])], tmp_path / "log", env=env
    )
    started.process.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{started.url}/-/healthy", verify=False, timeout=2)
            return started
        except httpx.TransportError:
            log = (tmp_path / "log").read_text(errors="replace")
            assert started.process.is_running(), f"{binary} exited:\n{log[-2000:]}"
            assert time.monotonic() < deadline, f"{binary} did not listen in 30 s:\n{log[-2000:]}"
            time.sleep(0.3)


def _spec(plan: Plan, role: str) -> ContainerSpec:
    return build_deployment(plan, Path(".")).of_role(role)[0]


@pytest.fixture
def prometheus(homelab_plan: Plan, tmp_path: Path) -> Iterator[Started]:
    spec = _spec(homelab_plan, "prometheus")
    (port,) = free_ports(1)
    # Only the job that scrapes Prometheus itself (Debian's build has no Consul discovery),
    # with its basic auth and TLS as generated, at this test's port.
    document = obs.prometheus_config(homelab_plan)
    document["scrape_configs"] = [j for j in document["scrape_configs"]
                                  if j["job_name"] == "prometheus"]  # fmt: skip
    document.pop("rule_files")
    document.pop("alerting")
    config = obs.to_yaml(document).replace(
        f"127.0.0.1:{obs.PORTS['prometheus']}", f"127.0.0.1:{port}"
    )
    started = _start(spec, tmp_path, "prometheus", "/prometheus", port,
                     {"/etc/prometheus/prometheus.yml": config})  # fmt: skip
    yield started
    started.process.stop()


@pytest.fixture
def alertmanager(homelab_plan: Plan, tmp_path: Path) -> Iterator[Started]:
    (port,) = free_ports(1)
    started = _start(_spec(homelab_plan, "alertmanager"), tmp_path, "alertmanager",
                     "/alertmanager", port, {})  # fmt: skip
    yield started
    started.process.stop()


def _healthcheck_passes(started: Started) -> None:
    """The container's healthcheck, as the engine runs it (CMD-SHELL), on this server."""
    test = started.spec.healthcheck.test  # type: ignore[union-attr]
    assert test[0] == "CMD-SHELL"
    port = started.url.rsplit(":", 1)[1]
    own = test[1].replace(f"127.0.0.1:{obs.PORTS[started.spec.role]}", f"127.0.0.1:{port}")
    result = subprocess.run(["/bin/sh", "-c", own], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (own, result.stdout + result.stderr)


def _secrets_stay_in_files(started: Started) -> None:
    secrets = Path(started.here(auth.SECRETS_DIR))
    for path in secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert [p.name for p in secrets.iterdir()] == ["web.yml"]
    web = yaml.safe_load((secrets / "web.yml").read_text())
    digest = web["basic_auth_users"]["morgan"]
    assert bcrypt.checkpw(PASSWORD.encode(), digest.encode())
    assert web["tls_server_config"]["cert_file"].endswith("/cert.pem")
    # The shell exec'd the server: its arguments and environment hold neither secret.
    pid = started.process.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    for secret in (PASSWORD.encode(), digest.encode()):
        assert secret not in cmdline and secret not in environ


def test_prometheus_asks_every_request_for_the_password(prometheus: Started) -> None:
    url, ca = prometheus.url, prometheus.here(f"{TLS_DIR}/ca.pem")
    for path in ("/-/healthy", "/api/v1/query?query=up", "/metrics"):
        assert httpx.get(url + path, verify=ca).status_code == 401, path
        assert httpx.get(url + path, verify=ca, auth=("morgan", "guess")).status_code == 401
        assert httpx.get(url + path, verify=ca, auth=("morgan", PASSWORD)).status_code == 200
    _secrets_stay_in_files(prometheus)
    _healthcheck_passes(prometheus)
    # Prometheus scrapes itself with the password from its file: `up` becomes 1.
    deadline = time.monotonic() + 20
    while True:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": 'up{job="prometheus"}'},
                           verify=ca, auth=("morgan", PASSWORD)).json()  # fmt: skip
        values = [s["value"][1] for s in answer["data"]["result"]]
        if values == ["1"]:
            break
        targets = httpx.get(f"{url}/api/v1/targets", verify=ca, auth=("morgan", PASSWORD))
        errors = [t["lastError"] for t in targets.json()["data"]["activeTargets"]]
        print(f"up{{job=prometheus}}: {values}, scrape errors: {errors}")
        assert time.monotonic() < deadline, f"Prometheus does not scrape itself: {errors}"
        time.sleep(1)


def test_alertmanager_takes_no_silence_without_the_password(alertmanager: Started) -> None:
    url, ca = alertmanager.url, alertmanager.here(f"{TLS_DIR}/ca.pem")
    silence = {"matchers": [{"name": "alertname", "value": ".+", "isRegex": True}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
               "createdBy": "mallory", "comment": "hide every alert"}  # fmt: skip
    assert httpx.post(f"{url}/api/v2/silences", json=silence, verify=ca).status_code == 401
    assert httpx.get(f"{url}/-/healthy", verify=ca).status_code == 401
    listed = httpx.get(f"{url}/api/v2/silences", verify=ca, auth=("morgan", PASSWORD))
    assert listed.status_code == 200 and listed.json() == []
    _secrets_stay_in_files(alertmanager)
    _healthcheck_passes(alertmanager)
    # amtool, with the container's config, which names the password file.
    amtool = yaml.safe_load(alertmanager.here(next(
        f.content for f in alertmanager.spec.files if f.path.endswith("amtool.yml"))))  # fmt: skip
    flags = [f"--alertmanager.url={url}", f"--http.config.file={amtool['http.config.file']}"]
    result = subprocess.run([find_binary("amtool"), "silence", "query", *flags],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # The same without the password: the CA alone does not do.
    no_password = Path(alertmanager.here(auth.SECRETS_DIR)).parent / "no-password.yml"
    no_password.write_text(yaml.safe_dump({"tls_config": {"ca_file": ca}}))
    refused = subprocess.run([find_binary("amtool"), "silence", "query", flags[0],
                              f"--http.config.file={no_password}"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    assert "(status 401)" in refused.stderr, refused.stderr
