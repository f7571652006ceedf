"""Fixtures for the model services: tiny models (built once per machine), speech, apps."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from morgan.models.testing import install_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding llm/tiny, stt/tiny and tts/tiny."""
    root = tmp_path_factory.mktemp("models")
    for kind in ("llm", "stt", "tts"):
        install_tiny_model(kind, root)  # type: ignore[arg-type]
    return root


def espeak_wav(text: str, path: Path) -> bytes:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path.read_bytes()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 3 s of real speech (espeak-ng, 22050 Hz mono WAV)."""
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    return espeak_wav("Hello Morgan, please turn on the kitchen lights.", path)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that waits until /ready says yes."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", timeout=60
        ) as client:
            import asyncio

            for _ in range(600):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("service never became ready")
            yield client


def local_settings() -> dict[str, object]:
    """Settings for an in-process app: no Consul registration, no API keys."""
    return {"register_in_consul": False, "auth_enabled": False, "host": "127.0.0.1"}
