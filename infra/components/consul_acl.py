"""ConsulAcl: the fleet's Consul policies and scoped tokens (infra.consul_acl), written by
a Pulumi dynamic resource from where `pulumi up` runs, with the management token.

The tokens keep the secret ids FleetSecrets made, so the containers that hold them (set
in their environment by the plan) and Consul agree; a delete removes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra.components.consul_kv import LEADER_RETRY_MAX_S, LEADER_WAIT_S, _client, _wait_for_leader
from infra.consul_acl import AclPlan, apply_acl, prune_acl, remove_acl


class ConsulAclProvider(ResourceProvider):
    """Inputs: address, scheme, token, ca_pem, acl (AclPlan.to_dict), secret_ids."""

    def _apply(self, props: dict[str, Any]) -> None:
        with _client(props) as client:
            _wait_for_leader(client, str(props["address"]), LEADER_WAIT_S, LEADER_RETRY_MAX_S)
            apply_acl(client, str(props["token"]), AclPlan.from_dict(props["acl"]),
                      dict(props["secret_ids"]))  # fmt: skip

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._apply(props)
        return CreateResult(id_="consul-acl", outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("acl", "secret_ids", "address", "scheme", "token", "ca_pem")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._apply(news)
        return UpdateResult(outs=dict(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with _client(props) as client:
            remove_acl(client, str(props["token"]), AclPlan.from_dict(props["acl"]),
                       dict(props["secret_ids"]))  # fmt: skip


class ConsulAclPruneProvider(ResourceProvider):
    """Deletes the tokens rotated secrets replaced; placed after every container that
    holds a token, so the running ones keep working until they are replaced."""

    def _prune(self, props: dict[str, Any]) -> None:
        with _client(props) as client:
            prune_acl(client, str(props["token"]), AclPlan.from_dict(props["acl"]),
                      dict(props["secret_ids"]))  # fmt: skip

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._prune(props)
        return CreateResult(id_="consul-acl-prune", outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("secret_ids") != news.get("secret_ids")
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._prune(news)
        return UpdateResult(outs=dict(news))


class ConsulAclPrune(Resource):
    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(ConsulAclPruneProvider(), name, props, opts)


class ConsulAclTokens(Resource):
    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(ConsulAclProvider(), name, props, opts)


@dataclass(frozen=True)
class ConsulAclArgs:
    address: pulumi.Input[str]
    scheme: str
    token: pulumi.Input[str]
    ca_pem: pulumi.Input[str] | None
    acl: AclPlan
    # Secret name -> its value (FleetSecrets.values), for every identity of `acl`.
    secret_ids: dict[str, pulumi.Output[str]]


class ConsulAcl(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ConsulAclArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:consul:ConsulAcl", name, None, opts)
        missing = sorted(set(args.acl.secrets()) - set(args.secret_ids))
        if missing:
            raise ValueError(
                f"Consul tokens without a secret: {missing}; add them to"
                " infra.deployment.SECRETS (kind token)"
            )
        props = {
            "address": args.address,
            "scheme": args.scheme,
            "token": pulumi.Output.secret(args.token),
            "ca_pem": args.ca_pem or "",
            "acl": args.acl.to_dict(),
            "secret_ids": pulumi.Output.secret({s: args.secret_ids[s] for s in args.acl.secrets()}),
        }
        # Each dynamic resource gets its own copy: Pulumi adds its provider to the dict.
        self.props = dict(props)
        self.component_name = name
        self.resource = ConsulAclTokens(
            f"{name}-tokens",
            dict(props),
            opts=pulumi.ResourceOptions(
                parent=self, additional_secret_outputs=["token", "secret_ids"]
            ),
        )
        self.register_outputs({"identities": [i.name for i in args.acl.identities]})

    def prune_after(self, holders: list[pulumi.Resource]) -> ConsulAclPrune:
        """The step that deletes replaced tokens, once `holders` (every container that
        holds a token) are in place."""
        return ConsulAclPrune(
            f"{self.component_name}-prune",
            dict(self.props),
            # Not a child of this component: what depends on the tokens (the holders)
            # depends on the component, and the prune step depends on them.
            opts=pulumi.ResourceOptions(
                depends_on=[self.resource, *holders],
                additional_secret_outputs=["token", "secret_ids"],
            ),
        )
