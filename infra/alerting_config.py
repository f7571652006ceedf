"""Alerting in the stack file (`observability.alerting`): how soon an alert fires and
who hears of it: webhooks, Slack and email receivers, each for the severities it names.

Secrets stay out of the stack file: Slack's incoming-webhook URL is the stack secret
`alert_slack_url` and the SMTP password `alert_smtp_password`, set by the operator
(`pulumi config set --secret morgan:alert_slack_url ...`, or in the stack's secrets file
for `morgan deploy`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from infra.config_base import StrictModel

# Prometheus's and Alertmanager's duration syntax, as the stack file writes it.
Duration = Annotated[str, Field(pattern=r"^[1-9]\d*(s|m|h)$")]
Severity = Literal["critical", "warning"]


class WebhookReceiver(StrictModel):
    # Alertmanager POSTs its JSON notifications here (Home Assistant, ntfy, a script).
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]


class SlackReceiver(StrictModel):
    channel: Annotated[str, Field(pattern=r"^[#@]?[A-Za-z0-9._-]+$")]


class EmailReceiver(StrictModel):
    to: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    sender: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    smarthost: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+:\d+$")]
    # With a username, the password is the secret `alert_smtp_password`.
    username: str | None = None
    require_tls: bool = True


class AlertReceiver(StrictModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    severities: tuple[Severity, ...] = ("critical", "warning")
    webhook: WebhookReceiver | None = None
    slack: SlackReceiver | None = None
    email: EmailReceiver | None = None

    @model_validator(mode="after")
    def _has_a_way_to_reach_someone(self) -> AlertReceiver:
        if self.webhook is None and self.slack is None and self.email is None:
            raise ValueError(
                f"receiver {self.name!r} reaches nobody; give it webhook: {{url: ...}},"
                " slack: {channel: ...} or email: {to: ..., sender: ..., smarthost: ...}"
            )
        if not self.severities:
            raise ValueError(f"receiver {self.name!r} lists no severity; use critical, warning")
        return self


class AlertingConfig(StrictModel):
    receivers: tuple[AlertReceiver, ...] = ()
    # How long a Morgan service stays unscrapable before MorganServiceDown fires.
    service_down_for: Duration = "1m"
    # Alertmanager: wait before the first notice of a group, between notices of a changed
    # group (a resolved alert is one), and before repeating an unchanged one.
    group_wait: Duration = "30s"
    group_interval: Duration = "5m"
    repeat_interval: Duration = "4h"

    @model_validator(mode="after")
    def _receiver_names_are_unique(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"receivers named more than once: {twice}; give each its own name")
        if "default" in names:
            raise ValueError("receiver name 'default' is taken (the route's catch-all)")
        return self

    def secrets(self) -> tuple[Literal["alert_slack_url", "alert_smtp_password"], ...]:
        """The operator's secrets these receivers need."""
        out: list[Literal["alert_slack_url", "alert_smtp_password"]] = []
        if any(r.slack for r in self.receivers):
            out.append("alert_slack_url")
        if any(r.email and r.email.username for r in self.receivers):
            out.append("alert_smtp_password")
        return tuple(out)
