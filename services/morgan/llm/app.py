"""morgan-llm: build the app (``build_app``) and serve it (``main``, ``python -m morgan.llm``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.llm.config import LLMSettings
from morgan.llm.engine import LLMEngine, make_engine
from morgan.llm.router import router
from morgan.llm.service import ChatService
from morgan.models.service_app import build_model_app, current_settings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run

YAML_PATH = Path("/etc/morgan/llm.yaml")


def build_app(
    settings: LLMSettings | None = None,
    loader: ConsulConfigLoader[LLMSettings] | None = None,
    engine: LLMEngine | None = None,
) -> FastAPI:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from the model directory only
    if settings is None:
        loader = loader or ConsulConfigLoader(LLMSettings, "llm", yaml_path=YAML_PATH)
        settings = loader.load()
    engine = engine or make_engine(settings)
    parts = build_model_app(
        settings,
        engine=engine,
        load=engine.load,
        model_name=settings.model_id,
        router=router,
        loader=loader,
    )
    parts.app.state.chat_service = ChatService(
        current_settings(parts.app), parts.holder, parts.limiter
    )
    return parts.app


def main() -> None:
    run(build_app())
