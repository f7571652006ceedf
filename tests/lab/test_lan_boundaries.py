"""Someone on the home network (this machine, on the lab's network but not one of its hosts)
against the lab fleet.

Consul: a client agent's API is not reachable from the LAN at all, and a server's API,
which the deploy machine uses, does nothing for a request without a token: no turning
auth off, no minting a key, no reading the key records, no fake morgan-core for Traefik
to route to. The management token, from the stack's outputs, still does each (so the
refusals are the ACLs', not a wrong URL)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from morgan.deploy.outputs import load_outputs, write_ca_file
from morgan.deploy.rollout import DeployReport
from morgan.lab import stack as st

from infra.configs import consul as consul_cfg
from infra.deployment import Deployment, build_deployment
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FORGED_KEY = "morgan/auth/keys/forged0000ab"
FAKE_CORE = {"ID": "morgan-core-forged", "Name": "morgan-core", "Address": "10.213.87.99",
             "Port": 8000, "Tags": ["traefik.enable=true"]}  # fmt: skip


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return build_deployment(make_plan(st.load_config("lab", ROOT)), ROOT)


@pytest.fixture(scope="module")
def outputs(lab_fleet: DeployReport) -> dict[str, Any]:
    return load_outputs(st.paths("lab", ROOT))


@pytest.fixture(scope="module")
def server_api(outputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[httpx.Client]:  # fmt: skip
    ca = write_ca_file(outputs, tmp_path_factory.mktemp("consul-ca"))
    base = outputs["consul_ui_url"].removesuffix("/ui/")
    with httpx.Client(base_url=base, verify=str(ca), timeout=15) as client:
        yield client


def _refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_no_client_agents_api_is_reachable_from_the_lan(deployment: Deployment) -> None:
    tried = []
    for spec in deployment.of_role("consul-agent"):
        address = deployment.plan.config.host(spec.host).address
        port = consul_cfg.AGENT_PORTS["https"]
        assert _refused(address, port), f"{spec.name}: {address}:{port} accepts connections"
        tried.append(f"{address}:{port}")
    print("refused:", ", ".join(tried))
    assert len(tried) == len(deployment.plan.hosts)


def test_a_request_without_a_token_is_denied(server_api: httpx.Client,
                                             outputs: dict[str, Any]) -> None:  # fmt: skip
    service_key = f"morgan/auth/keys/{outputs['core_service_key_id']}"
    attempts = {
        "turn auth off": server_api.put("/v1/kv/morgan/config/global/auth_enabled",
                                        content=b"false"),
        "mint an API key": server_api.put(f"/v1/kv/{FORGED_KEY}",
                                          content=json.dumps({"owner": "mallory"}).encode()),
        "register a fake morgan-core": server_api.put("/v1/agent/service/register",
                                                      json=FAKE_CORE),
        "read core's key record": server_api.get(f"/v1/kv/{service_key}"),
        "read the ACL tokens": server_api.get("/v1/acl/tokens"),
    }  # fmt: skip
    for what, answer in attempts.items():
        print(f"{what}: {answer.status_code} {answer.text[:80]!r}")
        assert answer.status_code == 403, (what, answer.status_code, answer.text[:200])
        assert "Permission denied" in answer.text, (what, answer.text[:200])


def test_nothing_was_written_and_the_token_still_works(
    server_api: httpx.Client, outputs: dict[str, Any], deployment: Deployment
) -> None:
    token = {"X-Consul-Token": outputs["consul_management_token"]}
    # The control: the same API, with the deploy machine's token, reads what was refused.
    keys = server_api.get("/v1/kv/morgan/auth/keys/?keys=true", headers=token)
    assert keys.status_code == 200, keys.text
    assert f"morgan/auth/keys/{outputs['core_service_key_id']}" in keys.json()
    assert FORGED_KEY not in keys.json()
    auth = server_api.get("/v1/kv/morgan/config/global/auth_enabled", headers=token)
    assert auth.status_code == 404, auth.text  # env-only setting: never in KV, not now either
    cores = server_api.get("/v1/catalog/service/morgan-core", headers=token)
    assert cores.status_code == 200
    assert FAKE_CORE["ID"] not in {c["ServiceID"] for c in cores.json()}
    assert len(cores.json()) == len(deployment.of_role("core"))
