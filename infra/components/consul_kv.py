"""ConsulKv: typed KV entries written by a Pulumi dynamic resource (py-consul).

The provider talks to Consul's HTTP API from where `pulumi up` runs. It owns
exactly the keys it wrote: an update deletes keys that left the stack, and a
delete removes all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pulumi
import tenacity
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

log = logging.getLogger(__name__)

# How long the provider waits for the Consul servers to elect a leader before its
# first write (a fresh fleet's first KV write can race the election), and the cap
# on the exponential pause between two tries.
LEADER_WAIT_S = 60.0
LEADER_RETRY_MAX_S = 4.0


@contextlib.contextmanager
def _client(props: dict[str, Any]) -> Iterator[Any]:
    """A py-consul client for the props' Consul; its CA file lives only as long."""
    from morgan.shared.consul_client import ConsulClientFactory

    host, _, port = str(props["address"]).rpartition(":")
    with contextlib.ExitStack() as cleanup:
        cacert: str | None = None
        if props.get("ca_pem"):
            # requests verifies against a file path only; mkstemp makes it 0600.
            fd, path = tempfile.mkstemp(prefix="consul-ca-", suffix=".pem")
            cleanup.callback(_remove, path)
            with os.fdopen(fd, "w") as handle:
                handle.write(props["ca_pem"])
            cacert = path
        factory = ConsulClientFactory(
            scheme=props.get("scheme") or "http",
            host=host,
            port=int(port),
            token=props.get("token") or None,
            cacert=cacert,
            timeout=10,
        )
        yield factory.client()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class _NoLeader(Exception):
    pass


def _wait_for_leader(client: Any, address: str, timeout_s: float, max_pause_s: float) -> str:
    """Return the leader's address once Consul reports one; retry for up to timeout_s."""

    def leader() -> str:
        elected = client.status.leader()
        if not elected:
            raise _NoLeader("the servers answer but have not elected a leader yet")
        return str(elected)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout_s),
        wait=tenacity.wait_exponential(multiplier=0.25, max=max_pause_s),
        retry=tenacity.retry_if_exception_type(Exception),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        reraise=False,
    )
    try:
        return retrying(leader)
    except tenacity.RetryError as error:
        attempt = error.last_attempt
        cause = attempt.exception()
        raise RuntimeError(
            f"Consul at {address} has no leader after {attempt.attempt_number} tries in"
            f" {timeout_s:g} s (last: {cause!r}); KV was left unchanged. Check that the"
            " Consul servers run and reach each other: `consul operator raft list-peers` on a"
            " server lists the voters and the leader, and the servers' addresses (retry_join,"
            " the address this stack writes to) must be right"
        ) from cause


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
    """CRUD of a set of KV entries. Inputs: address, scheme, token, ca_pem, entries.

    Writes wait for a Consul leader for up to leader_wait_s seconds first.
    """

    def __init__(
        self, leader_wait_s: float = LEADER_WAIT_S, leader_retry_max_s: float = LEADER_RETRY_MAX_S
    ) -> None:
        super().__init__()
        self.leader_wait_s = leader_wait_s
        self.leader_retry_max_s = leader_retry_max_s

    def _write(self, props: dict[str, Any], sets: dict[str, str], deletes: list[str]) -> None:
        with _client(props) as client:
            _wait_for_leader(
                client, str(props["address"]), self.leader_wait_s, self.leader_retry_max_s
            )
            _apply(client, sets, deletes)

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._write(props, dict(props["entries"]), [])
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
        self._write(news, new_entries, gone)
        return UpdateResult(outs=dict(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self._write(props, {}, sorted(props.get("entries", {})))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        found = {}
        with _client(props) as client:
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
