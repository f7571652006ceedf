"""scripts/setup-macos.sh end to end against recording fakes of macOS's tools (brew, colima,
docker, sysctl, systemsetup, uname, id, sudo) and of python3 (the probe): what it runs,
in which order, what it writes, and that a second run changes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "setup-macos.sh"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMacCheck deploy@desk"
# Each fake appends its command line to $FAKE_STATE/calls and keeps its state there.
FAKES = {
    "brew": """
case "$1" in
  list) shift; case "$1" in --*) shift ;; esac; test -f "$FAKE_STATE/brew-$1" ;;
  install) shift; case "$1" in --*) shift ;; esac
           for p in "$@"; do touch "$FAKE_STATE/brew-$p"; done ;;
esac""",
    "colima": """
case "$1" in
  status) test -f "$FAKE_STATE/colima-running" ;;
  start) touch "$FAKE_STATE/colima-running" ;;
esac""",
    "docker": 'test -f "$FAKE_STATE/colima-running" || test -f "$FAKE_STATE/desktop-up"',
    "uname": 'case "$1" in -s) echo Darwin ;; -m) echo arm64 ;; esac',
    "sysctl": 'case "$2" in hw.memsize) echo "$FAKE_MEMSIZE" ;; hw.ncpu) echo "$FAKE_NCPU" ;; esac',
    "id": 'case "$1" in -u) echo 501 ;; -un) echo alice ;; esac',
    "sudo": '[ "$1" = -n ] && shift; exec "$@"',
    "systemsetup": """
case "$1" in
  -getremotelogin) if [ -f "$FAKE_STATE/remote-login" ]; then echo "Remote Login: On"
                   else echo "Remote Login: Off"; fi ;;
  -setremotelogin) touch "$FAKE_STATE/remote-login" ;;
esac""",
    "python3": 'echo "- name: h4"',
}


@pytest.fixture
def mac(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$FAKE_STATE/calls"\n{body.strip()}\n')
        path.chmod(0o755)
    (tmp_path / "state").mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "deploy.pub").write_text(KEY + "\n")
    return tmp_path


def _setup(mac: Path, *args: str, memsize: int = 16 << 30, ncpu: int = 8,
           fakes: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = "/usr/bin:/bin"
    env = {
        "PATH": f"{mac / 'bin'}:{base}" if fakes else base,
        "HOME": str(mac / "home"),
        "FAKE_STATE": str(mac / "state"),
        "FAKE_MEMSIZE": str(memsize),
        "FAKE_NCPU": str(ncpu),
    }
    argv = ["--name", "h4", "--address", "192.168.1.14", "--authorized-key",
            str(mac / "deploy.pub"), *args]  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip


def _calls(mac: Path) -> list[str]:
    path = mac / "state" / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_a_bare_mac_gets_colima_remote_login_and_the_probe(mac: Path) -> None:
    result = _setup(mac)
    assert result.returncode == 0, result.stderr
    calls = [c for c in _calls(mac) if not c.startswith(("uname", "id ", "sysctl"))]
    probe = f"python3 {ROOT}/scripts/../services/morgan/host_probe.py"
    assert calls == [
        "brew list --formula colima",
        "brew list --formula docker",
        "brew install colima docker",
        "colima status",
        # 16 GiB and 8 cores: three quarters of the memory, all cores but one.
        "colima start --vm-type vz --arch aarch64 --cpu 7 --memory 12 --disk 100"
        " --network-address --network-host-addresses",
        "brew services start colima",
        "docker info",
        "sudo -n systemsetup -getremotelogin",
        "systemsetup -getremotelogin",
        "sudo systemsetup -setremotelogin on",
        "systemsetup -setremotelogin on",
        f"{probe} --name h4 --address 192.168.1.14 --user alice",
    ]
    home = mac / "home"
    assert (home / ".ssh" / "authorized_keys").read_text() == KEY + "\n"
    assert oct((home / ".ssh" / "authorized_keys").stat().st_mode & 0o777) == "0o600"
    assert f'eval "$({mac}/bin/brew shellenv)"' in (home / ".zshenv").read_text()
    assert "endpoint for the stack file: ssh://alice@192.168.1.14" in result.stderr
    assert "- name: h4" in result.stdout


def test_a_second_run_changes_nothing(mac: Path) -> None:
    assert _setup(mac).returncode == 0
    first = (mac / "home" / ".zshenv").read_text()
    (mac / "state" / "calls").unlink()
    again = _setup(mac)
    assert again.returncode == 0, again.stderr
    calls = _calls(mac)
    assert not [c for c in calls if " install" in c or "colima start" in c]
    assert "sudo systemsetup -setremotelogin on" not in calls
    assert "Colima is running" in again.stderr
    assert (mac / "home" / ".ssh" / "authorized_keys").read_text() == KEY + "\n"
    assert (mac / "home" / ".zshenv").read_text() == first


@pytest.mark.parametrize(
    ("gib", "cores", "expected"),
    [(64, 12, "--cpu 11 --memory 48"), (4, 2, "--cpu 2 --memory 4")],  # never under 4 GiB, 2 CPUs
    ids=["64-GiB", "4-GiB"],
)
def test_the_vm_is_sized_from_the_macs_memory(mac: Path, gib: int, cores: int,
                                              expected: str) -> None:  # fmt: skip
    result = _setup(mac, "--disk", "200", memsize=gib << 30, ncpu=cores)
    assert result.returncode == 0, result.stderr
    start = next(c for c in _calls(mac) if c.startswith("colima start"))
    assert f"{expected} --disk 200" in start


def test_dry_run_changes_nothing(mac: Path) -> None:
    result = _setup(mac, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would run: colima start --vm-type vz --arch aarch64" in result.stdout
    assert "would run: sudo systemsetup -setremotelogin on" in result.stdout
    assert f"would append to {mac}/home/.ssh/authorized_keys: {KEY}" in result.stdout
    assert not list((mac / "home").iterdir())
    assert not [f for f in (mac / "state").iterdir() if f.name != "calls"]
    assert not [c for c in _calls(mac) if " install" in c or "start" in c or "-set" in c]


def test_docker_desktop_instead_of_colima(mac: Path) -> None:
    (mac / "state" / "desktop-up").touch()
    result = _setup(mac, "--runtime", "docker-desktop")
    assert result.returncode == 0, result.stderr
    calls = _calls(mac)
    assert "brew install --cask docker" in calls
    assert not [c for c in calls if c.startswith("colima")]
    assert "Enable host networking" in result.stderr


def test_docker_not_answering_stops_with_the_fix(mac: Path) -> None:
    result = _setup(mac, "--runtime", "docker-desktop")
    assert result.returncode == 1
    assert "Docker does not answer yet: start docker-desktop" in result.stderr
    assert not [c for c in _calls(mac) if "systemsetup" in c]


def test_remote_login_refused_names_the_settings_switch(mac: Path) -> None:
    (mac / "bin" / "systemsetup").write_text(
        '#!/bin/sh\necho "systemsetup $*" >> "$FAKE_STATE/calls"\n'
        'case "$1" in -setremotelogin) exit 1 ;; esac\n'
    )
    result = _setup(mac)
    assert result.returncode == 1
    assert "System Settings > General > Sharing > Remote Login" in result.stderr
    assert not (mac / "home" / ".ssh").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "podman"], "--runtime is colima or docker-desktop, not 'podman'"),
        (["--disk", "5"], "--disk is a size in GiB, at least 20"),
        (["--bogus"], "unknown option --bogus"),
    ],
    ids=["runtime", "disk", "unknown"],
)
def test_bad_arguments_are_refused(mac: Path, args: list[str], message: str) -> None:
    result = _setup(mac, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert _calls(mac) == []


def test_linux_is_sent_to_the_linux_script(mac: Path) -> None:
    result = _setup(mac, fakes=False)
    assert result.returncode == 1
    assert "not macOS: use scripts/setup-linux.sh" in result.stderr
