"""morgan-tts: build the app (``build_app``) and serve it (``main``, ``python -m morgan.tts``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.models.directory import ModelDirectoryError, list_models, resolve_model
from morgan.models.service_app import build_model_app, current_settings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run
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
            "`morgan models import DIR --kind tts --name VOICE`"
        )
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
    parts = build_model_app(
        settings,
        engine=engine,
        load=engine.load,
        model_name=model_name,
        router=router,
        loader=loader,
        auth_required_prefixes=("/v1", "/voices"),
    )
    parts.app.state.speech_service = SpeechService(
        current_settings(parts.app), engine, parts.holder, parts.limiter
    )
    return parts.app


def main() -> None:
    run(build_app())
