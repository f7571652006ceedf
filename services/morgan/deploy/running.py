"""The container that stands for each planned one on a deployed stack's hosts.

`morgan deploy --engine docker` names each container as the plan does; with `--engine
swarm` each planned container is a Swarm service and the container is its newest task.
"""

from __future__ import annotations

from morgan.deploy.engine import DockerEngine


class Containers:
    """Planned name -> running container name, per host (each host listed once)."""

    def __init__(self, engines: dict[str, DockerEngine], stack: str) -> None:
        self.engines = engines
        self.stack = stack
        self._names: dict[str, dict[str, str]] = {}

    def _listed(self, host: str) -> dict[str, str]:
        if host not in self._names:
            fmt = '{{.Names}}|{{.Label "com.docker.swarm.service.name"}}'
            rows = self.engines[host].text("ps", "-a", "--format", fmt, timeout=60).splitlines()
            names: dict[str, str] = {}
            for row in rows:  # newest first
                name, _, service = row.partition("|")
                planned = service.removeprefix(f"{self.stack}_") if service else name
                names.setdefault(planned, name)
            self._names[host] = names
        return self._names[host]

    def of(self, host: str, planned: str) -> str:
        return self._listed(host).get(planned, planned)

    def swarm_node(self, host: str) -> tuple[bool, bool]:
        """(in a swarm, a manager) for the host's daemon."""
        fmt = "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
        state, manager = self.engines[host].text("info", "--format", fmt, timeout=60).split()
        return state == "active", manager == "true"
