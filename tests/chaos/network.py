"""A lab host cut off from its peers, both directions, by packet filters in that host.

Every packet from a peer is dropped as it comes in (raw PREROUTING: before the host's
own daemon's NAT sends it on to a container) and every packet to a peer as it goes out
(mangle POSTROUTING: the host's own and its containers' alike). This machine, which
drives the test and the host's daemon, stays reachable.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from morgan.lab.hosts import container_name


def _rules(op: str, peers: list[str]) -> str:
    return " && ".join(
        f"iptables -t raw {op} PREROUTING -s {peer} -j DROP"
        f" && iptables -t mangle {op} POSTROUTING -d {peer} -j DROP"
        for peer in peers
    )


def _apply(host: str, op: str, peers: list[str]) -> None:
    subprocess.run(["docker", "exec", container_name(host), "sh", "-c", _rules(op, peers)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip


@contextmanager
def cut_off(host: str, peers: list[str]) -> Iterator[None]:
    """`host` can neither reach nor be reached by `peers` (addresses) until the block ends."""
    _apply(host, "-I", peers)
    try:
        yield
    finally:
        _apply(host, "-D", peers)
