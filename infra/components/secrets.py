"""FleetSecrets: every password, key and token of the stack, generated and kept secret."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from infra.components.service_key import ServiceKey
from infra.deployment import BCRYPT_SUFFIX, SECRETS, SecretKind


@dataclass(frozen=True)
class FleetSecretsArgs:
    dashboard_user: str = "admin"
    password_length: int = 32
    # The operator's secrets the stack uses (kind "provided"), read from the stack config.
    provided: tuple[str, ...] = ()
    # Every secret of the stack and its kind (infra.deployment.secret_table: SECRETS and
    # the per-host ones).
    table: tuple[tuple[str, SecretKind], ...] = SECRETS


class MissingSecretError(ValueError):
    """A secret only the operator can give (a Slack URL, an SMTP password) is not set."""


def provided_secret(config: pulumi.Config, key: str) -> pulumi.Output[str]:
    value = config.get_secret(key)
    if value is None:
        raise MissingSecretError(
            f"morgan:{key} is not set, and an alert receiver of the stack needs it; set it"
            f" with `pulumi config set --secret morgan:{key} <value>`"
        )
    return value


class FleetSecrets(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: FleetSecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:security:FleetSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def password(key: str) -> random.RandomPassword:
            # Alphanumeric: the values go into DSNs, shell commands and JSON without escaping.
            return random.RandomPassword(
                f"{name}-{key}", length=args.password_length, special=False, opts=child
            )

        # One resource per secret of the stack, made the way its kind says.
        self.values = {}
        config = pulumi.Config("morgan")
        made: dict[str, random.RandomPassword] = {}
        for key, kind in args.table:
            if kind == "provided":
                if key in args.provided:
                    self.values[key] = provided_secret(config, key)
            elif kind == "password":
                made[key] = password(key)
                self.values[key] = pulumi.Output.secret(made[key].result)
            elif kind == "bcrypt":  # of a password listed before it
                hashed = made[key.removesuffix(BCRYPT_SUFFIX)]
                self.values[key] = pulumi.Output.secret(hashed.bcrypt_hash)
            elif kind == "gossip-key":
                gossip = random.RandomId(
                    f"{name}-{key.replace('_', '-')}", byte_length=32, opts=child
                )
                self.values[key] = pulumi.Output.secret(gossip.b64_std)
            elif kind == "token":
                token = random.RandomUuid(f"{name}-{key.replace('_', '-')}", opts=child)
                self.values[key] = pulumi.Output.secret(token.result)
            elif kind == "htpasswd":
                dashboard = password("traefik_dashboard_password")
                self.dashboard_password: pulumi.Output[str] = pulumi.Output.secret(dashboard.result)
                self.values[key] = pulumi.Output.secret(
                    dashboard.bcrypt_hash.apply(lambda h: f"{args.dashboard_user}:{h}")
                )
            else:  # api-key: core's service key, whose KV record is `service_key.entries`.
                self.service_key = ServiceKey(f"{name}-core-service-key", opts=child)
                self.values[key] = self.service_key.key
        self.register_outputs({"names": sorted(self.values)})

    def render(self, template: str, names: tuple[str, ...]) -> pulumi.Output[str]:
        """Fill `{name}` placeholders; the result stays a secret."""
        if not names:
            return pulumi.Output.from_input(template)
        values = {n: self.values[n] for n in names}
        return pulumi.Output.secret(
            pulumi.Output.all(**values).apply(lambda v: template.format(**v))
        )
