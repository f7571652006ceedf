"""The lock: one pinned, hashed dependency closure (uv.lock) and the image locks taken from it.

``uv.lock`` at the repository root pins every extra for Linux x86_64 and aarch64 with
Python 3.11, each file with its sha256. ``scripts/setup`` installs the dev virtualenv
from it exactly; the images install ``images/lock/*.txt``, which are ``uv export``s of
the same lock (one per runtime flavour, plus the build tools), with the same hashes.
``morgan lock`` rewrites the exports (and the lock where pyproject.toml changed);
``morgan lock --upgrade`` (``make lock``) re-resolves everything to the newest releases.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker, default_environment

from morgan.catalog import RUNTIME_EXTRAS

__all__ = ["BUILD_GROUP", "IMAGE_PYTHON", "RUNTIME_EXTRAS", "LockError", "Pin"]

# The dependency group of the tools that build the morgan wheel (and docopt's sdist).
BUILD_GROUP = "build"

# The images run Debian bookworm's Python: markers are evaluated for it when the
# wheelhouse is filled (redis needs async-timeout below 3.11.3, for example).
IMAGE_PYTHON = "3.11.2"


class LockError(RuntimeError):
    """The lock could not be read, exported or rewritten; the message names the fix."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None = None
    hashes: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.name}=={self.version}"

    def hashed_line(self) -> str:
        """A requirement pip installs with --require-hashes (markers left out)."""
        return " ".join([self.line(), *(f"--hash={h}" for h in self.hashes)])

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(env)


def image_environment(machine: str | None = None) -> dict[str, str]:
    """Marker values of the images' Python on `machine` (default: this one's)."""
    env = {k: str(v) for k, v in default_environment().items()}
    env.update(
        python_full_version=IMAGE_PYTHON,
        python_version="3.11",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine=machine or platform.machine(),
    )
    return env


def lock_file(root: Path) -> Path:
    return root / "uv.lock"


def lock_path(root: Path, flavour: str) -> Path:
    """The image lock of a runtime flavour, or of the build tools (`BUILD_GROUP`)."""
    if flavour == BUILD_GROUP:
        return root / "images" / "lock" / "build.txt"
    return root / "images" / "lock" / f"runtime-{flavour}.txt"


def image_locks(root: Path) -> dict[str, Path]:
    return {f: lock_path(root, f) for f in (*RUNTIME_EXTRAS, BUILD_GROUP)}


def uv_binary() -> str:
    """The virtualenv's uv (installed from the lock), else one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise LockError("lock: uv is not installed; run scripts/setup (it installs the locked uv)")
    return found


def _uv(root: Path, *args: str) -> str:
    cmd = [uv_binary(), *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LockError(f"lock: `uv {' '.join(args)}` failed: {last}")
    return proc.stdout


def export_args(flavour: str) -> list[str]:
    """`uv export` arguments of one image lock: no project, no dev tools, only that closure."""
    args = ["export", "--frozen", "--format", "requirements-txt", "--no-emit-project"]
    args.append("--no-header")
    if flavour == BUILD_GROUP:
        return [*args, "--only-group", BUILD_GROUP]
    if flavour not in RUNTIME_EXTRAS:
        known = ", ".join([*RUNTIME_EXTRAS, BUILD_GROUP])
        raise LockError(f"lock: unknown image lock {flavour!r}; known: {known}")
    extras = [a for extra in RUNTIME_EXTRAS[flavour] for a in ("--extra", extra)]
    return [*args, "--no-default-groups", *extras]


def header(flavour: str) -> str:
    what = "build tools" if flavour == BUILD_GROUP else f"morgan-runtime ({flavour})"
    return (
        f"# {what}: exported from uv.lock by `morgan lock`, with the lock's hashes.\n"
        "# Do not edit by hand: change pyproject.toml, then run `morgan lock`.\n"
    )


def export(root: Path, flavour: str) -> str:
    """The image lock of `flavour` as `morgan lock` writes it."""
    return header(flavour) + _uv(root, *export_args(flavour))


def relock(root: Path, upgrade: bool = False) -> None:
    """Rewrite uv.lock: keep every pin that still fits pyproject.toml, or upgrade them all."""
    _uv(root, "lock", *(["--upgrade"] if upgrade else []))


def check_lock(root: Path) -> None:
    """Raise unless uv.lock answers pyproject.toml as it stands (offline, nothing resolved)."""
    _uv(root, "lock", "--check", "--offline")


def write_locks(root: Path, upgrade: bool = False) -> dict[str, Path]:
    relock(root, upgrade)
    out = image_locks(root)
    for flavour, path in out.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(export(root, flavour))
    return out


def lock_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def parse_pins(text: str) -> list[Pin]:
    """The pins of a requirements file in `uv export` form (markers, hash continuations)."""
    joined = text.replace("\\\n", " ")
    pins = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        spec = " ".join(w for w in words if not w.startswith("--hash="))
        requirement, _, marker = spec.partition(";")
        name, sep, version = requirement.strip().partition("==")
        if not sep:
            raise LockError(f"lock: {line!r} is not pinned with ==; run `morgan lock`")
        pins.append(Pin(name.strip(), version.strip(), marker.strip() or None, hashes))
    return pins


def read_pins(path: Path) -> list[Pin]:
    return parse_pins(path.read_text())
