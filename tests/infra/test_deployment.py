"""The one deployment model, and the KV settings it carries reaching Consul on every path."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from infra.deployment import (
    SECRET_NAMES,
    START_ORDER,
    Deployment,
    build_deployment,
    kv_seed_document,
)
from infra.placement import Plan
from infra.render.compose import render_compose
from infra.render.swarm import swarm_config_files
from infra.specs import build_specs
from tests.harness.binaries import find_binary
from tests.harness.servers import ConsulServer
from tests.infra.program import Built

BEAM_KEY = "morgan/config/stt/beam_size"
DYNAMIC = "pulumi-python:dynamic:Resource"


@pytest.fixture(scope="module")
def homelab(homelab_plan: Plan) -> Deployment:
    return build_deployment(homelab_plan)


@pytest.mark.unit
def test_the_deployment_holds_the_plans_specs(homelab: Deployment, homelab_plan: Plan) -> None:
    assert homelab.specs == build_specs(homelab_plan)
    for host in homelab.hosts:
        assert {s.name for s in homelab.on_host(host)} == {
            s.name for s in homelab.specs if s.host == host
        }
    with pytest.raises(KeyError):
        homelab.on_host("no-such-host")


@pytest.mark.unit
def test_every_container_starts_in_one_phase_consul_first(homelab: Deployment) -> None:
    phased = [name for phase in homelab.start_order for name in phase]
    assert sorted(phased) == sorted(s.name for s in homelab.specs)
    assert len(phased) == len(set(phased))
    assert {s.role for s in homelab.specs} <= {r for phase in START_ORDER for r in phase}
    first = {s.role for s in homelab.specs if s.name in homelab.start_order[0]}
    assert first == {"consul-server"}
    last = {s.role for s in homelab.specs if s.name in homelab.start_order[-1]}
    assert last == {"core", "llm", "stt", "tts", "vad"}


@pytest.mark.unit
def test_secrets_name_their_consumers(homelab: Deployment) -> None:
    per_host = tuple(f"consul_agent_token_{h}" for h in ("h1", "h2", "h3", "h4"))
    assert tuple(s.name for s in homelab.secrets) == (*SECRET_NAMES, *per_host)
    for name in per_host:
        (secret,) = [s for s in homelab.secrets if s.name == name]
        assert secret.kind == "token"
        # Only that host's agent holds it.
        assert secret.consumers == (f"consul-agent-{name.rsplit('_', 1)[1]}",), secret
    for secret in homelab.secrets:
        expected = {s.name for s in homelab.rendered_specs() if secret.name in s.secrets}
        assert set(secret.consumers) == expected, secret.name
    (key,) = [s for s in homelab.secrets if s.name == homelab.service_key.secret]
    assert key.kind == "api-key" and key.variable == homelab.service_key.variable
    assert all(c.startswith("morgan-core-") for c in key.consumers)


@pytest.mark.unit
def test_secret_variables_per_host_are_what_its_containers_read(homelab: Deployment) -> None:
    for host in homelab.hosts:
        wanted = {f"MORGAN_{n.upper()}" for s in homelab.rendered_specs(host) for n in s.secrets}
        assert set(homelab.secret_variables(host)) == wanted


@pytest.mark.unit
def test_endpoints_come_from_the_plan(homelab: Deployment, homelab_plan: Plan) -> None:
    cfg = homelab_plan.config
    ep = homelab.endpoints
    assert ep.consul.host == cfg.host(homelab_plan.consul_servers[0]).address
    assert ep.consul.scheme == ("https" if cfg.security.internal_tls else "http")
    traefik_host = cfg.host(homelab_plan.host_of("traefik") or "")
    assert ep.gateway_url.startswith(f"https://{traefik_host.address}")
    for role in ("core", "llm", "stt", "tts", "vad"):
        assert len(ep.services[f"morgan-{role}"]) == len(homelab_plan.of_role(role))
    ports = {e.address for e in ep.services["morgan-core"]}
    assert len(ports) == len(homelab_plan.of_role("core"))


@pytest.mark.unit
def test_each_host_builds_the_images_its_containers_run(homelab: Deployment) -> None:
    for host in homelab.hosts:
        built = {step.name for step in homelab.images_on(host)}
        morgan = {
            s.image
            for s in homelab.on_host(host)
            if "/morgan-" in s.image or s.image.startswith("morgan-")
        }
        assert morgan <= built, host
        for step in homelab.images_on(host):
            assert set(step.after) <= built


@pytest.mark.unit
def test_stack_settings_are_in_the_kv_entries(homelab: Deployment) -> None:
    # stacks/Pulumi.homelab.yaml: stt.settings.beam_size = 2.
    assert homelab.kv[BEAM_KEY] == "2"
    assert not any("password" in k or k.endswith("_api_key") for k in homelab.kv)


@pytest.mark.unit
def test_pulumi_writes_the_stack_settings_to_kv(built: dict[str, Built]) -> None:
    (kv,) = [r for r in built["homelab"].mocks.of_type(DYNAMIC) if r.name == "config-entries"]
    assert kv.inputs["entries"][BEAM_KEY] == "2"


def _import_and_read(consul: ConsulServer, seed: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "kv-seed.json"
    path.write_text(seed)
    subprocess.run(
        [find_binary("consul"), "kv", "import", f"-http-addr={consul.addr}", f"@{path}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    response = httpx.get(f"{consul.url}/v1/kv/morgan/config?recurse=true", timeout=5)
    response.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"]).decode() for e in response.json()}


@pytest.mark.integration
def test_the_compose_seed_step_writes_the_settings_into_a_real_consul(
    homelab: Deployment, tmp_path: Path
) -> None:
    seed = homelab.kv_seed
    doc = render_compose(homelab, seed.host)
    service = doc["services"][seed.name]
    assert service["restart"] == "on-failure"
    # The management token as a compose secret (a file), never in the environment.
    assert "CONSUL_HTTP_TOKEN" not in service["environment"]
    assert service["environment"]["CONSUL_HTTP_TOKEN_FILE"] == "/run/secrets/CONSUL_HTTP_TOKEN"
    assert [s["source"] for s in service["secrets"]] == ["consul_management_token"]
    assert doc["secrets"]["consul_management_token"] == {
        "environment": "MORGAN_CONSUL_MANAGEMENT_TOKEN"
    }
    (mount,) = service["configs"]
    content = doc["configs"][mount["source"]]["content"]
    assert mount["target"] in " ".join(service["command"])
    # A private Consul: the session's shared one serves other tests' morgan/config/.
    with ConsulServer.run(tmp_path / "consul") as consul:
        stored = _import_and_read(consul, content.replace("$$", "$"), tmp_path)
    assert stored[BEAM_KEY] == "2"
    assert stored == homelab.kv


@pytest.mark.integration
def test_the_swarm_seed_config_writes_the_settings_into_a_real_consul(
    homelab: Deployment, tmp_path: Path
) -> None:
    files = swarm_config_files(homelab)
    (seed,) = [content for path, content in files.items() if "kv-seed" in path]
    assert seed == kv_seed_document(homelab.kv)
    with ConsulServer.run(tmp_path / "consul") as consul:
        stored = _import_and_read(consul, seed, tmp_path)
    assert stored[BEAM_KEY] == "2"


@pytest.mark.unit
def test_seed_document_is_consul_kv_export_format() -> None:
    items = json.loads(kv_seed_document({"morgan/config/x/y": '"v"'}))
    assert items == [{"key": "morgan/config/x/y", "flags": 0, "value": "InYi"}]
