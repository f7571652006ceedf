"""One host's Docker daemon, reached over its stack endpoint.

`ssh://user@host` runs the host's own `docker` CLI over SSH (with the stack's
`ssh_opts`); `tcp://host:2376` talks to the daemon with the client certificates of
`docker_tls.cert_path`; `unix://` is this machine's daemon. Secrets travel on standard
input (`--env-file /dev/stdin`), never on a command line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.config import HostConfig


class DeployError(RuntimeError):
    """A step of `morgan deploy` failed; the message names the host, the container and the fix."""


@dataclass(frozen=True)
class DockerEngine:
    host: str
    endpoint: str
    ssh_opts: tuple[str, ...] = ()
    tls_dir: Path | None = None
    # Relative paths in ssh_opts and cert_path are relative to the project root.
    root: Path = Path(".")

    @classmethod
    def of(cls, host: HostConfig, root: Path) -> DockerEngine:
        tls = None
        if host.docker_tls is not None:
            tls = (root / Path(host.docker_tls.cert_path).expanduser()).resolve()
        return cls(host.name, host.docker, host.ssh_opts, tls, root)

    def argv(self, *args: str) -> list[str]:
        if self.endpoint.startswith("ssh://"):
            target = self.endpoint.removeprefix("ssh://")
            return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *self.ssh_opts,
                    target, "docker " + shlex.join(args)]  # fmt: skip
        base = ["docker", "-H", self.endpoint]
        if self.tls_dir is not None:
            base += ["--tlsverify", f"--tlscacert={self.tls_dir / 'ca.pem'}",
                     f"--tlscert={self.tls_dir / 'cert.pem'}",
                     f"--tlskey={self.tls_dir / 'key.pem'}"]  # fmt: skip
        return [*base, *args]

    def run(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            proc = subprocess.run(self.argv(*args), input=stdin, capture_output=True,
                                  timeout=timeout, check=False, cwd=self.root)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DeployError(
                f"{self.host}: `docker {' '.join(args[:3])}` took over {timeout:.0f} s;"
                f" check that {self.endpoint} answers (`morgan lab status` in the lab)"
            ) from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-600:]
            raise DeployError(f"{self.host}: `docker {' '.join(args[:3])}` failed: {err}")
        return proc

    def stream(self, *args: str, stdin: Path | None = None, stdout: Path | None = None,
               timeout: float = 1800) -> None:  # fmt: skip
        """`docker args` with its standard input read from a file or its output written to
        one (a database dump: never held in memory); fails like `run`."""
        with (
            open(stdin, "rb") if stdin else open(os.devnull, "rb") as source,
            open(stdout, "wb") if stdout else open(os.devnull, "wb") as sink,
        ):
            try:
                proc = subprocess.run(self.argv(*args), stdin=source, stdout=sink,
                                      stderr=subprocess.PIPE, timeout=timeout, check=False,
                                      cwd=self.root)  # fmt: skip
            except subprocess.TimeoutExpired:
                raise DeployError(
                    f"{self.host}: `docker {' '.join(args[:3])}` took over {timeout:.0f} s"
                ) from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-600:]
            raise DeployError(f"{self.host}: `docker {' '.join(args[:3])}` failed: {err}")

    def text(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        return self.run(*args, check=check, timeout=timeout).stdout.decode().strip()
