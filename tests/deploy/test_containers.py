"""`morgan deploy`'s container step on a real Docker engine (this machine's, as unix://):
create with the plan's settings, upload the files, a no-op when nothing changed, replaced
when something did; and failures that name the host, the container and the fix."""

from __future__ import annotations

import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from morgan.deploy.containers import (
    apply,
    env_file,
    planned_change,
    prepare,
    remove_unplanned,
    upload_tar,
)
from morgan.deploy.engine import DeployError, DockerEngine
from morgan.deploy.pki import IssuedTls
from morgan.lab import images as img
from morgan.lab.polling import NotYet, poll

from infra.container_run import container_run
from infra.model import (
    UNPRIVILEGED,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    SecretEnv,
    TlsFiles,
)

pytestmark = [pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]


def _spec(name: str, message: str = "hello") -> ContainerSpec:
    return ContainerSpec(
        name=name,
        role="probe",
        host="local",
        image=img.base_image(),
        platform="linux/amd64",
        entrypoint=("/bin/sh",),
        command=("-c", "cat /etc/probe/message.txt; echo; exec sleep 600"),
        env={"PLAIN": "value"},
        secret_env=(SecretEnv("PROBE_PASSWORD", "{postgres_password}"),),
        files=(ConfigFile("/etc/probe/message.txt", message),),
        tls=TlsFiles(role="probe"),
        healthcheck=Healthcheck(test=("CMD", "true"), interval="2s", start_period="1s"),
        memory_mb=64,
        labels={"org.morgan.test": "deploy"},
    )


@pytest.fixture
def engine() -> DockerEngine:
    return DockerEngine("local", "unix:///var/run/docker.sock", root=ROOT)


@pytest.fixture
def name() -> Iterator[str]:
    value = f"morgan-deploy-test-{uuid.uuid4().hex[:8]}"
    yield value
    subprocess.run(["docker", "rm", "-f", value], capture_output=True, check=False)


def _logs_show(engine: DockerEngine, name: str, text: str) -> str:
    """The container's log once it holds `text` (it prints right after starting)."""

    def seen() -> str:
        logs = engine.text("logs", name)
        if text not in logs:
            raise NotYet(f"log so far: {logs!r}")
        return logs

    return poll(seen, what=f"{name} printing {text!r}", timeout=20, interval=0.5)


TLS = IssuedTls(ca="CA PEM", cert="CERT PEM", key="KEY PEM")
SECRETS = {"postgres_password": "s3cret-value"}


def test_created_unchanged_then_replaced(engine: DockerEngine, name: str) -> None:
    first = prepare(container_run(_spec(name)), SECRETS, TLS, "sha256:one")
    assert planned_change(engine, first) == "created"
    assert apply(engine, first) == "created"
    assert _logs_show(engine, name, "hello")
    env = engine.text("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", name)
    assert "PROBE_PASSWORD=s3cret-value" in env.splitlines()
    key = engine.text("exec", name, "cat", "/etc/morgan/tls/key.pem")
    assert key == "KEY PEM"
    limits = engine.text("inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NetworkMode}}"
                         " {{.HostConfig.RestartPolicy.Name}}", name)  # fmt: skip
    assert limits == f"{64 * 1024 * 1024} host unless-stopped"
    # A stop (a replacement, the daemon's own) gives it its grace after SIGTERM.
    assert engine.text("inspect", "-f", "{{.Config.StopTimeout}}", name) == "10"
    assert planned_change(engine, first) == "unchanged"
    assert apply(engine, first) == "unchanged"
    changed = prepare(container_run(_spec(name, "changed")), SECRETS, TLS, "sha256:one")
    # Only asked: the running container is left as it is.
    before = engine.text("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name)
    assert planned_change(engine, changed) == "replaced"
    assert engine.text("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name) == before
    assert apply(engine, changed) == "replaced"
    assert _logs_show(engine, name, "changed")


def test_an_unprivileged_container_holds_no_capability(engine: DockerEngine, name: str) -> None:
    """The engine gets --cap-drop=ALL and no-new-privileges; the uploads still land (the
    copy needs no capability inside the container) and the process inside has none."""
    spec = ContainerSpec(**{**_spec(name).__dict__, "privileges": UNPRIVILEGED})
    assert apply(engine, prepare(container_run(spec), SECRETS, TLS, "sha256:p")) == "created"
    assert _logs_show(engine, name, "hello")
    fmt = "{{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}}"
    assert engine.text("inspect", "-f", fmt, name) == '["ALL"] ["no-new-privileges=true"]'
    status = engine.text("exec", name, "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status")
    assert status.split() == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    chown = engine.run("exec", name, "chown", "nobody", "/etc/probe/message.txt", check=False)
    assert chown.returncode != 0 and b"Operation not permitted" in chown.stderr, chown.stderr


def test_a_key_whose_user_the_plan_knows_is_that_users_alone(
    engine: DockerEngine, name: str
) -> None:
    """runs_as: the TLS key lands 0400 owned by that user, who reads it; another user, and
    the container's root without capabilities, cannot. The CA and certificate stay
    readable by all."""
    spec = ContainerSpec(
        **{**_spec(name).__dict__, "privileges": UNPRIVILEGED, "runs_as": (65534, 65534)}
    )
    assert apply(engine, prepare(container_run(spec), SECRETS, TLS, "sha256:k")) == "created"
    assert _logs_show(engine, name, "hello")
    modes = engine.text("exec", name, "stat", "-c", "%n %a %u:%g", "/etc/morgan/tls/ca.pem",
                        "/etc/morgan/tls/cert.pem", "/etc/morgan/tls/key.pem")  # fmt: skip
    assert modes.splitlines() == [
        "/etc/morgan/tls/ca.pem 644 0:0",
        "/etc/morgan/tls/cert.pem 644 0:0",
        "/etc/morgan/tls/key.pem 400 65534:65534",
    ]
    assert engine.text("exec", "-u", "65534", name, "cat", "/etc/morgan/tls/key.pem") == "KEY PEM"
    for user in ("1000", "0"):
        refused = engine.run("exec", "-u", user, name, "cat", "/etc/morgan/tls/key.pem",
                             check=False)  # fmt: skip
        assert refused.returncode != 0, f"user {user} read the key"
        assert b"Permission denied" in refused.stderr, refused.stderr
    assert engine.text("exec", "-u", "1000", name, "cat", "/etc/morgan/tls/cert.pem") == "CERT PEM"


def test_a_changed_secret_replaces_the_container(engine: DockerEngine, name: str) -> None:
    assert apply(engine, prepare(container_run(_spec(name)), SECRETS, TLS, "sha256:a")) == (
        "created"
    )
    rotated = prepare(container_run(_spec(name)), {"postgres_password": "new"}, TLS, "sha256:a")
    assert apply(engine, rotated) == "replaced"


def test_uploads_are_files_with_their_modes() -> None:
    spec = _spec("x")
    spec = ContainerSpec(**{**spec.__dict__, "files": (*spec.files,
                            ConfigFile("/etc/probe/run.sh", "#!/bin/sh\n"))})  # fmt: skip
    prepared = prepare(container_run(spec), SECRETS, TLS, "sha256:x")
    with tarfile.open(fileobj=BytesIO(upload_tar(prepared))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == [
        "etc/morgan/tls/ca.pem", "etc/morgan/tls/cert.pem", "etc/morgan/tls/key.pem",
        "etc/probe/message.txt", "etc/probe/run.sh",
    ]  # fmt: skip
    assert all(m.isfile() for m in members.values()), "no folder entry (they keep their owner)"
    assert members["etc/probe/run.sh"].mode == 0o755
    assert members["etc/probe/message.txt"].mode == 0o644
    # No user known: the key stays root's and readable, for an image that switches user.
    assert (members["etc/morgan/tls/key.pem"].mode, members["etc/morgan/tls/key.pem"].uid) == (
        0o644, 0,
    )  # fmt: skip
    assert b"PROBE_PASSWORD=s3cret-value\n" in env_file(prepared)


def test_a_value_with_a_line_break_is_refused_with_the_fix() -> None:
    spec = ContainerSpec(**{**_spec("x").__dict__, "env": {"BAD": "two\nlines"}})
    with pytest.raises(DeployError, match=r"local/x: environment variable BAD.*one line"):
        prepare(container_run(spec), SECRETS, TLS, "sha256:x")


def test_a_failing_step_names_the_host_and_the_error(engine: DockerEngine) -> None:
    with pytest.raises(DeployError, match=r"^local: `docker inspect no-such-container-") as err:
        engine.run("inspect", f"no-such-container-{uuid.uuid4().hex}")
    assert "No such" in str(err.value)


def test_an_unreachable_endpoint_names_the_host(tmp_path: Path) -> None:
    engine = DockerEngine("h9", f"unix://{tmp_path}/docker.sock", root=ROOT)
    with pytest.raises(DeployError, match=r"^h9: `docker version"):
        engine.run("version", timeout=30)


def test_ssh_endpoints_quote_every_argument() -> None:
    engine = DockerEngine("h1", "ssh://morgan@h1.lan", ssh_opts=("-i", "key"), root=ROOT)
    argv = engine.argv("inspect", "-f", "{{.State.Status}} x", "a b")
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[5:8] == ["-i", "key", "morgan@h1.lan"]
    assert argv[8] == "docker inspect -f '{{.State.Status}} x' 'a b'"


def test_only_the_stacks_unplanned_containers_of_the_roles_asked_go(engine: DockerEngine) -> None:
    stack = f"t{uuid.uuid4().hex[:8]}"
    made = {f"morgan-deploy-test-{stack}-{n}": (role, s) for n, role, s in [
        ("planned", "vad", stack), ("moved", "vad", stack), ("other-role", "core", stack),
        ("other-stack", "vad", "someone-else")]}  # fmt: skip
    try:
        for container, (role, in_stack) in made.items():
            engine.run("run", "-d", "--name", container, "--label", f"morgan.stack={in_stack}",
                       "--label", f"morgan.role={role}", img.base_image(), "sleep", "600",
                       timeout=60)  # fmt: skip
        planned = {f"morgan-deploy-test-{stack}-planned"}

        assert remove_unplanned(engine, stack, planned, roles={"vad"}) == [
            f"morgan-deploy-test-{stack}-moved"]  # fmt: skip
        assert remove_unplanned(engine, stack, planned) == [
            f"morgan-deploy-test-{stack}-other-role"]  # fmt: skip

        left = engine.text("ps", "-a", "--filter", f"name=morgan-deploy-test-{stack}",
                           "--format", "{{.Names}}").split()  # fmt: skip
        assert sorted(left) == [f"morgan-deploy-test-{stack}-other-stack",
                                f"morgan-deploy-test-{stack}-planned"]  # fmt: skip
    finally:
        subprocess.run(["docker", "rm", "-f", *made], capture_output=True, check=False)


def test_a_rollout_sees_a_new_container_healthy_before_the_engines_first_check(
    engine: DockerEngine, name: str
) -> None:
    """The deploy runs the container's own check at once: Docker's first one comes an
    `interval` (here a minute) after the start, and would hold each host's turn that long."""
    from dataclasses import replace

    from morgan.deploy.rollout import _passes_its_check, _wait_healthy

    spec = replace(_spec(name), healthcheck=Healthcheck(
        test=("CMD-SHELL", "test -s /etc/probe/message.txt"), interval="60s",
        start_period="1s"))  # fmt: skip
    apply(engine, prepare(container_run(spec), SECRETS, TLS, "sha256:one"))
    _wait_healthy(engine, spec)
    assert engine.text("inspect", "-f", "{{.State.Health.Status}}", name) == "starting"
    failing = replace(spec, healthcheck=replace(spec.healthcheck, test=("CMD", "false")))
    assert _passes_its_check(engine, failing) is False


def test_a_healthcheck_runs_as_the_engine_would_run_it() -> None:
    shell = Healthcheck(test=("CMD-SHELL", "pg_isready -h 127.0.0.1 || exit 1"), timeout="7s")
    assert shell.exec_argv() == ("sh", "-c", "pg_isready -h 127.0.0.1 || exit 1")
    assert shell.timeout_seconds == 7.0
    assert Healthcheck(test=("CMD", "consul", "members")).exec_argv() == ("consul", "members")
    assert Healthcheck(test=("NONE",)).exec_argv() is None
