"""The model services and morgan-vad as real processes, registered in a real Consul."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICES = {"llm": "morgan-llm", "stt": "morgan-stt", "tts": "morgan-tts", "vad": "morgan-vad"}
ENGINES = {"llm": "transformers", "stt": "faster-whisper", "tts": "coqui", "vad": "silero"}
# The model each advertises: the tiny test models, and the one Silero VAD ships.
MODELS = {"llm": "tiny", "stt": "tiny", "tts": "tiny", "vad": "silero_vad"}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def start_service(
    kind: str, port: int, consul_addr: str, model_dir: Path, log_path: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    prefix = f"MORGAN_{kind.upper()}_"
    env = {
        **os.environ,
        "CONSUL_HTTP_ADDR": consul_addr,
        "MORGAN_ADVERTISE_HOST": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        f"{prefix}PORT": str(port),
        f"{prefix}BIND_HOST": "127.0.0.1",
        **{f"{prefix}{key.upper()}": value for key, value in extra_env.items()},
    }
    if kind != "vad":  # its model ships in the silero-vad package
        env[f"{prefix}MODEL_DIR"] = str(model_dir)
    if kind in ("llm", "stt"):
        env[f"{prefix}MODEL"] = "tiny"
    if kind == "llm":  # the tiny model here is in Hugging Face format
        env.setdefault(f"{prefix}ENGINE", "transformers")
    return subprocess.Popen(
        [sys.executable, "-m", f"morgan.{kind}"],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_services_register_with_model_meta_and_become_ready(
    consul_server: Any, model_dir: Path, tmp_path: Path
) -> None:
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for kind, port in ports.items():
            procs[kind] = start_service(
                kind, port, consul_server.addr, model_dir, tmp_path / f"{kind}.log"
            )

        deadline = time.monotonic() + 120
        pending = set(SERVICES)
        while pending and time.monotonic() < deadline:
            for kind in list(pending):
                assert procs[kind].poll() is None, (tmp_path / f"{kind}.log").read_text()[-3000:]
                if status_of(f"http://127.0.0.1:{ports[kind]}/ready") == 200:
                    pending.discard(kind)
            time.sleep(0.2)
        assert not pending, f"not ready: {pending}"

        registered = get_json(f"{consul_server.url}/v1/agent/services")
        for kind, name in SERVICES.items():
            service_id = f"{name}-127.0.0.1-{ports[kind]}"
            assert service_id in registered, sorted(registered)
            entry = registered[service_id]
            assert entry["Service"] == name and entry["Port"] == ports[kind]
            meta = entry["Meta"]
            assert meta["engine"] == ENGINES[kind]
            assert meta["model"] == MODELS[kind]
            assert meta["device"] == "cpu"
            assert meta["vram_mb"] == "0"
            assert meta["arch"] == platform.machine().lower()

        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{ports['stt']}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert 'morgan_model_load_seconds{model="tiny",service="morgan-stt"}' in metrics
    finally:
        stop_all(list(procs.values()))
    remaining = get_json(f"{consul_server.url}/v1/agent/services")
    for kind, name in SERVICES.items():
        assert f"{name}-127.0.0.1-{ports[kind]}" not in remaining, "deregistered on SIGTERM"


def test_gpu_check_script_drives_one_prompt_through_consul(
    consul_server: Any, model_dir: Path, tmp_path: Path
) -> None:
    """scripts/gpu-check's service part, rehearsed on CPU (no nvidia-smi or vLLM here)."""
    name = f"morgan-llm-check-{os.getpid()}"
    port = free_ports(1)[0]
    proc = start_service(
        "llm",
        port,
        consul_server.addr,
        model_dir,
        tmp_path / "llm.log",
        service_name=name,
        auth_enabled="false",
    )
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"
    try:
        deadline = time.monotonic() + 90
        result = None
        while time.monotonic() < deadline:  # until Consul's first health check passed
            result = subprocess.run(
                [
                    sys.executable,
                    str(script),
                    "--skip-gpu",
                    "--engine",
                    "transformers",
                    "--consul",
                    consul_server.addr,
                    "--service",
                    name,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "llm.log").read_text()[-3000:]
            time.sleep(1)
        assert result is not None and result.returncode == 0, result and result.stdout
        assert f"[PASS] one prompt through morgan-llm: {name}-127.0.0.1-{port}" in result.stdout
        assert "engine=transformers device=cpu" in result.stdout
        assert "tokens/s" in result.stdout and "all checks passed" in result.stdout

        wrong = subprocess.run(
            [
                sys.executable,
                str(script),
                "--skip-gpu",
                "--consul",
                consul_server.addr,
                "--service",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode == 1
        assert "no morgan-llm-check" in wrong.stdout and "runs engine vllm" in wrong.stdout
    finally:
        stop_all([proc])
