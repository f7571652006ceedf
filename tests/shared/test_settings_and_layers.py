"""Settings validation and the precedence layers of the config loader (no Consul needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from morgan.shared.config_loader import (
    ConfigError,
    ConsulConfigLoader,
    deep_merge,
    kv_entries_to_layers,
)
from morgan.shared.consul_client import ConsulAddressError, ConsulClientFactory, parse_consul_addr
from morgan.shared.settings import ServiceSettings
from pydantic import Field, ValidationError

from tests.harness.ports import free_port

pytestmark = pytest.mark.unit


class DemoSettings(ServiceSettings):
    """Settings of a demo service."""

    service_name: str = "morgan-demo"
    port: int = 8123
    model: str = Field("tiny", description="Model name.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    sampling: dict[str, float] = Field(default_factory=dict, description="Extra knobs.")


def test_tls_settings_must_come_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_ca, tls_cert and tls_key go together"):
        ServiceSettings(tls_cert=tmp_path / "c.pem")
    s = ServiceSettings(tls_ca=tmp_path / "a", tls_cert=tmp_path / "b", tls_key=tmp_path / "c")
    assert s.tls_enabled and s.scheme == "https"


def test_bad_port_and_unknown_field_are_rejected() -> None:
    with pytest.raises(ValidationError, match="port"):
        ServiceSettings(port=70000)
    with pytest.raises(ValidationError, match="extra"):
        ServiceSettings.model_validate({"prot": 1})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8500", ("http", "127.0.0.1", 8500)),
        ("http://consul.lan:8501", ("http", "consul.lan", 8501)),
        ("https://consul.lan", ("https", "consul.lan", 443)),
        ("consul.lan", ("http", "consul.lan", 8500)),
    ],
)
def test_consul_addr_forms(raw: str, expected: tuple[str, str, int]) -> None:
    assert parse_consul_addr(raw) == expected


def test_bad_consul_addr_names_the_fix() -> None:
    with pytest.raises(ConsulAddressError, match="CONSUL_HTTP_ADDR"):
        parse_consul_addr("ftp://x:1")


def test_factory_honours_consul_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "https://c.lan:8501")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "tok")
    monkeypatch.setenv("CONSUL_CACERT", "/ca.pem")
    monkeypatch.setenv("CONSUL_CLIENT_CERT", "/c.pem")
    monkeypatch.setenv("CONSUL_CLIENT_KEY", "/k.pem")
    f = ConsulClientFactory.from_env()
    assert (f.scheme, f.host, f.port, f.token) == ("https", "c.lan", 8501, "tok")
    client = f.client()
    assert client.http.base_uri == "https://c.lan:8501"
    assert client.http.verify == "/ca.pem"
    assert client.http.cert == ("/c.pem", "/k.pem")
    assert client.token == "tok"
    # An explicit address wins over the environment.
    assert (
        ConsulClientFactory.from_env("127.0.0.1:9").client().http.base_uri == "http://127.0.0.1:9"
    )


def test_kv_layers_split_scopes_parse_json_and_nest() -> None:
    entries = [
        {"Key": "morgan/config/global/log_level", "Value": b'"DEBUG"'},
        {"Key": "morgan/config/demo/port", "Value": b"9000"},
        {"Key": "morgan/config/demo/sampling/top_p", "Value": b"0.9"},
        {"Key": "morgan/config/demo/", "Value": None},
        {"Key": "morgan/config/other/port", "Value": b"1"},
        {"Key": "morgan/config/demo/model", "Value": b"not json"},
    ]
    glob, svc, errors = kv_entries_to_layers("demo", entries)
    assert glob == {"log_level": "DEBUG"}
    assert svc == {"port": 9000, "sampling": {"top_p": 0.9}}
    assert len(errors) == 1 and "morgan/config/demo/model" in errors[0]
    assert "not JSON" in errors[0]


def test_deep_merge_keeps_nested_keys() -> None:
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {
        "a": {"x": 1, "y": 3},
        "b": 1,
    }


def test_env_beats_yaml_beats_defaults_when_consul_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    yml = tmp_path / "demo.yaml"
    yml.write_text("model: from-yaml\ntemperature: 1.5\nport: 8200\n")
    env = {
        "MORGAN_DEMO_PORT": "8300",
        "MORGAN_DEMO_SAMPLING": '{"top_k": 5}',
        "MORGAN_OTHER_PORT": "1",
    }
    loader = ConsulConfigLoader(
        DemoSettings,
        "demo",
        ConsulClientFactory.from_env(f"127.0.0.1:{free_port()}"),
        yaml_path=yml,
        environ=env,
    )
    s = loader.load()
    assert s.port == 8300  # env
    assert s.model == "from-yaml"  # yaml
    assert s.temperature == 1.5  # yaml
    assert s.sampling == {"top_k": 5.0}  # env JSON
    assert s.service_name == "morgan-demo"  # default
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    yml = tmp_path / "demo.yaml"
    yml.write_text("- just\n- a list\n")
    loader = ConsulConfigLoader(
        DemoSettings,
        "demo",
        ConsulClientFactory.from_env(f"127.0.0.1:{free_port()}"),
        yaml_path=yml,
        environ={},
    )
    with pytest.raises(ConfigError, match="expected a mapping"):
        loader.load()


def test_generic_settings_get_a_service_name_from_the_service() -> None:
    loader = ConsulConfigLoader(
        ServiceSettings, "stt", ConsulClientFactory.from_env(f"127.0.0.1:{free_port()}"), environ={}
    )
    assert loader.load().service_name == "morgan-stt"


def test_restart_only_settings_are_marked_in_every_service_model() -> None:
    from morgan.shared.config_docs import load_known_settings
    from morgan.shared.settings import RESTART_NOTE, needs_restart, restart_fields

    classes = load_known_settings()
    core, llm, stt, tts = (classes[k] for k in ("core", "llm", "stt", "tts"))
    for name in ("port", "bind_host", "service_name", "tls_cert", "consul_http_addr"):
        assert all(needs_restart(cls, name) for cls in classes.values()), name
    assert {"postgres_dsn", "redis_url", "memory_enabled", "qdrant_path"} <= restart_fields(core)
    assert {"engine", "model", "model_dir", "vllm_max_model_len"} <= restart_fields(llm)
    assert {"model", "compute_type", "cpu_threads"} <= restart_fields(stt)
    assert {"voices", "model_dir"} <= restart_fields(tts)
    live = {
        core: ["system_prompt", "llm_max_tokens", "llm_temperature", "llm_service", "tts_voice",
               "max_inflight", "context_turns", "memory_top_k", "log_level"],
        llm: ["max_tokens_limit", "default_max_tokens", "max_concurrency", "max_queue"],
        stt: ["beam_size", "vad_filter", "max_upload_bytes", "idle_unload_seconds"],
        tts: ["voice_aliases", "default_voice", "max_input_chars"],
    }  # fmt: skip
    for cls, names in live.items():
        assert not restart_fields(cls) & set(names), cls.__name__
    # A service model redefining a shared field keeps its marker, and the marker reaches the
    # JSON Schema and the description (so docs/configuration.md shows it).
    base = classes["shared"]
    for service, cls in classes.items():
        schema = cls.model_json_schema()["properties"]
        for name in cls.model_fields:
            if name in base.model_fields:
                assert needs_restart(cls, name) == needs_restart(base, name), (service, name)
            marked = needs_restart(cls, name)
            assert (schema[name].get("restart") is True) == marked, (service, name)
            assert schema[name]["description"].endswith(RESTART_NOTE) == marked, (service, name)
    assert not needs_restart(core, "no_such_setting")


def test_settings_source_reads_a_callable_each_time_or_fixes_an_object() -> None:
    from morgan.shared.settings import settings_source

    fixed = DemoSettings(model="a")
    assert settings_source(fixed)() is fixed
    holder = {"now": DemoSettings(model="a")}
    source = settings_source(lambda: holder["now"])
    holder["now"] = DemoSettings(model="b")
    assert source().model == "b"
