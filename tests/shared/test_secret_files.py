"""Secrets from files (`<VARIABLE>_FILE`): a service's settings, its Consul token, and the
connection URLs core adds a password to; every bad case refused with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from morgan.core.connection_urls import PasswordTwiceError, with_password
from morgan.shared.config_loader import ConfigError, ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.secret_files import SecretFileError
from morgan.shared.settings import ServiceSettings
from pydantic import SecretStr

from tests.harness.ports import free_port

pytestmark = pytest.mark.unit


class DemoSettings(ServiceSettings):
    service_name: str = "morgan-demo"
    password: SecretStr = SecretStr("")
    model: str = "tiny"


def _load(env: dict[str, str]) -> DemoSettings:
    consul = ConsulClientFactory.from_env(f"127.0.0.1:{free_port()}")  # nothing listens
    return ConsulConfigLoader(DemoSettings, "demo", consul, environ=env).load()


def test_a_setting_comes_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    secret = tmp_path / "MORGAN_DEMO_PASSWORD"
    secret.write_text("s3cret{[not json]}\n")
    settings = _load({"MORGAN_DEMO_PASSWORD_FILE": str(secret), "MORGAN_DEMO_MODEL": "m"})
    # As written, less the final line break, and never parsed as JSON.
    assert settings.password.get_secret_value() == "s3cret{[not json]}"
    assert settings.model == "m"


def test_a_file_variable_of_no_setting_is_ignored_like_any_unknown_variable() -> None:
    assert _load({"MORGAN_DEMO_NOTHING_FILE": "/nonexistent"}).model == "tiny"


def test_a_setting_given_twice_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "p"
    secret.write_text("a")
    env = {"MORGAN_DEMO_PASSWORD_FILE": str(secret), "MORGAN_DEMO_PASSWORD": "b"}
    with pytest.raises(
        ConfigError, match="both MORGAN_DEMO_PASSWORD and MORGAN_DEMO_PASSWORD_FILE"
    ):
        _load(env)


def test_an_unreadable_file_names_the_variable_the_path_and_the_cause(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(ConfigError, match=rf"MORGAN_DEMO_PASSWORD_FILE={missing}: .*No such file"):
        _load({"MORGAN_DEMO_PASSWORD_FILE": str(missing)})


def test_consuls_token_comes_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "CONSUL_HTTP_TOKEN"
    token.write_text("3f0c-token\n")
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(token))
    factory = ConsulClientFactory.from_env("127.0.0.1:8500")
    assert factory.token == "3f0c-token"
    assert factory.client().prepare_headers()["X-Consul-Token"] == "3f0c-token"
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "other")
    with pytest.raises(SecretFileError, match="both CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE"):
        ConsulClientFactory.from_env("127.0.0.1:8500")


@pytest.mark.parametrize(
    ("url", "password", "expected"),
    [
        # libpq's several hosts, as core's DSN names the primary and the standby
        ("postgresql://morgan_app@pg-a:5432,pg-b:5432/morgan?sslmode=verify-full", "pw",
         "postgresql://morgan_app:pw@pg-a:5432,pg-b:5432/morgan?sslmode=verify-full"),
        ("rediss://redis:6379/0", "pw", "rediss://:pw@redis:6379/0"),
        ("redis://redis:6379/0", "a/b@c:d", "redis://:a%2Fb%40c%3Ad@redis:6379/0"),
        ("postgresql://u:inline@h/db", "", "postgresql://u:inline@h/db"),  # none given
    ],
)  # fmt: skip
def test_a_password_is_added_to_its_url(url: str, password: str, expected: str) -> None:
    assert with_password(url, password, setting="postgres_dsn") == expected


def test_a_url_that_holds_a_password_and_gets_another_is_refused() -> None:
    with pytest.raises(PasswordTwiceError, match="postgres_dsn holds a password"):
        with_password("postgresql://u:inline@h/db", "pw", setting="postgres_dsn")
