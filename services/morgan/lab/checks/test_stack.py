"""What `morgan verify` checks: every container from the inside, then the API end to end."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra
import yaml

from infra.configs import consul as consul_cfg
from infra.configs import data as data_cfg
from infra.configs import observability as obs_cfg
from morgan.catalog import SERVICE_PORTS
from morgan.lab import compose_runner as cr
from morgan.lab import endpoints as eps
from morgan.lab import keys
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll
from morgan.lab.probes import listening_ports, processes

# The port each role listens on inside its container (host networking: on the host too).
ROLE_PORTS: dict[str, int] = {
    **SERVICE_PORTS,
    # The dev stack's one server serves the local agent's API.
    "consul-server": consul_cfg.AGENT_PORTS["http"],
    "consul-agent": consul_cfg.AGENT_PORTS["http"],
    "postgres-primary": data_cfg.PG_PORT,
    "postgres-standby": data_cfg.PG_PORT,
    "redis": data_cfg.REDIS_PORT,
    **obs_cfg.PORTS,
}
MODEL_SERVICES = tuple(SERVICE_PORTS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`service`: each long-running container of the stack; `job`: each one-shot job."""
    wanted = [n for n in ("service", "job") if n in metafunc.fixturenames]
    if not wanted:
        return
    p = st.paths(os.environ.get("MORGAN_STACK", "dev"))
    rows = cr.running_containers(p) if p.compose_file.exists() else []
    doc = yaml.safe_load(p.compose_file.read_text()) if p.compose_file.exists() else {}
    names = sorted(str(r["Service"]) for r in rows)
    for name in wanted:
        chosen = [s for s in names if st.is_job(doc, s) == (name == "job")]
        metafunc.parametrize(name, chosen or [f"(no {name} container)"])


@pytest.fixture
def host(service: str, containers: dict[str, str]) -> Any:
    if service not in containers:
        pytest.fail(f"{service}: no running container; see `morgan status` and `morgan logs`")
    return testinfra.get_host(f"docker://{containers[service]}")


def test_job_completed(job: str, stack_paths: st.StackPaths) -> None:
    """A one-shot job ran to the end: exited, status 0."""
    rows = {str(r["Service"]): r for r in cr.running_containers(stack_paths)}
    assert job in rows, f"{job}: no container; see `morgan status`"
    row = rows[job]
    assert row["State"] == "exited" and row["ExitCode"] == 0, (
        f"{job}: {row['State']}, exit {row['ExitCode']}; see `morgan logs {job}`"
    )


def test_processes_run_as_non_root(service: str, host: Any) -> None:
    procs = processes(host)
    assert procs, f"{service}: no process visible in /proc"
    root_procs = [f"{p.name} (pid {p.pid})" for p in procs if p.uid == 0]
    assert not root_procs, f"{service}: processes running as root: {root_procs}"


def test_port_listens(service: str, host: Any, compose_doc: dict[str, Any]) -> None:
    role = st.role_of(compose_doc, service)
    if role == "traefik":
        gateway = st.load_config(os.environ.get("MORGAN_STACK", "dev")).gateway
        want = {gateway.http_port, gateway.https_port}
    elif role in ROLE_PORTS:
        want = {ROLE_PORTS[role]}
    else:
        pytest.fail(f"{service}: role {role!r} has no known port; add it to ROLE_PORTS")
    listening = listening_ports(host)
    assert want <= listening, (
        f"{service}: expected {sorted(want)} listening, saw {sorted(listening)}"
    )


def test_config_in_place(service: str, host: Any, compose_doc: dict[str, Any]) -> None:
    """Every file the stack mounts into the container is there, with the same content."""
    svc = compose_doc["services"][service]
    checked = 0
    for mount in svc.get("volumes") or []:
        source, target = _bind(mount)
        if source is None or not Path(source).is_file():
            continue
        inside = host.file(target)
        assert inside.exists, f"{service}: {target} (from {source}) is missing"
        assert inside.content == Path(source).read_bytes(), f"{service}: {target} differs"
        checked += 1
    for cfg in svc.get("configs") or []:
        target = str(cfg.get("target")) if isinstance(cfg, dict) else f"/{cfg}"
        assert host.file(target).exists, f"{service}: config {target} is missing"
        checked += 1
    env = host.check_output("cat /proc/1/environ | tr '\\0' '\\n'")
    if st.role_of(compose_doc, service) in MODEL_SERVICES:
        assert "CONSUL_HTTP_ADDR=" in env or checked, (
            f"{service}: neither a mounted config file nor CONSUL_HTTP_ADDR; the service cannot"
            " find Consul"
        )


def _bind(mount: Any) -> tuple[str | None, str]:
    if isinstance(mount, dict):
        if mount.get("type") != "bind":
            return None, str(mount.get("target"))
        return str(mount.get("source")), str(mount.get("target"))
    parts = str(mount).split(":")
    if len(parts) >= 2 and parts[0].startswith(("/", ".")):
        return parts[0], parts[1]
    return None, parts[-1]


@pytest.mark.parametrize("name", [f"morgan-{s}" for s in MODEL_SERVICES])
def test_passing_in_consul(name: str, endpoints: eps.Endpoints) -> None:
    def passing() -> None:
        state = eps.consul_health(endpoints.consul_addr, endpoints.consul_token).get(name)
        if state != "passing":
            raise NotYet(f"Consul says {name} is {state or 'absent'}")

    poll(passing, what=f"{name} passing in Consul", timeout=120)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def api_key(endpoints: eps.Endpoints) -> str:
    return keys.create_api_key(keys.key_store(endpoints), owner="verify")


@pytest.fixture(scope="session")
def api(endpoints: eps.Endpoints, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=endpoints.gateway_url,
        headers={"X-API-Key": api_key},
        timeout=120,
        verify=False,  # Traefik's own certificate on the dev stack
    )


def _is_wav(data: bytes) -> bool:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() > 0


def test_request_without_key_is_401(endpoints: eps.Endpoints) -> None:
    resp = httpx.post(
        f"{endpoints.gateway_url}/api/text",
        json={"text": "hi", "user_id": "u"},
        timeout=30,
        verify=False,
    )
    assert resp.status_code == 401, resp.text
    assert resp.json().get("error"), resp.text


# With the tiny test models the reply is random text, and now and then none of it can be
# spoken (TTS rightly refuses, core answers with text and a `warning`). A turn is tried a
# few times; one of them must come back with audio, and every failure's warning is shown.
TURN_TRIES = 3


def _turn_with_audio(send: Any) -> dict[str, Any]:
    warnings = []
    for _ in range(TURN_TRIES):
        resp = send()
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        assert isinstance(body["text"], str) and body["text"].strip()
        assert body["conversation_id"]
        if body.get("audio_base64"):
            assert _is_wav(base64.b64decode(body["audio_base64"]))
            return body
        assert body.get("warning"), f"no audio and no warning: {body}"
        warnings.append(body["warning"])
    raise AssertionError(f"no turn of {TURN_TRIES} came back with audio: {warnings}")


def test_text_turn_returns_text_and_audio(api: httpx.Client) -> None:
    _turn_with_audio(
        lambda: api.post(
            "/api/text", json={"text": "Hello Morgan", "user_id": "verify", "want_audio": True}
        )
    )


def test_audio_turn_transcribes_and_answers(api: httpx.Client, tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(speech), "what is the weather like tomorrow"], check=True
    )
    audio = speech.read_bytes()
    body = _turn_with_audio(
        lambda: api.post(
            "/api/audio",
            files={"file": ("speech.wav", audio, "audio/wav")},
            data={"user_id": "verify"},
        )
    )
    assert isinstance(body["transcription"], str)


def test_conversation_survives_core_restart(
    api: httpx.Client, containers: dict[str, str], compose_doc: dict[str, Any]
) -> None:
    first = api.post("/api/text", json={"text": "Remember the word tangerine", "user_id": "verify"})
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]
    core = next(c for s, c in containers.items() if st.role_of(compose_doc, s) == "core")
    subprocess.run(["docker", "restart", core], check=True, capture_output=True)

    def answered() -> httpx.Response:
        resp = api.get(f"/api/conversations/{conversation_id}")
        if resp.status_code != 200:
            raise NotYet(f"HTTP {resp.status_code}: {resp.text[:120]}")
        return resp

    history = poll(
        answered, what=f"core answering after `docker restart {core}`", timeout=180,
        errors=(httpx.HTTPError,),
    )  # fmt: skip
    assert "tangerine" in history.text, f"conversation lost across restart: {history.text[:400]}"
    again = api.post(
        "/api/text",
        json={"text": "What word?", "user_id": "verify", "conversation_id": conversation_id},
    )
    assert again.status_code == 200, again.text
    assert again.json()["conversation_id"] == conversation_id
