"""`morgan restore`: a backup put back into a deployed stack (morgan.deploy.backup says
what a backup holds).

Every part is checked against the manifest first. Then: the stack's secrets and PKI onto
this machine where it has none; the database through the member that leads now (the
standby follows by streaming), after the deploy's application-role step has run again so
the tables' owner exists; and the KV entries the plan does not write (`morgan deploy`
writes the others). Consul is never rolled back whole: Patroni's leader key and the ACL
tokens live there too.
"""

from __future__ import annotations

import base64
import json
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

from infra.config import MorganStackConfig
from morgan.deploy.backup import Fleet, Log
from morgan.deploy.backup_manifest import (
    FILES,
    RESTORABLE,
    BackupError,
    Manifest,
    morgans,
    private,
)
from morgan.deploy.rollout import pki_dir
from morgan.lab.stack import StackPaths


def restore(config: MorganStackConfig, root: Path, p: StackPaths, source: Path,
            parts: Iterable[str], log: Log) -> None:  # fmt: skip
    """Put `parts` of the backup in `source` back into the stack (see the module doc)."""
    wanted = set(parts)
    if unknown := wanted - set(RESTORABLE):
        raise BackupError(f"cannot restore {', '.join(sorted(unknown))}: the parts a restore"
                          f" puts back are {', '.join(RESTORABLE)}")  # fmt: skip
    manifest = Manifest.read(source, config.stack)
    log(f"backup of {manifest.stack} taken {manifest.taken_at}: every part matches its"
        " manifest")  # fmt: skip
    if "secrets" in wanted:
        _restore_secrets(p, source, log)
    if wanted & {"postgres", "consul-kv"}:
        with Fleet(config, root, p) as fleet:
            if "postgres" in wanted:
                _restore_postgres(fleet, source / FILES["postgres"], log)
            if "consul-kv" in wanted:
                _restore_kv(fleet, source / FILES["consul-kv"], log)


def _restore_secrets(p: StackPaths, source: Path, log: Log) -> None:
    saved = (source / FILES["secrets"]).read_bytes()
    if not p.env_file.exists():
        p.env_file.parent.mkdir(parents=True, exist_ok=True)
        private(p.env_file, saved)
        log(f"secrets: written to {p.env_file}")
    elif p.env_file.read_bytes() == saved:
        log("secrets: this machine's are the backup's")
    else:
        log(f"secrets: kept this machine's {p.env_file}, which differs from the backup's (to"
            " deploy with the backup's, move that file away and restore again)")  # fmt: skip
    target = pki_dir(p)
    if not (source / FILES["pki"]).is_file():
        return
    if target.exists():
        log(f"PKI: kept this machine's {target}")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source / FILES["pki"]) as tar:
        tar.extractall(target.parent, members=_plain_members(tar, target.name, source))
    log(f"PKI: written to {target}")


def _plain_members(tar: tarfile.TarFile, top: str, source: Path) -> list[tarfile.TarInfo]:
    """The archive's entries, each a plain file or folder under `top`/ (what `morgan
    backup` writes); anything else (a link, a device, a path that climbs out) refuses
    the archive. By hand: tarfile's extraction filters are missing from Python < 3.11.4."""
    members = tar.getmembers()
    for member in members:
        parts = Path(member.name).parts
        plain = member.isfile() or member.isdir()
        inside = not Path(member.name).is_absolute() and ".." not in parts
        if not (plain and inside and parts[:1] == (top,)):
            raise BackupError(
                f"{source / FILES['pki']}: {member.name!r} is not a plain file under {top}/; it"
                " was not made by `morgan backup`: use another backup"
            )
    return members


def _restore_postgres(fleet: Fleet, dump: Path, log: Log) -> None:
    started = time.monotonic()
    spec, container = fleet.pg_leader()
    engine = fleet.engines[spec.host]
    # The tables' owner (postgres.app_user) must exist: the deploy's role step makes it
    # and sets its password; run again, it changes nothing where both are right.
    role_step = fleet.deployment.role("postgres-app-role")
    if role_step is not None:
        step = fleet.containers.of(role_step.host, role_step.name)
        proc = fleet.engines[role_step.host].run("start", "-a", step, check=False, timeout=300)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-400:]
            raise BackupError(f"{role_step.host}: the application-role step {step} failed"
                              f" ({out}); run `morgan deploy` and restore again")  # fmt: skip
    engine.stream(*fleet.pg_argv(container, "pg_restore"), "--clean", "--if-exists",
                  "--single-transaction", "--exit-on-error", stdin=dump)  # fmt: skip
    log(f"PostgreSQL: restored into {spec.host} (the leader) in"
        f" {time.monotonic() - started:.1f} s")  # fmt: skip


def _restore_kv(fleet: Fleet, exported: Path, log: Log) -> None:
    entries = json.loads(exported.read_text())
    planned = set(fleet.deployment.kv)
    client = fleet.consul()
    put = 0
    for entry in entries:
        if entry["key"] in planned or not morgans(entry["key"]):
            continue
        client.kv.put(entry["key"], base64.b64decode(entry["value"]), flags=entry["flags"])
        put += 1
    log(f"Consul KV: {put} entries put back ({len(entries) - put} are the plan's own, which"
        " `morgan deploy` writes)")  # fmt: skip
