"""The stack's Consul API as its outputs give it (`consul_ui_url`, the management token),
on a real Consul agent: what `morgan backup`/`restore` and `api_key_for` talk to."""

from __future__ import annotations

from pathlib import Path

from morgan.deploy.outputs import consul_api_url, consul_factory
from morgan.deploy.rollout import api_key_for
from morgan.lab.stack import load_config
from morgan.shared.auth import KEYS_PREFIX

from tests.harness.servers import ConsulServer

ROOT = Path(__file__).resolve().parents[2]


def test_a_key_made_through_the_outputs_consul_api_is_stored_there(
    consul_server: ConsulServer, tmp_path: Path
) -> None:
    outputs = {"consul_ui_url": f"http://{consul_server.addr}/ui/",
               "consul_management_token": "operator"}  # fmt: skip
    assert consul_api_url(outputs) == f"http://{consul_server.addr}"

    key = api_key_for(load_config("lab", ROOT), outputs, tmp_path / "ca.pem", owner="o")

    client = consul_factory(outputs, tmp_path / "ca.pem").client()
    _index, entry = client.kv.get(KEYS_PREFIX + key.split("_")[1])
    assert entry is not None and b'"owner":"o"' in entry["Value"].replace(b" ", b"")
