"""The Pulumi program under mocks: invariants over every resource of a type, both stacks."""

from __future__ import annotations

from typing import Any

import pytest
from morgan.shared.settings import ServiceSettings

from infra.container_run import container_run
from infra.placement import Plan
from infra.render.compose import service_entry
from infra.specs import build_specs
from tests.infra.mocks import SECRET_MARK, is_secret, plain_strings, unwrap
from tests.infra.program import Built

pytestmark = pytest.mark.unit

CONTAINER = "docker:index/container:Container"
DYNAMIC = "pulumi-python:dynamic:Resource"


@pytest.fixture(params=["homelab", "dev"])
def stack(request: pytest.FixtureRequest, built: dict[str, Built]) -> Built:
    return built[request.param]


def _labels(inputs: dict[str, Any]) -> dict[str, str]:
    return {item["label"]: item["value"] for item in unwrap(inputs.get("labels") or [])}


def test_one_container_per_spec(stack: Built) -> None:
    names = sorted(r.name for r in stack.mocks.of_type(CONTAINER))
    assert names == sorted(s.name for s in build_specs(stack.plan))


def test_every_container_has_healthcheck_restart_and_memory_limit(stack: Built) -> None:
    for r in stack.mocks.of_type(CONTAINER):
        hc = unwrap(r.inputs["healthcheck"])
        assert hc["tests"] and hc["interval"] and hc["retries"] > 0, r.name
        assert r.inputs["restart"] in ("unless-stopped", "on-failure"), r.name
        assert r.inputs["memory"] > 0, r.name
        assert r.inputs["networkMode"] == "host", r.name


def test_every_docker_resource_uses_its_hosts_provider(stack: Built) -> None:
    docker_types = (
        CONTAINER,
        "docker:index/volume:Volume",
        "docker:index/remoteImage:RemoteImage",
        "docker:index/image:Image",
    )
    hosts = {h.name for h in stack.plan.hosts}
    for r in stack.mocks.resources:
        if r.typ not in docker_types:
            continue
        assert "pulumi:providers:docker::" in r.provider, f"{r.name} uses a default provider"
        provider_host = r.provider.split("::")[-2].removesuffix("-docker")
        assert provider_host in hosts
        if r.typ == CONTAINER:
            assert _labels(r.inputs)["morgan.host"] == provider_host, r.name
        elif r.typ != "docker:index/volume:Volume":
            platform = unwrap(r.inputs.get("platform") or r.inputs.get("build", {}).get("platform"))
            assert platform == stack.plan.config.host(provider_host).platform, r.name


def test_one_explicit_provider_per_host(stack: Built) -> None:
    providers = stack.mocks.of_type("pulumi:providers:docker")
    assert sorted(p.name for p in providers) == sorted(f"{h.name}-docker" for h in stack.plan.hosts)
    for p in providers:
        host = stack.plan.config.host(p.name.removesuffix("-docker"))
        assert p.inputs["host"] == host.docker


def test_gpu_device_requests_only_on_gpu_hosts(stack: Built) -> None:
    for r in stack.mocks.of_type(CONTAINER):
        host = stack.plan.config.host(_labels(r.inputs)["morgan.host"])
        requests = unwrap(r.inputs.get("deviceRequests") or [])
        if requests:
            assert host.gpu is not None, r.name
            # The GPUs the stack file lists for the host (default: the first), never all.
            assert requests == [
                {"driver": "nvidia", "deviceIds": list(host.gpu.devices), "capabilities": ["gpu"]}
            ]
            assert "count" not in requests[0]
    if stack.plan.config.stack == "homelab":
        with_gpu = {
            r.name for r in stack.mocks.of_type(CONTAINER) if r.inputs.get("deviceRequests")
        }
        # The GPU services, and the DCGM exporter of each GPU host (h1, h2).
        assert with_gpu == {"morgan-stt-1", "morgan-stt-2", "morgan-tts-1", "morgan-tts-2",
                            "morgan-dcgm-exporter-h1", "morgan-dcgm-exporter-h2"}  # fmt: skip


def test_morgan_containers_drop_every_capability(stack: Built) -> None:
    hardened = ("core", "llm", "stt", "tts", "prometheus", "alertmanager", "grafana", "loki")
    seen = set()
    for r in stack.mocks.of_type(CONTAINER):
        role = _labels(r.inputs)["morgan.role"]
        if role in hardened or role == "promtail":
            seen.add(role)
            assert unwrap(r.inputs["capabilities"]) == {"drops": ["ALL"]}, r.name
            assert unwrap(r.inputs["securityOpts"]) == ["no-new-privileges:true"], r.name
    assert {"core", "llm", "stt", "tts"} <= seen


def test_arm64_images_only_on_arm64_hosts(stack: Built) -> None:
    for r in stack.mocks.of_type("docker:index/image:Image"):
        build = unwrap(r.inputs["build"])
        host = r.provider.split("::")[-2].removesuffix("-docker")
        assert build["platform"] == f"linux/{stack.plan.config.host(host).arch}"
        assert build["args"]["BASE_IMAGE"]
        assert build["dockerfile"].startswith(build["context"] + "/images/")


def test_no_secret_in_plain_text_anywhere(stack: Built) -> None:
    for r in stack.mocks.resources:
        if r.typ.startswith(("random:", "tls:index/privateKey")):
            continue
        for text in plain_strings(r.inputs):
            assert SECRET_MARK not in text, f"{r.typ} {r.name} holds a secret in plain text"


def test_containers_with_secrets_get_a_secret_env(stack: Built) -> None:
    specs = {s.name: s for s in build_specs(stack.plan)}
    for r in stack.mocks.of_type(CONTAINER):
        if specs[r.name].secret_env:
            assert is_secret(r.inputs["envs"]), r.name
            env = unwrap(r.inputs["envs"])
            assert any(SECRET_MARK in e for e in env), r.name


def test_tls_keys_are_uploaded_as_secrets(built: dict[str, Built]) -> None:
    homelab = built["homelab"]
    for r in homelab.mocks.of_type(CONTAINER):
        raw = r.inputs.get("uploads") or []
        uploads = raw["value"] if is_secret(raw) else raw
        keys = [u for u in uploads if unwrap(u).get("file") == "/etc/morgan/tls/key.pem"]
        assert len(keys) == 1, r.name
        key = keys[0]
        assert is_secret(raw) or is_secret(key) or is_secret(key.get("content")), r.name


def test_stack_outputs(stack: Built) -> None:
    out = stack.outputs
    secrets = ("traefik_dashboard_password", "consul_management_token", "grafana_admin_password",
               "monitoring_password")  # fmt: skip
    for key in secrets:
        value, secret = out[key]
        assert secret and value.startswith(SECRET_MARK), key
    for key in ("gateway_url", "consul_ui_url", "services_by_host", "kv_keys", "ca_certificate"):
        value, secret = out[key]
        assert not secret, key
        assert SECRET_MARK not in str(value), key
    assert out["services_by_host"][0] == stack.plan.by_host()
    assert out["gateway_url"][0].startswith("https://")
    assert all(k.startswith("morgan/config/") for k in out["kv_keys"][0])


def test_homelab_outputs_name_the_hosts(built: dict[str, Built]) -> None:
    out = built["homelab"].outputs
    assert out["gateway_url"][0] == "https://h1.lan/"
    assert out["consul_ui_url"][0] == "https://h1.lan:8511/ui/"
    assert out["grafana_url"][0] == "https://h3.lan:3000/"
    assert out["ca_certificate"][0].startswith("CERT-")


def test_components_use_morgan_type_tokens(stack: Built) -> None:
    components = [r for r in stack.mocks.resources if r.typ.startswith("morgan:")]
    expected = {
        "morgan:host:Host",
        "morgan:security:FleetSecrets",
        "morgan:images:Images",
        "morgan:consul:ConsulCluster",
        "morgan:consul:ConsulKv",
        "morgan:consul:ConsulAcl",
        "morgan:gateway:Gateway",
        "morgan:data:PostgresCluster",
        "morgan:data:RedisCluster",
        "morgan:observability:Observability",
        "morgan:services:MorganServices",
    }
    assert expected <= {c.typ for c in components}
    for c in components:
        assert len(c.typ.split(":")) == 3


def test_homelab_has_pki_and_qdrant_dev_does_not(built: dict[str, Built]) -> None:
    homelab = {r.typ for r in built["homelab"].mocks.resources}
    dev = {r.typ for r in built["dev"].mocks.resources}
    assert {"morgan:security:Pki", "morgan:data:Qdrant"} <= homelab
    assert not {"morgan:security:Pki", "morgan:data:Qdrant"} & dev


def test_kv_resource_writes_typed_entries(stack: Built) -> None:
    (kv,) = [r for r in stack.mocks.of_type(DYNAMIC) if r.name == "config-entries"]
    assert is_secret(kv.inputs["token"])
    entries = kv.inputs["entries"]
    assert entries["morgan/config/core/llm_service"] == '"morgan-llm"'
    assert not any("password" in k or "dsn" in k for k in entries)


def test_acl_resource_makes_each_scoped_token_with_the_stacks_secret(
    built: dict[str, Built],
) -> None:
    """The token a container holds (FleetSecrets) is the one the ACL resource makes."""
    mocks = built["homelab"].mocks
    (acl,) = [r for r in mocks.of_type(DYNAMIC) if r.name == "consul-acl-tokens"]
    assert is_secret(acl.inputs["token"]) and is_secret(acl.inputs["secret_ids"])
    (prune,) = [r for r in mocks.of_type(DYNAMIC) if r.name == "consul-acl-prune"]
    assert unwrap(prune.inputs["secret_ids"]) == unwrap(acl.inputs["secret_ids"])
    names = [i["name"] for i in acl.inputs["acl"]["identities"]]
    hosts = ["h1", "h2", "h3", "h4"]
    services = ["core", "llm", "stt", "tts", "vad"]
    assert names == [*(f"agent-{h}" for h in hosts), *services]
    ids = unwrap(acl.inputs["secret_ids"])
    assert set(ids) == {
        *(f"consul_agent_token_{h}" for h in hosts),
        *(f"consul_token_{n}" for n in services),
    }
    assert len(set(ids.values())) == len(ids)
    checked: dict[str, str] = {}
    for container in mocks.of_type("docker:index/container:Container"):
        envs = dict(e.split("=", 1) for e in unwrap(container.inputs.get("envs") or []))
        uploads = {u["file"]: u for u in unwrap(container.inputs.get("uploads") or [])}
        role, _, host = container.name.removeprefix("morgan-").rpartition("-")
        # Every container holds its token as a file, never in its environment.
        assert "CONSUL_HTTP_TOKEN" not in envs, container.name
        if role in services:
            # A Morgan service's is its own user's alone.
            path = envs["CONSUL_HTTP_TOKEN_FILE"]
            assert path == "/run/secrets/CONSUL_HTTP_TOKEN"
            token = uploads[path]
            assert token["content"] == ids[f"consul_token_{role}"], container.name
            assert (token["permissions"], token["owner"], token["group"]) == (
                "0400", "10001", "10001",
            )  # fmt: skip
            checked[container.name] = role
            continue
        if role == "consul-agent":
            token = uploads[envs["CONSUL_HTTP_TOKEN_FILE"]]
            assert token["content"] == ids[f"consul_agent_token_{host}"], container.name
            checked[container.name] = role
    assert sorted(checked.values()).count("consul-agent") == len(hosts)
    assert set(checked.values()) == {"consul-agent", *services}


def test_docker_daemon_certificates_come_from_their_own_ca(built: dict[str, Built]) -> None:
    """A container's certificate (fleet CA) must not open a tcp:// host's Docker daemon."""
    out = built["homelab"].outputs
    assert out["docker_ca_certificate"][0] not in (None, out["ca_certificate"][0])
    signed = {
        r.name: r.inputs["caCertPem"]
        for r in built["homelab"].mocks.of_type("tls:index/locallySignedCert:LocallySignedCert")
    }
    docker = {n: ca for n, ca in signed.items() if "-docker-" in n}
    fleet = {n: ca for n, ca in signed.items() if "-docker-" not in n}
    assert docker and fleet
    assert set(docker.values()) == {out["docker_ca_certificate"][0]}
    assert set(fleet.values()) == {out["ca_certificate"][0]}


def test_a_morgan_service_gets_its_shutdown_delay_and_drain_before_a_kill(
    built: dict[str, Built], homelab_plan: Plan
) -> None:
    """Pulumi's container, morgan deploy's and the compose file's agree, and the grace
    covers the service's own delay (the gateway stops routing) plus its drain."""
    fields = ServiceSettings.model_fields
    needed = fields["shutdown_delay_seconds"].default + fields["shutdown_drain_seconds"].default
    cores = [
        c for c in built["homelab"].mocks.of_type("docker:index/container:Container")
        if c.name.startswith("morgan-core-")
    ]  # fmt: skip
    assert cores
    for container in cores:
        grace = int(container.inputs["stopTimeout"])  # a number in the mocks' JSON
        assert grace == container.inputs["destroyGraceSeconds"] > needed, container.name
        spec = next(s for s in build_specs(homelab_plan) if s.name == container.name)
        assert container_run(spec).stop_grace_seconds == grace
        assert service_entry(spec)["stop_grace_period"] == f"{grace}s"
