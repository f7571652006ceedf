"""Pick free loopback TCP ports for test servers.

Ports are drawn below the kernel's ephemeral range, so an outgoing client
connection can never take a server's port while the server is stopped for a
restart test. Every port handed out is remembered for the whole session and
never handed out twice.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"
_LOWEST_PORT = 10000
_taken: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so TIME_WAIT leftovers do not block them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, also_free_at_offset: int | None = None) -> list[int]:
    """Return COUNT distinct free loopback ports.

    With also_free_at_offset=N each returned port P also has P+N free (Redis
    Cluster listens on its bus port P+10000).
    """
    upper = _ephemeral_start() - 1
    if also_free_at_offset:
        upper = min(upper, 65535 - also_free_at_offset)
    chosen: list[int] = []
    with _lock:
        for _ in range(20000):
            if len(chosen) == count:
                break
            port = random.randint(_LOWEST_PORT, upper)
            wanted = [port] if not also_free_at_offset else [port, port + also_free_at_offset]
            if any(p in _taken or p in chosen for p in wanted):
                continue
            if all(port_is_free(p) for p in wanted):
                chosen.append(port)
                _taken.update(wanted)
        if len(chosen) != count:
            raise RuntimeError(
                f"found only {len(chosen)} of {count} free loopback ports in "
                f"{_LOWEST_PORT}-{upper}; stop leftover test servers (ss -ltnp) and retry"
            )
    return chosen


def free_port() -> int:
    return free_ports(1)[0]
