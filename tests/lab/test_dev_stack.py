"""`morgan up`, `morgan status`, `morgan logs`, `morgan verify` and `morgan down` on this machine.

These run the real commands against the local Docker engine, in order, on one
stack: up once (module fixture), the checks, then down. A cold first run builds
every image (PyTorch's runtime image dominates); later runs reuse them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from morgan.lab import compose_runner as cr
from morgan.lab import endpoints as eps
from morgan.lab import model_seed
from morgan.lab import stack as st
from morgan.lab.secrets import read_env
from morgan.shared.consul_client import ConsulClientFactory

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(2400)]


def morgan(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [MORGAN, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture(scope="module")
def dev_stack() -> Iterator[subprocess.CompletedProcess[str]]:
    result = morgan("up", "--stack", "dev")
    try:
        yield result
    finally:
        # Volumes stay: a developer's dev stack data survives `make test`.
        morgan("down", "--stack", "dev", timeout=300)


def test_up_prints_gateway_key_and_curl(dev_stack: subprocess.CompletedProcess[str]) -> None:
    out = dev_stack.stdout + dev_stack.stderr
    assert dev_stack.returncode == 0, out[-3000:]
    assert "Gateway: https://127.0.0.1:" in out
    assert "API key: mk_" in out
    assert "curl -sk https://127.0.0.1:" in out and "/api/text" in out


def test_up_says_when_it_uses_tiny_models(dev_stack: subprocess.CompletedProcess[str]) -> None:
    # The lab stack starts from empty volumes, so the tiny models are always seeded here.
    assert model_seed.TINY_MODEL_WARNING in dev_stack.stdout


def test_status_lists_every_container_healthy(dev_stack: subprocess.CompletedProcess[str]) -> None:
    result = morgan("status", "--stack", "dev")
    assert result.returncode == 0, result.stdout + result.stderr
    p = st.paths("dev")
    rows = cr.running_containers(p)
    assert rows, "no containers after morgan up"
    doc = yaml.safe_load(p.compose_file.read_text())
    jobs = [r for r in rows if st.is_job(doc, str(r["Service"]))]
    assert [r["Service"] for r in jobs] == ["morgan-postgres-app-role"], jobs
    for row in rows:
        if row in jobs:  # ran once, to the end
            assert (row["State"], row["ExitCode"]) == ("exited", 0), json.dumps(row)
        else:
            assert row["State"] == "running", json.dumps(row)
        assert row["Name"] in result.stdout
    assert "morgan-core" in result.stdout and "passing" in result.stdout


def test_logs_of_a_service_and_of_an_unknown_one(
    dev_stack: subprocess.CompletedProcess[str],
) -> None:
    doc = st.paths("dev")
    rows = cr.running_containers(doc)
    core = next(str(r["Service"]) for r in rows if "core" in str(r["Service"]))
    result = morgan("logs", core, "--stack", "dev", "--tail", "50")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "core wrote no log lines"
    bad = morgan("logs", "no-such-service", "--stack", "dev")
    assert bad.returncode == 1
    assert "no service 'no-such-service'" in bad.stdout and core in bad.stdout


def _container(service_prefix: str) -> str:
    rows = cr.running_containers(st.paths("dev"))
    return next(str(r["Name"]) for r in rows
                if str(r.get("Service", "")).startswith(service_prefix))  # fmt: skip


def _run_in(container: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", container, "python", "-c", code],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_core_runs_without_torch(dev_stack: subprocess.CompletedProcess[str]) -> None:
    core = _container("morgan-core-")
    torch = _run_in(core, "import torch")
    assert torch.returncode == 1 and "No module named 'torch'" in torch.stderr, torch.stderr
    onnx = _run_in(
        core, "from morgan.core.memory.embedder import ensure_onnx_dir; print(ensure_onnx_dir())"
    )
    assert onnx.returncode == 0, onnx.stderr
    assert onnx.stdout.strip() == "/opt/morgan/embedder"


def test_llm_serves_gguf_on_llama_cpp_without_torch(
    dev_stack: subprocess.CompletedProcess[str],
) -> None:
    llm = _container("morgan-llm-")
    torch = _run_in(llm, "import torch")
    assert torch.returncode == 1 and "No module named 'torch'" in torch.stderr, torch.stderr
    ep = eps.load_endpoints(st.paths("dev"))
    factory = ConsulClientFactory.from_env(ep.consul_addr)
    client = dataclasses.replace(factory, token=ep.consul_token).client()
    _, instances = client.health.service("morgan-llm", passing=True)
    assert [i["Service"]["Meta"]["engine"] for i in instances] == ["llama.cpp"]


def _whole_kv() -> dict[str, str]:
    import base64

    import httpx

    ep = eps.load_endpoints(st.paths("dev"))
    headers = {"X-Consul-Token": ep.consul_token} if ep.consul_token else {}
    resp = httpx.get(f"http://{ep.consul_addr}/v1/kv/?recurse=true", headers=headers, timeout=10)
    resp.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in resp.json()}


def test_up_writes_the_deployments_settings_to_kv(
    dev_stack: subprocess.CompletedProcess[str],
) -> None:
    deployment = st.render(st.load_config("dev", ROOT)).deployment
    kv = _whole_kv()
    assert {k: kv.get(k) for k in deployment.kv} == deployment.kv
    assert kv["morgan/config/core/llm_service"] == '"morgan-llm"'


def test_no_secret_value_of_the_stack_is_in_kv(
    dev_stack: subprocess.CompletedProcess[str],
) -> None:
    secrets = read_env(st.paths("dev").env_file)
    assert "MORGAN_CORE_SERVICE_API_KEY" in secrets and "MORGAN_POSTGRES_PASSWORD" in secrets
    kv = _whole_kv()
    assert len(kv) > 20
    key = secrets["MORGAN_CORE_SERVICE_API_KEY"]
    # Every secret, and the secret part of core's service key (mk_<id>_<secret>).
    values = {**secrets, "the service key's secret": key.split("_", 2)[2]}
    for name, value in values.items():
        assert len(value) >= 16, name
        leaks = [k for k, v in kv.items() if value in v or value in k]
        assert not leaks, f"{name} appears in KV at {leaks}"
    # The key's salted record is there, so the model services accept it.
    key_id = secrets["MORGAN_CORE_SERVICE_API_KEY"].split("_")[1]
    assert json.loads(kv[f"morgan/auth/keys/{key_id}"])["owner"] == "morgan-core (service key)"


def _listeners() -> dict[tuple[str, int], set[str]]:
    """(protocol, port) → the addresses a socket listens on there, from `ss`."""
    out = subprocess.run(["ss", "-Hltnu"], capture_output=True, text=True, check=True).stdout
    found: dict[tuple[str, int], set[str]] = {}
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[4].rpartition(":")
        found.setdefault((fields[0], int(port)), set()).add(address.strip("[]"))
    return found


def test_only_the_gateway_listens_beyond_loopback(
    dev_stack: subprocess.CompletedProcess[str],
) -> None:
    """Nothing on the home network reaches the dev stack's Consul, PostgreSQL, Redis, model
    services or Prometheus: every port but the gateway's is bound to 127.0.0.1."""
    assert dev_stack.returncode == 0
    deployment = st.render(st.load_config("dev", ROOT)).deployment
    listeners = _listeners()
    ports = [(spec.name, port) for spec in deployment.on_host("local") for port in spec.ports]
    checked = 0
    for name, port in ports:
        addresses = listeners.get(("udp" if port.protocol == "udp" else "tcp", port.number))
        if addresses is None:
            continue  # a one-shot job's port, or a protocol the service leaves off
        checked += 1
        if port.public:
            assert addresses & {"0.0.0.0", "*", "::"}, (name, port.number, addresses)
        else:
            assert addresses == {"127.0.0.1"}, (name, port.number, addresses)
    assert checked >= 8, f"only {checked} of the stack's ports were found listening"
    assert any(p.public for _, p in ports)


def test_verify_passes(dev_stack: subprocess.CompletedProcess[str]) -> None:
    result = morgan("verify", "--stack", "dev", timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_up_again_reuses_every_image(dev_stack: subprocess.CompletedProcess[str]) -> None:
    result = morgan("up", "--stack", "dev", timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "built in" not in result.stdout, "a second `morgan up` rebuilt an unchanged image"


def test_down_keeps_volumes_unless_asked(dev_stack: subprocess.CompletedProcess[str]) -> None:
    result = morgan("down", "--stack", "dev", timeout=300)
    assert result.returncode == 0, result.stderr
    assert cr.running_containers(st.paths("dev")) == []
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "morgan-models" in volumes or any(v.endswith("_morgan-models") for v in volumes)
