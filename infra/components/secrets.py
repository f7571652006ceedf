"""FleetSecrets: every password, key and token of the stack, generated and kept secret."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from infra.components.service_key import ServiceKey


@dataclass(frozen=True)
class FleetSecretsArgs:
    dashboard_user: str = "admin"
    password_length: int = 32


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

        passwords = {
            key: password(key)
            for key in (
                "postgres_password",
                "replication_password",
                "redis_password",
                "qdrant_api_key",
                "grafana_admin_password",
                "traefik_dashboard_password",
            )
        }
        gossip = random.RandomId(f"{name}-consul-gossip-key", byte_length=32, opts=child)
        token = random.RandomUuid(f"{name}-consul-management-token", opts=child)
        dashboard = passwords.pop("traefik_dashboard_password")
        self.dashboard_password: pulumi.Output[str] = pulumi.Output.secret(dashboard.result)
        self.values = {key: pulumi.Output.secret(p.result) for key, p in passwords.items()}
        self.values["consul_gossip_key"] = pulumi.Output.secret(gossip.b64_std)
        self.values["consul_management_token"] = pulumi.Output.secret(token.result)
        # The key core sends to the model services; its KV record is `service_key.entries`.
        self.service_key = ServiceKey(f"{name}-core-service-key", opts=child)
        self.values["core_service_api_key"] = self.service_key.key
        self.values["traefik_dashboard_users"] = pulumi.Output.secret(
            dashboard.bcrypt_hash.apply(lambda h: f"{args.dashboard_user}:{h}")
        )
        self.register_outputs({"names": sorted(self.values)})

    def render(self, template: str, names: tuple[str, ...]) -> pulumi.Output[str]:
        """Fill `{name}` placeholders; the result stays a secret."""
        if not names:
            return pulumi.Output.from_input(template)
        values = {n: self.values[n] for n in names}
        return pulumi.Output.secret(
            pulumi.Output.all(**values).apply(lambda v: template.format(**v))
        )
