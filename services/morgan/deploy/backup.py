"""`morgan backup`: a deployed stack's data taken to a new directory on the deploy
machine (made 0700, its files 0600: it holds the fleet's secrets), which has:

- `postgres.dump`: the database (`pg_dump`, custom format: one consistent snapshot) from
  the member that leads now: conversations, turns, and memories where `memory.store` is
  postgres;
- `consul-kv.json`: Morgan's Consul KV (`morgan/`, less Patroni's live cluster state) as
  `consul kv export` writes it: API key records and settings;
- `consul.snap`: the Consul servers' whole state, for rebuilding a lost Consul cluster
  by hand (`consul snapshot restore`; docs/operations/backup-restore.md);
- `secrets.env` and `pki.tar`: the stack's secrets file and its CA and certificates;
- `manifest.json`: the stack, the time, and each part's size and SHA-256
  (morgan.deploy.backup_manifest).

`morgan restore` (morgan.deploy.restore) puts it back.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import ssl
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.config import MorganStackConfig
from infra.configs.patroni import RUN_CONFIG_PATH as PATRONI_CONFIG
from infra.deployment import Deployment, build_deployment
from infra.model import ContainerSpec
from infra.placement import make_plan
from morgan.deploy.backup_manifest import (
    FILES,
    KV_PREFIX,
    BackupError,
    Manifest,
    Part,
    morgans,
    part_of,
    private,
)
from morgan.deploy.outputs import consul_api_url, consul_factory, load_outputs, write_ca_file
from morgan.deploy.rollout import engines, pki_dir, swarm_stack_name
from morgan.deploy.running import Containers
from morgan.lab.stack import StackPaths

Log = Callable[[str], None]


class Fleet:
    """A deployed stack as backup and restore reach it: its hosts' engines, its running
    containers, its Consul API (the operator's management token, from its outputs)."""

    def __init__(self, config: MorganStackConfig, root: Path, p: StackPaths) -> None:
        self.config = config
        self.deployment: Deployment = build_deployment(make_plan(config), root)
        self.engines = engines(config, root)
        self.containers = Containers(self.engines, swarm_stack_name(config.stack))
        self.outputs = load_outputs(p)
        self.consul_url = consul_api_url(self.outputs)
        self.token = str(self.outputs["consul_management_token"])
        self._scratch = tempfile.TemporaryDirectory(prefix="morgan-backup-")
        self.ca_file = write_ca_file(self.outputs, Path(self._scratch.name))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self._scratch.cleanup()

    def consul(self) -> Any:
        return consul_factory(self.outputs, self.ca_file, timeout=60).client()

    def pg_leader(self) -> tuple[ContainerSpec, str]:
        """The PostgreSQL member that takes writes now, and its container's name."""
        members = self.deployment.of_role("postgres-primary", "postgres-standby")
        if not members:
            raise BackupError(f"stack {self.config.stack} runs no PostgreSQL")
        if self.config.postgres.ha != "patroni":
            spec = self.deployment.of_role("postgres-primary")[0]
            return spec, self.containers.of(spec.host, spec.name)
        tried = []
        for spec in members:
            name = self.containers.of(spec.host, spec.name)
            proc = self.engines[spec.host].run("exec", name, "patronictl", "-c", PATRONI_CONFIG,
                                               "list", "--format", "json", check=False,
                                               timeout=60)  # fmt: skip
            if proc.returncode != 0:
                tried.append(f"{spec.host}: {proc.stderr.decode(errors='replace').strip()[-200:]}")
                continue
            for member in json.loads(proc.stdout):
                if member.get("Role") == "Leader" and member.get("State") == "running":
                    leader = next(m for m in members if m.host == member["Member"])
                    return leader, self.containers.of(leader.host, leader.name)
            tried.append(f"{spec.host}: no running leader in {proc.stdout.decode().strip()}")
        raise BackupError("no PostgreSQL member leads (" + "; ".join(tried) + "); wait for"
                          " Patroni to elect one (`morgan verify` shows the cluster)")  # fmt: skip

    def pg_argv(self, container: str, tool: str) -> list[str]:
        """`docker exec` of a PostgreSQL client in the member's container, over its socket
        as the administrator (no password: the socket trusts the container's processes)."""
        pg = self.config.postgres
        return ["exec", "-i", container, tool, "-h", "/var/run/postgresql", "-U", pg.user,
                "-d", pg.database]  # fmt: skip


def take(config: MorganStackConfig, root: Path, p: StackPaths, dest: Path, log: Log) -> Path:
    """A backup of the deployed stack in a new directory under `dest`; returns it. A backup
    that fails part-way leaves no directory behind (only a whole one has a manifest)."""
    stamp = datetime.now(UTC)
    directory = dest / f"{config.stack}-{stamp:%Y%m%dT%H%M%SZ}"
    if directory.exists():
        raise BackupError(f"{directory} exists already; wait a second, or name another --to")
    parts: dict[str, Part] = {}
    with Fleet(config, root, p) as fleet:  # the stack's outputs first: is it deployed?
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
        try:
            parts["postgres"] = _dump_postgres(fleet, directory, log)
            parts["consul-kv"] = _export_kv(fleet, directory, log)
            parts["consul-snapshot"] = _snapshot_consul(fleet, directory, log)
            parts.update(_copy_secrets(p, directory, log))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    if config.qdrant.mode == "server" and config.memory.store == "qdrant":
        log("note: the Qdrant server's collections are not in this backup: take a snapshot"
            " with Qdrant's API (docs/operations/backup-restore.md, Qdrant)")  # fmt: skip
    Manifest(config.stack, stamp.isoformat(timespec="seconds"), parts).write(directory)
    return directory


def _timed(log: Log, what: str, part: Part, started: float) -> Part:
    log(f"{what}: {part.file} {part.bytes / 1024:.0f} KiB in {time.monotonic() - started:.1f} s"
        + (f" ({part.detail})" if part.detail else ""))  # fmt: skip
    return part


def _dump_postgres(fleet: Fleet, directory: Path, log: Log) -> Part:
    started = time.monotonic()
    spec, container = fleet.pg_leader()
    file = directory / FILES["postgres"]
    fleet.engines[spec.host].stream(*fleet.pg_argv(container, "pg_dump"), "-Fc", stdout=file)
    part = part_of(directory, "postgres", f"from {spec.host}, the leader")
    return _timed(log, "PostgreSQL", part, started)


def _export_kv(fleet: Fleet, directory: Path, log: Log) -> Part:
    started = time.monotonic()
    _index, entries = fleet.consul().kv.get(KV_PREFIX, recurse=True)
    exported = [{"key": e["Key"], "flags": e.get("Flags", 0),
                 "value": base64.b64encode(e["Value"] or b"").decode()}
                for e in entries or [] if morgans(e["Key"])]  # fmt: skip
    private(directory / FILES["consul-kv"], json.dumps(exported, indent=1) + "\n")
    return _timed(log, "Consul KV", part_of(directory, "consul-kv", f"{len(exported)} keys"),
                  started)  # fmt: skip


def _snapshot_consul(fleet: Fleet, directory: Path, log: Log) -> Part:
    import httpx

    started = time.monotonic()
    file = directory / FILES["consul-snapshot"]
    verify: ssl.SSLContext | bool = True
    if fleet.consul_url.startswith("https"):
        verify = ssl.create_default_context(cafile=str(fleet.ca_file))
    url, headers = f"{fleet.consul_url}/v1/snapshot", {"X-Consul-Token": fleet.token}
    with (
        httpx.Client(verify=verify, timeout=120) as http,
        http.stream("GET", url, headers=headers) as resp,
        open(file, "wb") as out,
    ):
        if resp.status_code != 200:
            raise BackupError(f"Consul refused the snapshot ({resp.status_code}"
                              f" {resp.read().decode(errors='replace')[:200]})")  # fmt: skip
        for chunk in resp.iter_bytes():
            out.write(chunk)
    return _timed(log, "Consul snapshot", part_of(directory, "consul-snapshot"), started)


def _copy_secrets(p: StackPaths, directory: Path, log: Log) -> dict[str, Part]:
    """The secrets file, and the stack's CA and certificates where it has internal TLS."""
    if not p.env_file.is_file():
        raise BackupError(f"the stack's secrets file {p.env_file} is missing: without it the"
                          " backup could not be deployed again; restore it first")  # fmt: skip
    private(directory / FILES["secrets"], p.env_file.read_bytes())
    parts = {"secrets": part_of(directory, "secrets")}
    if pki_dir(p).is_dir():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(pki_dir(p), arcname="pki")
        private(directory / FILES["pki"], buffer.getvalue())
        parts["pki"] = part_of(directory, "pki")
    log(f"secrets: {', '.join(part.file for part in parts.values())} (whoever holds them"
        " holds the fleet: keep the backup off the fleet's hosts, encrypted)")  # fmt: skip
    return parts
