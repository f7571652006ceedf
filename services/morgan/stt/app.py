"""morgan-stt: build the app (``build_app``) and serve it (``main``, ``python -m morgan.stt``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.models.directory import resolve_model
from morgan.models.service_app import build_model_app, current_settings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run
from morgan.stt.config import STTSettings
from morgan.stt.engine import WhisperEngine
from morgan.stt.router import router
from morgan.stt.service import TranscriptionService

YAML_PATH = Path("/etc/morgan/stt.yaml")


def build_app(
    settings: STTSettings | None = None,
    loader: ConsulConfigLoader[STTSettings] | None = None,
) -> FastAPI:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from the model directory only
    if settings is None:
        loader = loader or ConsulConfigLoader(STTSettings, "stt", yaml_path=YAML_PATH)
        settings = loader.load()
    path = resolve_model(settings.model_dir, "stt", settings.model)
    engine = WhisperEngine(
        path,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        beam_size=settings.beam_size,
    )
    parts = build_model_app(
        settings,
        engine=engine,
        load=engine.load,
        model_name=path.name,
        router=router,
        loader=loader,
        auth_required_prefixes=("/v1", "/transcribe", "/ws"),
    )
    parts.app.state.transcription_service = TranscriptionService(
        current_settings(parts.app), parts.holder, parts.limiter
    )
    return parts.app


def main() -> None:
    run(build_app())
