"""Read what a container is doing from /proc, so checks need no ps/ss inside minimal images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LISTEN = "0A"


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    uid: int


def processes(host: Any) -> list[ProcessInfo]:
    """Every process of the container (testinfra host), with its real uid."""
    script = (
        "for d in /proc/[0-9]*; do "
        "[ -r $d/status ] && printf '%s %s %s\\n' ${d#/proc/} "
        "\"$(awk '/^Name:/{print $2}' $d/status)\" "
        "\"$(awk '/^Uid:/{print $2}' $d/status)\"; done"
    )
    out = host.check_output(script)
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            rows.append(ProcessInfo(int(parts[0]), parts[1], int(parts[2])))
    return rows


def listening_ports(host: Any) -> set[int]:
    """TCP ports in LISTEN state, from /proc/net/tcp and tcp6."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        f = host.file(table)
        if not f.exists:
            continue
        for line in f.content_string.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
