"""A backup directory as `morgan backup` writes it and `morgan restore` reads it: which
parts it holds, in which files, and the manifest that lists each file's size and SHA-256
(checked before anything is put back). The directory is made 0700, its files 0600: it
holds the stack's secrets."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.configs.patroni import NAMESPACE as PATRONI_NAMESPACE
from morgan.deploy.engine import DeployError

MANIFEST = "manifest.json"
KV_PREFIX = "morgan/"
# Patroni's cluster state (leader key, members) is live state, never put back.
PATRONI_PREFIX = PATRONI_NAMESPACE.strip("/") + "/"
# Each part a backup holds, and its file.
FILES = {"postgres": "postgres.dump", "consul-kv": "consul-kv.json",
         "consul-snapshot": "consul.snap", "secrets": "secrets.env", "pki": "pki.tar"}  # fmt: skip
PARTS = tuple(FILES)
RESTORABLE = ("secrets", "postgres", "consul-kv")  # in the order a restore runs them


class BackupError(DeployError):
    """A backup could not be taken or put back; the message says why and what to do."""


@dataclass(frozen=True)
class Part:
    file: str
    bytes: int
    sha256: str
    detail: str = ""


@dataclass(frozen=True)
class Manifest:
    stack: str
    taken_at: str
    parts: dict[str, Part]

    def write(self, directory: Path) -> None:
        private(directory / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path, stack: str) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise BackupError(f"{directory} is not a Morgan backup: it has no {MANIFEST};"
                              " name the directory `morgan backup` wrote")  # fmt: skip
        try:
            raw = json.loads(path.read_text())
            manifest = cls(raw["stack"], raw["taken_at"],
                           {k: Part(**v) for k, v in raw["parts"].items()})  # fmt: skip
        except (ValueError, KeyError, TypeError) as err:
            raise BackupError(f"{path} is damaged ({err!r}); use another backup") from None
        if manifest.stack != stack:
            raise BackupError(f"{directory} is a backup of stack {manifest.stack!r}, not of"
                              f" {stack!r}; name that stack, or another backup")  # fmt: skip
        for name, part in manifest.parts.items():
            file = directory / part.file
            if not file.is_file():
                raise BackupError(f"{directory}: {name}'s file {part.file} is missing")
            if (digest := sha256(file)) != part.sha256:
                raise BackupError(f"{directory}: {part.file} does not match the manifest"
                                  f" (SHA-256 {digest[:12]}…, expected {part.sha256[:12]}…):"
                                  " it changed after the backup; use another backup")  # fmt: skip
        return manifest


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def private(path: Path, content: str | bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)


def part_of(directory: Path, name: str, detail: str = "") -> Part:
    file = directory / FILES[name]
    os.chmod(file, 0o600)
    return Part(file.name, file.stat().st_size, sha256(file), detail)


def morgans(key: str) -> bool:
    """A key of Morgan's own settings and records (not Patroni's, which shares the prefix)."""
    return key.startswith(KV_PREFIX) and not key.startswith(PATRONI_PREFIX)
