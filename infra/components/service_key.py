"""ServiceKey: the API key core sends to the model services, and its Consul KV record.

The key (`mk_<key-id>_<secret>`, the format `morgan.shared.auth` checks) is made of
pulumi_random values and stays a secret; the record at `morgan/auth/keys/<key-id>` holds
only a salted scrypt hash, built by `morgan.shared.auth.make_record`. Salt and creation
time are fixed when the key is made, so the record does not change between `pulumi up`s.
Rotation: `pulumi up --replace <urn of the -secret RandomPassword>` (the new secret gets a
new key id, salt and creation time, and the old record is deleted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi_random as random
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

KEYS_PREFIX = "morgan/auth/keys"


class CreatedAtProvider(ResourceProvider):
    """Keeps the time its resource was first made; only a new `trigger` makes a new one."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"created-{props['trigger']}", outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A changed `created` alone (every run proposes "now") is no change: the stored
        # outputs, with the first time, stay.
        replace = olds.get("trigger") != news.get("trigger")
        return DiffResult(
            changes=replace, replaces=["trigger"] if replace else [], delete_before_replace=False
        )


class CreatedAt(Resource):
    created: pulumi.Output[str]

    def __init__(
        self, name: str, trigger: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {"trigger": trigger, "created": datetime.now(UTC).isoformat()}
        super().__init__(CreatedAtProvider(), name, props, opts)


def record_entries(
    key_id: str, secret: str, salt_hex: str, created: str, owner: str
) -> dict[str, str]:
    """The KV entry (key → JSON) of the key's record."""
    from morgan.shared.auth import make_record

    record = make_record(
        key_id, secret, owner, datetime.fromisoformat(created), salt=bytes.fromhex(salt_hex),
        scopes=("service",),
    )  # fmt: skip
    return {f"{KEYS_PREFIX}/{key_id}": record.model_dump_json()}


class ServiceKey(pulumi.ComponentResource):
    key: pulumi.Output[str]
    key_id: pulumi.Output[str]
    entries: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        owner: str = "morgan-core (service key)",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("morgan:security:ServiceKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Alphanumeric, 40 characters: fits auth.KEY_PATTERN and any env file unquoted.
        secret = random.RandomPassword(f"{name}-secret", length=40, special=False, opts=child)
        # A new secret (rotation by --replace) brings a new id, salt and creation time.
        keepers = {"secret": secret.result}
        key_id = random.RandomId(f"{name}-id", byte_length=6, keepers=keepers, opts=child)
        salt = random.RandomId(f"{name}-salt", byte_length=16, keepers=keepers, opts=child)
        created = CreatedAt(f"{name}-created", key_id.hex, opts=child)

        from morgan.shared.auth import compose_key

        self.key_id = key_id.hex
        self.key = pulumi.Output.secret(
            pulumi.Output.all(key_id.hex, secret.result).apply(lambda v: compose_key(v[0], v[1]))
        )
        self.entries = pulumi.Output.secret(
            pulumi.Output.all(key_id.hex, secret.result, salt.hex, created.created).apply(
                lambda v: record_entries(v[0], v[1], v[2], v[3], owner)
            )
        )
        self.register_outputs({"key_id": self.key_id})
