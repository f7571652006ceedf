"""Reading one Consul KV key from the nearest server's copy, and how fresh that copy is.

A default read goes to the Raft leader. With no leader in reach (an election, or the
agent's server cut off, or just back from a cut and not yet reconnected) the server holds
the read until one is known, and the client's timeout comes first: in the lab, a core
whose host had been cut off for 30 s had its API key checks time out (10 s each) for
several seconds after the cut healed, while its own server held every key.

A stale read (`?stale`) is answered at once by any server from its own copy, with how
long ago that server heard from the leader (`X-Consul-LastContact`, milliseconds) and
whether it knows one (`X-Consul-KnownLeader`). A caller accepts the copy when it is
fresh enough for its purpose and otherwise falls back to a default read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import consul
from consul.callback import CB


@dataclass(frozen=True)
class StaleRead:
    entry: dict[str, Any] | None  # the key's entry ("Value" decoded), None if absent
    last_contact_s: float  # since the answering server last heard from the leader
    known_leader: bool

    def fresh_within(self, seconds: float) -> bool:
        """The answering server knows a leader and heard from it within `seconds`."""
        return self.known_leader and self.last_contact_s <= seconds


def staleness(headers: Any) -> tuple[float, bool]:
    """(seconds since the server's last contact with the leader, whether it knows one)
    from a Consul answer's headers; a server that does not say counts as out of touch."""
    try:
        last_contact_s = int(headers.get("X-Consul-LastContact", "")) / 1000
    except ValueError:
        last_contact_s = float("inf")
    return last_contact_s, headers.get("X-Consul-KnownLeader") == "true"


def read_stale(client: consul.Consul, key: str) -> StaleRead:
    """`key` as the server the agent asks has it (raises as a default read would)."""
    decode_one = CB.json(decode="Value", one=True)

    def answer(response: Any) -> StaleRead:
        entry = decode_one(response)
        return StaleRead(entry, *staleness(response.headers))

    params: list[tuple[str, str]] = [("stale", "1")]
    if client.dc:
        params.append(("dc", client.dc))
    result: StaleRead = client.http.get(
        answer, f"/v1/kv/{key}", params=params, headers=client.prepare_headers(None)
    )
    return result
