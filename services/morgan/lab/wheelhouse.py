"""The local wheelhouse: every locked wheel downloaded once per machine, served to image builds.

PyTorch and its CUDA libraries weigh ~3 GB. They are fetched once into
$MORGAN_CACHE/wheelhouse (a stamp per lock hash records a complete fetch), and
each `docker build` installs from a loopback HTTP server over that folder
(classic builder, `--network host`), so no build downloads them again.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from morgan.lab.lock import Pin, lock_hash, read_pins


class WheelhouseError(RuntimeError):
    """The wheelhouse could not be filled; the message carries pip's last line."""


def cache_root() -> Path:
    return Path(os.environ.get("MORGAN_CACHE", "/var/cache/morgan"))


def wheelhouse_dir() -> Path:
    return cache_root() / "wheelhouse"


def ensure_wheels(locks: list[Path], directory: Path | None = None) -> list[Path]:
    """Download (or build, for sdists) every pinned wheel not yet in the wheelhouse.

    Returns the locks that had to be fetched; an up-to-date lock costs one stat.
    """
    target = directory or wheelhouse_dir()
    target.mkdir(parents=True, exist_ok=True)
    fetched = []
    for lock in locks:
        stamp = target / f".lock-{lock.stem}-{lock_hash(lock)}"
        if stamp.exists():
            continue
        missing = [p for p in read_pins(lock) if not _has_wheel(target, p)]
        if not missing:
            stamp.touch()
            continue
        log = target / f".pip-{lock.stem}.log"
        cmd = [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--progress-bar", "off",
            "--find-links", str(target), "--wheel-dir", str(target), *(p.line() for p in missing),
        ]  # fmt: skip
        with log.open("w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            last = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise WheelhouseError(
                f"wheelhouse: pip could not fetch the wheels of {lock.name} ({last[0]});"
                f" check that PyPI is reachable, see {log}"
            )
        stamp.touch()
        fetched.append(lock)
    return fetched


def _has_wheel(directory: Path, pin: Pin) -> bool:
    # Wheel file names use the normalised name with underscores (PEP 427/491).
    stem = f"{pin.name.replace('-', '_')}-{pin.version}-"
    return any(directory.glob(f"{stem}*.whl")) or any(
        f.name.lower().startswith(stem.lower()) for f in directory.glob("*.whl")
    )


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
