"""morgan-tts: build the app (``build_app``) and serve it (``main``, ``python -m morgan.tts``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.models.directory import ModelDirectoryError, list_models, resolve_model
from morgan.models.holder import ModelHolder
from morgan.models.service_app import BackgroundLoad, install_model_error_handler, model_meta
from morgan.models.slots import MeteredLimiter
from morgan.shared.app import create_app, run
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.tts.config import TTSSettings
from morgan.tts.engine import CoquiEngine
from morgan.tts.router import router
from morgan.tts.service import SpeechService

YAML_PATH = Path("/etc/morgan/tts.yaml")


def voice_paths(settings: TTSSettings) -> dict[str, Path]:
    names = settings.voices or list_models(settings.model_dir, "tts")
    if not names:
        raise ModelDirectoryError(
            f"no TTS voice installed in {settings.model_dir / 'tts'}; add one with "
            "`morgan models import DIR --kind tts --name VOICE`")
    return {Path(name).name: resolve_model(settings.model_dir, "tts", name) for name in names}


def build_app(
    settings: TTSSettings | None = None,
    loader: ConsulConfigLoader[TTSSettings] | None = None,
) -> FastAPI:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from the model directory only
    if settings is None:
        loader = loader or ConsulConfigLoader(TTSSettings, "tts", yaml_path=YAML_PATH)
        settings = loader.load()
    engine = CoquiEngine(voice_paths(settings), device=settings.device)
    model_name = ",".join(sorted(engine.voice_paths))
    holder: ModelHolder[CoquiEngine] = ModelHolder(
        engine.load, unloader=lambda e: e.unload(), service=settings.service_name,
        model=model_name, idle_unload_seconds=settings.idle_unload_seconds,
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
        meta=model_meta(engine=engine.engine_name, model=model_name, device=engine.device,
                        vram_mb=settings.vram_mb),
        config_loader=loader,
        auth_required_prefixes=("/v1", "/voices"),
    )
    install_model_error_handler(app)
    app.state.model_holder = holder
    app.state.speech_service = SpeechService(settings, engine, holder, limiter)
    return app


def main() -> None:
    run(build_app())
