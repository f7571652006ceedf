"""morgan-stt: build the app (``build_app``) and serve it (``main``, ``python -m morgan.stt``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.models.directory import resolve_model
from morgan.models.holder import ModelHolder
from morgan.models.service_app import BackgroundLoad, install_model_error_handler, model_meta
from morgan.models.slots import MeteredLimiter
from morgan.shared.app import create_app, run
from morgan.shared.config_loader import ConsulConfigLoader
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
    engine = WhisperEngine(path, device=settings.device, compute_type=settings.compute_type,
                           cpu_threads=settings.cpu_threads, beam_size=settings.beam_size)
    holder: ModelHolder[WhisperEngine] = ModelHolder(
        engine.load, unloader=lambda e: e.unload(), service=settings.service_name,
        model=path.name, idle_unload_seconds=settings.idle_unload_seconds,
    )
    limiter = MeteredLimiter(settings.max_concurrency, settings.max_queue,
                             service=settings.service_name)
    background = BackgroundLoad(holder)
    app = create_app(
        settings,
        routers=[router],
        ready_check=background.ready,
        on_startup=[background.start],
        on_shutdown=[background.stop],
        meta=model_meta(engine=engine.engine_name, model=path.name, device=engine.device,
                        vram_mb=settings.vram_mb),
        config_loader=loader,
        auth_required_prefixes=("/v1", "/transcribe", "/ws"),
    )
    install_model_error_handler(app)
    app.state.model_holder = holder
    app.state.transcription_service = TranscriptionService(settings, holder, limiter)
    return app


def main() -> None:
    run(build_app())
