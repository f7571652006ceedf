"""A host's part of Consul whole again before a rolling deploy moves on to the next host.

A Consul agent that restarts (its container replaced) restores the services registered
on it with their checks critical until each runs again, a check interval later. Were the
next host's agent replaced within that time, a role with replicas on just those two
hosts (llm, vad) would have no passing instance at all, and core would refuse turns.
So after a Consul container of a host is replaced, the deploy waits until every check
that passed on the node before passes again.

A Consul server is the same: it answers `consul members` before it has caught up with the
leader's log. Were the next server replaced within that time, two of three would be out
and the cluster without a leader (no KV reads: core could not check API keys). So after
a server is replaced, the deploy waits until autopilot finds as many servers healthy as
before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from morgan.deploy.engine import DeployError
from morgan.lab.polling import NotYet, PollTimeout, poll

T = TypeVar("T")
CONSUL_ROLES = frozenset({"consul-agent", "consul-server"})
# A service's check runs every 10 s; an agent rejoining and syncing takes a few more.
CHECKS_BACK_S = 120


def passing_checks(client: Any, node: str) -> set[str]:
    """The ids of the node's checks that pass now (as the Consul servers know them)."""
    _index, checks = client.health.node(node)
    return {c["CheckID"] for c in checks if c["Status"] == "passing"}


def _unless_silent(read: Callable[[], T], nothing: T, log: Callable[[str], None],
                   what: str) -> T:  # fmt: skip
    """`read()`, or `nothing` when Consul does not answer: a deploy may be what mends it,
    and then there is nothing to wait for."""
    try:
        return read()
    except Exception as exc:  # python-consul2's errors, refused connections, timeouts
        log(f"{what} could not be read ({exc}); not waiting for it")
        return nothing


def _wait(probe: Callable[[], None], what: str, failed: Callable[[str], str]) -> None:
    """`probe` until it passes, for CHECKS_BACK_S; then a DeployError `failed(last try)`."""
    try:
        poll(probe, what=what, timeout=CHECKS_BACK_S, interval=1, errors=(Exception,))
    except PollTimeout as exc:
        raise DeployError(failed(exc.last)) from None


def checks_before(client: Any, node: str, log: Callable[[str], None]) -> set[str]:
    """`passing_checks`, or none when Consul does not answer."""
    return _unless_silent(lambda: passing_checks(client, node), set(), log,
                          f"{node}  its Consul checks")  # fmt: skip


def wait_checks_back(client: Any, node: str, before: set[str]) -> None:
    """Until every check in `before` passes on `node` again."""

    def back() -> None:
        if missing := before - passing_checks(client, node):
            raise NotYet(f"not passing yet: {', '.join(sorted(missing))}")

    _wait(back, f"{node}'s Consul checks passing again", lambda last: (
        f"{node}: checks that passed before its Consul agent was replaced do not pass"
        f" {CHECKS_BACK_S} s after ({last}). Look at those services on {node}"
        f" (`consul catalog services -node {node}`, their logs), then run"
        " `morgan deploy` again"
    ))  # fmt: skip


def healthy_servers(client: Any) -> list[str]:
    """The Consul servers autopilot finds healthy now (voters, caught up with the leader)."""
    health = client.operator.autopilot_health()
    return [srv["Name"] for srv in health.get("Servers") or [] if srv.get("Healthy")]


def servers_before(client: Any, log: Callable[[str], None]) -> int:
    """How many servers are healthy now; 0 when Consul does not answer (nothing to keep)."""
    return _unless_silent(lambda: len(healthy_servers(client)), 0, log,
                          "the Consul servers' health")  # fmt: skip


def wait_servers_healthy(client: Any, at_least: int) -> None:
    """Until autopilot finds at least as many servers healthy as before the replacement."""

    def whole() -> None:
        if len(healthy := healthy_servers(client)) < at_least:
            raise NotYet(f"{len(healthy)} of {at_least} servers healthy ({', '.join(healthy)})")

    _wait(whole, "the Consul servers healthy", lambda last: (
        f"fewer Consul servers are healthy {CHECKS_BACK_S} s after one was replaced than"
        f" before ({last}). Look at `consul operator autopilot state` and the servers'"
        " logs, then run `morgan deploy` again"
    ))  # fmt: skip
