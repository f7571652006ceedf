"""`morgan host probe` on this machine: the entry it prints is a valid stack-file host, and
each check finds what it is there to find (fakes of nvidia-smi and docker on PATH)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from morgan import host_probe

from infra.config import HostConfig
from tests.harness.ports import free_port

pytestmark = pytest.mark.integration
PROBE = Path(host_probe.__file__)


def _fake(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def _with_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path) -> None:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _meminfo_mb() -> int:
    line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln)
    return int(line.split()[1]) // 1024


def test_the_entry_is_a_valid_host_of_the_stack_file() -> None:
    """Run as a bare script with the standard library only (-I -S: no site-packages)."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(PROBE), "--name", "h9", "--address", "10.0.0.9"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    entries = yaml.safe_load(out.stdout)
    assert isinstance(entries, list) and len(entries) == 1, out.stdout
    host = HostConfig.model_validate(entries[0])
    assert (host.name, host.address, host.os, host.arch) == ("h9", "10.0.0.9", "linux", "amd64")
    assert host.docker == "ssh://morgan@10.0.0.9"
    assert host.memory_mb == _meminfo_mb()


def test_a_linux_host_with_dockers_tls_port_is_a_tcp_host_with_certificates() -> None:
    """setup-linux.sh --docker-tls opens dockerd on 2376: the entry says so, and validates."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(PROBE), "--name", "h7", "--address", "10.0.0.7",
         "--docker-tls"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    host = HostConfig.model_validate(yaml.safe_load(out.stdout)[0])
    assert host.docker == "tcp://10.0.0.7:2376"
    assert host.docker_tls is not None
    assert str(host.docker_tls.cert_path).endswith("morgan/h7")


def test_docker_engine_in_wsl2_is_the_windows_host(monkeypatch: pytest.MonkeyPatch) -> None:
    wsl_kernel = "5.15.167.4-microsoft-standard-WSL2"
    monkeypatch.setattr(host_probe.platform, "release", lambda: wsl_kernel)
    probe = host_probe.probe_host("h2", "10.0.0.2", ports={}, docker_tls=True)
    assert (probe.os, probe.docker) == ("windows", "tcp://10.0.0.2:2376")
    assert "Linux under WSL2: this host is the Windows PC that runs it" in probe.notes
    assert HostConfig.model_validate(yaml.safe_load(probe.entry())[0]).os == "windows"


def test_a_gpu_is_described_and_a_missing_nvidia_runtime_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    banner = "| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |"
    _fake(tmp_path, "nvidia-smi", f'if [ -n "$1" ]; then echo 24576; else echo "{banner}"; fi\n')
    _fake(tmp_path, "docker", """echo '{"ServerVersion": "27.1", "Runtimes": {"runc": {}}}'\n""")
    _with_path(monkeypatch, tmp_path)
    probe = host_probe.probe_host("gpu-box", "10.0.0.5", ports={})
    assert probe.gpu == host_probe.Gpu("nvidia", 24576, "12.4")
    entry = HostConfig.model_validate(yaml.safe_load(probe.entry())[0])
    assert entry.gpu is not None and (entry.gpu.vram_mb, entry.gpu.cuda) == (24576, "12.4")
    assert [p for p in probe.problems if "no nvidia runtime" in p and "nvidia-ctk" in p]

    _fake(tmp_path, "docker", """echo '{"ServerVersion": "27.1", "Runtimes": {"nvidia": {}}}'\n""")
    assert host_probe.probe_host("gpu-box", "10.0.0.5", ports={}).problems == []


def test_docker_that_does_not_answer_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    _fake(tmp_path, "nvidia-smi", "exit 9\n")  # no GPU here
    _with_path(monkeypatch, tmp_path)
    probe = host_probe.probe_host("h1", "10.0.0.1", ports={})
    assert probe.gpu is None
    assert [p for p in probe.problems if "daemon does not answer" in p], probe.problems


def test_a_fleet_port_in_use_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, "docker", """echo '{"ServerVersion": "27.1"}'\n""")
    _with_path(monkeypatch, tmp_path)
    taken, free = free_port(), free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        probe = host_probe.probe_host("h1", "10.0.0.1", ports={taken: "redis", free: "consul"})
    assert [p for p in probe.problems if f"port {taken} (redis) is already in use" in p]
    assert not [p for p in probe.problems if f"port {free} " in p]


def test_the_cli_prints_the_entry_and_exits_1_on_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from morgan.cli.main import app
    from typer.testing import CliRunner

    _fake(tmp_path, "docker", "exit 1\n")
    _with_path(monkeypatch, tmp_path)
    result = CliRunner().invoke(app, ["host", "probe", "--name", "h7", "--address", "h7.lan"])
    assert result.exit_code == 1, result.output
    assert "- name: h7" in result.output and "address: h7.lan" in result.output
    assert "# PROBLEM: Docker is installed but its daemon does not answer" in result.output
