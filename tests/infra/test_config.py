"""Stack config validation: every bad input names its key path and what to write instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import StackConfigError, load_stack_file, parse_stack_config
from infra.kv import KvConfigError, kv_entries
from tests.infra.conftest import plan_from

pytestmark = pytest.mark.unit


def _fails(raw: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(StackConfigError) as info:
        parse_stack_config(raw)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_both_stack_files_validate(homelab_config: Any, dev_config: Any) -> None:
    assert [h.name for h in homelab_config.hosts] == ["h1", "h2", "h3", "h4"]
    assert homelab_config.host("h4").arch == "arm64" and homelab_config.host("h4").gpu is None
    assert homelab_config.host("h2").os == "windows" and homelab_config.host("h2").has_gpu
    assert dev_config.host("local").docker == "unix:///var/run/docker.sock"
    assert dev_config.qdrant.mode == "local"


def test_duplicate_host_name(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][2]["name"] = "h1"
    _fails(homelab_raw, "hosts[2].name", "'h1' is used twice", "its own name")


def test_docker_endpoint_without_scheme(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][0]["docker"] = "h1.lan:2375"
    _fails(homelab_raw, "morgan:fleet.hosts[0].docker", "ssh://user@host")


def test_plain_tcp_docker_needs_tls(homelab_raw: dict[str, Any]) -> None:
    del homelab_raw["hosts"][1]["docker_tls"]
    _fails(homelab_raw, "morgan:fleet.hosts[1]", "must use TLS", "docker_tls")


def test_http_url_is_not_a_docker_endpoint(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][0]["docker"] = "http://h1.lan:2375"
    _fails(homelab_raw, "hosts[0].docker", "tcp://host:2376")


def test_address_with_scheme(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][0]["address"] = "http://h1.lan"
    _fails(homelab_raw, "hosts[0].address", "no scheme, no port")


def test_gpu_on_macos(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][3]["gpu"] = {"vendor": "nvidia", "vram_mb": 1, "cuda": "12.4"}
    _fails(homelab_raw, "hosts[3]", "macOS cannot reach the GPU", "remove the gpu key")


def test_unknown_key(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"]["replica"] = 2
    _fails(homelab_raw, "morgan:fleet.services.core.replica", "not a known key")


def test_wrong_type_is_not_coerced(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["llm"]["replicas"] = "3"
    _fails(homelab_raw, "morgan:fleet.services.llm.replicas", "valid integer", "'3'")


def test_bad_literal(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"][0]["arch"] = "x86_64"
    _fails(homelab_raw, "hosts[0].arch", "'amd64'", "'x86_64'")


def test_missing_required_key(homelab_raw: dict[str, Any]) -> None:
    del homelab_raw["hosts"][0]["address"]
    _fails(homelab_raw, "hosts[0].address", "is required")


def test_reference_to_unknown_host(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["postgres"]["standby"] = "h9"
    _fails(homelab_raw, "postgres.standby", "'h9' is not a host", "['h1', 'h2', 'h3', 'h4']")


def test_pin_counts_must_add_up(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"]["pin"] = {"h1": 1}
    _fails(homelab_raw, "services.core", "pin puts 1 replicas but replicas is 4")


def test_even_consul_server_count(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["consul"]["servers"] = ["h1", "h3"]
    _fails(homelab_raw, "consul.servers", "list 1, 3 or 5 hosts")


def test_standby_on_primary_host(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["postgres"]["standby"] = "h1"
    _fails(homelab_raw, "postgres.standby", "another host")


def test_redis_node_count_matches_mode(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["redis"]["nodes"] = ["h1", "h3"]
    _fails(homelab_raw, "redis", "mode 'cluster' runs 3")


def test_bad_retention_format(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["observability"]["metrics_retention"] = "30 days"
    _fails(homelab_raw, "observability.metrics_retention")


def test_not_a_mapping() -> None:
    with pytest.raises(StackConfigError, match="expected a mapping"):
        parse_stack_config(["h1"])


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="no such stack file"):
        load_stack_file(tmp_path / "Pulumi.none.yaml")


def test_load_file_without_fleet_key(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config:\n  other:key: 1\n")
    with pytest.raises(StackConfigError, match=r"has no config\.morgan:fleet"):
        load_stack_file(path)


def test_load_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config: [unclosed\n")
    with pytest.raises(StackConfigError, match="not valid YAML"):
        load_stack_file(path)


def test_service_setting_override_unknown_to_the_model(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"]["settings"] = {"max_inflight": 0}
    plan = plan_from(homelab_raw)
    with pytest.raises(KvConfigError, match=r"services\.core\.settings\.max_inflight"):
        kv_entries(plan)


def test_secret_setting_cannot_go_to_shared_kv(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"]["settings"] = {"postgres_dsn": "postgresql://x"}
    with pytest.raises(KvConfigError, match="secret or per-replica"):
        kv_entries(plan_from(homelab_raw))


def test_security_settings_never_go_to_kv(homelab_raw: dict[str, Any]) -> None:
    entries = kv_entries(plan_from(dict(homelab_raw)))
    for name in ("auth_enabled", "api_key_cache_seconds", "tls_ca"):
        assert not [k for k in entries if k.endswith(f"/{name}")], name
    homelab_raw["services"]["core"]["settings"] = {"auth_enabled": False}
    with pytest.raises(KvConfigError, match=r"\['auth_enabled'\] are security settings"):
        kv_entries(plan_from(homelab_raw))


def test_pulumi_project_points_at_the_program_and_the_stacks() -> None:
    import yaml

    from tests.infra.conftest import ROOT

    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "morgan"  # the `morgan:` config namespace
    assert project["runtime"]["name"] == "python"
    assert (ROOT / project["main"] / "__main__.py").is_file()
    stacks = ROOT / project["stackConfigDir"]
    assert (stacks / "Pulumi.homelab.yaml").is_file()
    # The dev stack lives at the root; stacks/ holds a link so Pulumi reads the same file.
    assert (stacks / "Pulumi.dev.yaml").resolve() == (ROOT / "Pulumi.dev.yaml").resolve()
