"""ConsulKv: typed KV entries written by a Pulumi dynamic resource (python-consul2).

The provider talks to Consul's HTTP API from where `pulumi up` runs. It owns
exactly the keys it wrote: an update deletes keys that left the stack, and a
delete removes all of them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)


def _client(props: dict[str, Any]) -> Any:
    import consul

    host, _, port = str(props["address"]).rpartition(":")
    verify: bool | str = True
    if props.get("ca_pem"):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
            handle.write(props["ca_pem"])
            verify = handle.name
    return consul.Consul(
        host=host,
        port=int(port),
        scheme=props.get("scheme") or "http",
        verify=verify,
        token=props.get("token") or None,
        timeout=10,
    )


# Consul accepts at most 64 operations per transaction.
TXN_LIMIT = 64


def _apply(client: Any, sets: dict[str, str], deletes: list[str]) -> None:
    """Write and delete in transactions: a batch lands whole or not at all."""
    import base64

    ops = [
        {"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(v.encode()).decode()}}
        for k, v in sorted(sets.items())
    ] + [{"KV": {"Verb": "delete", "Key": k}} for k in sorted(deletes)]
    for start in range(0, len(ops), TXN_LIMIT):
        try:
            client.txn.put(ops[start : start + TXN_LIMIT])
        except Exception as error:
            raise RuntimeError(
                f"Consul refused the KV transaction ({error}); check that the token may write"
                " the keys' prefix and that the servers have a leader (consul operator raft"
                " list-peers)"
            ) from error


class ConsulKvProvider(ResourceProvider):
    """CRUD of a set of KV entries. Inputs: address, scheme, token, ca_pem, entries."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        _apply(_client(props), dict(props["entries"]), [])
        return CreateResult(id_=f"kv-{props['prefix']}", outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [
            k
            for k in ("entries", "address", "scheme", "token", "ca_pem")
            if olds.get(k) != news.get(k)
        ]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        new_entries = dict(news["entries"])
        gone = sorted(set(olds.get("entries", {})) - set(new_entries))
        _apply(_client(news), new_entries, gone)
        return UpdateResult(outs=dict(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _apply(_client(props), {}, sorted(props.get("entries", {})))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = _client(props)
        found = {}
        for key in props.get("entries", {}):
            _, item = client.kv.get(key)
            if item is not None and item.get("Value") is not None:
                found[key] = item["Value"].decode()
        return ReadResult(id_=id_, outs={**props, "entries": found})


class ConsulKvEntries(Resource):
    entries: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(ConsulKvProvider(), name, props, opts)


@dataclass(frozen=True)
class ConsulKvArgs:
    address: pulumi.Input[str]
    scheme: str
    token: pulumi.Input[str]
    ca_pem: pulumi.Input[str] | None
    entries: pulumi.Input[dict[str, str]]
    prefix: str = "morgan/config"
    # Values kept secret in state (and key names known only once the entries resolve).
    secret: bool = False


class ConsulKv(pulumi.ComponentResource):
    keys: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: ConsulKvArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:consul:ConsulKv", name, None, opts)
        props = {
            "address": args.address,
            "scheme": args.scheme,
            "token": pulumi.Output.secret(args.token),
            "ca_pem": args.ca_pem or "",
            "entries": pulumi.Output.secret(args.entries) if args.secret else args.entries,
            "prefix": args.prefix,
        }
        secret_outputs = ["token", "entries"] if args.secret else ["token"]
        self.resource = ConsulKvEntries(
            f"{name}-entries",
            props,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=secret_outputs),
        )
        # The key names are not secret even when the values are.
        self.keys = pulumi.Output.unsecret(
            pulumi.Output.from_input(args.entries).apply(lambda e: sorted(e))
        )
        self.register_outputs({"keys": self.keys})
