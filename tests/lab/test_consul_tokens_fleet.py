"""A process on a fleet host against its own host's Consul agent (the loopback API every
container there uses): without a token it reads the catalogue and nothing else; with the
token its container holds (core's) it reads its own config but cannot turn auth off, mint
an API key or register as another service; another service's token (stt's) cannot
register a fake morgan-core for Traefik to route to. The attacks run inside core's
container on each host, with the container's own Python and environment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from morgan.deploy.outputs import load_outputs, write_ca_file
from morgan.deploy.rollout import DeployReport, engines
from morgan.lab import stack as st
from morgan.lab.secrets import read_env

from infra.config import MorganStackConfig
from infra.configs.gateway import GATEWAY_TAG
from infra.deployment import build_deployment, secret_variable
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# Runs inside core's container: each attempt against the local agent, answers as JSON.
# The other service's token and the key record's name come on stdin, never on a command line.
PROBE = r"""
import json, os, sys
import httpx

given = json.loads(sys.stdin.read())
other = given["other"]
assert "CONSUL_HTTP_TOKEN" not in os.environ  # its own token is a file of its user's
with open(os.environ["CONSUL_HTTP_TOKEN_FILE"]) as f:
    own = f.read().strip()
base = os.environ["CONSUL_HTTP_ADDR"]
base = base if "://" in base else "http://" + base
fake = {"ID": "morgan-core-forged", "Name": "morgan-core", "Address": "127.0.0.1",
        "Port": 1, "Tags": ["traefik.enable=true"]}
with httpx.Client(base_url=base, verify=os.environ.get("CONSUL_CACERT", True),
                  timeout=10) as c:
    def call(method, path, token, **kw):
        headers = {"X-Consul-Token": token} if token else {}
        r = c.request(method, path, headers=headers, **kw)
        return [r.status_code, r.text[:160]]
    out = {
        "none: turn auth off": call("PUT", "/v1/kv/morgan/config/global/auth_enabled",
                                    None, content=b"false"),
        "none: register a fake morgan-core": call("PUT", "/v1/agent/service/register",
                                                  None, json=fake),
        "none: read core's key record": call("GET", "/v1/kv/" + given["record"], None),
        "own: turn auth off": call("PUT", "/v1/kv/morgan/config/global/auth_enabled",
                                   own, content=b"false"),
        "own: mint an API key": call("PUT", "/v1/kv/morgan/auth/keys/forged0000ab", own,
                                     content=b'{"owner": "mallory"}'),
        "own: register as morgan-llm": call("PUT", "/v1/agent/service/register", own,
                                            json={**fake, "Name": "morgan-llm"}),
        "other: register a fake morgan-core": call("PUT", "/v1/agent/service/register",
                                                   other, json=fake),
    }
    catalogue = c.get("/v1/catalog/services")
    config = c.get("/v1/kv/morgan/config/?recurse", headers={"X-Consul-Token": own})
    out["none: the catalogue"] = [catalogue.status_code, sorted(catalogue.json())]
    out["own: config keys"] = [config.status_code,
                               sorted(e["Key"] for e in config.json()) if config.is_success
                               else config.text[:160]]
print(json.dumps(out))
"""

REFUSED = (
    "none: turn auth off",
    "none: register a fake morgan-core",
    "none: read core's key record",
    "own: turn auth off",
    "own: mint an API key",
    "own: register as morgan-llm",
    "other: register a fake morgan-core",
)


@pytest.fixture(scope="module")
def config() -> MorganStackConfig:
    return st.load_config("lab", ROOT)


def test_a_container_on_a_fleet_host_holds_only_its_own_rights(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    deployment = build_deployment(make_plan(config), ROOT)
    engines_ = engines(config, ROOT)
    stt_token = read_env(st.paths("lab", ROOT).env_file)[secret_variable("consul_token_stt")]
    record = f"morgan/auth/keys/{load_outputs(st.paths('lab', ROOT))['core_service_key_id']}"
    given = json.dumps({"other": stt_token, "record": record}).encode()
    cores = deployment.of_role("core")
    assert len(cores) >= 2
    for spec in cores:
        answer = engines_[spec.host].run(
            "exec", "-i", spec.name, "python", "-c", PROBE,
            stdin=given, timeout=120,
        )  # fmt: skip
        out = json.loads(answer.stdout)
        for what, (status, text) in out.items():
            print(f"{spec.host} {spec.name} {what}: {status} {str(text)[:100]}")
        for what in REFUSED:
            assert out[what][0] == 403, (spec.name, what, out[what])
            assert "Permission denied" in out[what][1], (spec.name, what, out[what])
        # The controls: the same agent answers what each holder may do.
        status, services = out["none: the catalogue"]
        assert status == 200 and {"morgan-core", "morgan-stt", "consul"} <= set(services)
        status, keys = out["own: config keys"]
        assert status == 200, keys
        assert keys, "core's token read no config key"
        outside = [k for k in keys if not k.startswith(("morgan/config/core/",
                                                        "morgan/config/global/"))]  # fmt: skip
        assert outside == [], outside


def _decoy(service_id: str, path: str, tags: list[str]) -> dict[str, object]:
    return {
        "ID": service_id, "Name": service_id, "Address": "127.0.0.1", "Port": 1,
        "Tags": [*tags, "traefik.enable=true",
                 f"traefik.http.routers.{service_id}.rule=PathPrefix(`{path}`)",
                 f"traefik.http.routers.{service_id}.entrypoints=websecure",
                 f"traefik.http.routers.{service_id}.tls=true"],
    }  # fmt: skip


def test_the_gateway_routes_only_services_morgan_tagged(
    lab_fleet: DeployReport, tmp_path: Path
) -> None:
    """A service in the catalogue with Traefik tags but not Morgan's gateway tag gets no
    route; the same service with the tag does (the control: Traefik saw the catalogue
    change, and its backend on loopback port 1 answers 502)."""
    outputs = load_outputs(st.paths("lab", ROOT))
    ca = write_ca_file(outputs, tmp_path)
    token = {"X-Consul-Token": outputs["consul_management_token"]}
    untagged = _decoy("morgan-decoy-untagged", "/decoy-untagged", [])
    tagged = _decoy("morgan-decoy-tagged", "/decoy-tagged", [GATEWAY_TAG])
    base = outputs["consul_ui_url"].removesuffix("/ui/")
    with (
        httpx.Client(base_url=base, verify=str(ca), headers=token, timeout=15) as consul,
        httpx.Client(base_url=outputs["gateway_url"], verify=str(ca), timeout=15) as gateway,
    ):
        for decoy in (untagged, tagged):
            assert consul.put("/v1/agent/service/register", json=decoy).status_code == 200
        try:
            # Traefik reads the catalogue every CATALOG_REFRESH (5 s): wait for the control.
            deadline = time.monotonic() + 60
            while True:
                control = gateway.get("/decoy-tagged")
                print(f"tagged decoy: {control.status_code}")
                if control.status_code == 502 or time.monotonic() > deadline:
                    break
                time.sleep(2)
            assert control.status_code == 502, control.text[:200]
            answer = gateway.get("/decoy-untagged")
            print(f"untagged decoy: {answer.status_code} {answer.text[:60]!r}")
            assert answer.status_code == 404, answer.text[:200]
        finally:
            for decoy in (untagged, tagged):
                consul.put(f"/v1/agent/service/deregister/{decoy['ID']}")


# Runs inside a container on the host whose agent's token it is given (on stdin): the
# token a taken-over host yields, tried against that host's own agent.
AGENT_PROBE = r"""
import json, os, sys
import httpx

given = json.loads(sys.stdin.read())
token = {"X-Consul-Token": given["token"]}
base = os.environ["CONSUL_HTTP_ADDR"]
base = base if "://" in base else "http://" + base
probe = {"ID": "node-exporter-probe", "Name": "node-exporter", "Address": "127.0.0.1",
         "Port": 1}
with httpx.Client(base_url=base, verify=os.environ.get("CONSUL_CACERT", True),
                  timeout=10, headers=token) as c:
    def call(method, path, **kw):
        r = c.request(method, path, **kw)
        return [r.status_code, r.text[:160]]
    print(json.dumps({
        "another host's node": call("PUT", "/v1/catalog/register",
                                    json={"Node": given["other"], "Address": "127.0.0.1"}),
        "a server this host does not run": call("PUT", "/v1/agent/service/register",
                                                json={**probe, "ID": "redis-probe",
                                                      "Name": "redis"}),
        "its own host's server": call("PUT", "/v1/agent/service/register", json=probe),
        "its own host's server, gone again": call(
            "PUT", "/v1/agent/service/deregister/node-exporter-probe"),
    }))
"""


def test_a_hosts_agent_token_does_not_act_for_another_host(
    lab_fleet: DeployReport, config: MorganStackConfig
) -> None:
    """Someone who took over a host reads its agent's token out of the agent's container:
    with it they can neither register another host's node nor put a server this host
    does not run into the catalogue (Traefik and every service trust the catalogue)."""
    from infra.configs.consul import service_definitions

    plan = make_plan(config)
    deployment = build_deployment(plan, ROOT)
    engines_ = engines(config, ROOT)
    # A Morgan service's container (its Python and httpx) on a host that runs no Redis.
    inside = next(
        s for s in deployment.of_role("core", "stt", "tts", "vad")
        if "redis" not in {d["name"] for d in service_definitions(plan, s.host)}
    )  # fmt: skip
    other = next(h.name for h in config.hosts if h.name != inside.host)
    held = (
        engines_[inside.host]
        .run(
            "exec",
            f"consul-agent-{inside.host}",
            "sh",
            "-c",
            'cat "$CONSUL_HTTP_TOKEN_FILE"',
            timeout=60,
        )
        .stdout.decode()
        .strip()
    )
    env = read_env(st.paths("lab", ROOT).env_file)
    assert held == env[secret_variable(f"consul_agent_token_{inside.host}")]
    given = json.dumps({"token": held, "other": other}).encode()
    answer = engines_[inside.host].run(
        "exec", "-i", inside.name, "python", "-c", AGENT_PROBE, stdin=given, timeout=120
    )
    out = json.loads(answer.stdout)
    for what, (status, text) in out.items():
        print(f"{inside.host}'s agent token: {what}: {status} {text[:100]}")
    for what in ("another host's node", "a server this host does not run"):
        assert out[what][0] == 403, (what, out[what])
        assert "Permission denied" in out[what][1], (what, out[what])
    # The control: the same token does what that host's agent does.
    assert out["its own host's server"][0] == 200, out
    assert out["its own host's server, gone again"][0] == 200, out
