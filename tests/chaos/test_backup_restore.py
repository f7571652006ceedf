"""Backup -> destroy -> restore on the lab, as docs/operations/backup-restore.md says:
`morgan backup`; the database lost with both members' disks (their containers and
volumes removed, Patroni's cluster state deleted from Consul) and the API key's record
lost from Consul KV; `morgan deploy` makes an empty cluster; `morgan restore` puts the
data back. The conversation reads back the same, with the same key, from both members,
and goes on."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from morgan.deploy import backup as bk
from morgan.deploy import backup_manifest as bm
from morgan.deploy import restore as rs
from morgan.deploy.rollout import deploy
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll
from morgan.shared.auth import KEYS_PREFIX

from infra.configs.patroni import NAMESPACE
from tests.chaos.conftest import ROOT, Fleet

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_fleet_restored_from_its_backup_has_its_conversations_and_keys(
    fleet: Fleet, tmp_path: Path
) -> None:
    from morgan.deploy.rollout import api_key_for

    owner = f"restored-{uuid.uuid4().hex[:8]}"  # whose memories are only this test's
    key = api_key_for(fleet.config, fleet.outputs, fleet.ca_file, owner=owner)
    first = fleet.api(key, "POST", "/api/text", json={"text": "Remember the blue kettle."})
    assert first.status_code == 200, first.text
    cid = first.json()["conversation_id"]
    second = fleet.api(key, "POST", "/api/text",
                  json={"text": "And the red cup.", "conversation_id": cid})  # fmt: skip
    assert second.status_code == 200, second.text
    before = fleet.turns(key, cid)
    assert [t["id"] for t in before] == [first.json()["turn_id"], second.json()["turn_id"]]
    said = {"Remember the blue kettle.", "And the red cup."}

    def remembered() -> None:  # memories are stored after the reply
        if (found := fleet.memories(key, "kettle cup")) != said:
            raise NotYet(f"memories {sorted(found)}")

    poll(remembered, what="both turns in semantic memory", timeout=30, interval=1)

    logged: list[str] = []
    paths = st.paths("lab", ROOT)
    started = time.monotonic()
    backup = bk.take(fleet.config, ROOT, paths, tmp_path, logged.append)
    took = {"backup": time.monotonic() - started}
    print("\n".join(logged))
    manifest = bm.Manifest.read(backup, "lab")
    assert sorted(manifest.parts) == sorted(bm.PARTS)
    exported = {e["key"] for e in json.loads((backup / "consul-kv.json").read_text())}
    key_record = KEYS_PREFIX + key.split("_")[1]
    assert key_record in exported
    assert not any(k.startswith(NAMESPACE.strip("/")) for k in exported), "Patroni's state"

    # Destroyed: both members' containers and disks, Patroni's state, the key's record.
    server = fleet.deployment.of_role("consul-server")[0]
    for member in fleet.pg_members():
        fleet.engine(member).run("rm", "-f", member.name, timeout=120)
        for volume in member.volumes:
            fleet.engine(member).run("volume", "rm", volume.name, timeout=60)
    fleet.consul_exec(server, f"consul kv delete -recurse {NAMESPACE.strip('/')}/")
    fleet.consul_exec(server, f"consul kv delete {key_record}")
    started = time.monotonic()
    report = deploy(fleet.config, ROOT, paths, log=print)
    took["deploy"] = time.monotonic() - started
    for member in fleet.pg_members():
        assert report.changes[member.host][member.name] == "created"
    assert fleet.psql("SELECT to_regclass('public.turns') IS NULL") == "t", "an empty database"
    assert fleet.consul_exec(server, f"consul kv get {key_record}", check=False).returncode == 1

    logged.clear()
    started = time.monotonic()
    rs.restore(fleet.config, ROOT, paths, backup, bm.RESTORABLE, logged.append)
    took["restore"] = time.monotonic() - started
    print("\n".join(logged))
    print("[backup-restore] " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
    fleet.lead_postgres_as_planned()

    assert fleet.turns(key, cid) == before
    assert fleet.memories(key, "kettle cup") == said
    for member in fleet.pg_members():  # the standby has them by streaming
        count = fleet.engine(member).text(
            "exec", member.name, "psql", "-h", "/var/run/postgresql", "-U",
            fleet.config.postgres.user, "-d", fleet.config.postgres.database, "-Atc",
            f"SELECT count(*) FROM turns WHERE conversation_id = '{cid}'", timeout=60,
        )  # fmt: skip
        assert count == "2", f"{member.host}: {count}"
    asked = {"text": "What did I ask you to remember?", "conversation_id": cid}
    third = fleet.api(key, "POST", "/api/text", json=asked)
    assert third.status_code == 200, third.text
    assert [t["id"] for t in fleet.turns(key, cid)][:2] == [t["id"] for t in before]
    assert len(fleet.turns(key, cid)) == 3
