"""Pinned dependency sets for the images, taken from the tested virtualenv.

The images must install exactly the versions the test suite ran against. The
lock is the dependency closure of some of morgan's extras, resolved against
the distributions installed in the running interpreter (the project's .venv),
written as ``name==version`` lines. ``morgan lock`` rewrites images/lock/.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

# Each runtime image installs one closure; services pick the runtime they need.
RUNTIME_EXTRAS: dict[str, tuple[str, ...]] = {
    # faster-whisper runs on CTranslate2 and needs no torch: a small image.
    "slim": ("service", "stt"),
    # sentence-transformers (core), coqui-tts (tts) and transformers (llm) need torch.
    "torch": ("service", "core", "tts", "llm"),
}


# The images run Debian bookworm's Python, which can be older than the virtualenv's:
# markers are evaluated for both, so a dependency only the image's Python needs
# is locked too.
IMAGE_PYTHON = "3.11.2"
# Dependencies only the image's Python needs, hence not installed in the virtualenv.
IMAGE_ONLY_PINS: dict[str, str] = {
    # redis>=5 needs it below Python 3.11.3.
    "async-timeout": "5.0.1",
}


class LockError(RuntimeError):
    """A dependency of the lock is not installed in the interpreter computing it."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    def line(self) -> str:
        return f"{self.name}=={self.version}"


def closure(root: str, extras: Iterable[str]) -> list[Pin]:
    """Every installed distribution that `root[extras]` needs, the root itself excluded."""
    seen: dict[str, Pin] = {}
    # A queue of (distribution name, extras requested of it).
    queue: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    host_env = {k: str(v) for k, v in default_environment().items()}
    image_env = dict(host_env, python_full_version=IMAGE_PYTHON, python_version="3.11")
    while queue:
        name, want = queue.pop()
        key = (_canonical(name), want)
        if key in done:
            continue
        done.add(key)
        if _canonical(name) in IMAGE_ONLY_PINS:
            seen[_canonical(name)] = Pin(_canonical(name), IMAGE_ONLY_PINS[_canonical(name)])
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as err:
            raise LockError(
                f"lock: {name} is required but not installed in this interpreter; "
                "run scripts/setup (it installs morgan[dev] into .venv) and retry, or add it to"
                " IMAGE_ONLY_PINS in morgan/lab/lock.py if only the image's Python needs it"
            ) from err
        canon = _canonical(dist.metadata["Name"])
        if canon != _canonical(root):
            seen[canon] = Pin(canon, dist.version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None:
                envs = [dict(env, extra=e) for e in (want or {""}) for env in (host_env, image_env)]
                if not any(req.marker.evaluate(env) for env in envs):
                    continue
            if _canonical(req.name) == _canonical(root):
                queue.append((root, frozenset(req.extras)))
                continue
            queue.append((req.name, frozenset(req.extras)))
    return sorted(seen.values(), key=lambda p: p.name)


def render(pins: Iterable[Pin], flavour: str) -> str:
    head = (
        f"# morgan-runtime ({flavour}): pinned from the tested virtualenv by `morgan lock`.\n"
        "# Do not edit by hand; regenerate after changing pyproject.toml.\n"
    )
    return head + "".join(p.line() + "\n" for p in pins)


def lock_path(root: Path, flavour: str) -> Path:
    return root / "images" / "lock" / f"runtime-{flavour}.txt"


def write_locks(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for flavour, extras in RUNTIME_EXTRAS.items():
        path = lock_path(root, flavour)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(closure("morgan", extras), flavour))
        out[flavour] = path
    return out


def lock_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_pins(path: Path) -> list[Pin]:
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        pins.append(Pin(name, version))
    return pins
