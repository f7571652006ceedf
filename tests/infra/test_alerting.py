"""Alert receivers from the stack file: Alertmanager's config passes amtool, each alert
reaches the receivers of its severity, secrets reach the container only as files, and
a stack that needs a secret nobody gave fails naming it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from morgan.lab.secrets import MissingSecretError, ensure_env

from infra.components.secrets import MissingSecretError as PulumiMissingSecretError
from infra.components.secrets import provided_secret
from infra.config import StackConfigError
from infra.configs import alerting
from infra.configs import observability as obs
from infra.deployment import build_deployment
from infra.placement import Plan
from infra.render.compose import service_entry
from tests.infra.conftest import plan_from
from tests.infra.mocks import SECRET_MARK, is_secret, plain_strings, unwrap
from tests.infra.program import build_under_mocks

pytestmark = pytest.mark.integration
CONTAINER = "docker:index/container:Container"

RECEIVERS = [
    {"name": "phone", "severities": ["critical"], "webhook": {"url": "http://10.0.0.5:8123/x"}},
    {"name": "team", "slack": {"channel": "#morgan"}},
    {
        "name": "mail",
        "severities": ["warning"],
        "email": {"to": "me@example.org", "sender": "morgan@example.org",
                  "smarthost": "smtp.example.org:587", "username": "morgan"},
    },
]  # fmt: skip


def _with_receivers(raw: dict[str, Any], receivers: list[dict[str, Any]]) -> Plan:
    raw["observability"]["alerting"] = {"receivers": receivers}
    return plan_from(raw)


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing; scripts/setup installs Debian's prometheus-alertmanager"
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60)


def test_receivers_pass_amtool_and_hold_no_secret(
    homelab_raw: dict[str, Any], tmp_path: Path
) -> None:
    plan = _with_receivers(homelab_raw, RECEIVERS)
    document = alerting.alertmanager_config(plan)
    config = tmp_path / "alertmanager.yml"
    config.write_text(obs.to_yaml(document))
    result = _amtool("check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " - 4 receivers" in result.stdout, result.stdout
    receivers = {r["name"]: r for r in document["receivers"]}
    assert receivers["phone"]["webhook_configs"][0]["url"] == "http://10.0.0.5:8123/x"
    slack = receivers["team"]["slack_configs"][0]
    assert slack["api_url_file"] == "/run/secrets/ALERT_SLACK_URL"
    assert "api_url" not in slack
    email = receivers["mail"]["email_configs"][0]
    assert email["auth_password_file"] == "/run/secrets/ALERT_SMTP_PASSWORD"
    assert "auth_password" not in email


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ("severity=critical", "phone,team"),
        ("severity=warning", "team,mail"),
        ("severity=info", "default"),
    ],
)
def test_each_alert_reaches_the_receivers_of_its_severity(
    homelab_raw: dict[str, Any], tmp_path: Path, labels: str, expected: str
) -> None:
    config = tmp_path / "alertmanager.yml"
    plan = _with_receivers(homelab_raw, RECEIVERS)
    config.write_text(obs.to_yaml(alerting.alertmanager_config(plan)))
    result = _amtool("config", "routes", "test", f"--config.file={config}", "alertname=X", labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_secrets_reach_alertmanager_as_files_only(homelab_raw: dict[str, Any]) -> None:
    plan = _with_receivers(homelab_raw, RECEIVERS)
    deployment = build_deployment(plan, Path("."))
    spec = deployment.of_role("alertmanager")[0]
    assert spec.secret_env == ()
    assert {f.variable: f.secret for f in spec.secret_files} == {
        "ALERT_SLACK_URL": "alert_slack_url",
        "ALERT_SMTP_PASSWORD": "alert_smtp_password",
        "MONITORING_PASSWORD": "monitoring_password",
        "MONITORING_PASSWORD_BCRYPT": "monitoring_password_bcrypt",
    }
    # The receivers read the files the engine puts there.
    config = alerting.alertmanager_config(plan)
    files = [v for r in config["receivers"] for kind in r.values() if isinstance(kind, list)
             for c in kind for k, v in c.items() if k.endswith("_file")]  # fmt: skip
    assert sorted(files) == ["/run/secrets/ALERT_SLACK_URL", "/run/secrets/ALERT_SMTP_PASSWORD"]
    assert spec.entrypoint == ("/bin/sh",)
    script = spec.command[1]
    assert script.startswith("umask 077 && mkdir -p /tmp/morgan-secrets")
    assert "ALERT_" not in script
    assert script.endswith("--web.config.file=/tmp/morgan-secrets/web.yml")
    # The rendered compose file names the secrets, never their values or variables' values.
    entry = service_entry(spec)
    assert entry["environment"]["ALERT_SLACK_URL_FILE"] == "/run/secrets/ALERT_SLACK_URL"
    assert "ALERT_SLACK_URL" not in entry["environment"]
    used = {s.name for s in deployment.secrets if s.kind == "provided" and s.consumers}
    assert used == {"alert_slack_url", "alert_smtp_password"}


def test_without_secret_receivers_alertmanager_gets_only_the_monitoring_password(
    homelab_plan: Plan,
) -> None:
    spec = build_deployment(homelab_plan, Path(".")).of_role("alertmanager")[0]
    names = [f.variable for f in spec.secret_files]
    assert names == ["MONITORING_PASSWORD", "MONITORING_PASSWORD_BCRYPT"]
    assert "ALERT_" not in spec.command[1]


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"name": "nobody"}, "receiver 'nobody' reaches nobody"),
        ({"name": "Bad Name", "webhook": {"url": "http://x/"}}, "should match pattern"),
        ({"name": "default", "webhook": {"url": "http://x/"}}, "'default' is taken"),
        ({"name": "w", "webhook": {"url": "ftp://x/"}}, "should match pattern"),
        ({"name": "w", "severities": [], "webhook": {"url": "http://x/"}}, "lists no severity"),
        ({"name": "w", "severities": ["page"], "webhook": {"url": "http://x/"}}, "critical"),
        ({"name": "m", "email": {"to": "me", "sender": "a@b", "smarthost": "s:25"}}, "pattern"),
    ],
)
def test_bad_receivers_are_refused_naming_the_fix(
    homelab_raw: dict[str, Any], receiver: dict[str, Any], message: str
) -> None:
    with pytest.raises(StackConfigError, match=message):
        _with_receivers(homelab_raw, [receiver])


def test_receiver_names_must_differ(homelab_raw: dict[str, Any]) -> None:
    hook = {"url": "http://10.0.0.5/"}
    with pytest.raises(StackConfigError, match=r"more than once: \['a'\]"):
        _with_receivers(homelab_raw, [{"name": n, "webhook": hook} for n in ("a", "a")])


def test_morgan_deploy_names_a_missing_operator_secret(tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    with pytest.raises(MissingSecretError) as info:
        ensure_env(env_file, ["MORGAN_REDIS_PASSWORD", "MORGAN_ALERT_SLACK_URL"])
    assert "MORGAN_ALERT_SLACK_URL='...'" in str(info.value)
    assert str(env_file) in str(info.value)
    assert not env_file.exists(), "nothing is generated while a needed secret is missing"
    env_file.write_text("MORGAN_ALERT_SLACK_URL='https://hooks.slack.example/T/B/x'\n")
    values = ensure_env(env_file, ["MORGAN_REDIS_PASSWORD", "MORGAN_ALERT_SLACK_URL"])
    assert values["MORGAN_ALERT_SLACK_URL"] == "https://hooks.slack.example/T/B/x"
    assert len(values["MORGAN_REDIS_PASSWORD"]) >= 24


def test_pulumi_names_a_missing_operator_secret() -> None:
    pulumi.runtime.set_all_config({})
    with pytest.raises(PulumiMissingSecretError, match="pulumi config set --secret morgan:alert_"):
        provided_secret(pulumi.Config("morgan"), "alert_smtp_password")


def test_pulumi_hands_the_operators_secrets_to_alertmanager_as_secrets(
    homelab_raw: dict[str, Any],
) -> None:
    plan = _with_receivers(homelab_raw, RECEIVERS)
    values = {
        "morgan:alert_slack_url": f"{SECRET_MARK}slack",
        "morgan:alert_smtp_password": f"{SECRET_MARK}smtp",
    }
    pulumi.runtime.set_all_config(values, secret_keys=list(values))
    try:
        built = build_under_mocks(plan)
    finally:
        pulumi.runtime.set_all_config({})
    (container,) = [r for r in built.mocks.of_type(CONTAINER) if r.name == "morgan-alertmanager"]
    # As files: the upload list is a secret Output, the environment holds only their paths.
    assert is_secret(container.inputs["uploads"])
    uploads = {u["file"]: u["content"] for u in unwrap(container.inputs["uploads"])}
    assert uploads["/run/secrets/ALERT_SLACK_URL"] == f"{SECRET_MARK}slack"
    assert uploads["/run/secrets/ALERT_SMTP_PASSWORD"] == f"{SECRET_MARK}smtp"
    assert not [e for e in unwrap(container.inputs["envs"]) if SECRET_MARK in e]
    for r in built.mocks.resources:
        if not r.typ.startswith(("random:", "tls:index/privateKey")):
            assert not [t for t in plain_strings(r.inputs) if SECRET_MARK in t], r.name


def test_amtool_in_the_container_talks_to_its_alertmanager(homelab_plan: Plan) -> None:
    spec = build_deployment(homelab_plan, Path(".")).of_role("alertmanager")[0]
    files = {f.path: yaml.safe_load(f.content) for f in spec.files}
    # amtool's own default location; over loopback (a fleet's Alertmanager listens on every
    # interface, and its certificate names 127.0.0.1), verified with the fleet CA.
    assert (
        files["/etc/amtool/config.yml"]
        == files["/etc/prometheus/amtool.yml"]
        == {
            "alertmanager.url": "https://127.0.0.1:9093",
            "http.config.file": "/etc/prometheus/amtool-http.yml",
        }
    )
    # The password from the file the start line wrote, never from the config itself.
    assert files["/etc/prometheus/amtool-http.yml"] == {
        "basic_auth": {
            "username": "morgan",
            "password_file": "/run/secrets/MONITORING_PASSWORD",
        },
        "tls_config": {"ca_file": "/etc/morgan/tls/ca.pem"},
    }
