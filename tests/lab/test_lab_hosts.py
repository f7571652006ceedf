"""`morgan lab`: four simulated hosts, each its own Docker daemon, reached as homelab's are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from morgan.lab import hosts as lab
from morgan.lab import images as img

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]


def morgan(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([MORGAN, *args], capture_output=True, text=True, env=env,
                          check=False, timeout=300)  # fmt: skip


def by_name(hosts: list[lab.LabHost]) -> dict[str, lab.LabHost]:
    return {h.name: h for h in hosts}


def test_each_host_answers_as_itself_over_its_endpoint(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths
) -> None:
    assert [h.name for h in lab_hosts] == ["h1", "h2", "h3", "h4"]
    assert len({h.address for h in lab_hosts}) == 4
    for host in lab_hosts:
        scheme = "tcp://" if host.name == "h2" else "ssh://morgan@"
        assert host.docker.startswith(scheme + host.address), host
        assert lab.daemon_info(lab_paths, host)["name"] == host.name
    status = morgan("lab", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    for host in lab_hosts:
        assert f"({host.name})" in status.stdout


def test_a_host_runs_containers_on_its_own_daemon(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths
) -> None:
    h1 = by_name(lab_hosts)["h1"]
    remote = lab.docker_args(lab_paths, h1)
    saved = subprocess.Popen(["docker", "save", img.base_image()], stdout=subprocess.PIPE)
    loaded = subprocess.run([*remote, "load"], stdin=saved.stdout, capture_output=True,
                            text=True, check=False, timeout=300)  # fmt: skip
    saved.wait()
    assert loaded.returncode == 0, loaded.stderr
    ran = subprocess.run([*remote, "run", "--rm", "--name", "lab-probe", img.base_image(),
                          "echo", "inside-h1"], capture_output=True, text=True,
                         check=False, timeout=120)  # fmt: skip
    assert (ran.returncode, ran.stdout.strip()) == (0, "inside-h1"), ran.stderr
    here = subprocess.run(["docker", "ps", "-a", "--filter", "name=lab-probe", "-q"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert here.stdout.strip() == "", "the probe ran on this machine's daemon, not h1's"


def test_docker_over_tcp_without_a_client_certificate_is_refused(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths
) -> None:
    h2 = by_name(lab_hosts)["h2"]
    plain = subprocess.run(["docker", "-H", h2.docker, "info"], capture_output=True,
                           text=True, check=False, timeout=30)  # fmt: skip
    assert plain.returncode != 0
    assert "Client sent an HTTP request to an HTTPS server" in plain.stderr
    # The server is trusted (the lab CA), but the client shows no certificate.
    ca = lab_paths.client_tls("h2") / "ca.pem"
    no_cert = subprocess.run(["docker", "--tlsverify", f"--tlscacert={ca}", "-H", h2.docker,
                              "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
    assert no_cert.returncode != 0 and no_cert.stdout.strip() == ""
    assert "certificate" in no_cert.stderr.lower(), no_cert.stderr


def test_ssh_without_the_lab_key_is_refused(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    h3 = by_name(lab_hosts)["h3"]
    args = lab.ssh_args(lab_paths, h3)
    args[args.index(str(lab_paths.key))] = str(other)
    refused = subprocess.run([*args, "docker", "info"], capture_output=True, text=True,
                             check=False, timeout=30)  # fmt: skip
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_provisioning_prints_each_hosts_stack_entry(lab_hosts: list[lab.LabHost]) -> None:
    for host in lab_hosts:
        logs = subprocess.run(["docker", "logs", f"morgan-lab-{host.name}"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        assert f"- name: {host.name}\n" in logs
        endpoint = "tcp://h2:2376" if host.name == "h2" else f"ssh://morgan@{host.name}"
        assert f"  docker: {endpoint}\n" in logs
        assert ("docker_tls:" in logs) == (host.name == "h2")


def test_bad_host_count_is_refused() -> None:
    result = morgan("lab", "up", "--hosts", "0")
    assert result.returncode == 1
    assert "the lab makes 1 to 9 hosts" in result.stdout


def test_an_image_pushed_once_is_pulled_by_the_hosts(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths
) -> None:
    registry = lab.load_registry(lab_paths)
    ref = f"{registry}/morgan-base:lab-test"
    subprocess.run(["docker", "tag", img.base_image(), ref], check=True)
    try:
        pushed = subprocess.run(["docker", "push", ref], capture_output=True, text=True,
                                check=False, timeout=300)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True, check=False)
    for name in ("h2", "h4"):  # one over TCP + TLS, one over SSH
        remote = lab.docker_args(lab_paths, by_name(lab_hosts)[name])
        pulled = subprocess.run([*remote, "pull", "-q", ref], capture_output=True, text=True,
                                check=False, timeout=300)  # fmt: skip
        assert pulled.returncode == 0, f"{name}: {pulled.stderr}"
        ran = subprocess.run([*remote, "run", "--rm", ref, "echo", f"pulled-on-{name}"],
                             capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
        assert ran.stdout.strip() == f"pulled-on-{name}", ran.stderr


def test_the_registry_refuses_plain_http(
    lab_hosts: list[lab.LabHost], lab_paths: lab.LabPaths
) -> None:
    registry = lab.load_registry(lab_paths)
    plain = subprocess.run(["curl", "-sS", f"http://{registry}/v2/"], capture_output=True,
                           text=True, check=False, timeout=30)  # fmt: skip
    assert "Client sent an HTTP request to an HTTPS server" in plain.stdout
    untrusted = subprocess.run(["curl", "-sS", f"https://{registry}/v2/"], capture_output=True,
                               text=True, check=False, timeout=30)  # fmt: skip
    assert untrusted.returncode == 60, untrusted.stderr  # certificate not from a known CA
