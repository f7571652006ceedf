"""`morgan host probe`: this host's entry for the stack file, and what would fail later.

Standard library only, so it also runs as `python3 host_probe.py` on a host that has only
Python (a fresh Mac or Windows PC): it reads the OS, architecture, memory and NVIDIA GPU
(VRAM, CUDA version), proposes how the deploy machine reaches the Docker daemon, and checks
Docker is running, the NVIDIA runtime is there when a GPU is, the clock is synchronised,
and the fleet's ports are free. Nothing is sent over the network.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field

# The fleet's listening ports (infra/: Consul, the Morgan services, the data stores, the
# gateway and monitoring); a probe says which are taken by something else already.
FLEET_PORTS: dict[int, str] = {
    8300: "consul server rpc", 8301: "consul serf lan", 8302: "consul serf wan",
    8500: "consul http", 8501: "consul https", 8600: "consul dns",
    8000: "morgan-core", 8001: "morgan-llm", 8002: "morgan-tts", 8003: "morgan-stt",
    5432: "postgresql", 8008: "patroni api", 6379: "redis", 6380: "redis replica",
    16379: "redis cluster bus", 16380: "redis replica bus",
    80: "gateway http", 443: "gateway https", 9090: "prometheus", 9093: "alertmanager",
}  # fmt: skip
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_OS = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}


@dataclass
class Gpu:
    vendor: str
    vram_mb: int
    cuda: str


@dataclass
class Probe:
    name: str
    os: str
    arch: str
    memory_mb: int
    address: str
    docker: str
    gpu: Gpu | None = None
    problems: list[str] = field(default_factory=list)  # each: what, why it matters, the fix
    notes: list[str] = field(default_factory=list)

    def entry(self) -> str:
        """The host's entry for the stack file's `hosts:` list (YAML)."""
        lines = [
            f"- name: {self.name}", f"  docker: {self.docker}", f"  address: {self.address}",
            f"  os: {self.os}", f"  arch: {self.arch}", f"  memory_mb: {self.memory_mb}",
        ]  # fmt: skip
        if self.docker.startswith("tcp://"):
            lines.append(f"  docker_tls: {{cert_path: ~/.docker/morgan/{self.name}}}")
        if self.gpu is not None:
            lines.append(f'  gpu: {{vendor: {self.gpu.vendor}, vram_mb: {self.gpu.vram_mb}, '
                         f'cuda: "{self.gpu.cuda}"}}')  # fmt: skip
        return "\n".join(lines)


def _run(*cmd: str, timeout: float = 15) -> tuple[int, str]:
    """(exit status, stdout) of a command; 127 when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return 127, ""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 126, ""
    return done.returncode, done.stdout


def memory_mb(system: str) -> int:
    if system == "Linux":
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    if system == "Darwin":
        status, out = _run("sysctl", "-n", "hw.memsize")
        if status == 0 and out.strip().isdigit():
            return int(out) // (1024 * 1024)
    if system == "Windows":

        class _Status(ctypes.Structure):
            _fields_ = [
                ("length", ctypes.c_ulong), ("load", ctypes.c_ulong),
                ("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("page_total", ctypes.c_ulonglong), ("page_free", ctypes.c_ulonglong),
                ("virtual_total", ctypes.c_ulonglong), ("virtual_free", ctypes.c_ulonglong),
                ("extended", ctypes.c_ulonglong),
            ]  # fmt: skip

        status_struct = _Status()
        status_struct.length = ctypes.sizeof(_Status)
        ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status_struct))  # type: ignore[attr-defined]
        return int(status_struct.total) // (1024 * 1024)
    raise RuntimeError(f"cannot read the memory size on {system}; write memory_mb yourself")


def nvidia_gpu() -> Gpu | None:
    """The first NVIDIA GPU nvidia-smi reports (its VRAM and the driver's CUDA version)."""
    status, out = _run("nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits")
    if status != 0 or not out.strip():
        return None
    vram = int(float(out.splitlines()[0].strip()))
    _, banner = _run("nvidia-smi")
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", banner)
    return Gpu("nvidia", vram, cuda.group(1) if cuda else "0.0")


def default_address(name: str) -> str:
    """How the other hosts reach this one: the address this host's name resolves to, unless
    that is loopback, then the name itself (with a note to check it)."""
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return name
    return name if address.startswith("127.") else address


def docker_endpoint(os_name: str, address: str, user: str, tls: bool = False) -> str:
    # The Windows host is reached as homelab's h2: Docker's TCP socket with TLS client
    # certificates; Linux and macOS hosts over SSH as the deploy user, unless their
    # daemon was opened over TLS too (setup-linux.sh --docker-tls).
    if tls or os_name == "windows":
        return f"tcp://{address}:2376"
    return f"ssh://{user}@{address}"


def check_docker(probe: Probe) -> None:
    status, out = _run("docker", "info", "--format", "{{json .}}")
    if status == 127:
        probe.problems.append(
            "Docker is not installed: the deploy cannot start anything here. Fix: run "
            "scripts/setup-linux.sh (Linux), install Docker Desktop or Colima (macOS), "
            "Docker Desktop with the WSL2 backend (Windows)"
        )
        return
    try:
        info = json.loads(out) if status == 0 else {}
    except ValueError:
        info = {}
    if not info.get("ServerVersion"):
        probe.problems.append(
            "Docker is installed but its daemon does not answer (`docker info` failed). "
            "Fix: start it (`sudo systemctl start docker`, or start Docker Desktop / "
            "`colima start`) and add the deploy user to the docker group"
        )
        return
    probe.notes.append(f"docker {info['ServerVersion']} answers")
    if probe.gpu is not None and "nvidia" not in (info.get("Runtimes") or {}):
        probe.problems.append(
            "this host has an NVIDIA GPU but Docker has no nvidia runtime: GPU containers "
            "would not start. Fix: install the NVIDIA Container Toolkit and run "
            "`sudo nvidia-ctk runtime configure --runtime=docker`, then restart Docker"
        )


def check_clock(probe: Probe, system: str) -> None:
    """Consul, TLS and Patroni need the hosts' clocks in step: is this one synchronised?"""
    if system == "Linux":
        status, out = _run("timedatectl", "show", "-p", "NTPSynchronized", "--value")
        if status == 0 and out.strip() == "no":
            probe.problems.append(
                "the clock is not synchronised (timedatectl: NTPSynchronized=no): "
                "certificates and Consul sessions go wrong on a skewed host. Fix: "
                "`sudo timedatectl set-ntp true`"
            )
        elif status != 0:
            probe.notes.append("clock synchronisation not checked (no timedatectl)")
    elif system == "Windows":
        status, out = _run("w32tm", "/query", "/status")
        if status != 0 or "Leap Indicator: 3" in out:
            probe.problems.append(
                "the Windows time service is not synchronised. Fix: `w32tm /resync` in an "
                "administrator shell"
            )
    else:
        probe.notes.append("clock synchronisation: check System Settings > Date & Time")


def check_ports(probe: Probe, ports: dict[int, str]) -> None:
    """A fleet port something else already listens on: that service would not start here."""
    for port, what in sorted(ports.items()):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except PermissionError:
                continue  # a privileged port, not bindable by this user: not a finding
            except OSError:
                probe.problems.append(
                    f"port {port} ({what}) is already in use: if the plan puts {what} on this "
                    "host it will not start. Fix: stop what listens there "
                    f"(`ss -ltnp 'sport = :{port}'`, or `netstat -ano` on Windows)"
                )


def probe_host(
    name: str | None = None, address: str | None = None, user: str = "morgan",
    ports: dict[int, str] | None = None, docker_tls: bool = False,
) -> Probe:  # fmt: skip
    system = platform.system()
    host = (name or socket.gethostname().split(".")[0]).lower()
    os_name = _OS.get(system)
    arch = _ARCH.get(platform.machine().lower())
    if os_name is None or arch is None:
        raise RuntimeError(f"{system} on {platform.machine()} is not a platform Morgan runs on")
    # Docker Engine inside WSL2 (setup-windows.ps1): the host is the Windows PC.
    wsl = system == "Linux" and "microsoft" in platform.release().lower()
    if wsl:
        os_name = "windows"
    where = address or default_address(host)
    probe = Probe(name=host, os=os_name, arch=arch, memory_mb=memory_mb(system),
                  address=where, docker=docker_endpoint(os_name, where, user, docker_tls),
                  gpu=nvidia_gpu())  # fmt: skip
    if wsl:
        probe.notes.append("Linux under WSL2: this host is the Windows PC that runs it")
    if where == host and address is None:
        probe.notes.append(f"address: {host} must resolve on every other host (or pass --address)")
    check_docker(probe)
    check_clock(probe, system)
    check_ports(probe, FLEET_PORTS if ports is None else ports)
    return probe


def report(probe: Probe) -> str:
    out = ["# this host's entry for the stack file (hosts:)", probe.entry()]
    out += [f"# note: {n}" for n in probe.notes]
    out += [f"# PROBLEM: {p}" for p in probe.problems]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", help="the host's name in the stack file (default: hostname)")
    parser.add_argument("--address", help="how the other hosts reach this one (name or IP)")
    parser.add_argument("--user", default="morgan", help="the deploy user (ssh://USER@...)")
    parser.add_argument(
        "--docker-tls",
        action="store_true",
        help="the deploy machine reaches Docker at tcp://ADDRESS:2376 with TLS client"
        " certificates (always so on Windows)",
    )
    args = parser.parse_args(argv)
    try:
        probe = probe_host(args.name, args.address, args.user, docker_tls=args.docker_tls)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(probe))
    return 1 if probe.problems else 0


if __name__ == "__main__":
    sys.exit(main())
