"""The local wheelhouse: every locked file downloaded once per machine, served to image builds.

PyTorch and its CUDA libraries weigh ~3 GB. They are fetched once into
$MORGAN_CACHE/wheelhouse (a stamp per lock hash records a complete fetch), and
each `docker build` installs from a loopback HTTP server over that folder
(classic builder, `--network host`), so no build downloads them again. pip checks
each download against the lock's hashes, and the images check them again.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from morgan.lab.lock import Pin, image_environment, lock_hash, read_pins


class WheelhouseError(RuntimeError):
    """The wheelhouse could not be filled; the message carries pip's last line."""


def cache_root() -> Path:
    return Path(os.environ.get("MORGAN_CACHE", "/var/cache/morgan"))


def wheelhouse_dir() -> Path:
    return cache_root() / "wheelhouse"


def ensure_wheels(locks: list[Path], directory: Path | None = None) -> list[Path]:
    """Download every pinned file (a wheel, or docopt's sdist) not yet in the wheelhouse.

    Returns the locks that had to be fetched; an up-to-date lock costs one stat.
    """
    target = directory or wheelhouse_dir()
    target.mkdir(parents=True, exist_ok=True)
    fetched = []
    for lock in locks:
        stamp = target / f".lock-{lock.stem}-{lock_hash(lock)}"
        if stamp.exists():
            continue
        env = image_environment()
        wanted = [p for p in read_pins(lock) if p.applies(env)]
        missing = [p for p in wanted if not _has_file(target, p)]
        if not missing:
            stamp.touch()
            continue
        log = target / f".pip-{lock.stem}.log"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=target, delete=False) as req:
            req.write("".join(p.hashed_line() + "\n" for p in missing))
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            "--progress-bar", "off", "--dest", str(target), "-r", req.name,
        ]  # fmt: skip
        try:
            with log.open("w") as out:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        finally:
            os.unlink(req.name)
        if proc.returncode != 0:
            last = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise WheelhouseError(
                f"wheelhouse: pip could not fetch the wheels of {lock.name} ({last[0]});"
                f" check that PyPI is reachable, see {log}"
            )
        stamp.touch()
        fetched.append(lock)
    return fetched


def _has_file(directory: Path, pin: Pin) -> bool:
    want = (canonicalize_name(pin.name), Version(pin.version))
    return want in _files(directory)


def _files(directory: Path) -> set[tuple[str, Version]]:
    """(name, version) of every wheel and sdist in `directory`."""
    found: set[tuple[str, Version]] = set()
    for item in directory.iterdir():
        try:
            if item.name.endswith(".whl"):
                name, version, _build, _tags = parse_wheel_filename(item.name)
            elif item.name.endswith((".tar.gz", ".zip")):
                name, version = parse_sdist_filename(item.name)
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        found.add((str(name), version))
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def serve(directory: Path | None = None) -> Iterator[str]:
    """Serve the wheelhouse on a free loopback port; yields pip's `--find-links` URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory or wheelhouse_dir()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
