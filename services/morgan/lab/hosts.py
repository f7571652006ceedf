"""The multi-host lab's simulated hosts: h1…hN, each a container with its own Docker daemon.

Each host runs `scripts/setup-linux.sh` (the script a user runs on a fresh Debian host),
has its own hostname and address on the `morgan-lab` network, keeps its daemon's data
on a volume, and is reached the way homelab's hosts are: h2 (the Windows host's place)
over TCP with TLS client certificates, the others over SSH as user `morgan` with a key
pair made for the lab. `--privileged` cannot start here (CAP_SYS_RESOURCE is outside
this machine's bounding set); the capability set below is what runs an inner dockerd.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from morgan.lab.polling import NotYet, PollTimeout, poll

NETWORK = "morgan-lab"
# The lab's own subnet: stacks/Pulumi.lab.yaml addresses h1…h4 at .11….14, the registry at .10.
SUBNET = "10.213.87.0/24"
IMAGE = "morgan-labhost"
LABEL = "org.morgan.lab=1"
TLS_HOSTS = ("h2",)  # reached over tcp:// with client certificates, as the Windows host is
REGISTRY = "registry"
REGISTRY_PORT = 5000
REGISTRY_IMAGE = "morgan-labregistry"
# Where this machine's Docker looks for a registry's CA (no daemon restart needed).
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
USER = "morgan"
INNER_DAEMON_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
)  # fmt: skip


class LabError(RuntimeError):
    """The lab could not be made or reached; the message names the host and the fix."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    docker: str  # the endpoint the deploy machine uses: ssh://morgan@ADDR or tcp://ADDR:2376


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def hosts_file(self) -> Path:
        return self.root / "hosts.json"

    def client_tls(self, host: str) -> Path:
        """ca.pem, cert.pem, key.pem the deploy machine presents to `host`'s daemon."""
        return self.tls / host / "client"


def _run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False,
                          timeout=timeout)  # fmt: skip
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(args[:4])} …` failed: {proc.stderr.strip()[-400:]}")
    return proc


def gateway_address(subnet: str) -> str:
    """This machine's address on the lab network (the first of its subnet): what the lab's
    hosts reach it at, e.g. the alert webhook the lab tests run."""
    return str(next(ipaddress.ip_network(subnet).hosts()))


def network_gateway() -> str:
    """The lab network's gateway as Docker reports it (`gateway_address` of its subnet)."""
    gateway = _run("docker", "network", "inspect", NETWORK, "--format",
                   "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout.strip()  # fmt: skip
    if not gateway:
        raise LabError(f"the lab network {NETWORK} names no gateway; run `morgan lab up` again")
    return gateway


def host_names(count: int) -> list[str]:
    if not 1 <= count <= 9:
        raise LabError(f"--hosts {count}: the lab makes 1 to 9 hosts (h1…h9)")
    return [f"h{i}" for i in range(1, count + 1)]


def ensure_key(p: LabPaths) -> None:
    if p.key.exists():
        return
    p.key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "morgan-lab", "-f", str(p.key))


def _openssl(*args: str) -> None:
    _run("openssl", *args)


def ensure_tls(p: LabPaths, host: str, address: str, *, loopback: bool = False) -> Path:
    """A lab CA, a server certificate for `host` (its name and address, and 127.0.0.1
    with `loopback`) and a client one."""
    ca_key, ca = p.tls / "ca-key.pem", p.tls / "ca.pem"
    p.tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not ca.exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
                 "-subj", "/CN=morgan-lab-ca")  # fmt: skip
    server, client = p.tls / host / "server", p.client_tls(host)
    shutil.rmtree(server, ignore_errors=True)  # the address may differ from the last lab
    for folder, subject, ext in (
        (
            server,
            f"/CN={host}",
            f"subjectAltName=DNS:{host},IP:{address}{',IP:127.0.0.1' if loopback else ''}"
            "\nextendedKeyUsage=serverAuth",
        ),
        (client, "/CN=morgan-deploy", "extendedKeyUsage=clientAuth"),
    ):
        if (folder / "cert.pem").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ext.cnf").write_text(ext + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(folder / "key.pem"), "-out", str(folder / "req.csr"),
                 "-subj", subject)  # fmt: skip
        _openssl("x509", "-req", "-in", str(folder / "req.csr"), "-CA", str(ca),
                 "-CAkey", str(ca_key), "-CAcreateserial", "-days", "30",
                 "-extfile", str(folder / "ext.cnf"), "-out", str(folder / "cert.pem"))  # fmt: skip
        shutil.copy(ca, folder / "ca.pem")
        for f in ("key.pem", "cert.pem", "ca.pem"):
            (folder / f).chmod(0o644 if folder == server else 0o600)
    return server


def host_address(subnet: str, index: int) -> str:
    """h<index>'s fixed address on the lab network: .10 + index of its subnet."""
    network = ipaddress.ip_network(subnet)
    return str(network.network_address + 10 + index)


def start_registry(p: LabPaths, image: str, address: str) -> str:
    """The lab registry (HTTPS only, lab CA); returns `ADDR:5000`. This machine's Docker
    trusts it through /etc/docker/certs.d, as an operator does for a private registry."""
    tls = ensure_tls(p, REGISTRY, address, loopback=True)
    _run("docker", "run", "-d", "--name", f"morgan-lab-{REGISTRY}", "--hostname", REGISTRY,
         "--network", NETWORK, "--network-alias", REGISTRY, "--ip", address, "--label", LABEL,
         "-v", f"{tls}:/lab/tls:ro", "-v", f"morgan-lab-{REGISTRY}-data:/var/lib/docker-registry",
         image)  # fmt: skip
    endpoint = f"{address}:{REGISTRY_PORT}"
    trust = DOCKER_CERTS_D / endpoint
    trust.mkdir(parents=True, exist_ok=True)
    shutil.copy(p.tls / "ca.pem", trust / "ca.crt")
    return endpoint


def container_name(host: str) -> str:
    """The container (on this machine's daemon) that is lab host `host`."""
    return f"morgan-lab-{host}"


def start_host(p: LabPaths, name: str, image: str, address: str, registry: str) -> LabHost:
    tls = name in TLS_HOSTS
    args = ["docker", "run", "-d", "--name", container_name(name), "--hostname", name,
            "--network", NETWORK, "--network-alias", name, "--ip", address, "--label", LABEL,
            *INNER_DAEMON_FLAGS,
            "-v", f"morgan-lab-{name}-docker:/var/lib/docker",
            "-v", f"{p.key}.pub:/lab/authorized_key:ro",
            "-v", f"{p.tls / 'ca.pem'}:/lab/registry-ca.pem:ro"]  # fmt: skip
    if tls:
        args += ["-v", f"{ensure_tls(p, name, address)}:/lab/tls:ro"]
    args += [image, "--name", name, "--address", name,
             "--registry", registry, "--registry-ca", "/lab/registry-ca.pem"]  # fmt: skip
    if tls:
        args += ["--docker-tls", "/lab/tls"]
    _run(*args)
    docker = f"tcp://{address}:2376" if tls else f"ssh://{USER}@{address}"
    return LabHost(name, address, docker)


def ssh_args(p: LabPaths, host: LabHost) -> list[str]:
    return ["ssh", "-i", str(p.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={p.known_hosts}",
            "-o", "ConnectTimeout=5", f"{USER}@{host.address}"]  # fmt: skip


def docker_args(p: LabPaths, host: LabHost) -> list[str]:
    """A `docker` command line talking to `host`'s own daemon over its endpoint."""
    if host.docker.startswith("tcp://"):
        tls = p.client_tls(host.name)
        return ["docker", "--tlsverify", f"--tlscacert={tls}/ca.pem", f"--tlscert={tls}/cert.pem",
                f"--tlskey={tls}/key.pem", "-H", host.docker]  # fmt: skip
    return [*ssh_args(p, host), "docker"]


def daemon_info(p: LabPaths, host: LabHost) -> dict[str, str]:
    """Name and version of the daemon answering at `host`'s endpoint."""
    fmt = '{"name": "{{.Name}}", "version": "{{.ServerVersion}}"}'
    if host.docker.startswith("ssh://"):
        fmt = f"'{fmt}'"  # ssh hands the command to the remote shell
    proc = _run(*docker_args(p, host), "info", "--format", fmt, check=False, timeout=30)
    if proc.returncode != 0:
        raise NotYet(f"{host.name} ({host.docker}): {proc.stderr.strip()[-200:]}")
    info: dict[str, str] = json.loads(proc.stdout)
    return info


def up(
    p: LabPaths,
    count: int,
    image: str,
    registry_image: str,
    log: Callable[[str], None] = print,
    subnet: str = SUBNET,
) -> list[LabHost]:
    """Start the registry and h1…h`count` (replacing a previous lab), and wait until the
    registry and every daemon answer."""
    names = host_names(count)
    down(p, volumes=False)
    ensure_key(p)
    p.known_hosts.unlink(missing_ok=True)
    # A fixed subnet: each host keeps its address (its TLS certificate and the lab stack
    # file name it).
    made = _run("docker", "network", "create", "--label", LABEL, "--subnet", subnet,
                "--gateway", gateway_address(subnet), NETWORK, check=False)  # fmt: skip
    if made.returncode != 0:
        raise LabError(
            f"cannot make the lab network {NETWORK} on {subnet}: {made.stderr.strip()[-300:]};"
            " remove the network that overlaps it (`docker network ls`) or pass another"
            " --subnet (and change the addresses in stacks/Pulumi.lab.yaml to match)"
        )
    registry = start_registry(p, registry_image, host_address(subnet, 0))
    # Written now, so that `down` finds what to remove even if the rest fails.
    p.hosts_file.write_text(json.dumps({"registry": registry, "hosts": []}) + "\n")
    hosts = [start_host(p, name, image, host_address(subnet, i), registry)
             for i, name in enumerate(names, start=1)]  # fmt: skip
    try:
        poll(functools.partial(registry_answers, p, registry), what="lab registry",
             timeout=60, interval=1)  # fmt: skip
    except PollTimeout as exc:
        raise LabError(f"{exc}; see `docker logs morgan-lab-{REGISTRY}`") from None
    log(f"{REGISTRY}  https://{registry}  (lab CA)")
    for host in hosts:
        try:
            info = poll(functools.partial(daemon_info, p, host), what=f"lab host {host.name}",
                        timeout=120, interval=1)  # fmt: skip
        except PollTimeout as exc:
            raise LabError(
                f"{exc}; see `docker logs {container_name(host.name)}` (dockerd and sshd log there)"
            ) from None
        if info["name"] != host.name:
            raise LabError(f"{host.docker} answered as {info['name']!r}, not {host.name}")
        log(f"{host.name}  {host.docker:<28} docker {info['version']}")
    _save(p, hosts)
    return hosts


def add_host(p: LabPaths, name: str, log: Callable[[str], None] = print) -> LabHost:
    """One more host on the running lab (h5, h6, …), made like the others, at .10 + its
    number of the lab's subnet; `down` removes it with the rest."""
    hosts = load(p)
    have = ", ".join(h.name for h in hosts)
    if not re.fullmatch(r"h[1-9][0-9]?", name):
        raise LabError(f"cannot add lab host {name!r}: a lab host is h<number> (h5, h6, …)")
    if name in have.split(", "):
        raise LabError(f"lab host {name} exists already (the lab has {have})")
    first = hosts[0]
    image = _run("docker", "inspect", "-f", "{{.Config.Image}}", container_name(first.name)
                 ).stdout.strip()  # fmt: skip
    offset = int(name[1:]) - int(first.name[1:])
    address = str(ipaddress.ip_address(first.address) + offset)
    host = start_host(p, name, image, address, load_registry(p))
    _save(p, [*hosts, host])
    try:
        info = poll(functools.partial(daemon_info, p, host), what=f"lab host {name}",
                    timeout=120, interval=1)  # fmt: skip
    except PollTimeout as exc:
        raise LabError(f"{exc}; see `docker logs {container_name(name)}`") from None
    log(f"{name}  {host.docker:<28} docker {info['version']}")
    return host


def remove_host(p: LabPaths, name: str) -> None:
    """Take a host out of the running lab: its container, its daemon's volume, and its
    SSH host key (a host made again under that address has a new one)."""
    hosts = load(p)
    gone = next((h for h in hosts if h.name == name), None)
    if gone is None:
        raise LabError(f"the lab has no host {name!r}")
    _run("docker", "rm", "-f", container_name(name))
    _run("docker", "volume", "rm", "-f", f"morgan-lab-{name}-docker")
    if p.known_hosts.exists():
        _run("ssh-keygen", "-R", gone.address, "-f", str(p.known_hosts), check=False)
    _save(p, [h for h in hosts if h.name != name])


def _save(p: LabPaths, hosts: list[LabHost]) -> None:
    state = {"registry": load_registry(p), "hosts": [asdict(h) for h in hosts]}
    p.hosts_file.write_text(json.dumps(state, indent=2) + "\n")


def registry_answers(p: LabPaths, registry: str) -> None:
    proc = _run("curl", "-fsS", "--cacert", str(p.tls / "ca.pem"), f"https://{registry}/v2/",
                check=False, timeout=10)  # fmt: skip
    if proc.returncode != 0:
        raise NotYet(proc.stderr.strip() or f"curl exit {proc.returncode}")


def _state(p: LabPaths) -> dict[str, object]:
    try:
        state: dict[str, object] = json.loads(p.hosts_file.read_text())
    except FileNotFoundError:
        raise LabError("the lab is not up here; run `morgan lab up`") from None
    return state


def load_registry(p: LabPaths) -> str:
    """`ADDR:5000` of the running lab's registry."""
    return str(_state(p)["registry"])


def load(p: LabPaths) -> list[LabHost]:
    hosts = _state(p)["hosts"]
    assert isinstance(hosts, list)
    return [LabHost(**h) for h in hosts]


def down(p: LabPaths, *, volumes: bool = True) -> list[str]:
    """Remove every lab container and the network (and the hosts' daemon volumes)."""
    found = _run("docker", "ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if found:
        _run("docker", "rm", "-f", *found)
    if _run("docker", "network", "inspect", NETWORK, check=False).returncode == 0:
        _run("docker", "network", "rm", NETWORK)
    removed = list(found)
    # No lab (or one from before the registry): no trust entry to remove.
    with contextlib.suppress(LabError, TypeError, KeyError):
        shutil.rmtree(DOCKER_CERTS_D / load_registry(p), ignore_errors=True)
    if volumes:
        vols = _run("docker", "volume", "ls", "-q", "--filter", "name=^morgan-lab-").stdout.split()
        if vols:
            _run("docker", "volume", "rm", "-f", *vols)
        removed += vols
    p.hosts_file.unlink(missing_ok=True)
    return removed
