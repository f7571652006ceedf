"""Invariants over every container spec of both stacks (plain Python, no Pulumi)."""

from __future__ import annotations

import ipaddress
import json
import re
from urllib.parse import urlsplit

import pytest

from infra.config import MorganStackConfig
from infra.deployment import secret_table
from infra.model import SECRETS_DIR
from infra.placement import Plan, make_plan
from infra.specs import build_specs, images_needed, service_port

pytestmark = pytest.mark.unit

_URL = re.compile(r"[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([^/:\s\"]+)")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def _plans(homelab_plan: Plan, dev_plan: Plan) -> list[Plan]:
    return [homelab_plan, dev_plan]


def test_every_container_has_healthcheck_restart_and_memory(
    homelab_plan: Plan, dev_plan: Plan
) -> None:
    for plan in _plans(homelab_plan, dev_plan):
        for spec in build_specs(plan):
            assert spec.healthcheck.test and spec.healthcheck.test[0] in ("CMD", "CMD-SHELL")
            assert spec.restart in ("unless-stopped", "on-failure")
            assert spec.memory_mb > 0


def test_no_service_url_or_host_ip_in_environment(homelab_plan: Plan, dev_plan: Plan) -> None:
    for plan in _plans(homelab_plan, dev_plan):
        addresses = {h.address for h in plan.hosts if h.address != "127.0.0.1"}
        for spec in build_specs(plan):
            # MORGAN_ADVERTISE_HOST is the replica's own name, not where another service is.
            own = {"MORGAN_ADVERTISE_HOST"}
            values = [v for k, v in spec.env.items() if k not in own]
            values += [e.template for e in spec.secret_env]
            for value in values:
                for host in _URL.findall(value):
                    assert host == "127.0.0.1" or host.endswith(".service.consul"), (
                        spec.name,
                        value,
                    )
                for ip in _IPV4.findall(value):
                    assert ipaddress.ip_address(ip).is_loopback, (spec.name, value)
                for address in addresses:
                    assert address not in value, (spec.name, value)


def test_secrets_are_only_placeholders(homelab_plan: Plan) -> None:
    for spec in build_specs(homelab_plan):
        assert set(spec.secrets) <= {n for n, _kind in secret_table(homelab_plan)}, spec.name
        for key, value in spec.env.items():
            if key.endswith("_FILE") and value.startswith(f"{SECRETS_DIR}/"):
                continue  # where the secret's file is, not the secret
            if key.endswith(("_DSN", "_URL")):
                assert urlsplit(value).password is None, f"{spec.name}: {key} holds a password"
                continue
            for name in ("PASSWORD", "TOKEN", "API_KEY"):
                assert name not in key, f"{spec.name}: {key} holds a secret in plain env"


def test_internal_listeners_use_tls_on_homelab(homelab_plan: Plan) -> None:
    for spec in build_specs(homelab_plan):
        for port in spec.ports:
            if port.public or port.loopback_only:
                continue
            if port.protocol == "udp":  # Consul DNS answers only the local host's resolver
                assert spec.role.startswith("consul"), spec.name
                continue
            assert port.encryption in ("tls", "gossip"), (spec.name, port)
        if any(p.encryption == "tls" for p in spec.ports):
            assert spec.tls is not None, spec.name


def test_public_gateway_is_https_with_redirect(homelab_plan: Plan) -> None:
    (traefik,) = [s for s in build_specs(homelab_plan) if s.role == "traefik"]
    public = {p.number: p.encryption for p in traefik.ports if p.public}
    assert public == {80: "none", 443: "tls"}


def test_gpu_only_on_gpu_hosts(homelab_plan: Plan) -> None:
    gpu_hosts = {h.name for h in homelab_plan.hosts if h.has_gpu}
    gpu_specs = [s for s in build_specs(homelab_plan) if s.gpu]
    assert {s.host for s in gpu_specs} == gpu_hosts
    assert {s.role for s in gpu_specs} == {"stt", "tts", "dcgm-exporter"}


def test_platform_matches_host_arch(homelab_plan: Plan) -> None:
    for spec in build_specs(homelab_plan):
        assert spec.platform == f"linux/{homelab_plan.config.host(spec.host).arch}"
    arm = {host for (host, _), _ in images_needed(homelab_plan).items() if host == "h4"}
    assert arm == {"h4"}


def test_cuda_images_only_for_cuda_services(homelab_plan: Plan) -> None:
    for (host, name), ref in images_needed(homelab_plan).items():
        assert name.endswith("-cuda") == (ref.variant == "cuda")
        if ref.variant == "cuda":
            assert homelab_plan.config.host(host).has_gpu
            assert ref.base_image(homelab_plan).startswith("nvidia/cuda")


def test_replicas_on_one_host_get_distinct_ports(homelab_plan: Plan) -> None:
    cores_on_h1 = [r for r in homelab_plan.of_role("core") if r.host == "h1"]
    assert [service_port(homelab_plan, r) for r in cores_on_h1] == [8000, 8010]
    for host in homelab_plan.hosts:
        ports = [
            (p.number, p.protocol)
            for s in build_specs(homelab_plan)
            if s.host == host.name and not s.one_shot
            for p in s.ports
        ]
        assert len(ports) == len(set(ports)), f"port clash on {host.name}: {sorted(ports)}"


def test_container_names_unique_per_host(homelab_plan: Plan) -> None:
    names = [(s.host, s.name) for s in build_specs(homelab_plan)]
    assert len(names) == len(set(names))


def test_one_shot_jobs_make_the_app_role_and_the_redis_cluster(
    homelab_plan: Plan, dev_plan: Plan
) -> None:
    jobs = {s.role: s for s in build_specs(homelab_plan) if s.one_shot}
    assert sorted(jobs) == ["postgres-app-role", "redis-cluster-create"]
    create = jobs["redis-cluster-create"].command[1]
    assert "--cluster create h1.lan:6379 h3.lan:6379 h4.lan:6379" in create
    # The dev stack has no cluster to form, and a role to make like any stack.
    assert [s.role for s in build_specs(dev_plan) if s.one_shot] == ["postgres-app-role"]


def test_standby_clones_the_primary(homelab_plan: Plan) -> None:
    (standby,) = [s for s in build_specs(homelab_plan) if s.role == "postgres-standby"]
    script = standby.command[1]
    assert "pg_basebackup -h h1.lan" in script and "-S standby_h3" in script
    (primary,) = [s for s in build_specs(homelab_plan) if s.role == "postgres-primary"]
    init = next(f for f in primary.files if f.path.endswith("10-replication.sh"))
    assert "pg_create_physical_replication_slot('standby_h3')" in init.content
    assert "wal_level=replica" in primary.command


def test_build_steps_runtime_first_then_services(homelab_plan: Plan) -> None:
    from infra.builds import build_steps
    from tests.infra.conftest import ROOT

    steps = build_steps(homelab_plan, ROOT)
    built: set[tuple[str, str]] = set()
    for step in steps:
        for name in step.after:
            assert (step.host, name) in built, f"{step.name} on {step.host} built before {name}"
        built.add(step.key)
        assert step.args["BASE_IMAGE"]
        assert (ROOT / step.dockerfile).is_file(), step.dockerfile
        assert step.platform == homelab_plan.config.host(step.host).platform
    h4 = {s.name for s in steps if s.host == "h4"}
    assert h4 == {
        "morgan-runtime-core:0.1.0", "morgan-runtime-torch:0.1.0", "morgan-runtime-llm:0.1.0",
        "morgan-runtime-slim:0.1.0",
        "morgan-core:0.1.0", "morgan-llm:0.1.0", "morgan-vad:0.1.0",
    }  # fmt: skip
    core = next(s for s in steps if s.host == "h4" and s.name == "morgan-core:0.1.0")
    assert core.args["RUNTIME_IMAGE"] == "morgan-runtime-core:0.1.0"
    assert core.args["EXPORT_IMAGE"] == "morgan-runtime-torch:0.1.0"
    assert set(core.after) == {"morgan-runtime-core:0.1.0", "morgan-runtime-torch:0.1.0"}
    stt_cuda = next(s for s in steps if s.host == "h2" and s.name == "morgan-stt:0.1.0-cuda")
    assert stt_cuda.dockerfile == "images/stt/Dockerfile.cuda"
    assert stt_cuda.args["CUDA_BASE_IMAGE"].startswith("nvidia/cuda")


def test_services_advertise_their_hosts_dns_name(homelab_plan: Plan) -> None:
    for spec in build_specs(homelab_plan):
        if spec.role in ("core", "llm", "stt", "tts"):
            assert spec.env["MORGAN_ADVERTISE_HOST"] == homelab_plan.config.host(spec.host).address


# Process-wide variables the services read besides their settings fields.
_SERVICE_WIDE_ENV = {
    "MORGAN_ADVERTISE_HOST",
    "MORGAN_MODEL_DIR",
    "MORGAN_HOST_OS",
    "MORGAN_HOST_ARCH",
}


def test_every_morgan_variable_given_to_a_service_is_one_it_reads(
    homelab_plan: Plan, dev_plan: Plan
) -> None:
    from morgan.shared.config_loader import env_prefix

    from infra.kv import settings_model

    for plan in _plans(homelab_plan, dev_plan):
        for spec in build_specs(plan):
            if spec.role not in ("core", "llm", "stt", "tts"):
                continue
            model = settings_model(spec.role)
            if model is None:
                continue
            read = {env_prefix(spec.role) + name.upper() for name in model.model_fields}
            read |= {f"{name}_FILE" for name in read}  # a setting's value from a file
            given = set(spec.env) | {s.name for s in spec.secret_env}
            unread = {n for n in given if n.startswith("MORGAN_")} - read - _SERVICE_WIDE_ENV
            assert not unread, f"{spec.name}: nothing reads {sorted(unread)}"


def test_engine_reaches_the_service_only_when_the_stack_names_one(
    homelab_plan: Plan, dev_config: MorganStackConfig
) -> None:
    from morgan.llm.config import LLMSettings

    llm = next(s for s in build_specs(homelab_plan) if s.role == "llm")
    assert llm.env["MORGAN_LLM_ENGINE"] == "llama.cpp"
    data = dev_config.model_dump(mode="json")
    data["services"]["llm"].pop("engine")
    unnamed = make_plan(MorganStackConfig.model_validate_json(json.dumps(data)))
    spec = next(s for s in build_specs(unnamed) if s.role == "llm")
    assert "MORGAN_LLM_ENGINE" not in spec.env
    # the service's own default then applies: llama.cpp on a CPU
    settings = LLMSettings(register_in_consul=False, device=spec.env["MORGAN_LLM_DEVICE"])
    assert settings.resolved_engine == "llama.cpp"


def test_a_secret_file_without_its_file_variable_is_refused() -> None:
    from infra.model import ContainerSpec, SecretFile

    token = SecretFile("CONSUL_HTTP_TOKEN", "consul_token_core")
    with pytest.raises(ValueError, match="CONSUL_HTTP_TOKEN_FILE=/run/secrets/CONSUL_HTTP_TOKEN"):
        ContainerSpec(name="x", role="core", host="h1", image="i", platform="linux/amd64",
                      secret_files=(token,))  # fmt: skip
    spec = ContainerSpec(name="x", role="core", host="h1", image="i", platform="linux/amd64",
                         secret_files=(token,), env=dict([token.env]))  # fmt: skip
    assert spec.secrets == ("consul_token_core",)


# The servers that take a secret only from their environment, and why (docs/security.md,
# Open): Qdrant reads its API key from its config or its environment, the Redis exporter
# reads a password file only as a JSON map keyed by address (and its upstream image has no
# shell to write one), Loki's ruler only through -config.expand-env.
SECRET_ENV_LEFT = {
    "qdrant": {"QDRANT__SERVICE__API_KEY"},
    "redis-exporter": {"REDIS_PASSWORD"},
    "loki": {"MONITORING_PASSWORD"},
}


def test_every_other_container_takes_its_secrets_as_files(
    homelab_plan: Plan, dev_plan: Plan, lab_plan: Plan
) -> None:
    seen: dict[str, set[str]] = {}
    for plan in (homelab_plan, dev_plan, lab_plan):
        for spec in build_specs(plan):
            names = {e.name for e in spec.secret_env}
            assert names <= SECRET_ENV_LEFT.get(spec.role, set()), (spec.name, names)
            seen.setdefault(spec.role, set()).update(names)
            for file in spec.secret_files:
                assert spec.env[file.env[0]] == file.path == f"{SECRETS_DIR}/{file.variable}"
    # The list is exact: a server that moved to files leaves it.
    assert {role: seen[role] for role in SECRET_ENV_LEFT} == SECRET_ENV_LEFT
    # PostgreSQL (plain and Patroni), Redis, Traefik, Prometheus, Alertmanager, Grafana, the
    # PostgreSQL exporter and the one-shot steps among them: their secrets are files.
    files = {f.variable for plan in (homelab_plan, lab_plan, dev_plan)
             for spec in build_specs(plan) for f in spec.secret_files}  # fmt: skip
    assert files >= {
        "POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD", "DCS_CONSUL_TOKEN",
        "REDIS_PASSWORD", "TRAEFIK_DASHBOARD_USERS", "MONITORING_PASSWORD_BCRYPT",
        "GF_SECURITY_ADMIN_PASSWORD", "DATA_SOURCE_PASS", "POSTGRES_APP_PASSWORD",
        "CONSUL_HTTP_TOKEN", "CONSUL_GOSSIP_KEY", "CONSUL_MANAGEMENT_TOKEN",
    }  # fmt: skip
