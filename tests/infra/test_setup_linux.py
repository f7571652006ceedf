"""scripts/setup-linux.sh in --dry-run (every step printed, nothing changed): the GPU and
no-GPU paths, Docker over SSH or TLS, the firewall opened for exactly the plan's ports,
and its refusals. The real run is the lab's: every lab host is set up by this script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from morgan.cli.main import app
from typer.testing import CliRunner

from infra.deployment import build_deployment
from infra.host_ports import DOCKER_TLS, SSH, firewall_ports
from infra.placement import Plan
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "setup-linux.sh"
USER = "morgan-dry-run-check"  # a deploy user no test machine has


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.pub"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDryRunCheck morgan\n")
    return path


def _setup(*args: str, fakes: Path | None = None) -> subprocess.CompletedProcess[str]:
    # PATH without any nvidia-smi of this machine's, plus the test's fakes first.
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {**os.environ, "PATH": f"{fakes}:{path}" if fakes else path}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip


def _host_args(key: Path, *more: str) -> list[str]:
    return ["--dry-run", "--name", "h1", "--address", "127.0.0.1", "--authorized-key", str(key),
            "--user", USER, *more]  # fmt: skip


def test_without_a_gpu_no_toolkit_and_nothing_changes(key: Path) -> None:
    result = _setup(*_host_args(key))
    assert result.returncode == 0, result.stderr
    assert "GPU: no NVIDIA GPU seen" in result.stderr
    assert "nvidia" not in result.stdout
    assert f"would run: useradd --create-home --shell /bin/bash {USER}" in result.stdout
    assert "would write /etc/docker/daemon.json" in result.stdout
    assert '{"hosts": ["unix:///var/run/docker.sock"]}' in result.stdout
    assert "endpoint for the stack file: ssh://morgan-dry-run-check@127.0.0.1" in result.stderr
    assert "host_probe.py --name h1 --address 127.0.0.1" in result.stdout
    # A dry run changes nothing: the user was not made, no file was written.
    assert subprocess.run(["id", USER], capture_output=True, check=False).returncode == 1
    assert not Path("/etc/ssh/sshd_config.d/morgan.conf").exists()


def test_a_gpu_takes_the_toolkit_steps_and_the_nvidia_runtime(key: Path, tmp_path: Path) -> None:
    _fake(tmp_path, "nvidia-smi", 'echo "NVIDIA GeForce RTX 4090"')
    result = _setup(*_host_args(key), fakes=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "GPU: NVIDIA GeForce RTX 4090; NVIDIA Container Toolkit" in result.stderr
    out = result.stdout
    assert "would write /etc/apt/sources.list.d/nvidia-container-toolkit.list" in out
    assert "apt-get install -y -qq --no-install-recommends nvidia-container-toolkit" in out
    # The runtime is added to the daemon.json this script writes, so after writing it.
    daemon = out.index("would write /etc/docker/daemon.json")
    assert out.index("would run: nvidia-ctk runtime configure --runtime=docker") > daemon
    no_gpu = _setup(*_host_args(key, "--no-gpu"), fakes=tmp_path)
    assert "nvidia-ctk" not in no_gpu.stdout
    assert "--no-gpu; no toolkit" in no_gpu.stderr


def test_docker_over_tls_and_from_dockers_repository(key: Path, tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tls / name).write_text("pem")
    result = _setup(*_host_args(key, "--docker-tls", str(tls)))
    assert result.returncode == 0, result.stderr
    assert '"tcp://0.0.0.0:2376"], "tlsverify": true' in result.stdout
    assert "endpoint for the stack file: tcp://127.0.0.1:2376" in result.stderr
    missing = _setup(*_host_args(key, "--docker-tls", str(tmp_path)))
    assert missing.returncode == 1
    assert f"{tmp_path}/ca.pem is missing" in missing.stderr

    _fake(tmp_path, "dpkg-query", "exit 1")  # docker-ce not installed
    repo = _setup(*_host_args(key, "--docker-repo"), fakes=tmp_path)
    assert repo.returncode == 0, repo.stderr
    assert "https://download.docker.com/linux/debian bookworm stable" in repo.stdout
    assert "--no-install-recommends docker-ce docker-ce-cli containerd.io" in repo.stdout
    assert "ExecStart=/usr/bin/dockerd --containerd=/run/containerd/containerd.sock" in repo.stdout
    assert "ExecStart=/usr/sbin/dockerd\n" in result.stdout  # Debian's docker.io


def test_an_active_ufw_opens_exactly_the_plans_ports(key: Path, tmp_path: Path,
                                                     homelab_plan: Plan) -> None:  # fmt: skip
    _fake(tmp_path, "ufw", 'if [ "$1" = status ]; then echo "Status: active"; fi')
    ports = CliRunner().invoke(app, ["plan", "--stack", "homelab", "--ports", "h1"]).output.strip()
    result = _setup(*_host_args(key, "--ports", ports, "--allow-from", "192.168.1.0/24"),
                    fakes=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    opened = [line.split("would run: ")[1] for line in result.stdout.splitlines()
              if line.startswith("would run: ufw")]  # fmt: skip
    expected = firewall_ports(build_deployment(homelab_plan), "h1")
    assert opened == [f"ufw allow proto {p.protocol} from 192.168.1.0/24 to any port {p.number}"
                      " comment morgan fleet" for p in expected]  # fmt: skip

    refused = _setup(*_host_args(key), fakes=tmp_path)
    assert refused.returncode == 2
    assert "ufw is active: pass --ports" in refused.stderr
    assert "morgan plan --stack S --ports h1" in refused.stderr


def test_host_ports_are_the_plans_minus_loopback_plus_docker_access(homelab_plan: Plan) -> None:
    deployment = build_deployment(homelab_plan)
    h1 = set(firewall_ports(deployment, "h1"))
    h2 = set(firewall_ports(deployment, "h2"))
    assert SSH in h1 and DOCKER_TLS not in h1  # h1 is reached over ssh://
    assert DOCKER_TLS in h2 and SSH not in h2  # h2 (Windows) over tcp:// with TLS
    numbers = {(p.number, p.protocol) for p in h1}
    assert {(8301, "tcp"), (8301, "udp")} <= numbers  # Serf gossips over both
    loopback = {(p.number, p.protocol) for s in deployment.rendered_specs("h1")
                for p in s.ports if p.loopback_only}  # fmt: skip
    assert loopback and not loopback & numbers  # Consul's DNS stays on the host
    planned = {(p.number, p.protocol) for s in deployment.rendered_specs("h1", kv_seed=False)
               if not s.one_shot for p in s.ports if not p.loopback_only}  # fmt: skip
    assert numbers == planned | {(22, "tcp")}


def test_plan_ports_names_the_hosts_of_a_wrong_one() -> None:
    result = CliRunner().invoke(app, ["plan", "--stack", "homelab", "--ports", "h9"])
    assert result.exit_code == 2
    assert "stack homelab has no host 'h9'; its hosts are h1, h2, h3, h4" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus; see --help"),
        (["--dry-run", "--address", "x"], "--name is required"),
        (["--dry-run", "--name", "h1"], "--address is required"),
        (
            ["--dry-run", "--name", "h1", "--address", "x", "--authorized-key", "/nonexistent"],
            "--authorized-key FILE is required",
        ),
        (["--dry-run", "--ports", "22/tcp 70000/udp"], "'70000/udp' is not PORT/tcp or PORT/udp"),
        (["--dry-run", "--ports", "ssh"], "'ssh' is not PORT/tcp or PORT/udp"),
        (["--name"], "--name needs a value"),
    ],
    ids=["unknown", "no-name", "no-address", "no-key", "port-range", "port-name", "no-value"],
)
def test_bad_arguments_are_refused_with_the_fix(args: list[str], message: str) -> None:
    result = _setup(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_a_real_run_needs_root(key: Path) -> None:
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(SCRIPT),
         "--name", "h1", "--address", "x", "--authorized-key", str(key)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "run as root (sudo)" in result.stderr
    assert "--dry-run shows the steps without root" in result.stderr
