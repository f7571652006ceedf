"""The dev stack's pure parts: rendering for this machine, endpoints, secrets, content tags."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from morgan.lab import endpoints as eps
from morgan.lab import images as img
from morgan.lab import stack as st
from morgan.lab.lock import Pin
from morgan.lab.secrets import ensure_env, read_env
from morgan.lab.wheelhouse import _has_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def stack() -> st.RenderedStack:
    config = st.with_support_images(
        st.load_config("dev", ROOT), st.local_support_refs(list(img.SUPPORT_UPSTREAM))
    )
    return st.render(config)


@pytest.fixture(scope="module")
def rendered(stack: st.RenderedStack) -> tuple[Any, dict[str, Any], list[str]]:
    return stack.deployment.plan.config, stack.doc, stack.secret_names


def test_dev_stack_renders_every_role_with_local_support_images(
    rendered: tuple[Any, dict[str, Any], list[str]],
) -> None:
    _config, doc, _ = rendered
    roles = {st.role_of(doc, name) for name in doc["services"]}
    assert {"core", "llm", "stt", "tts", "consul-server", "traefik", "redis"} <= roles
    assert "postgres-primary" in roles and "prometheus" in roles
    images = {st.role_of(doc, n): s["image"] for n, s in doc["services"].items()}
    assert images["consul-server"] == "morgan-local/consul:1.16.1"
    assert images["redis"] == "morgan-local/redis:7"
    assert images["core"] == "morgan-core:0.1.0"
    for service in doc["services"].values():
        assert service["pull_policy"] == "never", service["image"]


def test_secrets_are_variables_not_values(rendered: tuple[Any, dict[str, Any], list[str]]) -> None:
    _config, doc, secrets = rendered
    assert {"MORGAN_POSTGRES_PASSWORD", "MORGAN_POSTGRES_APP_PASSWORD"} <= set(secrets)
    core = next(s for n, s in doc["services"].items() if st.role_of(doc, n) == "core")
    # Core logs in as the application role, never as the administrator.
    dsn = core["environment"]["MORGAN_CORE_POSTGRES_DSN"]
    assert dsn.startswith("postgresql://morgan_app@127.0.0.1:5432/"), dsn
    # Its password a compose secret from the variable, at the path core reads it from.
    path = core["environment"]["MORGAN_CORE_POSTGRES_PASSWORD_FILE"]
    assert path == "/run/secrets/MORGAN_CORE_POSTGRES_PASSWORD"
    assert {"source": "postgres_app_password", "target": "MORGAN_CORE_POSTGRES_PASSWORD",
            "mode": 0o444} in core["secrets"]  # fmt: skip
    assert doc["secrets"]["postgres_app_password"] == {
        "environment": "MORGAN_POSTGRES_APP_PASSWORD"
    }
    assert not [v for v in core["environment"].values() if "${" in v]


def test_core_takes_its_service_key_as_a_secret_like_every_path(stack: st.RenderedStack) -> None:
    # One way everywhere: the key as a secret variable, its salted record in KV.
    doc, key = stack.doc, stack.deployment.service_key
    core = next(s for n, s in doc["services"].items() if st.role_of(doc, n) == "core")
    assert key.variable not in core["environment"]
    assert core["environment"][f"{key.variable}_FILE"] == f"/run/secrets/{key.variable}"
    assert stack.doc["secrets"]["core_service_api_key"] == {"environment": key.variable}
    assert key.variable in stack.secret_names
    assert "MORGAN_CORE_REDIS_PASSWORD_FILE" in core["environment"]


def test_morgan_up_writes_kv_itself_so_its_file_has_no_seed(stack: st.RenderedStack) -> None:
    assert not [n for n in stack.doc["services"] if st.role_of(stack.doc, n) == "kv-seed"]
    assert stack.deployment.kv["morgan/config/core/llm_service"] == '"morgan-llm"'


def test_endpoints_point_at_consul_and_the_https_entry_point(stack: st.RenderedStack) -> None:
    config = stack.deployment.plan.config
    ep = eps.endpoints(stack.deployment, {"MORGAN_CONSUL_MANAGEMENT_TOKEN": "t0k"})
    assert ep.consul_addr == "127.0.0.1:8500"
    assert ep.gateway_url == f"https://127.0.0.1:{config.gateway.https_port}"
    assert ep.consul_token == "t0k"


def test_prometheus_gets_the_deployment_targets(stack: st.RenderedStack) -> None:
    doc = stack.doc
    _name, prometheus = st.service_of_role(doc, "prometheus") or ("", {})
    (mount,) = [m for m in prometheus["configs"] if m["target"].endswith("prometheus.yml")]
    content = doc["configs"][mount["source"]]["content"]
    assert "consul_sd_configs" not in content
    for service, endpoints in stack.deployment.endpoints.services.items():
        for endpoint in endpoints:
            assert endpoint.address in content, (service, endpoint)


def test_multi_host_stack_is_refused_with_the_fix() -> None:
    config = st.load_config("homelab", ROOT)
    with pytest.raises(st.StackError, match="pulumi up"):
        st.render(config)


def test_unknown_stack_names_the_file() -> None:
    from infra.config import StackConfigError

    with pytest.raises(StackConfigError, match="no such stack file"):
        st.load_config("nosuch", ROOT)


def test_secrets_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    names = [
        "MORGAN_POSTGRES_PASSWORD",
        "MORGAN_CONSUL_GOSSIP_KEY",
        "MORGAN_TRAEFIK_DASHBOARD_USERS",
    ]
    first = ensure_env(path, names)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first["MORGAN_POSTGRES_PASSWORD"]) >= 24
    import base64

    assert len(base64.b64decode(first["MORGAN_CONSUL_GOSSIP_KEY"])) == 32
    import bcrypt

    user, _, digest = first["MORGAN_TRAEFIK_DASHBOARD_USERS"].partition(":")
    assert user == "admin" and digest.startswith("$2a$")
    password = first["MORGAN_TRAEFIK_DASHBOARD_PASSWORD"]
    assert bcrypt.checkpw(password.encode(), digest.encode())
    assert not bcrypt.checkpw(b"not-the-password", digest.encode())
    again = ensure_env(path, [*names, "MORGAN_REDIS_PASSWORD"])
    assert {k: again[k] for k in first} == first
    assert read_env(path) == again


def test_a_hash_follows_its_password(tmp_path: Path) -> None:
    import bcrypt

    path = tmp_path / ".env"
    # Asked for the hash alone, the password is made (and kept) too.
    first = ensure_env(path, ["MORGAN_MONITORING_PASSWORD_BCRYPT"])
    password = first["MORGAN_MONITORING_PASSWORD"]
    digest = first["MORGAN_MONITORING_PASSWORD_BCRYPT"]
    assert digest.startswith("$2a$") and bcrypt.checkpw(password.encode(), digest.encode())
    assert ensure_env(path, ["MORGAN_MONITORING_PASSWORD_BCRYPT"]) == first
    # The operator sets a password of their own: the hash is made again from it.
    text = path.read_text().replace(password, "chosen-by-hand")
    path.write_text(text)
    again = ensure_env(path, ["MORGAN_MONITORING_PASSWORD", "MORGAN_MONITORING_PASSWORD_BCRYPT"])
    assert again["MORGAN_MONITORING_PASSWORD"] == "chosen-by-hand"
    assert bcrypt.checkpw(b"chosen-by-hand", again["MORGAN_MONITORING_PASSWORD_BCRYPT"].encode())
    assert read_env(path) == again


def test_content_tag_changes_with_the_source(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    spec = img.ImageSpec("t", dockerfile, ((src, "src"),))
    builder = img.ImageBuilder(tmp_path, tmp_path / "state")
    before = builder.content_tag(spec)
    assert builder.content_tag(spec) == before
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert builder.content_tag(spec) == before, "bytecode must not change the tag"
    (src / "a.py").write_text("x = 2\n")
    assert builder.content_tag(spec) != before


def test_missing_staged_file_names_the_fix(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    spec = img.ImageSpec("t", dockerfile, ((tmp_path / "consul", "consul"),))
    with pytest.raises(img.ImageBuildError, match="run scripts/setup"):
        img.ImageBuilder(tmp_path, tmp_path).content_tag(spec)


def test_wheelhouse_recognises_wheels_by_normalised_name(tmp_path: Path) -> None:
    (tmp_path / "typing_extensions-4.16.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "PyYAML-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    assert _has_file(tmp_path, Pin("typing-extensions", "4.16.0"))
    assert _has_file(tmp_path, Pin("pyyaml", "6.0.3"))
    assert not _has_file(tmp_path, Pin("typing-extensions", "4.15.0"))


def test_wheelhouse_recognises_an_sdist(tmp_path: Path) -> None:
    (tmp_path / "docopt-0.6.2.tar.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a distribution")
    assert _has_file(tmp_path, Pin("docopt", "0.6.2"))
    assert not _has_file(tmp_path, Pin("docopt", "0.6.1"))


def test_each_hosts_agent_token_is_made_on_its_own(tmp_path: Path) -> None:
    import uuid

    path = tmp_path / ".env"
    names = ["MORGAN_CONSUL_AGENT_TOKEN_H1", "MORGAN_CONSUL_AGENT_TOKEN_H2"]
    made = ensure_env(path, names)
    tokens = [made[n] for n in names]
    assert [str(uuid.UUID(t)) for t in tokens] == tokens
    assert tokens[0] != tokens[1]
    # A name that is no secret of the stack is refused, naming the known ones.
    with pytest.raises(KeyError, match="MORGAN_CONSUL_TOKEN_CORE"):
        ensure_env(path, ["MORGAN_CONSUL_AGENT_TOKENH3"])
